"""``Gaussian``: the (mean, covariance) result of ``Ensemble`` and ``GaussianProcess``.

Shapes follow docs/numerics.md §2: ``mean`` is ``T + output shape`` and ``covariance`` is
``T + zip(kept, kept)`` over the non-traced output axes (pair-interleaved), implicitly
``⊗ I`` over the traced axes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from ._devices import cupy_or_none, is_gpu_array
from ._shapes import Layout

__all__ = ["Gaussian"]


class _GaussianFields(NamedTuple):
    mean: Any
    covariance: Any


class Gaussian(_GaussianFields):
    """A Gaussian ``(mean, covariance)``; ``covariance`` is None when it was not computed.

    ``mean`` has shape ``T + output shape``; ``covariance`` has shape
    ``T + (d0, d0, d1, d1, ...)`` over the non-traced output axes (pair-interleaved, as
    neural-tangents lays it out) and is implicitly ``⊗ I`` over the traced axes, so
    outputs that differ only in a traced index are independent with the same
    covariance. Each time of a time-stacked Gaussian is its own distribution.
    """

    # Set by Ensemble/GaussianProcess (number of time axes, traced output axes); a
    # Gaussian built by hand infers them from the shapes (see ``_layout_info``).
    _info: tuple[int, tuple[int, ...]] | None = None

    @classmethod
    def _with_layout(
        cls, mean: Any, covariance: Any, time_ndim: int, traced: tuple[int, ...]
    ) -> Gaussian:
        g = cls(mean, covariance)
        g._info = (int(time_ndim), tuple(int(a) for a in traced))
        return g

    def _layout_info(self) -> tuple[int, tuple[int, ...]]:
        if self._info is not None:
            return self._info
        m, c = tuple(self.mean.shape), tuple(self.covariance.shape)
        # Try the interpretations (number of time axes, kept output axes) in order; kept
        # axes are matched leftmost, which is the layout of trace_axes=None/(-1,).
        for tn in range(min(len(m), len(c)) + 1):
            rest = len(c) - tn
            if rest % 2 or m[:tn] != c[:tn]:
                continue
            first, second = c[tn::2], c[tn + 1 :: 2]
            if first != second:
                continue
            out = m[tn:]
            kept, j = [], 0
            for a, d in enumerate(out):
                if j < len(first) and d == first[j]:
                    kept.append(a)
                    j += 1
            if j == len(first) and len(out) >= 1:
                return tn, tuple(a for a in range(len(out)) if a not in kept)
        raise ValueError(
            f"covariance of shape {c} does not fit mean of shape {m}: expected "
            "T + (d0, d0, d1, d1, ...) over the non-traced axes of the mean"
        )

    def sample(self, n: int, rng: Any = None) -> Any:
        """``n`` independent draws, shape ``(n,) + mean.shape``.

        Uses a symmetric square root of the covariance (eigendecomposition, tiny negative
        eigenvalues clipped to 0), independently for each time and each traced index.
        ``rng``: None, an int seed, or a ``numpy.random.Generator`` (on CuPy data a CuPy
        generator is also accepted; a NumPy generator draws on the host).
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self.covariance is None:
            raise ValueError("cannot sample: covariance is None (computed with compute_cov=False)")
        xp = _namespace(self.mean)
        mean = xp.asarray(self.mean)
        cov = xp.asarray(self.covariance)
        tn, traced = self._layout_info()
        tshape, oshape = tuple(mean.shape[:tn]), tuple(mean.shape[tn:])
        kept = tuple(a for a in range(len(oshape)) if a not in traced)
        lay = Layout(oshape, tuple(traced), kept)
        nt, d, r = math.prod(tshape), lay.rows, lay.cols
        m = lay.flatten(xp.reshape(mean, (nt,) + oshape), xp).astype(xp.float64)
        nk = len(kept)
        c = xp.reshape(cov, (nt,) + tuple(cov.shape[tn:]))
        perm = (0,) + tuple(range(1, 2 * nk + 1, 2)) + tuple(range(2, 2 * nk + 2, 2))
        c = xp.reshape(xp.transpose(c, perm), (nt, d, d)).astype(xp.float64)
        c = (c + xp.swapaxes(c, -1, -2)) * 0.5
        w, v = xp.linalg.eigh(c)
        root = v * xp.sqrt(xp.maximum(w, 0.0))[:, None, :]
        z = _standard_normal(xp, rng, (n, nt, d, r))
        s = m[None] + xp.matmul(root[None], z)
        s = lay.unflatten(s, oshape, xp)
        return xp.reshape(s, (n,) + tshape + oshape).astype(mean.dtype, copy=False)


def _namespace(a: Any) -> Any:
    if is_gpu_array(a):
        cp = cupy_or_none()
        if cp is None:
            raise TypeError("the Gaussian holds GPU arrays but CuPy is not installed")
        return cp
    return np


def _standard_normal(xp: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    if rng is not None and not (
        isinstance(rng, (numbers.Integral, np.random.Generator)) and not isinstance(rng, bool)
    ):
        if xp is not np and type(rng).__module__.split(".")[0] == "cupy":
            return rng.standard_normal(shape, dtype=xp.float64)
        raise TypeError(
            f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
        )
    if xp is np:
        gen = (
            rng
            if isinstance(rng, np.random.Generator)
            else np.random.default_rng(None if rng is None else int(rng))
        )
        return gen.standard_normal(shape)
    if isinstance(rng, np.random.Generator):
        return xp.asarray(rng.standard_normal(shape))
    return xp.random.default_rng(rng).standard_normal(shape, dtype=xp.float64)
