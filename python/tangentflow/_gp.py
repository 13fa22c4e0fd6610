"""``GaussianProcess``: exact GP inference with a kernel prior (docs/numerics.md §10)."""

from __future__ import annotations

import math

from . import _backends
from ._ensemble import (
    _Dynamics,
    _Options,
    _sym,
    _targets,
    _test_test_kernel,
    _unflatten_cov,
)
from ._errors import NumericalWarning, warn
from ._gaussian import Gaussian
from ._predictor import CHOLESKY_MAX_COND
from ._validate import test_train_kernel as _test_train_kernel
from ._validate import train_kernel as _train_kernel

__all__ = ["GaussianProcess"]


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
        """``A⁻¹ rhs`` when the Cholesky fast path is safe (docs/numerics.md §3.2), else None."""
        dyn = self._dyn
        if dyn.fact.ready:
            return None
        res = self._backend.cholesky_solve(dyn.k, dyn.shift, rhs)
        if res is None:
            return None
        x, norm_inf, mu_min_est, cond_est = res
        if not (cond_est <= CHOLESKY_MAX_COND and mu_min_est > 2.0 * dyn.rcond * norm_inf):
            return None
        return x

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
        yf = self._yflat()
        r = yf.shape[1]
        if k_test_train is None:
            if k_test_test is not None:
                raise ValueError("k_test_test was given without k_test_train")
            mean, cov = self._train_posterior(yf)
            dims, shape = self._kdims, lay.y_shape
        else:
            kte, dims = _test_train_kernel(k_test_train, "k_test_train", be, self._kdims, cdt)
            ktt = None
            if k_test_test is not None:
                ktt = _test_test_kernel(k_test_test, "k_test_test", be, dims, cdt)
            shape = lay.test_shape(dims)
            rhs = yf if ktt is None else xp.concatenate([yf, kte.T], axis=1)
            x = self._cholesky(xp.ascontiguousarray(rhs))
            cov = None
            if x is not None:
                mean = kte @ x[:, :r]
                if ktt is not None:
                    cov = _sym(ktt - kte @ x[:, r:])
            else:
                spec, v = self._spectral("posterior")
                vr = v[:, spec.first :]
                inv_root = (1.0 / xp.sqrt(spec.retained)).astype(cdt)
                q = be.test_basis(kte, vr) * inv_root  # K_td Vᵣ diag(μ^-½)
                zy = be.project(vr, yf) * inv_root[:, None]
                mean = q @ zy
                if ktt is not None:
                    cov = _sym(ktt - q @ q.T)
        out = self._out_dtype
        mean = xp.reshape(lay.unflatten(mean[None], shape, xp), shape).astype(out, copy=False)
        if cov is not None:
            cov = _unflatten_cov(cov[None], dims, (), xp).astype(out, copy=False)
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
        return mean, _sym(w @ w.T)

    def log_marginal_likelihood(self) -> float:
        """``log p(Y)`` under ``N(0, A)``, summed over the output columns (traced axes).

        Per column: ``−½ yᵀA⁺y − ½ log pdet(A) − (D_r/2) log 2π`` with ``D_r`` retained
        modes (all of them unless something is cut, which a ``NumericalWarning`` reports).
        """
        be = self._backend
        xp = be.xp
        spec, v = self._spectral("likelihood")
        vr = v[:, spec.first :]
        mu = spec.retained
        z = be.project(vr, self._yflat()).astype(xp.float64)
        r = z.shape[1]
        k = int(mu.shape[0])
        quad = float(xp.sum((z * z) / mu[:, None]))
        logdet = float(xp.sum(xp.log(mu)))
        return -0.5 * quad - 0.5 * r * logdet - 0.5 * r * k * math.log(2.0 * math.pi)
