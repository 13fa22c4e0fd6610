"""Numeric rules every layer shares: the power-of-two scaling that makes every result
independent of the kernel's overall scale (docs/numerics.md §12, "Scale invariance"),
exact symmetrization, and the cast of results to the output dtype.

A kernel ``A`` is handled as ``Ã = 2^-e·A`` with ``e`` the binary exponent of
``max|A_ij|`` (the Rust core and the array backend choose it); targets are scaled the same
way (``2^-ey``; the outputs are linear in them), so no intermediate depends on the scale and
none over- or underflows while the answer is representable.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

from . import _core
from ._errors import TangentflowError

__all__ = [
    "exponent",
    "ldexp",
    "ldexp_float",
    "array_exponent",
    "max_exponent",
    "all_finite",
    "cast_outputs",
    "symmetrize",
    "SYMMETRY_RTOL",
]

#: A kernel is symmetric when ``max|K - Kᵀ| <= SYMMETRY_RTOL·max|K|`` (docs/empirical-kernels.md).
SYMMETRY_RTOL = 1e-5

_A = TypeVar("_A")


def exponent(x: float) -> int:
    """Binary exponent ``e`` of ``x = f·2^e``, ``|f|`` in ``[0.5, 1)``; 0 for 0 and non-finite."""
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return 0
    return math.frexp(x)[1]


def ldexp_float(x: float, e: int) -> float:
    """``x·2^e`` as a Python float, ``±inf`` on overflow (``math.ldexp`` raises)."""
    try:
        return math.ldexp(float(x), int(e))
    except OverflowError:
        return math.copysign(math.inf, x)


_FINITE: dict[Any, Any] = {
    np.dtype(np.float64): _core.all_finite_f64,
    np.dtype(np.float32): _core.all_finite_f32,
}

#: The binary exponents ``e`` for which ``2^e`` is a normal number of the dtype.
_NORMAL_POWERS = {np.dtype(np.float64): (-1022, 1023), np.dtype(np.float32): (-126, 127)}


def ldexp(a: _A, e: int, xp: Any) -> _A:
    """``a·2^e`` elementwise, exact on normal results, in ``a``'s dtype (``a`` itself if
    ``e == 0``)."""
    if e == 0:
        return a
    dt = a.dtype  # type: ignore[attr-defined]
    lo, hi = _NORMAL_POWERS.get(dt, (1, 0)) if xp is np else (1, 0)
    if lo <= e <= hi:
        # the product with 2^e, a number of a's dtype, rounds as ldexp does (both are
        # correctly rounded: the same bits); NumPy vectorizes it, where its ldexp calls
        # libm once per entry
        return a * dt.type(2.0**e)  # type: ignore[no-any-return]
    out = xp.ldexp(a, int(e))
    return out.astype(dt, copy=False) if out.dtype != dt else out  # type: ignore[no-any-return]


def array_exponent(xp: Any, *arrays: Any) -> int:
    """The binary exponent of the largest magnitude over ``arrays`` (None entries skipped)."""
    m = 0.0
    for a in arrays:
        if a is not None and a.size:
            m = max(m, float(xp.max(xp.abs(a))))
    return exponent(m)


def max_exponent(big: float, dtype: Any) -> int:
    """``array_exponent`` of arrays cast to ``dtype`` from ``big``, their largest magnitude
    before the cast (as validation saw them): rounding is monotonic, so the largest rounded
    magnitude is the rounded largest one (and overflows to infinity as it does)."""
    if np.dtype(dtype) != np.float64:
        with np.errstate(over="ignore"):
            big = float(np.asarray(big, dtype=dtype))
    return exponent(big)


#: Host arrays from this many entries are checked by the core in one pass (no boolean
#: temporary, threads); smaller ones by NumPy, whose call costs less there.
_CORE_FINITE_MIN = 1 << 14


def all_finite(a: Any, xp: Any) -> bool:
    """Whether every entry of ``a`` is finite (nothing can overflow, unlike a sum)."""
    # (the core reads aligned, contiguous memory: anything else goes to NumPy)
    if (
        xp is np
        and a.size >= _CORE_FINITE_MIN
        and a.flags.aligned
        and (a.flags.c_contiguous or a.flags.f_contiguous)
    ):
        check = _FINITE.get(a.dtype)
        if check is not None:
            return bool(check(a))
    return bool(xp.isfinite(a).all())


def cast_outputs(a: Any, dtype: Any, name: str, xp: Any) -> Any:
    """``a`` in the output ``dtype``; a clear error (not an overflow warning) when a finite
    result does not fit it, e.g. float64 results above 3.4e38 for a float32 kernel."""
    dtype = np.dtype(dtype)
    if a is None or a.dtype == dtype:
        return a
    if a.size and dtype.itemsize < np.dtype(a.dtype).itemsize:
        big = float(xp.max(xp.abs(a)))
        if math.isfinite(big) and big > float(np.finfo(dtype).max):
            raise TangentflowError(
                f"the {name} reach {big:.3e}, beyond the range of the kernel's dtype {dtype} "
                f"(max {float(np.finfo(dtype).max):.3e}); pass the kernel as float64 to get "
                "float64 results"
            )
    return a.astype(dtype, copy=False)


def symmetrize(a: Any) -> Any:
    """The exactly symmetric ``(A + Aᵀ)/2`` of a square 2-D array (a new array)."""
    return (a + a.T) * 0.5
