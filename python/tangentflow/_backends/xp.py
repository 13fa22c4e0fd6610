"""The array-namespace backend: the same primitives as the Rust core, written once
against an array module ``xp``. With CuPy it is the GPU backend (cuSOLVER ``syevd`` and
``potrf``, batched GEMMs, everything on the device); with NumPy it runs the very same code
on the CPU, which is how CI tests it against the Rust core.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._devices import is_gpu_array
from .._errors import LinAlgError
from .._numerics import exponent, ldexp_float

#: Iterations of Hager's 1-norm estimator and steps of the inverse iteration of the
#: condition estimate, and the seed of its random start (as in the Rust core).
_HAGER_ITERS, _INVERSE_STEPS, _SEED = 5, 3, 0x9E3779B97F4A7C15


class XpBackend:
    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.name = "cupy" if xp.__name__.startswith("cupy") else "numpy"
        self._gpu = self.name == "cupy"
        self.on_gpu = self._gpu
        self.runs_ode = False

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        from . import by_name

        return (by_name, (self.name,))

    # -- conversion --------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        xp = self.xp
        if self._gpu and not isinstance(a, xp.ndarray):
            if is_gpu_array(a) and hasattr(a, "__dlpack__"):
                a = xp.from_dlpack(a)
        return xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return a.get() if self._gpu else np.asarray(a)

    def _errstate(self) -> Any:
        if self._gpu:
            import cupyx

            return cupyx.errstate(linalg="raise")
        import contextlib

        return contextlib.nullcontext()

    # -- kernels -------------------------------------------------------------------------
    def _row_blocks(self, n: int) -> list[tuple[int, int]]:
        """Row blocks of about N/8 rows: O(N²) passes with N²/8-sized temporaries (device
        memory is the budget on the GPU)."""
        step = max(1, -(-n // 8))
        return [(i, min(n, i + step)) for i in range(0, n, step)]

    def kernel_stats(self, k: Any) -> tuple[float, float, float, bool]:
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

    def _exactly_symmetric(self, a: Any) -> bool:
        xp = self.xp
        blocks = self._row_blocks(a.shape[0])
        return all(bool(xp.all(a[i0:i1] == a[:, i0:i1].T)) for i0, i1 in blocks)

    def _scale_exponent(self, k: Any, shift: float = 0.0) -> int:
        """``e`` of the power-of-two scaling ``Ã = 2^-e·A`` (docs/numerics.md, "Scale
        invariance"): the binary exponent of ``max(max|K|, |shift|)``, as in the Rust core."""
        max_abs = self.kernel_stats(k)[0] if k.size else 0.0
        return exponent(max(max_abs, abs(float(shift))))

    def _sym(self, k: Any, dtype: Any, shift: float = 0.0, e: int = 0) -> Any:
        """``2^-e·(sym(K) + shift·I)`` in ``dtype``; the scaling comes first (in the input
        dtype, exact), then the conversion. An exactly symmetric kernel already in ``dtype``
        with ``e = 0`` is used as it is (never written: the solvers copy their input)."""
        xp = self.xp
        a = xp.asarray(k)
        if e:
            a = xp.ldexp(a, -int(e))  # a fresh array
            shift = ldexp_float(shift, -e)
        a = xp.asarray(a, dtype=dtype)
        if not shift and self._exactly_symmetric(a):
            return a
        a = a + a.T  # one N² temporary
        a *= 0.5
        if shift:
            idx = xp.arange(a.shape[0])
            a[idx, idx] += shift
        return a

    def eigh(self, k: Any, dtype: Any) -> tuple[Any, Any, int]:
        xp = self.xp
        e = self._scale_exponent(k)
        a = self._sym(k, dtype, 0.0, e)
        try:
            with self._errstate():
                w, v = xp.linalg.eigh(a)
        except Exception as err:  # noqa: BLE001 - numpy/cupy LinAlgError or cuSOLVER error
            raise LinAlgError(f"the symmetric eigensolver failed: {err}") from err
        del a
        if not bool(xp.all(xp.isfinite(w))):
            raise LinAlgError("the symmetric eigensolver returned non-finite eigenvalues")
        return w.astype(xp.float64), v, e

    def _solve_tri(self, l: Any, b: Any, lower: bool, trans: bool = False) -> Any:
        if self._gpu:
            from cupyx.scipy.linalg import solve_triangular
        else:
            try:
                from scipy.linalg import solve_triangular
            except ImportError:  # pragma: no cover - scipy is a test dependency
                m = l.T if trans else l
                return self.xp.linalg.solve(m, b)
        return solve_triangular(l, b, lower=lower, trans=1 if trans else 0, check_finite=False)

    def _chol_solve(self, l: Any, b: Any) -> Any:
        return self._solve_tri(l, self._solve_tri(l, b, lower=True), lower=True, trans=True)

    def _hager(self, l: Any, n: int) -> float:
        """Hager–Higham lower bound of ``‖A⁻¹‖₁`` (LAPACK ``dlacn2``), ``A = L Lᵀ``."""
        xp = self.xp
        x = xp.full((n, 1), 1.0 / n, dtype=l.dtype)
        est, last_j, last_signs = 0.0, -1, None
        for it in range(_HAGER_ITERS):
            y = self._chol_solve(l, x)
            new_est = float(xp.sum(xp.abs(y)))
            signs = xp.where(y >= 0, 1.0, -1.0).astype(l.dtype)
            same = last_signs is not None and bool(xp.all(signs == last_signs))
            if it > 0 and (new_est <= est or same):
                est = max(est, new_est)
                break
            est = new_est
            z = self._chol_solve(l, signs)
            j = int(xp.argmax(xp.abs(z[:, 0])))
            zmax = float(xp.abs(z[j, 0]))
            ztx = float(xp.sum(z * x))
            if it > 0 and (zmax <= ztx or j == last_j):
                break
            last_j, last_signs = j, signs
            x = xp.zeros((n, 1), dtype=l.dtype)
            x[j, 0] = 1.0
        i = np.arange(n, dtype=np.float64)
        alt = np.where(i % 2 == 0, 1.0, -1.0) * (1.0 + i / max(n - 1, 1))
        y = self._chol_solve(l, xp.asarray(alt[:, None], dtype=l.dtype))
        return max(est, 2.0 * float(xp.sum(xp.abs(y))) / (3.0 * n))

    def _inverse_iteration(self, l: Any, n: int) -> float:
        """``max ‖A⁻¹x‖₂/‖x‖₂`` over inverse iteration from a seeded random start."""
        xp = self.xp
        x0 = np.random.default_rng(_SEED).uniform(-0.5, 0.5, (n, 1))
        x = xp.asarray(x0, dtype=l.dtype)
        best = 0.0
        for _ in range(_INVERSE_STEPS):
            nx = float(xp.linalg.norm(x))
            if nx == 0.0 or not math.isfinite(nx):
                break
            x = x / nx
            y = self._chol_solve(l, x)
            ny = float(xp.linalg.norm(y))
            if not math.isfinite(ny):
                return math.inf
            best = max(best, ny)
            x = y
        return best

    def cholesky_solve(
        self, k: Any, shift: float, rhs: Any
    ) -> tuple[Any, float, float, float, int] | None:
        """``(Ã⁻¹·rhs, ‖Ã‖_∞, μ_min(Ã) estimate, cond estimate, e)`` with
        ``Ã = 2^-e·(sym(K) + shift·I)``, or None if not positive definite (as the core)."""
        xp = self.xp
        e = self._scale_exponent(k, shift)
        a = self._sym(k, rhs.dtype, shift, e)
        norm_inf = float(xp.max(xp.sum(xp.abs(a), axis=1))) if a.size else 0.0
        try:
            with self._errstate():
                l = xp.linalg.cholesky(a)
        except Exception:  # noqa: BLE001 - not positive definite: caller falls back
            return None
        del a
        if not bool(xp.all(xp.isfinite(xp.diagonal(l)))) or not bool(xp.all(xp.diagonal(l) > 0)):
            return None
        n = rhs.shape[0]
        x = self._chol_solve(l, rhs)
        if n == 0:
            return x, norm_inf, 0.0, math.inf, e
        inv2 = self._inverse_iteration(l, n)
        inv = max(self._hager(l, n), inv2)
        mu_min = 1.0 / inv2 if inv2 > 0 and math.isfinite(inv2) else 0.0
        cond = norm_inf * inv if mu_min > 0 and math.isfinite(inv) else math.inf
        return x, norm_inf, mu_min, cond, e

    # -- dynamics ------------------------------------------------------------------------
    def mode_factors(self, kind: str, params: list[float], mu: Any, times: Any) -> tuple[Any, Any]:
        xp = self.xp
        mu = xp.asarray(mu, dtype=xp.float64)[:, None]
        t = xp.asarray(times, dtype=xp.float64)[None, :]
        if kind == "momentum":
            # The oscillator closed form lives in the Rust core; its k×T table is small.
            from .. import _core

            em1, phi = _core.mode_factors(
                _core.Dynamics.momentum(*(float(p) for p in params)),
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

    def project(self, v: Any, r: Any) -> Any:
        return v.T @ r

    def test_basis(self, kte: Any, v: Any) -> Any:
        return kte @ v

    def _per_time(
        self, basis: Any, z: Any, factor: Any, sign: int, base: Any = None, then: Any = None
    ) -> Any:
        """``out[t] = base + sign·then·(basis·(factor(:, t) ⊙ z))`` one time at a time, each
        product of the same shape (at least two columns: a single column would take a
        matrix–vector kernel that rounds differently), so a time's outputs are the same bits
        whatever the other times of the call (docs/numerics.md §3.1)."""
        xp = self.xp
        k, nt = factor.shape
        r = z.shape[1]
        rows = basis.shape[0] if then is None else then.shape[0]
        out = xp.empty((nt, rows, r), dtype=z.dtype)
        pad = r < 2
        f = factor.astype(z.dtype)
        for j in range(nt):
            w = f[:, j : j + 1] * z
            if pad:
                w = xp.concatenate([w, xp.zeros((k, 2 - r), dtype=z.dtype)], axis=1)
            c = basis @ w
            if then is not None:
                c = then @ c
            c = c[:, :r]
            out[j] = base + c if sign > 0 else base - c
        return out

    def train_outputs(self, v: Any, z: Any, em1: Any, f0: Any) -> Any:
        if v.shape[1] == 0:
            return self.xp.broadcast_to(f0, (em1.shape[1],) + f0.shape).copy()
        return self._per_time(v, z, em1, +1, base=f0)

    def test_outputs(self, kte: Any, v: Any, z: Any, phi: Any, g0: Any) -> Any:
        """``g₀ − K_te·(V (φ ⊙ z))``: one order for every call, as the Rust core."""
        if v.shape[1] == 0:
            return self.xp.broadcast_to(g0, (phi.shape[1],) + g0.shape).copy()
        return self._per_time(v, z, phi, -1, base=g0, then=kte)

    def test_outputs_cached(self, kv: Any, z: Any, phi: Any, g0: Any) -> Any:
        if kv.shape[1] == 0:
            return self.xp.broadcast_to(g0, (phi.shape[1],) + g0.shape).copy()
        return self._per_time(kv, z, phi, -1, base=g0)

    def closed_form(
        self,
        kind: str,
        params: list[float],
        mu: Any,
        times: Any,
        v: Any,
        r: Any,
        f0: Any | None,
        test: Any | None,
        g0: Any | None,
        cached: bool,
    ) -> tuple[Any, Any | None, Any | None]:
        em1, phi = self.mode_factors(kind, params, mu, times)
        z = self.project(v, r)
        train = None if f0 is None else self.train_outputs(v, z, em1, f0)
        tst = None
        if test is not None:
            if cached:
                tst = self.test_outputs_cached(test, z, phi, g0)
            else:
                tst = self.test_outputs(test, v, z, phi, g0)
        return z, train, tst

    # -- ODE losses ----------------------------------------------------------------------
    def ode_solve(self, k: Any, f0: Any, taus: Any, loss: Any, **kw: Any) -> dict[str, Any]:
        raise TypeError(f"the {self.name} backend has no ODE integrator (runs_ode is False)")
