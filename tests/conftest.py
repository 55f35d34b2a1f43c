"""Test configuration: float64 available, strict dtype promotion (silent upcasts raise)."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
