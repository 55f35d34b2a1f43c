"""The README quotes the committed results exactly: its generated blocks are what the experiments'
``readme_body`` makes of ``results/<name>/summary.json`` and ``provenance.json``, and it shows their figures."""

import json
import os

import pytest

from rnn_jax.repro.experiments import chars, common, music, pathological, temporal_order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {"temporal_order": temporal_order, "temporal_order_pilot": temporal_order, "pathological": pathological,
           "music": music, "chars": chars}


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_readme_quotes_the_committed_summary(name):
    folder = os.path.join(ROOT, "results", name)
    readme = _readme()
    begin = common.README_BEGIN.format(name=name)
    if not os.path.exists(os.path.join(folder, "summary.json")):
        assert begin not in readme, f"the README quotes results/{name}, which is not in the repository"
        pytest.skip(f"results/{name} not committed")
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(folder, "provenance.json")) as f:
        prov = json.load(f)
    block = common.readme_block(name, MODULES[name].readme_body(summary, prov))
    assert begin in readme, f"the README does not quote results/{name}"
    start = readme.index(begin)
    end = readme.index(common.README_END.format(name=name), start) + len(common.README_END.format(name=name))
    assert readme[start:end] == block, "the README's numbers differ from the committed summary: regenerate the block"
    for png in summary.get("figures", []):
        assert os.path.exists(os.path.join(folder, png)), png
        if not name.endswith("_pilot"):  # the pilot is quoted for its numbers; its figures stay in its folder
            assert f"(results/{name}/{png})" in readme, f"the README does not show results/{name}/{png}"
    assert summary["profile"] == ("pilot" if name.endswith("_pilot") else "cpu")
    assert prov["commit"] and prov["wall_seconds"] > 0
    # the summary records the commit that trained the run and the one that wrote it
    assert summary["commit"] == prov["commit"] and summary["written_by_commit"]
    assert len(summary["commit"]) == 40 and all(c in "0123456789abcdef" for c in summary["commit"])


def test_a_run_records_the_commits_it_ran_on(tmp_path, monkeypatch):
    """claim_folder notes the code's commit at every start (once per distinct commit); the summary names them."""
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    out = str(tmp_path / "run")
    common.claim_folder(out, "x", {"seeds": [0]})
    common.claim_folder(out, "x", {"seeds": [0]})  # a resume on the same code adds nothing
    assert common.run_commits(out) == [head]
    assert common.write_summary(out, {"a": 1})["commit"] == head
    monkeypatch.setattr(common, "code_commit", lambda: "f" * 40)  # resumed on other code
    common.claim_folder(out, "x", {"seeds": [0]})
    summary = common.write_summary(out, {"a": 1})
    assert summary["commit"] == "f" * 40 and summary["commits"] == [head, "f" * 40]


def test_a_changed_number_is_caught(tmp_path):
    """The comparison can fail: one solved count changed in a summary changes the block."""
    summary = {"settings": {"optimizers": ["MSGD"], "lengths": [30], "schemes": ["basic_tanh"], "seeds": 2,
                            "max_steps": 10, "eval_size": 5},
               "rows": [{"length": 30, "scheme": "basic_tanh", "optimizer": "MSGD", "solved": 1, "members": 2,
                         "members_with_explosions": 0, "largest_grad_norm": 1.5}],
               "verdicts": [{"claim": "c", "outcome": "not shown", "test": "t", "p_value": 0.5, "p_against": 1.0}]}
    prov = {"command": "x", "wall_seconds": 60.0, "cores": 2, "cpu": "cpu", "commit": "abcdef0"}
    a = temporal_order.readme_body(summary, prov)
    summary["rows"][0]["solved"] = 2
    assert temporal_order.readme_body(summary, prov) != a and "| 1 / 2 |" in a
