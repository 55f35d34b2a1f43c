"""Per-device defaults chosen for the platform a program is lowered for, not the host's.

The measured defaults (``unroll``'s reverse pass and input projection, ``linear_recurrence``'s
method) are tables keyed ``"cpu"``, ``"gpu"``, ``"tpu"``. A program is traced once and may be
lowered for another platform than the host's default backend: ``jax.export`` for ``cuda`` or
``tpu`` on a CPU machine, ``jax.jit`` on a CPU device of a GPU machine. So the choice is staged
out with :func:`jax.lax.platform_dependent`: every distinct choice is traced, and lowering keeps
only the one of the platform it lowers for (the compiler sees no conditional; on a CPU the
compiled program is the one the CPU choice alone gives). When every platform makes the same
choice, nothing is staged: the one choice is traced directly.
"""

from __future__ import annotations

from typing import Callable, Hashable

import jax

# lax.platform_dependent's platform names, and the table key of each
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
_TABLE_KEYS = {"cuda": "gpu", "rocm": "gpu"}
# the key looked up for any other platform (a plugin): absent from every table, so the
# tables' "gpu" entry, as a backend missing from a table gets
OTHER = "other"


def table_key(platform: str) -> str:
    """The key of the defaults' tables for a lowering platform (``cuda``, ``rocm`` -> ``gpu``)."""
    return _TABLE_KEYS.get(platform, platform)


def per_platform(choose: Callable[[str], Hashable], build: Callable[[Hashable], Callable], *args):
    """``build(choice)(*args)`` with ``choice = choose(key)``, ``key`` the table key of the
    platform the program is lowered for (``"cpu"``, ``"gpu"``, ``"tpu"``, or :data:`OTHER`).

    ``choose`` runs at trace time for every platform (its errors raise at once); ``build`` once
    per distinct choice. Each built function must return the same structure, shapes and dtypes.
    """
    chosen = {platform: choose(table_key(platform)) for platform in PLATFORMS}
    default = choose(OTHER)
    distinct = list(dict.fromkeys([default, *chosen.values()]))
    if len(distinct) == 1:
        return build(default)(*args)
    built = {choice: build(choice) for choice in distinct}
    # platforms that take the default's choice are left to the default branch (listing them
    # would trace that branch twice)
    return jax.lax.platform_dependent(
        *args, default=built[default], **{p: built[c] for p, c in chosen.items() if c != default}
    )
