"""``GaussianProcess``: exact GP inference with a kernel prior (docs/numerics.md §10)."""

from __future__ import annotations

import math

import numpy as np

from . import _backends
from ._ensemble import (
    _Dynamics,
    _Options,
    _sym,
    _targets,
    _test_test_kernel,
    _unflatten_cov,
    _wide,
)
from ._errors import NumericalWarning, TangentflowError, warn
from ._gaussian import Gaussian
from ._predictor import CHOLESKY_MAX_COND
from ._shapes import freeze_trace_axes
from ._spectrum import array_exponent, cast_outputs, ldexp, ldexp_float
from ._validate import test_train_kernel as _test_train_kernel
from ._validate import train_kernel as _train_kernel

__all__ = ["GaussianProcess"]


def _ldexp(a, e, xp):
    """``a·2^e``; results beyond the range become 0/inf silently here and are checked by
    the caller where they matter."""
    with np.errstate(over="ignore", under="ignore"):
        return ldexp(a, e, xp)


class GaussianProcess:
    """Exact Bayesian inference with prior covariance ``k`` and noise ``λ`` (``diag_reg``).

    With ``A = sym(k_dd) + λI``: posterior mean ``k_td A⁺ Y`` and covariance
    ``k_tt − k_td A⁺ k_dt`` (docs/numerics.md §10). With the NNGP as ``k`` this is the Bayesian
    posterior of the infinitely wide network (reference ``get='nngp'``); with the NTK,
    the reference's ``'ntkgp'``. On a singular kernel the spectral cut applies
    (pseudo-inverse and pseudo-determinant over the eigenvalues above
    ``rcond·max|μ|``) and a ``NumericalWarning`` says how many modes were cut.

    A well-conditioned ``A`` (estimated condition ≤ 1e6, nothing to cut) is solved by
    Cholesky; otherwise, or once the eigendecomposition exists (e.g. after
    ``log_marginal_likelihood``), the spectral path is used. Both agree to §14.

    Parameters
    ----------
    k_train_train : array, (N, N) or pair-interleaved (N, N, K, K, ...)
        Prior kernel of the training inputs.
    y_train : array, (N, ...)
        Observed targets.
    diag_reg, diag_reg_absolute_scale, trace_axes, precision, rcond
        As for ``Predictor``: ``λ = diag_reg · mean diagonal entry`` unless absolute.
    """

    def __init__(
        self,
        k_train_train,
        y_train,
        *,
        diag_reg=0.0,
        diag_reg_absolute_scale=False,
        trace_axes=None,
        precision="float64",
        rcond=None,
        _backend=None,
    ):
        trace_axes = freeze_trace_axes(trace_axes)  # a generator is read once
        opts = _Options(diag_reg, diag_reg_absolute_scale, precision, rcond)
        be = _backends.select(k_train_train, _backend)
        self._backend = be
        k2, dims, trace, dt = _train_kernel(k_train_train, "k_train_train", be, trace_axes)
        self._kdims = dims
        self._out_dtype = dt
        self._dyn = _Dynamics(k2, trace, "k_train_train", opts, be)
        self._y, self._layout = _targets(y_train, trace_axes, dims, "k_train_train", be)

    # -- public properties -------------------------------------------------------------
    @property
    def shift(self) -> float:
        """λ added to the diagonal."""
        return self._dyn.shift

    @property
    def factorizations(self) -> int:
        """O(N³) eigendecompositions this GaussianProcess has run (at most one)."""
        return self._dyn.fact.count

    def factorize(self) -> GaussianProcess:
        """Computes the eigendecomposition now (later calls use the spectral path)."""
        self._dyn.spectrum()
        return self

    def __repr__(self):
        return (
            f"GaussianProcess(N={self._dyn.k.shape[0]}, shift={self.shift:.3g}, "
            f"backend={self._backend.name!r}, factorized={self._dyn.fact.ready})"
        )

    # -- helpers ---------------------------------------------------------------------------
    def _yflat(self):
        xp = self._backend.xp
        return xp.ascontiguousarray(self._layout.flatten(self._y, xp), dtype=self._dyn.cdt)

    def _cholesky(self, rhs):
        """``(Ã⁻¹ rhs, e)`` with ``A = 2^e·Ã`` when the Cholesky fast path is safe
        (docs/numerics.md §3.2), else None."""
        dyn = self._dyn
        if dyn.fact.ready:
            return None
        res = self._backend.cholesky_solve(dyn.k, dyn.shift, rhs)
        if res is None:
            return None
        x, norm_inf, mu_min_est, cond_est, e = res
        if not (cond_est <= CHOLESKY_MAX_COND and mu_min_est > 2.0 * dyn.rcond * norm_inf):
            return None
        return x, e

    def _spectral(self, what):
        dyn = self._dyn
        spec = dyn.spectrum()
        if spec.n_cut:
            warn(
                f"k_train_train (+ diag_reg) is singular to working precision: {spec.n_cut} of "
                f"{spec.mu.shape[0]} eigenvalue(s) <= {spec.tol:.3e} were cut; the {what} uses "
                "the pseudo-inverse" + (" and pseudo-determinant" if what == "likelihood" else ""),
                NumericalWarning,
            )
        _, v = dyn.fact.ensure()
        return spec, v

    # -- inference -------------------------------------------------------------------------
    def posterior(self, k_test_train=None, k_test_test=None) -> Gaussian:
        """Posterior ``Gaussian(mean, covariance)`` on a test set, or on the training set.

        ``k_test_train`` ``(M, N)`` (interleaved ``(M, N, K, K, ...)`` with
        ``trace_axes``) gives the test mean, shape ``(M, ...)`` like ``y_train``; the
        covariance ``(M, M)`` (``(M, M, K, K, ...)`` over the non-traced axes) is computed
        only when ``k_test_test`` is given too; otherwise ``covariance`` is None. Without test kernels: the posterior
        on the training inputs, mean ``P Y`` and covariance ``V_cut diag(μ⁺) V_cutᵀ`` (the
        ``t → ∞`` limit of the NNGP ensemble): ``Y`` and 0 when nothing is cut.
        """
        be = self._backend
        xp = be.xp
        lay = self._layout
        cdt = self._dyn.cdt
        # Power-of-two scaling (docs/numerics.md §12, "Scale invariance"): Y by 2^-ey, K_td
        # by 2^-ek (their own exponents), A by 2^-e (the factorization's), so that no
        # intermediate (A⁻¹Y, K_td A⁻¹ K_dt) over- or underflows while the answer fits.
        yf = self._yflat()
        ey = array_exponent(xp, yf)
        yf = ldexp(yf, -ey, xp)
        r = yf.shape[1]
        if k_test_train is None:
            if k_test_test is not None:
                raise ValueError("k_test_test was given without k_test_train")
            mean, cov = self._train_posterior(yf)
            dims, shape = self._kdims, lay.y_shape
        else:
            wdt = _wide(k_test_train, cdt)
            kte, dims = _test_train_kernel(k_test_train, "k_test_train", be, self._kdims, wdt)
            ktt = None
            if k_test_test is not None:
                ktt = _test_test_kernel(k_test_test, "k_test_test", be, dims, cdt)
            shape = lay.test_shape(dims)
            ek = array_exponent(xp, kte)
            kte = xp.ascontiguousarray(ldexp(kte, -ek, xp), dtype=cdt)
            rhs = yf if ktt is None else xp.concatenate([yf, kte.T], axis=1)
            sol = self._cholesky(xp.ascontiguousarray(rhs))
            cov = None
            if sol is not None:
                x, e = sol
                mean = kte @ x[:, :r]
                if ktt is not None:
                    cov = _sym(ktt - _ldexp(kte @ x[:, r:], 2 * ek - e, xp))
            else:
                spec, v = self._spectral("posterior")
                e = spec.exp
                vr = v[:, spec.first :]
                inv_root = (1.0 / xp.sqrt(spec.retained)).astype(cdt)
                q = be.test_basis(kte, vr) * inv_root  # 2^-ek·K_td Vᵣ diag(μ̃^-½)
                zy = be.project(vr, yf) * inv_root[:, None]
                mean = q @ zy
                if ktt is not None:
                    cov = _sym(ktt - _ldexp(q @ q.T, 2 * ek - e, xp))
            mean = _ldexp(mean, ek - e, xp)
        out = self._out_dtype
        mean = _ldexp(mean, ey, xp)
        if not bool(xp.all(xp.isfinite(mean))):
            raise TangentflowError(
                "the posterior mean overflows float64: the answer itself is not representable "
                "(every intermediate is scaled by powers of two); rescale y_train"
            )
        mean = xp.reshape(lay.unflatten(mean[None], shape, xp), shape)
        mean = cast_outputs(mean, out, "posterior mean", xp)
        if cov is not None:
            cov = cast_outputs(_unflatten_cov(cov[None], dims, (), xp), out, "covariance", xp)
        return Gaussian._with_layout(mean, cov, 0, lay.traced)

    def _train_posterior(self, yf):
        xp = self._backend.xp
        cdt = self._dyn.cdt
        d = yf.shape[0]
        if self._cholesky(yf) is not None:
            return yf.copy(), xp.zeros((d, d), dtype=cdt)
        spec, v = self._spectral("posterior")
        first = spec.first
        if first == 0:
            return yf.copy(), xp.zeros((d, d), dtype=cdt)
        vr = v[:, first:]
        mean = vr @ self._backend.project(vr, yf)
        w = v[:, :first] * xp.sqrt(xp.maximum(spec.mu[:first], 0.0)).astype(cdt)
        return mean, _ldexp(_sym(w @ w.T), spec.exp, xp)  # μ of 2^-e·A

    def log_marginal_likelihood(self) -> float:
        """``log p(Y)`` under ``N(0, A)``, summed over the output columns (traced axes).

        Per column: ``−½ yᵀA⁺y − ½ log pdet(A) − (D_r/2) log 2π`` with ``D_r`` retained
        modes (all of them unless something is cut, which a ``NumericalWarning`` reports).
        """
        be = self._backend
        xp = be.xp
        spec, v = self._spectral("likelihood")
        vr = v[:, spec.first :]
        mu = spec.retained  # of 2^-e·A (docs/numerics.md §12, "Scale invariance")
        yf = self._yflat()
        ey = array_exponent(xp, yf)
        z = be.project(vr, ldexp(yf, -ey, xp)).astype(xp.float64)
        r = z.shape[1]
        k = int(mu.shape[0])
        # yᵀA⁺y = 2^(2ey − e)·Σ z̃²/μ̃ and log pdet A = Σ log μ̃ + k·e·log 2 (per column)
        quad_s = float(xp.sum((z * z) / mu[:, None]))
        quad = ldexp_float(quad_s, 2 * ey - spec.exp)
        logdet = float(xp.sum(xp.log(mu))) + k * spec.exp * math.log(2.0)
        out = -0.5 * quad - 0.5 * r * logdet - 0.5 * r * k * math.log(2.0 * math.pi)
        if not math.isfinite(out):
            log10_quad = math.log10(quad_s) + (2 * ey - spec.exp) * math.log10(2.0)
            raise TangentflowError(
                f"the log marginal likelihood is below the float64 range: its data-fit term "
                f"y^T A^+ y is about 1e{log10_quad:.1f}; rescale y_train (or the kernel)"
            )
        return out
