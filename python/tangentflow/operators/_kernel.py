"""The fully connected NNGP/NTK as a lazy operator: blocks computed at each product."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from tangentflow import _core, _devices, _validate
from tangentflow.kernels import check_arguments, check_overflow

from ._base import FloatArray, Operator
from ._device import DeviceFullyConnected
from ._schedule import Shared, run_blocks
from ._stored import check_chunk_size, row_blocks

__all__ = ["fully_connected", "FullyConnected"]

#: Rows per product task when ``chunk_size`` is None.
DEFAULT_CHUNK = 4096
#: Block boundaries of the symmetric product are multiples of the core's tile side.
_ALIGN = 64


def _sym_blocks(n: int, chunk: int) -> list[tuple[int, int]]:
    """Row blocks of about equal work for the lower-triangle product: block ``k`` of ``T``
    ends at ``n·sqrt(k/T)`` (rounded to the tile side), so each holds ``n²/(2T)`` pairs."""
    t = max(1, math.ceil(n / chunk))
    ends = sorted({min(n, _ALIGN * round(n * math.sqrt(k / t) / _ALIGN)) for k in range(1, t)})
    ends = [e for e in ends if 0 < e < n] + [n]
    return list(zip([0, *ends[:-1]], ends))


def _product_block(
    xs: tuple[FloatArray, FloatArray | None],
    v: FloatArray,
    r0: int,
    r1: int,
    spec: tuple[int, str, float, float],
    kind: str,
) -> FloatArray:
    """One task: the symmetric kernel's lower-triangle contribution of rows ``r0:r1``
    (an ``(r1, p)`` partial sum) or the rectangular kernel's rows ``r0:r1`` times ``v``."""
    x1, x2 = xs
    out: FloatArray = _core.fc_matmat_f64(x1, x2, r0, r1, *spec, kind == "ntk", v)
    return out


def _diagonal(x: FloatArray, spec: tuple[int, str, float, float], kind: str) -> FloatArray:
    nngp, ntk = _core.fc_diagonal_f64(x, *spec)
    return ntk if kind == "ntk" else nngp


class FullyConnected(Operator):
    """``K(x1, x2)`` of a fully connected network (NNGP or NTK) as a lazy operator.

    Every product recomputes the kernel tile by tile in the Rust core (nothing of size
    ``N1 × N2`` is ever stored) and runs as row-block tasks on the active Dask scheduler.
    Built by :func:`tangentflow.operators.fully_connected`.
    """

    def __init__(
        self,
        x1: FloatArray,
        x2: FloatArray | None,
        spec: tuple[int, str, float, float],
        kind: str,
        chunk_size: int,
    ) -> None:
        n2 = x1.shape[0] if x2 is None else x2.shape[0]
        super().__init__((x1.shape[0], n2), np.dtype(np.float64))
        self.kind = kind
        self.spec = spec
        self.chunk_size = chunk_size
        self.symmetric = x2 is None
        self._shared = Shared((x1, x2))
        self._diag: FloatArray | None = None
        #: Kernel entries evaluated so far (a symmetric product evaluates the lower
        #: triangle once for all its columns).
        self.entries = 0

    def __repr__(self) -> str:
        layers, act, w, b = self.spec
        return (
            f"<tangentflow.operators.fully_connected {self.kind} shape={self.shape} "
            f"hidden_layers={layers} activation={act!r} w_std={w} b_std={b}>"
        )

    def blocks(self) -> list[tuple[int, int]]:
        """The row blocks of one product (one Dask task each)."""
        if self.symmetric:
            return _sym_blocks(self.shape[0], self.chunk_size)
        return row_blocks(self.shape[0], self.chunk_size)

    def _matmat(self, v: FloatArray) -> FloatArray:
        blocks = self.blocks()
        parts = run_blocks(_product_block, self._shared, v, blocks, self.spec, self.kind)
        n, m = self.shape
        if self.symmetric:
            out = np.zeros((n, v.shape[1]))
            for part in parts:
                out[: part.shape[0]] += part
            self.entries += n * (n + 1) // 2
        else:
            out = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
            self.entries += n * m
        check_overflow(out, self.kind)
        return out

    def diagonal(self) -> FloatArray | None:
        """The per-example variances ``K(x_i, x_i)`` (O(N·hidden_layers)); None for the
        rectangular operator ``K(x1, x2)``."""
        if not self.symmetric:
            return None
        if self._diag is None:
            x1, _ = self._shared.data
            self._diag = _diagonal(x1, self.spec, self.kind)
            check_overflow(self._diag, self.kind)
        d: FloatArray = self._diag.copy()
        return d


def fully_connected(
    x1: npt.ArrayLike,
    x2: npt.ArrayLike | None = None,
    *,
    hidden_layers: int = 3,
    activation: Literal["relu", "erf"] = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    get: Literal["nngp", "ntk"] = "ntk",
    chunk_size: int | None = None,
) -> Operator:
    """The NNGP or NTK of :func:`tangentflow.kernels.fully_connected` as a lazy operator.

    Parameters
    ----------
    x1, x2, hidden_layers, activation, w_std, b_std
        As in :func:`tangentflow.kernels.fully_connected` (same defaults, same checks).
        ``x2 = None`` (or equal to ``x1``) is the symmetric train kernel ``K(x1, x1)``;
        otherwise the rectangular ``K(x1, x2)`` (e.g. test × train). CuPy inputs give
        an operator on the GPU: each product computes row blocks of ``chunk_size × N2``
        entries and multiplies them on the device, the result comes to the host.
    get : {"ntk", "nngp"}, default "ntk"
        The one kernel of the operator.
    chunk_size : int, optional
        Rows per product task (default 4096). The symmetric kernel evaluates its lower
        triangle once per product in ``ceil(N / chunk_size)`` blocks of equal work.

    Returns
    -------
    Operator
        ``matmat(v)``: ``K @ v`` (float64, ``v`` of shape ``(N2, p)``), the kernel
        recomputed tile by tile in the Rust core with the GIL released, as row-block
        tasks on the active Dask scheduler (threads by default, a
        ``dask.distributed.Client`` when one is active; in this process without Dask).
        Memory: O(tile² + N·p) per task. ``diagonal()``: the per-example variances.
    """
    kind = _validate.choice(get, "get", ("ntk", "nngp"))
    cp = None
    if _devices.is_gpu_array(x1) or _devices.is_gpu_array(x2):
        cp = _devices.cupy_or_none()
        if cp is None:
            raise TypeError("x1/x2 are GPU arrays but CuPy is not available")
        # Validated on the host (one copy), computed on the device.
        x1 = cp.asnumpy(cp.asarray(x1))
        x2 = None if x2 is None else cp.asnumpy(cp.asarray(x2))
    args = check_arguments(
        x1, x2, hidden_layers=hidden_layers, activation=activation, w_std=w_std, b_std=b_std
    )
    chunk = check_chunk_size(chunk_size) or DEFAULT_CHUNK
    if cp is not None:
        return DeviceFullyConnected(args.x1, args.x2, args.spec, kind, chunk, cp)
    return FullyConnected(args.x1, args.x2, args.spec, kind, chunk)
