"""Stored kernels as operators: NumPy (memory-mapped too), Dask/Zarr and CuPy arrays."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from tangentflow import _devices

from ._base import FloatArray, Operator, check_dtype, check_shape, is_dask_array, to_host

__all__ = ["stored", "stored_operator", "check_chunk_size", "row_blocks"]

#: Rows per block of a memory-mapped product when no chunk size is given: about 64 MiB of
#: float64 kernel rows per block.
_MEMMAP_BLOCK_BYTES = 64 << 20


def check_chunk_size(chunk_size: object) -> int | None:
    """None or a positive int (rows per block of a product)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(
            f"chunk_size must be None or a positive int, got {type(chunk_size).__name__}"
        )
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
    return int(chunk_size)


def row_blocks(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(r0, r1), ...]`` covering ``range(n)`` in blocks of ``chunk`` rows."""
    return [(r0, min(r0 + chunk, n)) for r0 in range(0, n, chunk)]


class _Array(Operator):
    """A stored array on the host (NumPy, ``np.memmap``) or a device (``xp``: CuPy; the
    logic runs with NumPy as ``xp`` in CI). Products are ``k[rows] @ v`` per row block on
    the array's device; results come back to the host."""

    def __init__(self, k: Any, chunk_size: int | None, xp: Any, name: str) -> None:
        super().__init__(check_shape(k.shape, name), check_dtype(k.dtype, name))
        self._k = k
        self._xp = xp
        if chunk_size is None and isinstance(k, np.memmap):
            row_bytes = max(1, self.shape[1] * k.dtype.itemsize)
            chunk_size = max(1, _MEMMAP_BLOCK_BYTES // row_bytes)
        self._chunk = chunk_size

    def _matmat(self, v: FloatArray) -> FloatArray:
        xp = self._xp
        vd = xp.asarray(v, dtype=self._k.dtype)
        if self._chunk is None or self._chunk >= self.shape[0]:
            return to_host(self._k @ vd)
        out = np.empty((self.shape[0], v.shape[1]))
        for r0, r1 in row_blocks(self.shape[0], self._chunk):
            out[r0:r1] = to_host(self._k[r0:r1] @ vd)
        return out

    def diagonal(self) -> FloatArray | None:
        if self.shape[0] != self.shape[1]:
            return None
        d: FloatArray = to_host(self._xp.diagonal(self._k)).copy()
        return d


class _Dask(Operator):
    """A Dask array (``da.from_zarr(...)``, ``da.from_array(np.load(..., mmap_mode="r"))``,
    CuPy chunks on dask-cuda workers): products are Dask's blocked ``k @ v`` on the active
    scheduler, row blocks of ``chunk_size`` rows when given (else the array's own chunks);
    the result comes to the host."""

    def __init__(self, k: Any, chunk_size: int | None, name: str) -> None:
        super().__init__(check_shape(k.shape, name), check_dtype(k.dtype, name))
        if chunk_size is not None:
            k = k.rechunk({0: chunk_size})
        self._k = k
        self._diag: FloatArray | None = None

    def _matmat(self, v: FloatArray) -> FloatArray:
        import dask.array as da

        # V on the chunks' device: CuPy chunks (dask-cuda) take a CuPy V, products stay there.
        xp = np
        if _devices.is_gpu_array(getattr(self._k, "_meta", None)):
            xp = _devices.cupy_or_none()
        vx = xp.asarray(v, dtype=self._k.dtype)
        vd = da.from_array(vx, chunks=(self._k.chunks[1], -1), asarray=False)
        return to_host(da.matmul(self._k, vd).compute())

    def diagonal(self) -> FloatArray | None:
        if self.shape[0] != self.shape[1]:
            return None
        if self._diag is None:
            import dask.array as da

            self._diag = to_host(da.diagonal(self._k).compute())
        d: FloatArray = self._diag.copy()
        return d


def stored_operator(k: Any, chunk_size: int | None, name: str) -> Operator:
    """The operator of a stored array ``k`` (validated; ``name`` in the messages)."""
    if is_dask_array(k):
        return _Dask(k, chunk_size, name)
    if _devices.is_gpu_array(k):
        cp = _devices.cupy_or_none()
        if cp is None:
            raise TypeError(f"{name} is a GPU array but CuPy is not available")
        return _Array(cp.asarray(k), chunk_size, cp, name)
    if isinstance(k, np.ndarray):
        return _Array(k, chunk_size, np, name)
    raise TypeError(
        f"{name} must be a NumPy, memory-mapped, CuPy or Dask array, got {type(k).__name__}"
    )


def stored(k: Any, chunk_size: int | None = None) -> Operator:
    """A stored kernel as an operator.

    Parameters
    ----------
    k : array, shape (N1, N2)
        float32 or float64: a NumPy array, a memory-mapped ``.npy``
        (``np.load(path, mmap_mode="r")``), a Dask array (``da.from_zarr(path)``) or a CuPy
        array. Never copied or modified.
    chunk_size : int, optional
        Rows per block of a product. NumPy: None (default) is one BLAS product;
        memory-mapped: about 64 MiB of rows per block; Dask: the array is rechunked to
        ``chunk_size`` rows (default: its own chunks) and each product is a Dask
        computation on the active scheduler; CuPy: products on the device by blocks.

    Returns
    -------
    Operator
        ``matmat(v)`` returns NumPy float64; ``diagonal()`` is the stored diagonal
        (computed once for a Dask array), None for a rectangular ``k``.
    """
    return stored_operator(k, check_chunk_size(chunk_size), "k")
