"""``ODEState``, the state of ``gradient_descent``'s ODE, a JAX pytree once JAX is loaded."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

__all__ = ["ODEState"]


@dataclasses.dataclass
class ODEState:
    """State of the ODE of ``gradient_descent``: outputs and auxiliary variables.

    Attributes:
      fx_train: training set outputs.
      fx_test: test set outputs.
      qx_train: training set auxiliary state (momentum), or None.
      qx_test: test set auxiliary state (momentum), or None.
    """

    fx_train: Any = None
    fx_test: Any = None
    qx_train: Any = None
    qx_test: Any = None

    def __post_init__(self) -> None:
        _register_ode_state()


_ODE_STATE_REGISTERED = False


def _register_ode_state() -> None:
    """Make ``ODEState`` a JAX pytree (as in neural-tangents) so that it passes through
    ``jax.jit``/``jax.vmap``. Done when a state is created once JAX is loaded: a state can
    only be flattened by JAX after it exists."""
    global _ODE_STATE_REGISTERED
    jax = sys.modules.get("jax")
    if _ODE_STATE_REGISTERED or jax is None or not hasattr(jax, "tree_util"):
        return
    _ODE_STATE_REGISTERED = True
    jax.tree_util.register_pytree_node(
        ODEState,
        lambda s: ((s.fx_train, s.fx_test, s.qx_train, s.qx_test), None),
        lambda _, children: ODEState(*children),
    )
