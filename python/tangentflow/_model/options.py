"""``Options``: the validated options of a kernel model, one class for every facade.

``Predictor`` uses all of them; ``Ensemble`` and ``GaussianProcess`` the subset that applies
to them (the rest keep their defaults: MSE, gradient flow, no momentum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .. import _validate
from .._shapes import freeze_trace_axes

__all__ = ["Options", "Loss", "Dynamics", "Precision"]

Loss = Literal["mse", "cross_entropy"] | Callable[..., Any]
Dynamics = Literal["flow", "gd"]
Precision = Literal["float64", "float32"]

_LOSSES = ("mse", "cross_entropy")
_DTYPES: dict[str, np.dtype[Any]] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
}

#: Argument types whose values key the cache of ``Options.create`` (immutable, compared by
#: value with their type, so that ``True`` and ``1.0`` stay apart).
_PLAIN = (int, float, bool, str, type(None))
_MADE: dict[tuple[tuple[type, object], ...], Options] = {}
_MADE_MAX = 256


def _key(args: tuple[object, ...]) -> tuple[tuple[type, object], ...] | None:
    """The cache key of plain arguments (floats by their exact hex form: ``-0.0`` is not
    ``0.0``), or None."""
    if not all(type(a) in _PLAIN for a in args):
        return None
    return tuple((type(a), a.hex() if type(a) is float else a) for a in args)


#: Default ``rtol`` of the ODE integrator and of the Krylov solver (``rtol=None``).
ODE_RTOL = 1.4e-8
KRYLOV_RTOL = 1e-8


@dataclass(frozen=True)
class Options:
    """Validated options (build with ``Options.create``; ``replace`` re-validates)."""

    learning_rate: float = 1.0
    diag_reg: float = 0.0
    diag_reg_absolute_scale: bool = False
    momentum: float | None = None
    loss: Loss = "mse"
    dynamics: Dynamics = "flow"
    trace_axes: tuple[int, ...] | None = None
    precision: Precision = "float64"
    rcond: float | None = None
    rtol: float | None = None
    atol: float = 1.4e-8
    converge_tol: float | None = None
    max_iter: int | None = None
    progress: bool | None = None

    @classmethod
    def create(
        cls,
        *,
        learning_rate: object = 1.0,
        diag_reg: object = 0.0,
        diag_reg_absolute_scale: object = False,
        momentum: object = None,
        loss: object = "mse",
        dynamics: object = "flow",
        trace_axes: object = None,
        precision: object = "float64",
        rcond: object = None,
        rtol: object = None,
        atol: object = 1.4e-8,
        converge_tol: object = None,
        max_iter: object = None,
        progress: object = None,
    ) -> Options:
        """Checks every option (errors name the argument) and combinations of them.
        Options made of plain values (numbers, strings, None) are made once: a sweep that
        builds thousands of Predictors validates each distinct set only the first time."""
        args = (learning_rate, diag_reg, diag_reg_absolute_scale, momentum, loss, dynamics,
                trace_axes, precision, rcond, rtol, atol, converge_tol, max_iter, progress)  # fmt: skip
        key = _key(args)
        made = _MADE.get(key) if key is not None else None
        if made is not None:
            return made
        made = cls._validated(*args)
        if key is not None and len(_MADE) < _MADE_MAX:
            _MADE[key] = made
        return made

    @classmethod
    def _validated(
        cls,
        learning_rate: object,
        diag_reg: object,
        diag_reg_absolute_scale: object,
        momentum: object,
        loss: object,
        dynamics: object,
        trace_axes: object,
        precision: object,
        rcond: object,
        rtol: object,
        atol: object,
        converge_tol: object,
        max_iter: object,
        progress: object,
    ) -> Options:
        lr = _validate.positive_float(learning_rate, "learning_rate")
        reg = _validate.positive_float(diag_reg, "diag_reg", allow_zero=True)
        absolute = _validate.flag(diag_reg_absolute_scale, "diag_reg_absolute_scale")
        m = _validate.momentum(momentum, optional=True)
        if isinstance(loss, str):
            if loss not in _LOSSES:
                raise ValueError(f'loss must be "mse", "cross_entropy" or a callable, got {loss!r}')
        elif not callable(loss):
            raise TypeError(f"loss must be a string or a callable, got {type(loss).__name__}")
        dyn = _validate.choice(dynamics, "dynamics", ("flow", "gd"))
        if dyn == "gd" and loss != "mse":
            raise ValueError('dynamics="gd" is available for loss="mse" only')
        if dyn == "gd" and m is not None:
            raise ValueError('dynamics="gd" does not take momentum (use dynamics="flow")')
        if loss != "mse" and reg != 0.0:
            raise ValueError(
                "diag_reg must be 0 with an ODE loss (it applies to the MSE closed forms)"
            )
        prec = _validate.choice(precision, "precision", ("float64", "float32"))
        return cls(
            learning_rate=lr,
            diag_reg=reg,
            diag_reg_absolute_scale=absolute,
            momentum=m,
            loss=loss,  # type: ignore[arg-type]  # checked above
            dynamics=dyn,  # type: ignore[arg-type]
            trace_axes=freeze_trace_axes(trace_axes),  # a generator is read once
            precision=prec,  # type: ignore[arg-type]
            rcond=_validate.optional_positive_float(rcond, "rcond"),
            rtol=_validate.optional_positive_float(rtol, "rtol"),
            atol=_validate.positive_float(atol, "atol"),
            converge_tol=_validate.optional_positive_float(converge_tol, "converge_tol"),
            max_iter=_validate.optional_positive_int(max_iter, "max_iter"),
            progress=None if progress is None else _validate.flag(progress, "progress"),
        )

    def replace(self, **changes: object) -> Options:
        """These options with ``changes``, validated again."""
        kw: dict[str, Any] = self.as_dict()
        kw.update(changes)
        return Options.create(**kw)

    def as_dict(self) -> dict[str, Any]:
        """The options by name (the ``cfg`` entry of a pickled Predictor)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def ode_rtol(self) -> float:
        """The ODE integrator's relative tolerance (docs/numerics.md §9; default 1.4e-8)."""
        return ODE_RTOL if self.rtol is None else self.rtol

    @property
    def krylov_rtol(self) -> float:
        """The Krylov solver's target, relative to ``max|f₀ − Y|`` (docs/numerics.md §15;
        default 1e-8)."""
        return KRYLOV_RTOL if self.rtol is None else self.rtol

    @property
    def dtype(self) -> np.dtype[Any]:
        """The compute dtype."""
        return _DTYPES[self.precision]
