"""Power-law fits and the bisection for the adequate width (docs/width.md)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["loglog_slope", "bisect_width", "extrapolate_width"]


def loglog_slope(
    widths: npt.ArrayLike, values: npt.ArrayLike
) -> tuple[float | None, float | None, float | None]:
    """Least-squares fit ``log v = a + b log n`` over the finite, positive values.

    Returns ``(b, stderr(b), a)``; the standard error is the usual one of a straight-line
    fit (residual variance over ``m − 2`` degrees of freedom). ``(None, None, None)`` with
    fewer than two usable points; the standard error is None with exactly two.
    """
    n = np.asarray(widths, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(n) & (n > 0)
    x, y = np.log(n[ok]), np.log(v[ok])
    m = x.size
    if m < 2 or np.ptp(x) == 0:
        return None, None, None
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    b = float(((x - xm) * (y - ym)).sum() / sxx)
    a = float(ym - b * xm)
    if m == 2:
        return b, None, a
    resid = y - (a + b * x)
    s2 = float((resid**2).sum()) / (m - 2)
    return b, math.sqrt(s2 / sxx), a


def extrapolate_width(slope: float | None, intercept: float | None, tol: float) -> float | None:
    """The width at which the fitted power law ``exp(a)·n^b`` reaches ``tol`` (None when
    the fit does not decrease)."""
    if slope is None or intercept is None or not slope < 0:
        return None
    est = math.exp((math.log(tol) - intercept) / slope)
    return est if math.isfinite(est) else None


def bisect_width(
    evaluate: Callable[[int], float],
    lo: int,
    hi: int,
    tol: float,
    *,
    max_steps: int,
    rtol: float = 0.05,
) -> tuple[int, list[tuple[int, float]]]:
    """Smallest width in ``(lo, hi]`` whose ``evaluate(width) <= tol``, by geometric
    bisection, given that ``lo`` fails and ``hi`` passes.

    Each step trains and checks the geometric midpoint; it stops after ``max_steps``
    evaluations or when ``hi/lo <= 1 + rtol`` (or no integer lies between them). Returns
    the smallest width seen to pass and the list of ``(width, value)`` evaluated.
    """
    seen: list[tuple[int, float]] = []
    lo, hi = int(lo), int(hi)
    for _ in range(max_steps):
        if hi / lo <= 1.0 + rtol or hi - lo <= 1:
            break
        mid = int(round(math.sqrt(lo * hi)))
        mid = min(max(mid, lo + 1), hi - 1)
        value = float(evaluate(mid))
        seen.append((mid, value))
        if value <= tol:
            hi = mid
        else:
            lo = mid
    return hi, seen
