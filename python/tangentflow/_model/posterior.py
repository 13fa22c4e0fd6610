"""The GaussianProcess engine: exact GP inference with a kernel prior (docs/numerics.md
§10) on one ``KernelModel``: the posterior by Cholesky when the gate allows it, by the
eigenbasis with the spectral cut otherwise, and the log marginal likelihood."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _validate
from .._errors import NumericalWarning, TangentflowError, warn
from .._numerics import array_exponent, cast_outputs, ldexp, ldexp_float, symmetrize
from .covariance import unflatten_cov
from .kernel import KernelModel
from .options import Options
from .spectrum import Spectrum

__all__ = ["GPModel"]


def _ldexp(a: Any, e: int, xp: Any) -> Any:
    """``a·2^e``; results beyond the range become 0/inf silently here and are checked by
    the caller where they matter."""
    with np.errstate(over="ignore", under="ignore"):
        return ldexp(a, e, xp)


class GPModel:
    """The prior kernel model and the targets of one GaussianProcess."""

    def __init__(
        self, k_train_train: Any, y_train: Any, options: Options, backend: str | None = None
    ) -> None:
        m = KernelModel.create(k_train_train, options, backend=backend)
        self.model = m
        y = m.targets(y_train)
        if y.size == 0:
            raise ValueError(f"y_train is empty (shape {tuple(y.shape)})")
        self._y = y
        self._layout = m.layout(y)

    @property
    def traced(self) -> tuple[int, ...]:
        return self._layout.traced

    def _yflat(self) -> Any:
        m = self.model
        return m.xp.ascontiguousarray(self._layout.flatten(self._y, m.xp), dtype=m.dtype)

    def _spectral(self, what: str) -> tuple[Spectrum, Any]:
        spec = self.model.spectrum()
        if spec.n_cut:
            warn(
                f"k_train_train (+ diag_reg) is singular to working precision: {spec.n_cut} of "
                f"{spec.mu.shape[0]} eigenvalue(s) <= {spec.tol:.3e} were cut; the {what} uses "
                "the pseudo-inverse" + (" and pseudo-determinant" if what == "likelihood" else ""),
                NumericalWarning,
            )
        return spec, self.model.eigenvectors()

    def posterior(self, k_test_train: Any, k_test_test: Any) -> tuple[Any, Any]:
        """``(mean, covariance)`` as ``GaussianProcess.posterior`` returns them."""
        m = self.model
        be = m.backend
        xp = be.xp
        lay = self._layout
        cdt = m.dtype
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
            dims, shape = m.dims, lay.y_shape
        else:
            wdt = _validate.wide_dtype(k_test_train, cdt)
            kte, dims = m.test_train_kernel(k_test_train, "k_test_train", wdt)
            ktt = None
            if k_test_test is not None:
                ktt = m.test_test_kernel(k_test_test, "k_test_test", dims)
            shape = lay.test_shape(dims)
            ek = array_exponent(xp, kte)
            kte = xp.ascontiguousarray(ldexp(kte, -ek, xp), dtype=cdt)
            rhs = yf if ktt is None else xp.concatenate([yf, kte.T], axis=1)
            sol = m.cholesky_solve(xp.ascontiguousarray(rhs))
            cov = None
            if sol is not None:
                x, e = sol
                mean = kte @ x[:, :r]
                if ktt is not None:
                    cov = symmetrize(ktt - _ldexp(kte @ x[:, r:], 2 * ek - e, xp))
            else:
                spec, v = self._spectral("posterior")
                e = spec.exp
                vr = v[:, spec.first :]
                inv_root = (1.0 / xp.sqrt(spec.retained)).astype(cdt)
                q = be.test_basis(kte, vr) * inv_root  # 2^-ek·K_td Vᵣ diag(μ̃^-½)
                zy = be.project(vr, yf) * inv_root[:, None]
                mean = q @ zy
                if ktt is not None:
                    cov = symmetrize(ktt - _ldexp(q @ q.T, 2 * ek - e, xp))
            mean = _ldexp(mean, ek - e, xp)
        out = m.out_dtype
        mean = _ldexp(mean, ey, xp)
        if not bool(xp.all(xp.isfinite(mean))):
            raise TangentflowError(
                "the posterior mean overflows float64: the answer itself is not representable "
                "(every intermediate is scaled by powers of two); rescale y_train"
            )
        mean = xp.reshape(lay.unflatten(mean[None], shape, xp), shape)
        mean = cast_outputs(mean, out, "posterior mean", xp)
        if cov is not None:
            cov = cast_outputs(unflatten_cov(cov[None], dims, (), xp), out, "covariance", xp)
        return mean, cov

    def _train_posterior(self, yf: Any) -> tuple[Any, Any]:
        m = self.model
        xp = m.xp
        cdt = m.dtype
        d = yf.shape[0]
        if m.cholesky_solve(yf) is not None:
            return yf.copy(), xp.zeros((d, d), dtype=cdt)
        spec, v = self._spectral("posterior")
        first = spec.first
        if first == 0:
            return yf.copy(), xp.zeros((d, d), dtype=cdt)
        vr = v[:, first:]
        mean = vr @ m.backend.project(vr, yf)
        w = v[:, :first] * xp.sqrt(xp.maximum(spec.mu[:first], 0.0)).astype(cdt)
        return mean, _ldexp(symmetrize(w @ w.T), spec.exp, xp)  # μ of 2^-e·A

    def log_marginal_likelihood(self) -> float:
        """``log p(Y)`` under ``N(0, A)``, summed over the output columns (traced axes)."""
        be = self.model.backend
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
        return float(out)
