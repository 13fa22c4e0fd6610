"""The Ensemble engine: mean and covariance of an infinite ensemble trained with MSE
(docs/numerics.md §8) on the factorization of its dynamics kernel. ``EnsembleModel`` owns
the dynamics ``KernelModel`` (the NTK, or the NNGP itself in "nngp" mode), the NNGP train
kernel and the targets; ``Ensemble`` is its facade. Flat arrays: ``(T, D_t, D_t)``."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .. import _validate
from .._errors import TangentflowError
from .._numerics import array_exponent, cast_outputs, ldexp, symmetrize
from .._shapes import zip_dims
from .kernel import KernelModel
from .options import Options
from .spectrum import Spectrum
from .test_inputs import TestInputs

__all__ = ["EnsembleModel", "unflatten_cov"]


def unflatten_cov(c: Any, dims: tuple[int, ...], tshape: tuple[int, ...], xp: Any) -> Any:
    """``(T, D_t, D_t)`` → ``tshape + (d0, d0, d1, d1, ...)``."""
    nd = len(dims)
    b = xp.reshape(c, (c.shape[0],) + tuple(dims) + tuple(dims))
    perm = (0,) + tuple(x for i in range(nd) for x in (1 + i, 1 + nd + i))
    return xp.reshape(xp.transpose(b, perm), tuple(tshape) + zip_dims(dims))


class EnsembleModel:
    """The dynamics kernel model, the NNGP train kernel, the targets and the cached
    ``Vᵀ sym(K_dd) V`` of one Ensemble."""

    def __init__(
        self,
        nngp_train_train: Any,
        y_train: Any,
        ntk_train_train: Any,
        options: Options,
        backend: str | None = None,
    ) -> None:
        nngp = KernelModel.create(
            nngp_train_train, options, name="nngp_train_train", backend=backend
        )
        self._kdims = nngp.dims
        self._nngp = nngp.k
        self.mode: Literal["nngp", "ntk"]
        out_dt: Any = nngp.out_dtype
        if ntk_train_train is not None:
            dyn = KernelModel.create(
                ntk_train_train,
                options,
                name="ntk_train_train",
                backend=nngp.backend,
                check_trace_axes=False,
            )
            if dyn.dims != nngp.dims:
                raise ValueError(
                    f"ntk_train_train of shape {tuple(dyn.k.shape)} (dims {dyn.dims}) does not "
                    f"match nngp_train_train (dims {nngp.dims})"
                )
            self.mode = "ntk"
            out_dt = np.result_type(nngp.out_dtype, dyn.out_dtype)
        else:
            self.mode = "nngp"
            dyn = nngp
        self.dyn = dyn
        self._out_dtype = np.dtype(out_dt)
        y = nngp.targets(y_train, kernel_name="nngp_train_train")
        if y.size == 0:
            raise ValueError(f"y_train is empty (shape {tuple(y.shape)})")
        self._y = y
        self._layout = nngp.layout(y, kernel_name="nngp_train_train")
        self._c_full: Any = None  # Vᵀ sym(K_dd) V ("ntk" mode covariances), on demand
        # kernel operators (the Krylov backend): the means only
        self._operators = nngp.is_operator or dyn.is_operator

    def _operator_at(
        self,
        ts: Any,
        tshape: tuple[int, ...],
        ntk_test_train: Any,
        nngp_test_train: Any,
        want_cov: bool,
    ) -> tuple[Any, Any, int, tuple[int, ...]]:
        """The mean with kernel operators: a Predictor's outputs with ``f₀ = g₀ = 0``
        (train ``(I − E(s)) Y``, test ``k_td G(s) Y``; docs/numerics.md §8, §15)."""
        from . import krylov

        if want_cov:
            raise NotImplementedError(
                "compute_cov=True: the ensemble covariance is not available with kernel "
                "operators (it needs the N×N train or an M×M test block and a Krylov solve "
                "per test point); pass compute_cov=False for the mean"
            )
        dyn = self.dyn
        if not isinstance(dyn, krylov.OperatorModel):
            raise NotImplementedError(
                "an Ensemble with an NNGP operator and an NTK array: pass both kernels as "
                "operators (or both as arrays)"
            )
        if self.mode == "nngp" and ntk_test_train is not None:
            raise ValueError(
                "ntk_test_train was given but this Ensemble has no ntk_train_train "
                '("nngp" mode: the dynamics use the NNGP kernel); pass nngp_test_train'
            )
        k_te = ntk_test_train if self.mode == "ntk" else nngp_test_train
        if self.mode == "ntk" and k_te is None and nngp_test_train is not None:
            raise ValueError('ntk_test_train is required for the test mean in "ntk" mode')
        lay = self._layout
        yf = np.ascontiguousarray(lay.flatten(self._y, np), dtype=np.float64)
        zeros = np.zeros_like(yf)
        test = None
        if k_te is not None:
            test = TestInputs(dyn, k_te, 0.0)
            test = test.bind(lay)
        train, tst = krylov.outputs(dyn, ts, lay, yf, zeros, test, want_train=test is None)
        if test is None:
            mean, shape = train, lay.y_shape
        else:
            mean, shape = tst, test.shape
        mean = lay.unflatten(mean, shape, np)
        mean = cast_outputs(
            np.reshape(mean, tuple(tshape) + shape), self._out_dtype, "ensemble mean", np
        )
        return mean, None, len(tshape), lay.traced

    @property
    def size(self) -> int:
        return int(self._nngp.shape[0])

    def _test_kernels(
        self, ntk_test_train: Any, nngp_test_train: Any, nngp_test_test: Any, compute_cov: bool
    ) -> tuple[Any, Any, Any, tuple[int, ...]] | None:
        """None (train set) or ``(k_dyn_td, k_td or None, k_tt or None, test dims)``."""
        if self.mode == "nngp" and ntk_test_train is not None:
            raise ValueError(
                "ntk_test_train was given but this Ensemble has no ntk_train_train "
                '("nngp" mode: the dynamics use the NNGP kernel); pass nngp_test_train'
            )
        given = [x is not None for x in (ntk_test_train, nngp_test_train, nngp_test_test)]
        if not any(given):
            return None
        need = ["ntk_test_train"] if self.mode == "ntk" else ["nngp_test_train"]
        if compute_cov:
            need += ["nngp_test_train", "nngp_test_test"]
        have = {
            "ntk_test_train": ntk_test_train,
            "nngp_test_train": nngp_test_train,
            "nngp_test_test": nngp_test_test,
        }
        missing = [k for k in dict.fromkeys(need) if have[k] is None]
        if missing:
            what = "the test mean and covariance" if compute_cov else "the test mean"
            raise ValueError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required for "
                f"{what} in {self.mode!r} mode (the other test kernels were given)"
            )
        dyn, cdt = self.dyn, self.dyn.dtype
        dims = None
        k_td = None
        if nngp_test_train is not None:
            wdt = _validate.wide_dtype(nngp_test_train, cdt) if self.mode == "nngp" else cdt
            k_td, dims = dyn.test_train_kernel(nngp_test_train, "nngp_test_train", wdt)
        if self.mode == "ntk":
            wdt = _validate.wide_dtype(ntk_test_train, cdt)
            th_td, tdims = dyn.test_train_kernel(ntk_test_train, "ntk_test_train", wdt)
            if dims is not None and tdims != dims:
                raise ValueError(
                    f"ntk_test_train (test dims {tdims}) and nngp_test_train (test dims {dims}) "
                    "describe different test sets"
                )
            dims = tdims
        else:
            th_td = k_td  # possibly float64 with float32 compute: scaled, then converted
            k_td = None if k_td is None else k_td.astype(cdt, copy=False)
        k_tt = None
        if nngp_test_test is not None:
            if dims is None:
                raise ValueError("nngp_test_test was given without a test–train kernel")
            k_tt = dyn.test_test_kernel(nngp_test_test, "nngp_test_test", dims)
        assert dims is not None  # a test-train kernel was required above
        return th_td, k_td, k_tt, dims

    # -- prediction ------------------------------------------------------------------------
    def at(
        self,
        t: Any,
        ntk_test_train: Any,
        nngp_test_train: Any,
        nngp_test_test: Any,
        compute_cov: object,
    ) -> tuple[Any, Any, int, tuple[int, ...]]:
        """``(mean, covariance, time axes, traced axes)`` as ``Ensemble.at`` returns them."""
        want_cov = _validate.flag(compute_cov, "compute_cov")
        ts, tshape = _validate.times(t)
        if self._operators:
            return self._operator_at(ts, tshape, ntk_test_train, nngp_test_train, want_cov)
        test = self._test_kernels(ntk_test_train, nngp_test_train, nngp_test_test, want_cov)
        dyn = self.dyn
        be = dyn.backend
        xp = be.xp
        cdt = dyn.dtype
        lay = self._layout
        spec = dyn.spectrum()
        v = dyn.eigenvectors()
        first = spec.first
        vr = v[:, first:]
        # Scaled units (docs/numerics.md §12, "Scale invariance"): the eigenvalues are those
        # of 2^-e·A, so the time scale is η·2^e/n, the dynamics test–train kernel enters as
        # 2^-e·Θ_td and dynamics-kernel-unit covariances come back times 2^e; the means are
        # linear in Y, scaled by 2^-ey here and by 2^ey at the end.
        e = spec.exp
        em1, phi = dyn.mode_factors(ts, lay.size)  # gradient flow, η·2^e/n
        yf = xp.ascontiguousarray(lay.flatten(self._y, xp), dtype=cdt)
        ey = array_exponent(xp, yf)
        yf = ldexp(yf, -ey, xp)
        z = be.project(vr, -yf)  # −Vᵣᵀ Y
        nt = ts.shape[0]
        if test is None:
            mean = be.train_outputs(vr, z, em1, xp.zeros_like(yf))
            if first == 0:  # nothing cut: the converged train mean is Y exactly (§13.3)
                for j in np.flatnonzero(np.isinf(ts)):
                    mean[int(j)] = yf
            cov = None
            if want_cov:
                cov = self._train_cov(ts, spec, v, em1, lay.size)
            dims, shape = self._kdims, lay.y_shape
        else:
            th_td, k_td, k_tt, dims = test
            shape = lay.test_shape(dims)
            with np.errstate(under="ignore"):
                th_s = ldexp(th_td, -e, xp).astype(cdt, copy=False)
            p = th_s @ vr  # 2^-e·Θ_td Vᵣ (M × k); a BLAS GEMM beats the core's here
            mean = be.test_outputs_cached(
                xp.ascontiguousarray(p), z, phi, xp.zeros((p.shape[0], yf.shape[1]), dtype=cdt)
            )
            cov = None
            if want_cov:
                if self.mode == "nngp":
                    _, phi2 = dyn.mode_factors(2.0 * ts, lay.size)
                    cov = self._nngp_test_cov(p, phi2, k_tt, nt, e)
                else:
                    cov = self._ntk_test_cov(p, phi, k_td, k_tt, v, first, nt)
        out = self._out_dtype
        with np.errstate(over="ignore"):
            mean = ldexp(mean, ey, xp)
        if not bool(xp.all(xp.isfinite(mean))):
            raise TangentflowError(
                "the ensemble mean overflows float64: the answer itself is not representable "
                "(every intermediate is scaled by powers of two); rescale y_train"
            )
        mean = lay.unflatten(mean, shape, xp)
        mean = cast_outputs(xp.reshape(mean, tuple(tshape) + shape), out, "ensemble mean", xp)
        if cov is not None:
            cov = cast_outputs(unflatten_cov(cov, dims, tshape, xp), out, "covariance", xp)
        return mean, cov, len(tshape), lay.traced

    # -- covariances (flat, compute dtype, (T, D_t, D_t)) -----------------------------------
    def _train_cov(self, ts: Any, spec: Spectrum, v: Any, em1: Any, n: int) -> Any:
        xp, cdt = self.dyn.xp, self.dyn.dtype
        d = v.shape[0]
        first = spec.first
        nt = ts.shape[0]
        out = xp.empty((nt, d, d), dtype=cdt)
        if self.mode == "nngp":
            # A E(2s) = V diag(μ⁺ e(2s)) Vᵀ; cut modes keep e = 1.
            em1_2, _ = self.dyn.mode_factors(2.0 * ts, n)
            mu_pos = xp.maximum(spec.mu, 0.0)  # of 2^-e·A: the covariance is times 2^e
            for j in range(nt):
                f = xp.concatenate([mu_pos[:first], mu_pos[first:] * (1.0 + em1_2[:, j])])
                keep = xp.flatnonzero(f > 0)
                w = v[:, keep] * xp.sqrt(f[keep]).astype(cdt)
                out[j] = symmetrize(w @ w.T)
            with np.errstate(under="ignore", over="ignore"):
                return ldexp(out, spec.exp, xp)
        # "ntk": E(s) K_dd E(s) = (V e) (Vᵀ K_dd V) (V e)ᵀ, cut modes keep e = 1.
        c = self._c_matrix(v)
        ones = xp.ones(first, dtype=xp.float64)
        for j in range(nt):
            e = xp.concatenate([ones, 1.0 + em1[:, j]]).astype(cdt)
            ve = v * e
            out[j] = symmetrize((ve @ c) @ ve.T)
        return out

    def _c_matrix(self, v: Any) -> Any:
        """``Vᵀ sym(K_dd) V = sym(Vᵀ K_dd V)`` with the NNGP train kernel (cached)."""
        if self._c_full is None:
            xp, cdt = self.dyn.xp, self.dyn.dtype
            self._c_full = symmetrize(v.T @ (xp.asarray(self._nngp, dtype=cdt) @ v))
        return self._c_full

    def _nngp_test_cov(self, q: Any, phi2: Any, k_tt: Any, nt: int, e: int) -> Any:
        """``K_tt − Q diag(φ(2s)) Qᵀ`` with ``Q = K_td Vᵣ``, from the scaled ``2^-e·Q`` and
        ``φ`` of the scaled eigenvalues: ``Q diag(φ) Qᵀ = 2^e·(2^-e Q) diag(φ̃) (2^-e Q)ᵀ``."""
        xp, cdt = self.dyn.xp, self.dyn.dtype
        m = q.shape[0]
        out = xp.empty((nt, m, m), dtype=cdt)
        root = xp.sqrt(xp.maximum(phi2, 0.0)).astype(cdt)
        for j in range(nt):
            w = q * root[:, j]
            with np.errstate(under="ignore", over="ignore"):
                out[j] = symmetrize(k_tt - ldexp(w @ w.T, e, xp))
        return out

    def _ntk_test_cov(
        self, p: Any, phi: Any, k_td: Any, k_tt: Any, v: Any, first: int, nt: int
    ) -> Any:
        """``K_tt − B K_dt − K_td Bᵀ + B K_dd Bᵀ`` with ``B = Θ_td Vᵣ diag(φ) Vᵣᵀ``.

        With ``H = P diag(φ)`` (``P = Θ_td Vᵣ``): ``B K_dd Bᵀ = H C Hᵀ``,
        ``K_td Bᵀ = Q Hᵀ`` (``C = Vᵣᵀ K_dd Vᵣ``, ``Q = K_td Vᵣ``), so the covariance is
        ``K_tt + W Hᵀ + (W Hᵀ)ᵀ`` with ``W = ½ H C − Q``. Without a cached ``C`` the
        eigenbasis route costs ``2N³`` once; the direct route
        (``Bt = H Vᵣᵀ``, ``W = ½ Bt K_dd − K_td``, ``K_tt + W Btᵀ + (W Btᵀ)ᵀ``) costs
        ``M N (k + N)`` per time instead: the cheaper one is taken.
        """
        xp, cdt = self.dyn.xp, self.dyn.dtype
        m, n = k_td.shape
        k = p.shape[1]
        out = xp.empty((nt, m, m), dtype=cdt)
        f = phi.astype(cdt)
        cost_basis = m * n * k + nt * (m * k * k + m * m * k)
        if self._c_full is None:
            cost_basis += 2 * n * n * n
        cost_direct = nt * (m * n * k + m * n * n + m * m * n)
        if cost_basis <= cost_direct:
            c = self._c_matrix(v)[first:, first:]
            q = k_td @ v[:, first:]
            for j in range(nt):
                h = p * f[:, j]
                w = (h @ c) * 0.5 - q
                g = w @ h.T
                out[j] = k_tt + (g + g.T)
            return out
        kd = xp.asarray(self._nngp, dtype=cdt)  # g + gᵀ below symmetrizes it
        vr_t = v[:, first:].T
        for j in range(nt):
            bt = (p * f[:, j]) @ vr_t
            w = (bt @ kd) * 0.5 - k_td
            g = w @ bt.T
            out[j] = k_tt + (g + g.T)
        return out
