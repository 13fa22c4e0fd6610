"""What a model family provides to the width study (docs/width.md).

A *family* builds one network per (width, seed); a *network* knows its outputs, its
empirical NTK and how to train itself by full-batch gradient descent on
``‖f − y‖² / (2n)`` with ``n = y.size`` (the loss :class:`tangentflow.Predictor` uses,
docs/concepts.md), so that the really trained network and its linearization take the
same steps.

Kernels are returned *flat*: ``(N1·K, N2·K)`` with row ``i·K + k`` for example ``i``,
output ``k`` (the flattened pair-interleaved layout of docs/numerics.md §2), float64.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Family", "Network", "as_family", "call_factory"]

#: Progress callback: ``progress(step, steps)`` during training.
ProgressFn = Callable[[int, int], None]


class Network:
    """One initialized network of a family (trained in place by :meth:`fit`)."""

    def outputs(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """Outputs ``(N, K)`` as float64."""
        raise NotImplementedError

    def ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:  # pragma: no cover
        """The empirical NTK, flat ``(N1·K, N2·K)`` float64 (``x2=None``: ``x1``)."""
        raise NotImplementedError

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        learning_rate: float,
        steps: int,
        checkpoints: Sequence[int],
        x_test: np.ndarray | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover - interface
        """Full-batch gradient descent for ``steps`` steps; returns the train (and test)
        outputs after each checkpoint's number of steps, ``(C, N, K)`` and ``(C, M, K)``."""
        raise NotImplementedError


class Family:
    """Builds networks of any width; subclasses: MLP, JaxModel, TorchModel."""

    #: Whether seeds give different initializations.
    seeded = True

    def build(self, width: int, seed: int, d_in: int, d_out: int) -> Network:  # pragma: no cover
        raise NotImplementedError

    def limit_ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray | None:
        """The infinite-width NTK ``(N1, N2)`` (the same for every output), or None."""
        return None

    def describe(self) -> str:
        return type(self).__name__


def call_factory(factory: Callable[..., Any], width: int, seed: int, takes_seed: bool) -> Any:
    return factory(width, seed) if takes_seed else factory(width)


def takes_seed(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` accepts a second positional argument (the seed)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n >= 2


def as_family(model: object, probe_width: int) -> Family:
    """``model`` as a :class:`Family`: a family as is; a bare callable is classified by what
    it returns at ``probe_width``: a ``torch.nn.Module`` makes a TorchModel, a pair
    ``(apply_fn, params)`` a JaxModel."""
    if isinstance(model, Family):
        return model
    if not callable(model):
        raise TypeError(
            "model must be a tangentflow.width.MLP, JaxModel or TorchModel, or a callable "
            f"width -> (apply_fn, params) / torch.nn.Module, got {type(model).__name__}"
        )
    seeded = takes_seed(model)
    probe = call_factory(model, probe_width, 0, seeded)
    if _is_torch_module(probe):
        from ._torch import TorchModel

        return TorchModel(model)
    if isinstance(probe, tuple) and len(probe) == 2 and callable(probe[0]):
        from ._jax import JaxModel

        return JaxModel(model)
    raise TypeError(
        "model(width) must return a torch.nn.Module or a pair (apply_fn, params), got "
        f"{type(probe).__name__}"
    )


def _is_torch_module(obj: object) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
