"""The agreement script (``python -m benchmarks.agreement``) in its quick profile.

The script prints the figures the project's notes state; here it runs in-process with
``--quick`` and every figure it reports must be finite and within the issues' bounds:
autodiff against the hand-written BPTT (gradients and layers) 1e-10 in float64, against
central differences 1e-6 (tests/test_bptt.py's bound; the script floors tiny leaves), rnn_jax against PyTorch and Flax
1e-5 in float32 and 1e-10 in float64. The bounds are written here, not read from the
script, so the script cannot relax them; a reference made wrong on purpose must show
in the figures, so the script cannot report agreement without comparing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import agreement  # noqa: E402

BOUNDS = {"autodiff_vs_bptt": 1e-10, "autodiff_vs_fd": 1e-6, "layers": 1e-10, "float32": 1e-5, "float64": 1e-10}
PEER_FIGURES = ("outputs", "final_states", "parameter_gradients", "input_gradients")
INSTALLED = [peer for peer in ("torch", "flax") if importlib.util.find_spec(peer) is not None]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``(exit status, printed report, JSON)`` of ``python -m benchmarks.agreement --quick --json PATH``."""
    path = tmp_path_factory.mktemp("agreement") / "quick.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        status = agreement.main(["--quick", "--json", str(path)])
    with open(path) as f:
        return status, printed.getvalue(), json.load(f)


def test_every_figure_is_finite_and_within_its_bound(quick):
    status, _, result = quick
    figures = []
    for row in result["gradients"]:
        figures.append((f"gradients {row['cell']} vs bptt", row["autodiff_vs_bptt"], BOUNDS["autodiff_vs_bptt"]))
        figures.append((f"gradients {row['cell']} vs differences", row["autodiff_vs_fd"], BOUNDS["autodiff_vs_fd"]))
    for row in result["peers"]:
        figures += [(f"{row['peer']} {row['cell']} {row['dtype']} {f}", row[f], BOUNDS[row["dtype"]]) for f in PEER_FIGURES]
    for row in result["layers"]:
        figures += [(f"layers {row['cell']} {row['network']} {f}", row[f], BOUNDS["layers"]) for f in ("outputs", "gradients")]
    # the JSON writes a non-finite figure as a string ("nan", "inf"): float() reads it back
    bad = [(what, value) for what, value, bound in figures if not (np.isfinite(float(value)) and float(value) <= bound)]
    assert not bad, bad
    assert status == 0


def test_every_part_cell_dtype_and_network_is_measured_on_non_zero_references(quick):
    """The quick profile measures every cell's gradients (each case one (loss, on) pair, all four
    pairs among the cells), every PyTorch module, Flax cells and layers in both dtypes and every
    network; no case compares zeros with zeros."""
    _, _, result = quick
    cases = result["cases"]
    assert [row["cell"] for row in result["gradients"]] == list(agreement.GRADIENT_CELLS)
    pairs = {pair for case in cases["gradients"] for pair in case["combos"]}
    assert pairs == {"mse/last", "mse/every", "xent/last", "xent/every"}
    assert all(case["values"] > 0 and case["reference_norm"] > 0 for case in cases["gradients"])
    assert sorted(result["skipped"]) == sorted({"torch", "flax"} - set(INSTALLED))
    for peer in INSTALLED:
        rows = [row for row in result["peers"] if row["peer"] == peer]
        assert {row["dtype"] for row in rows} == {"float32", "float64"}, peer
        assert len({row["cell"] for row in rows}) >= 3, peer
    if "torch" in INSTALLED:
        assert {row["cell"] for row in result["peers"] if row["peer"] == "torch"} == set(agreement.TORCH_MODULES)
    for case in cases["peers"]:
        assert case["reference_scale"] > 0, case
        # one configuration per cell: float32 with every factor on, float64 with every factor off
        factors = agreement.TORCH_FACTORS if case["peer"] == "torch" else agreement.FLAX_FACTORS
        assert all(case[f] == (case["dtype"] == "float32") for f in factors), case
    assert {row["network"] for row in result["layers"]} == set(agreement.NETWORKS)
    assert all(case["reference_norm"] > 0 for case in cases["layers"])


def test_the_report_names_command_versions_and_every_row(quick):
    _, printed, result = quick
    assert printed.startswith("# rnn_jax numerical agreement")
    assert "Command: `python -m benchmarks.agreement --quick --json " in printed
    assert f"jax {jax.__version__}" in printed
    for peer in INSTALLED:
        assert f"{peer} {result['meta']['versions'][peer]}" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| ") and not line.startswith("| cell") and
            not line.startswith("| peer")]
    assert len(rows) == len(result["gradients"]) + len(result["peers"]) + len(result["layers"])
    assert "Every figure is finite and within its tolerance." in printed


def test_the_measures():
    assert agreement.rel_max(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == 0.5
    errors = agreement.rel_norm_errors((np.array([3.0, 4.0]), np.zeros(2)), (np.array([3.0, 4.001]), np.zeros(2)))
    assert errors[0] == pytest.approx(1e-3 / 5, rel=1e-9) and errors[1] == 0.0
    assert np.isnan(agreement.largest([1.0, float("nan"), 2.0]))  # Python's max would say 2.0
    with pytest.raises(ValueError, match="different structures"):
        agreement.rel_norm_errors((np.zeros(2),), [np.zeros(2)])


def test_a_wrong_bptt_reference_shows_in_the_gradient_figures(monkeypatch):
    """BPTT gradients off by a relative 1e-7: the figure against BPTT reads 1e-7, the one
    against central differences (which do not use BPTT) stays small."""
    true_bptt = agreement.bptt

    def off(*args, **kwargs):
        result = true_bptt(*args, **kwargs)
        return result._replace(grads=jax.tree_util.tree_map(lambda g: g * (1 + 1e-7), result.grads))

    monkeypatch.setattr(agreement, "bptt", off)
    case = agreement.gradient_case("gru", 0, agreement.PROFILES["quick"], combos=(("xent", "every"),))
    assert case["autodiff_vs_bptt"] == pytest.approx(1e-7, rel=1e-3)
    assert case["autodiff_vs_fd"] <= BOUNDS["autodiff_vs_fd"]


def test_a_wrong_conversion_shows_in_the_peer_figures(monkeypatch):
    """Converted PyTorch weights scaled by 1 + 1e-3: outputs and gradients leave the float32 bound."""
    pytest.importorskip("torch")
    convert = agreement.rtorch.from_torch_state_dict

    def scaled(*args, **kwargs):
        layer, params = convert(*args, **kwargs)
        return layer, jax.tree_util.tree_map(lambda p: p * (1 + 1e-3), params)

    monkeypatch.setattr(agreement.rtorch, "from_torch_state_dict", scaled)
    case = agreement.torch_case("gru", "float64", 0, agreement.PROFILES["quick"])
    assert case["outputs"] > BOUNDS["float32"] and case["parameter_gradients"] > BOUNDS["float32"]
