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
#: Time compression (docs/numerics.md §16, as the Rust core): fewest compressible times,
#: tolerance in units of ε, columns per block of the range finder.
_COMPRESS_MIN_TIMES, _COMPRESS_TOL_EPS, _SKETCH_BLOCK = 16, 90.0, 32


def _no_reflectors(q: Any) -> None:
    """This backend forms ``V`` in its eigensolver (``eigh_factored`` is None): a ``q``
    here would make ``v`` mean ``Z``, which it never is."""
    if q is not None:
        raise ValueError("the array backend takes formed eigenvectors, not reflectors")


class XpBackend:
    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.name = "cupy" if xp.__name__.startswith("cupy") else "numpy"
        self._gpu = self.name == "cupy"
        self.on_gpu = self._gpu
        self.runs_ode = False
        #: (train, test) ranks of the last closed form's compression, -1 where direct
        #: (docs/numerics.md §16; an introspection hook for tests)
        self.compression_ranks = [-1, -1]

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
        self, k: Any, shift: float, rhs: Any, max_abs: float | None = None
    ) -> tuple[Any, float, float, float, int] | None:
        """``(Ã⁻¹·rhs, ‖Ã‖_∞, μ_min(Ã) estimate, cond estimate, e)`` with
        ``Ã = 2^-e·(sym(K) + shift·I)``, or None if not positive definite (as the core);
        ``max_abs``: ``max|K_ij|`` when already known."""
        xp = self.xp
        if max_abs is None:
            e = self._scale_exponent(k, shift)
        else:
            e = exponent(max(max_abs, abs(float(shift))))
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

    def eigh_factored(self, k: Any, dtype: Any) -> None:
        """None: this backend always forms the eigenvectors."""
        return None

    def form_eigenvectors(self, q: Any, z: Any) -> Any:
        raise NotImplementedError("the array backend keeps no reflectors")

    def apply_transpose(self, q: Any, x: Any) -> Any:
        raise NotImplementedError("the array backend keeps no reflectors")

    def project(self, v: Any, r: Any, cache: Any = None, q: Any = None) -> Any:
        _no_reflectors(q)
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

    # -- time compression (docs/numerics.md §16) ----------------------------------------
    def _col_norm_max(self, a: Any) -> float:
        xp = self.xp
        return float(xp.max(xp.sqrt(xp.sum(a * a, axis=0)))) if a.size else 0.0

    def _compress(self, factor: Any, cols: Any, weight: Any, eps: float) -> Any:
        """``(U, W)`` with every column of ``G = diag(w)·F[:, cols]`` within
        ``τ = 90·ε·ρ₁`` of ``U W`` (checked a posteriori), or None when the rank is not
        clearly below the number of times: the blocked range finder of the Rust core on the
        running residual, truncated by the SVD of the small ``W``."""
        xp = self.xp
        k, tc = int(factor.shape[0]), int(len(cols))
        if tc < _COMPRESS_MIN_TIMES or k == 0:
            return None
        max_rank = min(tc // 2, k * tc // max(2 * (k + tc), 1))
        if max_rank == 0:
            return None
        g = weight[:, None] * factor[:, xp.asarray(cols)]
        rho1 = self._col_norm_max(g)
        if not math.isfinite(rho1):
            return None
        if rho1 == 0.0:
            return xp.zeros((k, 0)), xp.zeros((0, tc))
        tau = _COMPRESS_TOL_EPS * eps * rho1
        pmax = min(max_rank + _SKETCH_BLOCK, tc, k)
        rng = np.random.default_rng(_SEED)
        e = g.copy()
        qs: list[Any] = []
        ws: list[Any] = []
        used = 0
        while self._col_norm_max(e) > 0.4 * tau:
            b = min(_SKETCH_BLOCK, pmax - used)
            if b == 0:
                return None
            y = e @ xp.asarray(rng.uniform(-1.0, 1.0, (tc, b)))
            q = xp.concatenate(qs, axis=1) if qs else None
            if q is not None:
                y -= q @ (q.T @ y)
            qb = xp.linalg.qr(y)[0]
            if q is not None:  # the basis of a rank-deficient sketch, orthogonal again
                qb = xp.linalg.qr(qb - q @ (q.T @ qb))[0]
            wb = qb.T @ e
            e -= qb @ wb
            qs.append(qb)
            ws.append(wb)
            used += b
        q = xp.concatenate(qs, axis=1)
        w = xp.concatenate(ws, axis=0)
        uw, sw, vwt = xp.linalg.svd(w, full_matrices=False)
        rank = int(xp.sum(sw > 0.4 * tau))  # per-column residual <= the first dropped σ
        if rank > max_rank:
            return None
        u = q @ uw[:, :rank]
        wr = sw[:rank, None] * vwt[:rank]
        if self._col_norm_max(g - u @ wr) > tau:
            return None
        return u, wr

    def _output_column_norms(self, basis: Any, then: Any) -> Any:
        """The norm of each mode's output column: of ``basis`` (exact), or of
        ``then·basis`` from a 32-row sketch with unit-variance entries, as the core."""
        xp = self.xp
        if then is None:
            b = basis.astype(xp.float64)
            return xp.sqrt(xp.sum(b * b, axis=0))
        s = 32
        sk = np.random.default_rng(_SEED + 1).uniform(-1.0, 1.0, (s, then.shape[0]))
        smb = ((xp.asarray(sk * math.sqrt(3.0), dtype=then.dtype) @ then) @ basis).astype(
            xp.float64
        )
        return xp.sqrt(xp.sum(smb * smb, axis=0) / s)

    def _outputs(
        self,
        side: int,
        basis: Any,
        z: Any,
        factor: Any,
        sign: int,
        base: Any,
        then: Any,
        cols: Any,
    ) -> Any:
        """Outputs at every time: the times ``cols`` compressed when that pays, the others
        (and all of them otherwise) through ``_per_time``."""
        xp = self.xp
        nt = int(factor.shape[1])
        if basis.shape[1] == 0:
            return xp.broadcast_to(base, (nt,) + base.shape).copy()
        lr = None
        if cols is not None and len(cols):
            zf = z.astype(xp.float64)
            weight = xp.max(xp.abs(zf), axis=1) if z.shape[1] else xp.zeros(z.shape[0])
            weight = weight * self._output_column_norms(basis, then)
            lr = self._compress(factor, cols, weight, float(np.finfo(z.dtype).eps))
        if lr is None:
            return self._per_time(basis, z, factor, sign, base=base, then=then)
        u, w = lr
        self.compression_ranks[side] = int(u.shape[1])
        rows = base.shape[0]
        k, r = z.shape
        rank = int(u.shape[1])
        out = xp.empty((nt, rows, r), dtype=z.dtype)
        mask = np.zeros(nt, dtype=bool)
        mask[np.asarray(cols)] = True
        rest = np.flatnonzero(~mask)
        if rest.size:
            out[xp.asarray(rest)] = self._per_time(
                basis, z, factor[:, xp.asarray(rest)], sign, base=base, then=then
            )
        ratio = xp.zeros(k)
        pos = weight > 0
        ratio[pos] = 1.0 / weight[pos]
        zt = ((zf * ratio[:, None])[:, None, :] * u[:, :, None]).reshape(k, rank * r)
        b = basis @ zt.astype(z.dtype)
        if then is not None:
            b = then @ b
        bh = b.reshape(rows, rank, r).transpose(1, 0, 2).reshape(rank, rows * r)
        c = (w.T.astype(z.dtype) @ bh).reshape(len(cols), rows, r)
        out[xp.asarray(cols)] = base + c if sign > 0 else base - c
        return out

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
        train_cache: Any = None,
        test_cache: Any = None,
        q: Any = None,
    ) -> tuple[Any, Any | None, Any | None]:
        """As the Rust core: factors, projection, reconstructions; many finite nonzero
        times compressed (docs/numerics.md §16), ``t = 0`` and ``t = ∞`` always direct.
        No time basis is kept across calls (``time_basis_cache`` is None)."""
        from .. import _core

        _no_reflectors(q)
        em1, phi = self.mode_factors(kind, params, mu, times)
        z = self.project(v, r)
        self.compression_ranks = [-1, -1]
        cols = None
        if _core._time_compression():
            tn = np.asarray(self.to_numpy(self.xp.asarray(times)), dtype=np.float64)
            cols = np.flatnonzero((tn > 0) & np.isfinite(tn))
        train = None if f0 is None else self._outputs(0, v, z, em1, +1, f0, None, cols)
        tst = None
        if test is not None:
            if cached:
                tst = self._outputs(1, test, z, phi, -1, g0, None, cols)
            else:
                tst = self._outputs(1, v, z, phi, -1, g0, test, cols)
        return z, train, tst

    def time_basis_cache(self) -> Any:
        return None

    def loss_sums(self, kind: str, params: list[float], mu: Any, times: Any, zz: Any) -> Any:
        """``Σ_j zz_j·e_j(t)²`` with the decay ``e`` itself (not ``1 + (e − 1)``), as the
        core (docs/numerics.md §16)."""
        xp = self.xp
        if kind == "momentum":
            em1, _ = self.mode_factors(kind, params, mu, times)
            e = 1.0 + em1
        else:
            m = xp.asarray(mu, dtype=xp.float64)[:, None]
            t = xp.asarray(times, dtype=xp.float64)[None, :]
            inf = xp.isinf(t)
            tf = xp.where(inf, 0.0, t)
            (scale,) = params
            if kind == "flow":
                e = xp.exp(-m * (scale * tf))
            elif kind == "gd":
                a = scale * m
                stable = a < 1.0
                e_stable = xp.exp(tf * xp.log1p(-xp.where(stable, a, 0.0)))
                e = xp.where(stable, e_stable, xp.power(1.0 - a, tf))
            else:
                raise ValueError(f"unknown dynamics {kind!r}")
            e = xp.where(inf, 0.0, xp.where(tf == 0, 1.0, e))
        return xp.sum(xp.asarray(zz, dtype=xp.float64)[:, None] * (e * e), axis=0)

    # -- ODE losses ----------------------------------------------------------------------
    def ode_solve(self, k: Any, f0: Any, taus: Any, loss: Any, **kw: Any) -> dict[str, Any]:
        raise TypeError(f"the {self.name} backend has no ODE integrator (runs_ode is False)")
