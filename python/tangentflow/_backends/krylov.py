"""The Krylov backend: the Rust core's block Lanczos solvers over a kernel operator given by
its ``matmat`` (docs/numerics.md §15). The core keeps the basis; these are the only calls
of ``tangentflow._core.KrylovFlow`` / ``KrylovPinv`` in the package."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _core

__all__ = ["Flow", "Pinv", "flow_solve", "pinv_solve", "ProgressFn"]

Flow = _core.KrylovFlow
Pinv = _core.KrylovPinv

#: ``progress(iterations, matvecs, error_estimate)`` after every stopping test.
ProgressFn = Callable[[int, int, float], None]


def _f64(a: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(a, dtype=np.float64)


def flow_solve(
    matmat: Callable[[Any], Any],
    n: int,
    r0: Any,
    times: Any,
    *,
    rtol: float,
    max_iter: int,
    rcond: float | None,
    shift: float,
    progress: ProgressFn | None,
) -> _core.KrylovFlow:
    """A new basis for ``r0`` (``(N, R)``) at scaled times ``times``."""
    return _core.KrylovFlow.solve(
        matmat, n, _f64(r0), _f64(times), rtol, max_iter, rcond, shift, None, progress
    )


def flow_extend(
    flow: _core.KrylovFlow,
    matmat: Callable[[Any], Any],
    times: Any,
    *,
    rtol: float,
    max_iter: int,
    rcond: float | None,
    shift: float,
    progress: ProgressFn | None,
) -> None:
    """Re-checks (and extends where needed) a kept basis for new times or parameters."""
    flow.extend(matmat, _f64(times), rtol, max_iter, rcond, shift, progress)


def pinv_solve(
    matmat: Callable[[Any], Any],
    n: int,
    b: Any,
    *,
    rtol: float,
    max_iter: int,
    rcond: float | None,
    shift: float,
    rank: int,
    progress: ProgressFn | None,
) -> _core.KrylovPinv:
    """``(A + λI)⁺ b`` and the null part of ``b`` (``t = ∞``)."""
    return _core.KrylovPinv.solve(
        matmat, n, _f64(b), rtol, max_iter, rcond, shift, rank, 0x5EED, progress
    )
