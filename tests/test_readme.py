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
    from rnn_jax.repro.cli import build_parser
    from rnn_jax.repro.experiments import EXPERIMENTS

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


def test_readme_cpu_heap_option_is_accepted_and_changes_only_memory():
    """The README's CPU opt-in (``xla_multiheap_size_constraint_per_heap``) is a compile
    option this XLA knows (it rejects unknown ones), it does split the temporaries (they
    no longer share space across heaps, so XLA's count grows) and it leaves every value
    and gradient bit-for-bit as the default program computes them."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rnn_jax
    from rnn_jax import model

    text = open(os.path.join(ROOT, "README.md")).read()
    name, limit = re.search(r'"(xla_multiheap_size_constraint_per_heap)": (\d+) << 20', text).groups()
    assert int(limit) < 32  # under glibc's mmap ceiling, the point of the option

    cell = rnn_jax.elman(64, "tanh")
    params = model.init(jax.random.PRNGKey(0), cell, 8, 8, dtype=jnp.float32)
    xs = jax.random.normal(jax.random.PRNGKey(1), (16, 400, 8), jnp.float32)

    def loss(p, xs):
        ys = model.predict(cell, p, xs, on="every")
        return jnp.mean(jnp.sum(ys * ys, axis=-1))

    fn = jax.value_and_grad(loss)
    default = jax.jit(fn).lower(params, xs).compile()
    split = jax.jit(fn, compiler_options={name: 1 << 16}).lower(params, xs).compile()  # 64 KiB heaps
    assert split.memory_analysis().temp_size_in_bytes > default.memory_analysis().temp_size_in_bytes
    for a, b in zip(jax.tree_util.tree_leaves(default(params, xs)), jax.tree_util.tree_leaves(split(params, xs))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
