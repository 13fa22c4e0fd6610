"""``Ensemble``: mean and covariance of an infinite ensemble trained with MSE (docs/numerics.md §8).

A facade over ``tangentflow._model.covariance.EnsembleModel`` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from ._gaussian import Gaussian
from ._model import Options
from ._model.covariance import EnsembleModel
from ._model.options import Precision

__all__ = ["Ensemble"]


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

    Kernel operators (``tangentflow.operators``, SciPy ``LinearOperator``, Dask arrays)
    instead of arrays give the means by the Krylov backend (docs/numerics.md §15) with
    ``at(..., compute_cov=False)``; their covariances are a ``NotImplementedError``.

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
        nngp_train_train: Any,
        y_train: Any,
        *,
        ntk_train_train: Any = None,
        learning_rate: float = 1.0,
        diag_reg: float = 0.0,
        diag_reg_absolute_scale: bool = False,
        trace_axes: int | tuple[int, ...] | None = None,
        precision: Precision = "float64",
        rcond: float | None = None,
        _backend: str | None = None,
    ) -> None:
        opts = Options.create(
            learning_rate=learning_rate,
            diag_reg=diag_reg,
            diag_reg_absolute_scale=diag_reg_absolute_scale,
            trace_axes=trace_axes,
            precision=precision,
            rcond=rcond,
        )
        self._ens = EnsembleModel(nngp_train_train, y_train, ntk_train_train, opts, _backend)

    @property
    def _backend(self) -> Any:
        """The backend the model runs on (for introspection in tests)."""
        return self._ens.dyn.backend

    # -- public properties -------------------------------------------------------------
    @property
    def mode(self) -> str:
        """ "ntk" (an NTK was given: all layers train) or "nngp" (only the readout)."""
        return self._ens.mode

    @property
    def learning_rate(self) -> float:
        return self._ens.dyn.options.learning_rate

    @property
    def shift(self) -> float:
        """λ added to the diagonal of the dynamics kernel."""
        return self._ens.dyn.shift

    @property
    def factorizations(self) -> int:
        """O(N³) eigendecompositions this Ensemble has run (at most one)."""
        return self._ens.dyn.fact.count

    @property
    def eigenvalues(self) -> Any:
        """Eigenvalues of ``sym(k_dd) + λI`` of the dynamics kernel, ascending."""
        dyn = self._ens.dyn
        return dyn.spectrum().eigenvalues(dyn.xp)

    def factorize(self) -> Ensemble:
        """Computes the eigendecomposition now (it is otherwise done on first use)."""
        self._ens.dyn.spectrum()
        return self

    def __repr__(self) -> str:
        dyn = self._ens.dyn
        return (
            f"Ensemble(mode={self.mode!r}, N={self._ens.size}, "
            f"learning_rate={self.learning_rate}, shift={self.shift:.3g}, "
            f"backend={dyn.backend_name!r}, factorized={dyn.fact.ready})"
        )

    # -- prediction ------------------------------------------------------------------------
    def at(
        self,
        t: Any = None,
        *,
        ntk_test_train: Any = None,
        nngp_test_train: Any = None,
        nngp_test_test: Any = None,
        compute_cov: bool = True,
    ) -> Gaussian:
        """Mean and covariance at time(s) ``t`` (None or inf: converged).

        Without test kernels: on the training set. ``mean`` has shape
        ``t.shape + output shape``; ``covariance`` ``t.shape + (d0, d0, ...)`` over the
        non-traced output axes, or None when ``compute_cov=False``. Needed test kernels:
        "nngp" mode ``nngp_test_train`` (+ ``nngp_test_test`` for the covariance); "ntk"
        mode ``ntk_test_train`` (+ ``nngp_test_train`` and ``nngp_test_test``).
        """
        mean, cov, time_ndim, traced = self._ens.at(
            t, ntk_test_train, nngp_test_train, nngp_test_test, compute_cov
        )
        return Gaussian._with_layout(mean, cov, time_ndim, traced)
