"""``GaussianProcess``: exact GP inference with a kernel prior (docs/numerics.md §10).

A facade over ``tangentflow._model.posterior.GPModel`` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from ._gaussian import Gaussian
from ._model import Options
from ._model.options import Precision
from ._model.posterior import GPModel

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
        k_train_train: Any,
        y_train: Any,
        *,
        diag_reg: float = 0.0,
        diag_reg_absolute_scale: bool = False,
        trace_axes: int | tuple[int, ...] | None = None,
        precision: Precision = "float64",
        rcond: float | None = None,
        _backend: str | None = None,
    ) -> None:
        opts = Options.create(
            diag_reg=diag_reg,
            diag_reg_absolute_scale=diag_reg_absolute_scale,
            trace_axes=trace_axes,
            precision=precision,
            rcond=rcond,
        )
        self._gp = GPModel(k_train_train, y_train, opts, _backend)

    @property
    def _backend(self) -> Any:
        """The backend the model runs on (for introspection in tests)."""
        return self._gp.model.backend

    # -- public properties -------------------------------------------------------------
    @property
    def shift(self) -> float:
        """λ added to the diagonal."""
        return self._gp.model.shift

    @property
    def factorizations(self) -> int:
        """O(N³) eigendecompositions this GaussianProcess has run (at most one)."""
        return self._gp.model.fact.count

    def factorize(self) -> GaussianProcess:
        """Computes the eigendecomposition now (later calls use the spectral path)."""
        self._gp.model.spectrum()
        return self

    def __repr__(self) -> str:
        m = self._gp.model
        return (
            f"GaussianProcess(N={m.size}, shift={self.shift:.3g}, "
            f"backend={m.backend_name!r}, factorized={m.fact.ready})"
        )

    # -- inference -------------------------------------------------------------------------
    def posterior(self, k_test_train: Any = None, k_test_test: Any = None) -> Gaussian:
        """Posterior ``Gaussian(mean, covariance)`` on a test set, or on the training set.

        ``k_test_train`` ``(M, N)`` (interleaved ``(M, N, K, K, ...)`` with
        ``trace_axes``) gives the test mean, shape ``(M, ...)`` like ``y_train``; the
        covariance ``(M, M)`` (``(M, M, K, K, ...)`` over the non-traced axes) is computed
        only when ``k_test_test`` is given too; otherwise ``covariance`` is None. Without test kernels: the posterior
        on the training inputs, mean ``P Y`` and covariance ``V_cut diag(μ⁺) V_cutᵀ`` (the
        ``t → ∞`` limit of the NNGP ensemble): ``Y`` and 0 when nothing is cut.
        """
        mean, cov = self._gp.posterior(k_test_train, k_test_test)
        return Gaussian._with_layout(mean, cov, 0, self._gp.traced)

    def log_marginal_likelihood(self) -> float:
        """``log p(Y)`` under ``N(0, A)``, summed over the output columns (traced axes).

        Per column: ``−½ yᵀA⁺y − ½ log pdet(A) − (D_r/2) log 2π`` with ``D_r`` retained
        modes (all of them unless something is cut, which a ``NumericalWarning`` reports).
        """
        return self._gp.log_marginal_likelihood()
