"""``Ensemble``: mean and covariance of an infinite ensemble trained with MSE (docs/numerics.md §8).

Also the helpers ``GaussianProcess`` shares: train/test kernel validation, the spectral
state of one dynamics kernel, and the interleaving of flat covariances.
"""

from __future__ import annotations

import math

import numpy as np

from . import _backends, _validate
from ._errors import TangentflowError
from ._gaussian import Gaussian
from ._shapes import Layout, flatten_kernel, freeze_trace_axes
from ._spectrum import (
    Factorization,
    Spectrum,
    array_exponent,
    cast_outputs,
    default_rcond,
    ldexp,
    ldexp_float,
)
from ._validate import test_train_kernel as _test_train_kernel
from ._validate import train_kernel as _train_kernel

__all__ = ["Ensemble"]


def _test_test_kernel(raw, name, backend, test_dims, dtype):
    """Flat, exactly symmetrized ``(D_t, D_t)`` test–test kernel in ``dtype``."""
    xp = backend.xp
    k = _validate.as_float_array(raw, name, backend)
    _validate.check_finite(k, name, xp)
    want = _zip(test_dims)
    if tuple(k.shape) != want:
        raise ValueError(
            f"{name} must have shape {want} (from the test–train kernel), got {tuple(k.shape)}"
        )
    k2 = xp.asarray(flatten_kernel(k, xp), dtype=dtype)
    if k2.size:
        max_abs = float(xp.max(xp.abs(k2)))
        max_asym = float(xp.max(xp.abs(k2 - k2.T)))
        if max_asym > 1e-5 * max_abs:
            raise ValueError(
                f"{name} is not symmetric: max|K - K^T| = {max_asym:.3e} exceeds "
                f"1e-5 * max|K| = {1e-5 * max_abs:.3e}"
            )
    return (k2 + k2.T) * 0.5


def _wide(raw, cdt):
    """The dtype a test–train kernel is read in: float64 when the compute dtype is float32
    and the kernel is float64, so that its power-of-two scaling happens before the rounding
    (a tiny kernel must not become float32 subnormals; docs/numerics.md §12)."""
    if np.dtype(cdt) == np.float32 and getattr(raw, "dtype", None) == np.float64:
        return np.dtype(np.float64)
    return np.dtype(cdt)


def _zip(dims):
    return tuple(d for d in dims for _ in (0, 1))


def _unflatten_cov(c, dims, tshape, xp):
    """``(T, D_t, D_t)`` → ``tshape + (d0, d0, d1, d1, ...)``."""
    nd = len(dims)
    b = xp.reshape(c, (c.shape[0],) + tuple(dims) + tuple(dims))
    perm = (0,) + tuple(x for i in range(nd) for x in (1 + i, 1 + nd + i))
    return xp.reshape(xp.transpose(b, perm), tuple(tshape) + _zip(dims))


def _sym(c):
    """Exact symmetrization ``(C + Cᵀ)/2`` of a ``(D, D)`` block."""
    return (c + c.T) * 0.5


class _Options:
    """Validated options shared by Ensemble and GaussianProcess."""

    def __init__(self, diag_reg, diag_reg_absolute_scale, precision, rcond):
        self.diag_reg = _validate.positive_float(diag_reg, "diag_reg", allow_zero=True)
        if not isinstance(diag_reg_absolute_scale, (bool, np.bool_)):
            got = type(diag_reg_absolute_scale).__name__
            raise TypeError(f"diag_reg_absolute_scale must be a bool, got {got}")
        self.diag_reg_absolute_scale = bool(diag_reg_absolute_scale)
        if precision not in ("float64", "float32"):
            raise ValueError(f'precision must be "float64" or "float32", got {precision!r}')
        self.precision = precision
        self.rcond = None if rcond is None else _validate.positive_float(rcond, "rcond")


class _Dynamics:
    """One train kernel, its targets and its cached eigendecomposition."""

    def __init__(self, k2, trace, kname, opts, backend):
        self.k = k2
        self.kname = kname
        self.backend = backend
        self.opts = opts
        self.cdt = np.dtype(opts.precision)
        self.fact = Factorization(k2, backend, self.cdt)
        d = k2.shape[0]
        if opts.diag_reg_absolute_scale:
            self.shift = opts.diag_reg
        else:
            self.shift = opts.diag_reg * trace / d if d else 0.0
        self.rcond = opts.rcond if opts.rcond is not None else default_rcond(d, opts.precision)
        self._spec = None

    def spectrum(self) -> Spectrum:
        if self._spec is None:
            w, _ = self.fact.ensure()
            spec = Spectrum.of(w, self.shift, self.rcond, self.backend.xp, self.fact.exp)
            spec.warn_if_not_psd(name=self.kname)
            self._spec = spec
        return self._spec


def _targets(y_train, trace_axes, kdims, kname, backend):
    y = _validate.as_float_array(y_train, "y_train", backend)
    _validate.check_finite(y, "y_train", backend.xp)
    layout = Layout.resolve(y.shape, trace_axes, kdims, kernel_name=kname)
    if y.size == 0:
        raise ValueError(f"y_train is empty (shape {tuple(y.shape)})")
    return y, layout


class Ensemble:
    """Mean and covariance of an infinite ensemble of networks trained with MSE.

    Over random initializations the outputs at t = 0 are Gaussian with the NNGP
    covariance ``K``; gradient flow with the dynamics kernel (the NTK ``Θ``, or ``K``
    itself when only the readout trains) maps them linearly, so the outputs stay Gaussian
    at every time (docs/numerics.md §8). With ``A = sym(k_dd) + λI = V diag(μ) Vᵀ``,
    ``s = η t / n`` (``n = y_train.size``), ``E(s) = V diag(e^{-μs}) Vᵀ`` and
    ``G(s) = V diag((1 − e^{-μs})/μ) Vᵀ``:

    * mean: train ``(I − E(s)) Y``, test ``k_td G(s) Y``;
    * "nngp" mode (``ntk_train_train=None``): train covariance ``A E(2s)`` (the
      regularized prior, as the reference), test ``K_tt − K_td G(2s) K_dt``;
    * "ntk" mode: train ``E(s) K_dd E(s)``; test, with ``B = Θ_td G(s)``,
      ``K_tt − B K_dt − K_td Bᵀ + B K_dd Bᵀ``.

    Only the dynamics kernel is factorized, once, lazily; the factorization serves means
    and covariances at every time. Modes at or below the spectral cut
    (``rcond·max|μ|``) are exact null directions at all times.

    Parameters
    ----------
    nngp_train_train : array, (N, N) or pair-interleaved (N, N, K, K, ...)
        NNGP kernel of the training inputs (the prior covariance).
    y_train : array, (N, ...)
        Targets.
    ntk_train_train : array, optional
        NTK of the training inputs: "ntk" mode (all layers train). None: "nngp" mode.
    learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes, precision, rcond
        As for ``Predictor``; ``diag_reg`` is relative to the mean diagonal entry of the
        dynamics kernel unless ``diag_reg_absolute_scale``. ``precision="float32"`` runs
        the factorization and products in float32: faster, about 8 digits fewer.
    """

    def __init__(
        self,
        nngp_train_train,
        y_train,
        *,
        ntk_train_train=None,
        learning_rate=1.0,
        diag_reg=0.0,
        diag_reg_absolute_scale=False,
        trace_axes=None,
        precision="float64",
        rcond=None,
        _backend=None,
    ):
        self._lr = _validate.positive_float(learning_rate, "learning_rate")
        trace_axes = freeze_trace_axes(trace_axes)  # a generator is read once
        opts = _Options(diag_reg, diag_reg_absolute_scale, precision, rcond)
        be = _backends.select(nngp_train_train, _backend)
        self._backend = be
        kk, kdims, ktrace, kdt = _train_kernel(nngp_train_train, "nngp_train_train", be, trace_axes)
        self._kdims = kdims
        self._nngp = kk
        out_dt = kdt
        if ntk_train_train is not None:
            th, tdims, ttrace, tdt = _train_kernel(ntk_train_train, "ntk_train_train", be)
            if tdims != kdims:
                raise ValueError(
                    f"ntk_train_train of shape {tuple(th.shape)} (dims {tdims}) does not match "
                    f"nngp_train_train (dims {kdims})"
                )
            self.mode = "ntk"
            self._dyn = _Dynamics(th, ttrace, "ntk_train_train", opts, be)
            out_dt = np.result_type(kdt, tdt)
        else:
            self.mode = "nngp"
            self._dyn = _Dynamics(kk, ktrace, "nngp_train_train", opts, be)
        self._out_dtype = np.dtype(out_dt)
        self._y, self._layout = _targets(y_train, trace_axes, kdims, "nngp_train_train", be)
        self._trace_axes = trace_axes
        self._c_full = None  # Vᵀ sym(K_dd) V ("ntk" mode covariances), computed on demand

    # -- public properties -------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        return self._lr

    @property
    def shift(self) -> float:
        """λ added to the diagonal of the dynamics kernel."""
        return self._dyn.shift

    @property
    def factorizations(self) -> int:
        """O(N³) eigendecompositions this Ensemble has run (at most one)."""
        return self._dyn.fact.count

    @property
    def eigenvalues(self):
        """Eigenvalues of ``sym(k_dd) + λI`` of the dynamics kernel, ascending."""
        return self._dyn.spectrum().eigenvalues(self._backend.xp)

    def factorize(self) -> Ensemble:
        """Computes the eigendecomposition now (it is otherwise done on first use)."""
        self._dyn.spectrum()
        return self

    def __repr__(self):
        return (
            f"Ensemble(mode={self.mode!r}, N={self._nngp.shape[0]}, learning_rate={self._lr}, "
            f"shift={self.shift:.3g}, backend={self._backend.name!r}, "
            f"factorized={self._dyn.fact.ready})"
        )

    # -- inputs ----------------------------------------------------------------------------
    def _test_kernels(self, ntk_test_train, nngp_test_train, nngp_test_test, compute_cov):
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
        be, cdt, kd = self._backend, self._dyn.cdt, self._kdims
        dims = None
        k_td = None
        if nngp_test_train is not None:
            wdt = _wide(nngp_test_train, cdt) if self.mode == "nngp" else cdt
            k_td, dims = _test_train_kernel(nngp_test_train, "nngp_test_train", be, kd, wdt)
        if self.mode == "ntk":
            wdt = _wide(ntk_test_train, cdt)
            th_td, tdims = _test_train_kernel(ntk_test_train, "ntk_test_train", be, kd, wdt)
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
            k_tt = _test_test_kernel(nngp_test_test, "nngp_test_test", be, dims, cdt)
        return th_td, k_td, k_tt, dims

    # -- prediction ------------------------------------------------------------------------
    def at(
        self,
        t=None,
        *,
        ntk_test_train=None,
        nngp_test_train=None,
        nngp_test_test=None,
        compute_cov=True,
    ) -> Gaussian:
        """Mean and covariance at time(s) ``t`` (None or inf: converged).

        Without test kernels: on the training set. ``mean`` has shape
        ``t.shape + output shape``; ``covariance`` ``t.shape + (d0, d0, ...)`` over the
        non-traced output axes, or None when ``compute_cov=False``. Needed test kernels:
        "nngp" mode ``nngp_test_train`` (+ ``nngp_test_test`` for the covariance); "ntk"
        mode ``ntk_test_train`` (+ ``nngp_test_train`` and ``nngp_test_test``).
        """
        if not isinstance(compute_cov, (bool, np.bool_)):
            raise TypeError(f"compute_cov must be a bool, got {type(compute_cov).__name__}")
        compute_cov = bool(compute_cov)
        ts, tshape = _validate.times(t)
        test = self._test_kernels(ntk_test_train, nngp_test_train, nngp_test_test, compute_cov)
        be = self._backend
        xp = be.xp
        dyn = self._dyn
        cdt = dyn.cdt
        lay = self._layout
        spec = dyn.spectrum()
        _, v = dyn.fact.ensure()
        first = spec.first
        vr = v[:, first:]
        # Scaled units (docs/numerics.md §12, "Scale invariance"): the eigenvalues are those
        # of 2^-e·A, so the time scale is η·2^e/n, the dynamics test–train kernel enters as
        # 2^-e·Θ_td and dynamics-kernel-unit covariances come back times 2^e; the means are
        # linear in Y, scaled by 2^-ey here and by 2^ey at the end.
        e = spec.exp
        lr_s = ldexp_float(self._lr, e)
        if not math.isfinite(lr_s):
            raise ValueError(
                f"learning_rate {self._lr:.6g} times the kernel's scale 2^{e} overflows float64"
            )
        scale = lr_s / lay.size
        em1, phi = be.mode_factors("flow", [scale], spec.retained, ts)
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
            if compute_cov:
                cov = self._train_cov(ts, spec, v, em1, scale)
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
            if compute_cov:
                if self.mode == "nngp":
                    _, phi2 = be.mode_factors("flow", [scale], spec.retained, 2.0 * ts)
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
            cov = cast_outputs(_unflatten_cov(cov, dims, tshape, xp), out, "covariance", xp)
        return Gaussian._with_layout(mean, cov, len(tshape), lay.traced)

    # -- covariances (flat, compute dtype, (T, D_t, D_t)) -----------------------------------
    def _train_cov(self, ts, spec, v, em1, scale):
        be, xp, cdt = self._backend, self._backend.xp, self._dyn.cdt
        d = v.shape[0]
        first = spec.first
        nt = ts.shape[0]
        out = xp.empty((nt, d, d), dtype=cdt)
        if self.mode == "nngp":
            # A E(2s) = V diag(μ⁺ e(2s)) Vᵀ; cut modes keep e = 1.
            em1_2, _ = be.mode_factors("flow", [scale], spec.retained, 2.0 * ts)
            mu_pos = xp.maximum(spec.mu, 0.0)  # of 2^-e·A: the covariance is times 2^e
            for j in range(nt):
                f = xp.concatenate([mu_pos[:first], mu_pos[first:] * (1.0 + em1_2[:, j])])
                keep = xp.flatnonzero(f > 0)
                w = v[:, keep] * xp.sqrt(f[keep]).astype(cdt)
                out[j] = _sym(w @ w.T)
            with np.errstate(under="ignore", over="ignore"):
                return ldexp(out, spec.exp, xp)
        # "ntk": E(s) K_dd E(s) = (V e) (Vᵀ K_dd V) (V e)ᵀ, cut modes keep e = 1.
        c = self._c_matrix(v)
        ones = xp.ones(first, dtype=xp.float64)
        for j in range(nt):
            e = xp.concatenate([ones, 1.0 + em1[:, j]]).astype(cdt)
            ve = v * e
            out[j] = _sym((ve @ c) @ ve.T)
        return out

    def _c_matrix(self, v):
        """``Vᵀ sym(K_dd) V = sym(Vᵀ K_dd V)`` with the NNGP train kernel (cached)."""
        if self._c_full is None:
            xp, cdt = self._backend.xp, self._dyn.cdt
            c = v.T @ (xp.asarray(self._nngp, dtype=cdt) @ v)
            self._c_full = (c + c.T) * 0.5
        return self._c_full

    def _nngp_test_cov(self, q, phi2, k_tt, nt, e):
        """``K_tt − Q diag(φ(2s)) Qᵀ`` with ``Q = K_td Vᵣ``, from the scaled ``2^-e·Q`` and
        ``φ`` of the scaled eigenvalues: ``Q diag(φ) Qᵀ = 2^e·(2^-e Q) diag(φ̃) (2^-e Q)ᵀ``."""
        xp, cdt = self._backend.xp, self._dyn.cdt
        m = q.shape[0]
        out = xp.empty((nt, m, m), dtype=cdt)
        root = xp.sqrt(xp.maximum(phi2, 0.0)).astype(cdt)
        for j in range(nt):
            w = q * root[:, j]
            with np.errstate(under="ignore", over="ignore"):
                out[j] = _sym(k_tt - ldexp(w @ w.T, e, xp))
        return out

    def _ntk_test_cov(self, p, phi, k_td, k_tt, v, first, nt):
        """``K_tt − B K_dt − K_td Bᵀ + B K_dd Bᵀ`` with ``B = Θ_td Vᵣ diag(φ) Vᵣᵀ``.

        With ``H = P diag(φ)`` (``P = Θ_td Vᵣ``): ``B K_dd Bᵀ = H C Hᵀ``,
        ``K_td Bᵀ = Q Hᵀ`` (``C = Vᵣᵀ K_dd Vᵣ``, ``Q = K_td Vᵣ``), so the covariance is
        ``K_tt + W Hᵀ + (W Hᵀ)ᵀ`` with ``W = ½ H C − Q``. Without a cached ``C`` the
        eigenbasis route costs ``2N³`` once; the direct route
        (``Bt = H Vᵣᵀ``, ``W = ½ Bt K_dd − K_td``, ``K_tt + W Btᵀ + (W Btᵀ)ᵀ``) costs
        ``M N (k + N)`` per time instead: the cheaper one is taken.
        """
        xp, cdt = self._backend.xp, self._dyn.cdt
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
