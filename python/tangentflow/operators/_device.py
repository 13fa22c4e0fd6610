"""The lazy fully connected kernel on a device (CuPy): row blocks computed and multiplied
on the GPU, written against an array module ``xp`` (CI runs it with NumPy as ``xp`` and
checks it against the Rust core's fused product).

The recursion is the one of ``tangentflow.kernels.fully_connected`` (its docstring and
rust/core/src/kernels/mod.rs), here as whole-block array operations: a block of
``chunk_size × N2`` entries lives on the device at a time (the GPU has the memory; the
CPU path tiles finer). The symmetric kernel's diagonal entries use the exact
same-input values, as the core does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._base import FloatArray, Operator, to_host

__all__ = ["DeviceFullyConnected"]


def _variances(xp: Any, x: Any, layers: int, act: str, w2: float, b2: float) -> list[Any]:
    """Per-example variances ``q_l`` before each layer and after the last (``L + 1``)."""
    q = w2 * xp.sum(x * x, axis=1) / x.shape[1] + b2
    out = [q]
    for _ in range(layers):
        if act == "relu":
            e = xp.where(q > 0, 0.5 * q, 0.0)
        else:
            e = 2.0 / math.pi * xp.arcsin(2.0 * q / (1.0 + 2.0 * q))
        q = w2 * e + b2
        out.append(q)
    return out


def _diag_ntk(xp: Any, qs: list[Any], act: str, w2: float) -> Any:
    """``Θ_ii`` of the same-input kernel from the variances ``qs``."""
    th = qs[0]
    for q, q_new in zip(qs[:-1], qs[1:]):
        if act == "relu":
            ed = xp.where(q > 0, 0.5, 0.25)
        else:
            ed = 4.0 / math.pi / xp.sqrt(1.0 + 4.0 * q)
        th = q_new + w2 * ed * th
    return th


def block(
    xp: Any,
    xa: Any,
    xb: Any,
    qa: list[Any],
    qb: list[Any],
    spec: tuple[int, str, float, float],
    ntk: bool,
) -> Any:
    """The ``(len(xa), len(xb))`` block of the kernel, on ``xp``'s device."""
    layers, act, w_std, b_std = spec
    w2, b2 = w_std * w_std, b_std * b_std
    k = (w2 / xa.shape[1]) * (xa @ xb.T) + b2
    th = k
    for layer in range(layers):
        q1, q2 = qa[layer][:, None], qb[layer][None, :]
        if act == "relu":
            r1, r2 = xp.sqrt(q1), xp.sqrt(q2)
            i1 = xp.where(r1 > 0, 1.0 / xp.where(r1 > 0, r1, 1.0), 0.0)
            i2 = xp.where(r2 > 0, 1.0 / xp.where(r2 > 0, r2, 1.0), 0.0)
            c = xp.clip(k * i1 * i2, -1.0, 1.0)
            pm = math.pi - xp.arccos(c)
            sin = xp.sqrt((1.0 - c) * (1.0 + c))
            k_new = w2 * (r1 * r2 / (2 * math.pi) * (sin + pm * c)) + b2
            ed = pm / (2 * math.pi)
        else:
            a1, a2 = 1.0 + 2.0 * q1, 1.0 + 2.0 * q2
            arg = xp.clip(2.0 * k / xp.sqrt(a1 * a2), -1.0, 1.0)
            k_new = w2 * (2.0 / math.pi * xp.arcsin(arg)) + b2
            det = xp.maximum(a1 * a2 - 4.0 * k * k, np.finfo(np.float64).tiny)
            ed = 4.0 / math.pi / xp.sqrt(det)
        if ntk:
            th = k_new + w2 * ed * th
        k = k_new
    return th if ntk else k


class DeviceFullyConnected(Operator):
    """``K(x1, x2)`` (NNGP or NTK) as a lazy operator on ``xp``'s device: per product, row
    blocks of ``chunk_size`` rows are computed and multiplied by ``V`` there; the result
    comes to the host. Built by :func:`tangentflow.operators.fully_connected` for CuPy
    inputs."""

    def __init__(
        self,
        x1: FloatArray,
        x2: FloatArray | None,
        spec: tuple[int, str, float, float],
        kind: str,
        chunk_size: int,
        xp: Any,
    ) -> None:
        n2 = x1.shape[0] if x2 is None else x2.shape[0]
        super().__init__((x1.shape[0], n2), np.dtype(np.float64))
        self.kind, self.spec, self.chunk_size, self.xp = kind, spec, chunk_size, xp
        self.symmetric = x2 is None
        layers, act, w, b = spec
        self._x1 = xp.asarray(x1)
        self._x2 = self._x1 if x2 is None else xp.asarray(x2)
        self._q1 = _variances(xp, self._x1, layers, act, w * w, b * b)
        self._q2 = self._q1 if x2 is None else _variances(xp, self._x2, layers, act, w * w, b * b)
        self._diag: Any = None
        if self.symmetric:
            qs = self._q1
            self._diag = _diag_ntk(xp, qs, act, w * w) if kind == "ntk" else qs[-1]

    def _matmat(self, v: FloatArray) -> FloatArray:
        xp = self.xp
        vd = xp.asarray(v)
        out = np.empty((self.shape[0], v.shape[1]))
        for r0 in range(0, self.shape[0], self.chunk_size):
            r1 = min(r0 + self.chunk_size, self.shape[0])
            qa = [q[r0:r1] for q in self._q1]
            kb = block(xp, self._x1[r0:r1], self._x2, qa, self._q2, self.spec, self.kind == "ntk")
            if self.symmetric:
                idx = xp.arange(r1 - r0)
                kb[idx, idx + r0] = self._diag[r0:r1]
            out[r0:r1] = to_host(kb @ vd)
        return out

    def diagonal(self) -> FloatArray | None:
        if not self.symmetric:
            return None
        d: FloatArray = to_host(self._diag).copy()
        return d
