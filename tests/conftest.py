"""Test configuration: float64 available, strict dtype promotion (silent upcasts raise), and
XLA's LLVM backend at optimisation level 0.

The tests run small programs, many of them once: compiling them costs more than running
them. LLVM's optimisations change how fast the generated code runs, not what it computes
(XLA:CPU does not enable fast-math reassociation at any level), and level 0 cut the
suite's CPU time by about 40 % on a 2-core machine (tests/test_fused.py and
tests/test_exp_gates.py: 173 s → 103 s of CPU). Set before JAX starts its backend, so
subprocesses started with a copy of ``os.environ`` inherit it; a level given in
``XLA_FLAGS`` by the user wins.
"""

import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads it once)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
