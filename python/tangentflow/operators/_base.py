"""The operator protocol of the kernel model: ``Operator``, ``is_operator``, ``as_operator``.

A kernel operator is anything with ``.shape``, ``.dtype`` and ``.matmat(V)``: the Krylov
path of the kernel model touches the kernel only through block products
(docs/scale.md). ``as_operator`` wraps such an object (or a stored array) into an
``Operator``, the one type the model uses: host float64 products, a product counter and
an optional cheap diagonal.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from tangentflow import _devices

__all__ = ["Operator", "as_operator", "is_operator"]

FloatArray = npt.NDArray[np.float64]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_dask_array(obj: object) -> bool:
    """A ``dask.array.Array`` (without importing dask when it is not imported yet)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(obj, da.Array)


def to_host(a: Any) -> FloatArray:
    """A product result as a NumPy float64 array (Dask computed, CuPy copied to the host)."""
    if is_dask_array(a):
        a = a.compute()
    if _devices.is_gpu_array(a):
        cp = _devices.cupy_or_none()
        if cp is None:
            raise TypeError("an operator returned a GPU array but CuPy is not available")
        a = cp.asnumpy(cp.asarray(a))
    return np.asarray(a, dtype=np.float64)


def check_shape(shape: Any, name: str) -> tuple[int, int]:
    """``shape`` as a 2-tuple of non-negative ints (Dask's unknown NaN sizes refused)."""
    try:
        dims: tuple[Any, ...] = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must have a 2-D shape, got shape {shape!r}") from None
    if len(dims) != 2:
        raise ValueError(f"{name} must be 2-D, got shape {dims}")
    out = []
    for s in dims:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or int(s) < 0:
            raise ValueError(
                f"{name} must have a 2-D shape of known, non-negative sizes, got shape {dims} "
                "(for a Dask array with unknown chunk sizes call compute_chunk_sizes() first)"
            )
        out.append(int(s))
    return out[0], out[1]


def check_dtype(dtype: Any, name: str) -> np.dtype[Any]:
    """float32 or float64 (the dtypes of a kernel), else a TypeError naming ``name``."""
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must have a real float dtype, got dtype {dtype!r}") from None
    if dt not in _FLOATS:
        raise TypeError(f"{name} must have dtype float32 or float64, got dtype {dt}")
    return dt


class Operator:
    """A kernel operator: an ``(n_rows, n_cols)`` matrix known through block products.

    Subclasses implement ``_matmat`` (and ``diagonal`` when it is cheap). ``matmat``
    checks the block, calls ``_matmat`` and counts the columns applied.

    Attributes
    ----------
    shape : tuple of int
        ``(n_rows, n_cols)``.
    dtype : numpy.dtype
        float32 or float64: the dtype of the kernel's entries (products are float64).
    matvecs : int
        Columns applied so far (a product with an ``(n_cols, p)`` block counts ``p``).
    """

    shape: tuple[int, int]
    dtype: np.dtype[Any]
    matvecs: int

    def __init__(self, shape: tuple[int, int], dtype: np.dtype[Any]) -> None:
        self.shape = shape
        self.dtype = dtype
        self.matvecs = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}>"

    def matmat(self, v: npt.ArrayLike) -> FloatArray:
        """``K @ v`` for a block ``v`` of shape ``(n_cols, p)``, as a NumPy float64 array."""
        blk = np.asarray(v)
        if _devices.is_gpu_array(v) or blk.dtype.kind not in "biuf":
            raise TypeError(f"v must be a real NumPy array, got {type(v).__name__}")
        if blk.ndim != 2 or blk.shape[0] != self.shape[1]:
            raise ValueError(
                f"v must have shape ({self.shape[1]}, p) for an operator of shape "
                f"{self.shape}, got shape {blk.shape}"
            )
        if blk.dtype != np.float64 or not (blk.flags.c_contiguous or blk.flags.f_contiguous):
            blk = np.ascontiguousarray(blk, dtype=np.float64)
        if blk.shape[1] == 0 or self.shape[0] == 0:
            return np.zeros((self.shape[0], blk.shape[1]))
        out = to_host(self._matmat(blk))
        if out.shape != (self.shape[0], blk.shape[1]):
            raise ValueError(
                f"{self!r} returned a product of shape {out.shape}, expected "
                f"{(self.shape[0], blk.shape[1])}"
            )
        self.matvecs += blk.shape[1]
        return out

    def matvec(self, v: npt.ArrayLike) -> FloatArray:
        """``K @ v`` for a vector ``v`` of length ``n_cols``."""
        vec = np.asarray(v)
        if vec.ndim != 1:
            raise ValueError(f"v must be 1-D of length {self.shape[1]}, got shape {vec.shape}")
        return self.matmat(vec[:, None])[:, 0]

    def diagonal(self) -> FloatArray | None:
        """The diagonal of a square operator as float64, or None when not cheaply known."""
        return None

    def _matmat(self, v: FloatArray) -> Any:
        raise NotImplementedError


class _Wrapped(Operator):
    """A duck-typed operator (``scipy.sparse.linalg.LinearOperator`` and the like)."""

    def __init__(self, obj: Any, name: str) -> None:
        super().__init__(check_shape(obj.shape, name), check_dtype(obj.dtype, name))
        self._obj = obj

    def __repr__(self) -> str:
        return f"<operator wrapping {type(self._obj).__name__} shape={self.shape}>"

    def _matmat(self, v: FloatArray) -> Any:
        return self._obj.matmat(v)

    def diagonal(self) -> FloatArray | None:
        diag = getattr(self._obj, "diagonal", None)
        if not callable(diag) or self.shape[0] != self.shape[1]:
            return None
        d = diag()
        if d is None:
            return None
        d = to_host(d)
        if d.shape != (self.shape[0],):
            raise ValueError(
                f"{self!r}.diagonal() returned shape {d.shape}, expected ({self.shape[0]},)"
            )
        return d


def is_operator(obj: object) -> bool:
    """True for a kernel operator: a non-array object with ``.shape``, ``.dtype`` and a
    callable ``.matmat`` (SciPy ``LinearOperator``, the operators of this package), or a
    ``dask.array.Array``. False for NumPy, JAX, CuPy arrays, lists and scalars."""
    if isinstance(obj, Operator) or is_dask_array(obj):
        return True
    if isinstance(obj, np.ndarray) or _devices.is_gpu_array(obj):
        return False
    return (
        hasattr(obj, "shape") and hasattr(obj, "dtype") and callable(getattr(obj, "matmat", None))
    )


def as_operator(obj: object, name: str) -> Operator:
    """``obj`` as an :class:`Operator`, validated (a TypeError/ValueError naming ``name``).

    Operators of this package are returned as they are; Dask arrays and stored arrays
    (NumPy, memory-mapped, CuPy) are wrapped by :func:`tangentflow.operators.stored`; any
    other object with ``.shape``, ``.dtype`` and ``.matmat`` is wrapped as it is (its
    results are brought to the host as float64).
    """
    if isinstance(obj, Operator):
        return obj
    if is_dask_array(obj) or isinstance(obj, np.ndarray) or _devices.is_gpu_array(obj):
        from ._stored import stored_operator

        return stored_operator(obj, None, name)
    if not is_operator(obj):
        raise TypeError(
            f"{name} must be a kernel operator (an object with .shape, .dtype and .matmat, "
            f"or a Dask array), got {type(obj).__name__}"
        )
    return _Wrapped(obj, name)
