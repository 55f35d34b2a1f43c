"""The README's set-up commands are the ones CI and users run."""

import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_ci_runs_exactly_the_readme_test_command():
    install_and_run, install_and_test = _readme_commands()[:2]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert install_and_test in [line.strip() for line in ci.splitlines()]
    assert "pytest" in install_and_test and "rnn-jax" in install_and_run


def test_cli_lists_every_installed_experiment():
    from rnn_jax.cli import build_parser
    from rnn_jax.experiments import EXPERIMENTS

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(EXPERIMENTS) | {"demo"} <= set(choices)
    args = parser.parse_args(["counting", "--profile", "tiny", "--seeds", "3", "--out", "x"])
    assert (args.profile, args.seeds, args.out) == ("tiny", 3, "x")


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written (float32, as a user would)."""
    import jax

    monkeypatch.chdir(tmp_path)  # examples write their output folders under the working directory
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        for block in blocks:
            if "import torch" in block and importlib.util.find_spec("torch") is None:
                continue  # the interop example needs the optional peers extra
            exec(compile(block, "README.md", "exec"), {})
