"""The command line: a user's mistake is one line on stderr with exit status 2, a bug keeps its
traceback; ``--profile`` choices come from the experiments; CPU commands see every core as a
device (``--devices N`` to choose). Most tests call :func:`rnn_jax.repro.cli.main` in-process; two
start a subprocess, for what only a fresh process shows (XLA_FLAGS is read when JAX starts)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import jax
import pytest

from rnn_jax.repro import cli
from rnn_jax._checks import UserValueError
from rnn_jax.repro.experiments import EXPERIMENTS, common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def in_process(monkeypatch):
    """main() in this process: JAX's backend already up (so XLA_FLAGS is left alone), no
    compilation cache, XLA_FLAGS restored afterwards whatever main does."""
    jax.devices()
    monkeypatch.setenv("RNN_JAX_CACHE_DIR", "")
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    return cli.main


def _one_line_error(capsys, phrase):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("rnn-jax: error: ") and phrase in lines[-1], err
    assert "Traceback" not in err


def test_out_folder_of_another_run_is_a_user_error(in_process, tmp_path, capsys):
    """common.claim_folder's refusal (a ValueError it raises itself) is reported in one line, exit 2."""
    (tmp_path / "run.json").write_text(json.dumps({"experiment": "temporal-order", "profile": "other"}))
    assert in_process(["temporal-order", "--profile", "tiny", "--out", str(tmp_path), "--quiet"]) == 2
    _one_line_error(capsys, "holds a run with other settings")


def test_out_that_is_a_file_is_a_user_error(in_process, tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("")
    assert in_process(["temporal-order", "--profile", "tiny", "--out", str(path)]) == 2
    _one_line_error(capsys, "exists and is not a folder")
    assert in_process(["temporal-order", "--profile", "tiny", "--out", str(path / "sub")]) == 2
    _one_line_error(capsys, "cannot create the folder")


@pytest.mark.parametrize("argv, phrase", [
    (["temporal-order", "--seeds", "0"], "argument --seeds: expected a positive integer, got 0"),
    (["temporal-order", "--seeds", "three"], "argument --seeds: expected a positive integer, got 'three'"),
    (["temporal-order", "--profile", "huge"], "argument --profile: invalid choice: 'huge'"),
    (["info", "--devices", "-2"], "argument --devices: expected a positive integer, got -2"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
])
def test_bad_arguments_exit_with_status_2(in_process, capsys, argv, phrase):
    with pytest.raises(SystemExit) as info:
        in_process(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err


def test_user_errors_and_bugs_are_told_apart(in_process, monkeypatch, tmp_path, capsys):
    """A UserError from any check is the user's; an AttributeError, or a plain ValueError raised
    outside the user-facing checks, is a bug and propagates with its traceback."""
    module = importlib.import_module(EXPERIMENTS["temporal-order"])
    argv = ["temporal-order", "--profile", "tiny", "--out", str(tmp_path), "--quiet"]

    def raising(err):
        def run(*args, **kwargs):
            raise err
        return run

    monkeypatch.setattr(module, "run", raising(UserValueError("seeds: something the user typed")))
    assert in_process(argv) == 2
    _one_line_error(capsys, "seeds: something the user typed")
    for bug in (AttributeError("'NoneType' object has no attribute 'shape'"), ValueError("an internal invariant broke")):
        monkeypatch.setattr(module, "run", raising(bug))
        with pytest.raises(type(bug)):
            in_process(argv)


def test_only_errors_raised_by_the_user_facing_checks_themselves_count(tmp_path):
    """claim_folder's own ValueError is the user's; one raised in code it calls is not."""
    (tmp_path / "run.json").write_text(json.dumps({"experiment": "x"}))
    with pytest.raises(ValueError) as own:
        common.claim_folder(str(tmp_path), "y", {})
    assert cli.is_user_error(own.value)
    with pytest.raises(TypeError) as deeper:
        common.claim_folder(str(tmp_path / "new"), "y", {"bad": object()})  # json cannot write it
    assert not cli.is_user_error(deeper.value)
    assert cli.is_user_error(UserValueError("x")) and not cli.is_user_error(KeyError("x"))


def test_profile_choices_are_each_experiments_profiles():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, module in EXPERIMENTS.items():
        profile = next(a for a in sub.choices[name]._actions if a.dest == "profile")
        assert list(profile.choices) == list(importlib.import_module(module).PROFILES), name


def test_host_device_flags():
    flag = cli.HOST_DEVICES_FLAG
    assert cli.host_device_flags("", None, 8) == f"{flag}=8"
    assert cli.host_device_flags("--xla_backend_optimization_level=0", None, 8) == \
        f"--xla_backend_optimization_level=0 {flag}=8"
    assert cli.host_device_flags(f"{flag}=2 --other", None, 8) == f"{flag}=2 --other"  # the user's count is kept
    assert cli.host_device_flags(f"{flag}=2 --other", 5, 8) == f"--other {flag}=5"  # --devices overrides it
    assert cli.host_device_flags("", None, None) == ""


def _run(args, env_flags):
    env = dict(os.environ, XLA_FLAGS=env_flags, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_cpu_commands_use_every_core_and_the_library_changes_no_flag():
    """A fresh process: importing rnn_jax leaves XLA_FLAGS alone; `rnn-jax info` then sees
    os.cpu_count() devices (the count flag set before JAX's backend starts)."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(cli.HOST_DEVICES_FLAG))
    script = ("import os, rnn_jax, rnn_jax.repro.cli, rnn_jax.repro.experiments; print('flags', repr(os.environ.get('XLA_FLAGS')));"
              "import sys; sys.exit(rnn_jax.repro.cli.main(['info']))")
    done = _run(script, flags)
    assert done.returncode == 0, done.stderr
    assert f"flags {flags!r}" in done.stdout
    assert f"{os.cpu_count()} devices" in done.stdout, done.stdout


def test_devices_option_overrides_the_users_count():
    flags = os.environ.get("XLA_FLAGS", "") + f" {cli.HOST_DEVICES_FLAG}=2"
    done = _run("import sys, rnn_jax.repro.cli, jax; code = rnn_jax.repro.cli.main(['info', '--devices', '3']);"
                "assert jax.device_count() == 3, jax.devices(); sys.exit(code)", flags)
    assert done.returncode == 0, done.stderr
    assert "3 devices" in done.stdout
