"""The array-namespace backend: the same primitives as the Rust core, written once
against an array module ``xp``. With CuPy it is the GPU backend (cuSOLVER ``syevd`` and
``potrf``, batched GEMMs, everything on the device); with NumPy it runs the very same code
on the CPU, which is how CI tests it against the Rust core.
"""

from __future__ import annotations

import math

import numpy as np

from .._errors import LinAlgError

#: Probe vectors and steps of the inverse iteration of the condition estimate (as in Rust).
_PROBES, _STEPS = 4, 3


def cupy_or_none():
    try:
        import cupy
    except Exception:  # noqa: BLE001 - no CuPy, or CuPy without a working CUDA runtime
        return None
    return cupy


def is_gpu_array(a) -> bool:
    """CuPy arrays, and GPU arrays that CuPy can take through DLPack (torch, JAX)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        return True
    if hasattr(a, "__cuda_array_interface__"):
        return True
    dev = getattr(a, "__dlpack_device__", None)
    if dev is not None and mod in ("torch", "jax", "jaxlib"):
        try:
            return int(dev()[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
        except Exception:  # noqa: BLE001
            return False
    return False


class XpBackend:
    def __init__(self, xp):
        self.xp = xp
        self.name = "cupy" if xp.__name__.startswith("cupy") else "numpy"
        self._gpu = self.name == "cupy"

    def __reduce__(self):
        from . import by_name

        return (by_name, (self.name,))

    # -- conversion --------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        xp = self.xp
        if self._gpu and not isinstance(a, xp.ndarray):
            if is_gpu_array(a) and hasattr(a, "__dlpack__"):
                a = xp.from_dlpack(a)
        return xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return a.get() if self._gpu else np.asarray(a)

    def _errstate(self):
        if self._gpu:
            import cupyx

            return cupyx.errstate(linalg="raise")
        import contextlib

        return contextlib.nullcontext()

    # -- kernels -------------------------------------------------------------------------
    def _row_blocks(self, n):
        """Row blocks of about N/8 rows: O(N²) passes with N²/8-sized temporaries (device
        memory is the budget on the GPU)."""
        step = max(1, -(-n // 8))
        return [(i, min(n, i + step)) for i in range(0, n, step)]

    def kernel_stats(self, k):
        xp = self.xp
        n = k.shape[0]
        max_abs = max_asym = 0.0
        for i0, i1 in self._row_blocks(n):
            rows = k[i0:i1]
            if not bool(xp.all(xp.isfinite(rows))):
                return 0.0, 0.0, 0.0, False
            max_abs = max(max_abs, float(xp.max(xp.abs(rows))))
            max_asym = max(max_asym, float(xp.max(xp.abs(rows - k[:, i0:i1].T))))
        trace = float(xp.trace(k)) if n else 0.0
        return max_abs, max_asym, trace, True

    def _exactly_symmetric(self, a):
        xp = self.xp
        blocks = self._row_blocks(a.shape[0])
        return all(bool(xp.all(a[i0:i1] == a[:, i0:i1].T)) for i0, i1 in blocks)

    def _sym(self, k, dtype, shift=0.0):
        """``sym(K) + shift·I`` in ``dtype``; an exactly symmetric kernel already in
        ``dtype`` is used as it is (never written: the solvers copy their input)."""
        xp = self.xp
        a = xp.asarray(k, dtype=dtype)
        if not shift and self._exactly_symmetric(a):
            return a
        a = a + a.T  # one N² temporary
        a *= 0.5
        if shift:
            idx = xp.arange(a.shape[0])
            a[idx, idx] += shift
        return a

    def eigh(self, k, dtype):
        xp = self.xp
        a = self._sym(k, dtype)
        try:
            with self._errstate():
                w, v = xp.linalg.eigh(a)
        except Exception as e:  # noqa: BLE001 - numpy/cupy LinAlgError or cuSOLVER error
            raise LinAlgError(f"the symmetric eigensolver failed: {e}") from e
        del a
        if not bool(xp.all(xp.isfinite(w))):
            raise LinAlgError("the symmetric eigensolver returned non-finite eigenvalues")
        return w.astype(xp.float64), v

    def _solve_tri(self, l, b, lower, trans=False):
        if self._gpu:
            from cupyx.scipy.linalg import solve_triangular
        else:
            try:
                from scipy.linalg import solve_triangular
            except ImportError:  # pragma: no cover - scipy is a test dependency
                m = l.T if trans else l
                return self.xp.linalg.solve(m, b)
        return solve_triangular(l, b, lower=lower, trans=1 if trans else 0, check_finite=False)

    def cholesky_solve(self, k, shift, rhs):
        xp = self.xp
        a = self._sym(k, rhs.dtype, shift)
        norm_inf = float(xp.max(xp.sum(xp.abs(a), axis=1))) if a.size else 0.0
        try:
            with self._errstate():
                l = xp.linalg.cholesky(a)
        except Exception:  # noqa: BLE001 - not positive definite: caller falls back
            return None
        del a
        if not bool(xp.all(xp.isfinite(xp.diagonal(l)))) or not bool(xp.all(xp.diagonal(l) > 0)):
            return None
        n, r = rhs.shape
        p = min(_PROBES, n)
        i = xp.arange(n, dtype=xp.float64)[:, None] + 1.0
        j = xp.arange(p, dtype=xp.float64)[None, :]
        probes = xp.modf(i * (0.618033988749895 + j * 0.414213562))[0] - 0.5
        probes, _ = xp.linalg.qr(probes)
        x = xp.concatenate([rhs, probes.astype(rhs.dtype)], axis=1)
        mu_min = math.inf
        for step in range(_STEPS):
            cols = x if step == 0 else x[:, r:]
            before = cols[:, -p:].copy()
            y = self._solve_tri(l, self._solve_tri(l, cols, lower=True), lower=True, trans=True)
            if step == 0:
                x = y
            else:
                x[:, r:] = y
            g = before.T @ y[:, -p:]
            g = self.to_numpy((g + g.T) * 0.5).astype(np.float64)
            top = float(np.linalg.eigvalsh(g)[-1]) if p else 0.0
            if top > 0:
                mu_min = min(mu_min, 1.0 / top)
            q, _ = xp.linalg.qr(x[:, r:])
            x[:, r:] = q
        if not math.isfinite(mu_min):
            mu_min = 0.0
        cond = norm_inf / mu_min if mu_min > 0 else math.inf
        return x[:, :r], norm_inf, mu_min, cond

    # -- dynamics ------------------------------------------------------------------------
    def mode_factors(self, kind, params, mu, times):
        xp = self.xp
        mu = xp.asarray(mu, dtype=xp.float64)[:, None]
        t = xp.asarray(times, dtype=xp.float64)[None, :]
        if bool(xp.any(xp.isnan(t) | (t < 0))):
            raise ValueError("t must be >= 0 (or inf)")
        if kind == "momentum":
            # The oscillator closed form lives in the Rust core; its k×T table is small.
            from .. import _core

            em1, phi = _core.mode_factors(
                kind,
                [float(p) for p in params],
                np.ascontiguousarray(self.to_numpy(mu[:, 0])),
                np.ascontiguousarray(self.to_numpy(t[0])),
            )
            return xp.asarray(em1), xp.asarray(phi)
        inf = xp.isinf(t)
        tf = xp.where(inf, 0.0, t)
        if kind == "flow":
            (scale,) = params
            x = mu * (scale * tf)
            em1 = xp.expm1(-x)
            s = scale * tf
            phi = xp.where(x < 1e-8, s * (1.0 - 0.5 * x), -em1 / mu)
        elif kind == "gd":
            (scale,) = params
            a = scale * mu
            stable = a < 1.0
            y = tf * xp.log1p(-xp.where(stable, a, 0.0))
            e_unstable = xp.power(1.0 - a, tf) - 1.0
            em1 = xp.where(stable, xp.expm1(y), e_unstable)
            phi = -em1 / mu
        else:
            raise ValueError(f"unknown dynamics {kind!r}")
        em1 = xp.where(inf, -1.0, em1)
        phi = xp.where(inf, 1.0 / mu, phi)
        zero = tf == 0
        em1 = xp.where(zero & ~inf, 0.0, em1)
        phi = xp.where(zero & ~inf, 0.0, phi)
        return em1, phi

    def project(self, v, r):
        return v.T @ r

    def test_basis(self, kte, v):
        return kte @ v

    def _apply(self, basis, z, factor, base, sign):
        xp = self.xp
        k, nt = factor.shape
        r = z.shape[1]
        w = (factor.astype(z.dtype)[:, :, None] * z[:, None, :]).reshape(k, nt * r)
        c = (basis @ w).reshape(basis.shape[0], nt, r)
        out = xp.transpose(c, (1, 0, 2))
        return base[None] + out if sign > 0 else base[None] - out

    def train_outputs(self, v, z, em1, f0):
        if v.shape[1] == 0:
            return self.xp.broadcast_to(f0, (em1.shape[1],) + f0.shape).copy()
        return self._apply(v, z, em1, f0, +1)

    def test_outputs(self, kte, v, z, phi, g0):
        m, n = kte.shape
        k = v.shape[1]
        tr = phi.shape[1] * z.shape[1]
        if k == 0:
            return self.xp.broadcast_to(g0, (phi.shape[1],) + g0.shape).copy()
        if m * n * k + m * k * tr <= n * k * tr + m * n * tr:
            return self._apply(kte @ v, z, phi, g0, -1)
        xp = self.xp
        nt, r = phi.shape[1], z.shape[1]
        w = (phi.astype(z.dtype)[:, :, None] * z[:, None, :]).reshape(k, nt * r)
        y = v @ w
        c = (kte @ y).reshape(m, nt, r)
        return g0[None] - xp.transpose(c, (1, 0, 2))

    def test_outputs_cached(self, kv, z, phi, g0):
        if kv.shape[1] == 0:
            return self.xp.broadcast_to(g0, (phi.shape[1],) + g0.shape).copy()
        return self._apply(kv, z, phi, g0, -1)
