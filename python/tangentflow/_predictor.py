"""``Predictor``: outputs of a model trained by gradient descent in the kernel regime.

A facade over ``tangentflow._model``: it validates nothing itself and computes nothing
itself; it holds one ``KernelModel`` (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ._model import KernelModel, Options, TestInputs, predict
from ._model.options import Dynamics, Loss, Precision

__all__ = ["Predictor", "Prediction", "Diagnostics", "TestSet"]


class Prediction(NamedTuple):
    """Outputs at the requested times: ``t.shape + output shape``, or None if not asked."""

    train: Any
    test: Any


@dataclass(frozen=True)
class Diagnostics:
    """Spectral facts of ``A = sym(K) + λI`` (see ``Predictor.diagnostics``)."""

    min_eigenvalue: float
    max_eigenvalue: float
    n_cut: int
    max_cut_magnitude: float
    psd_correction: float
    condition_number: float
    max_learning_rate: float
    time_to_1pct: float
    rcond: float
    cut_threshold: float


class Predictor:
    """Outputs of a model trained by gradient descent in the kernel regime.

    Linearized around initialization, a network trained with the mean-squared loss
    evolves in function space as ``f(t) = Y + exp(-η t A / n)(f₀ − Y)`` on the training
    set, with ``A = sym(K) + λI``; test outputs follow through ``k_test_train``
    (docs/numerics.md §3–§5). The kernel is factorized once (lazily, on first use) and the
    factorization serves every time, target set, learning rate and ``diag_reg``.

    Parameters
    ----------
    k_train_train : array, (N, N) or pair-interleaved (N, N, K, K, ...)
        NTK (or NNGP) over the training inputs. NumPy/array-like → Rust core; CuPy (or a
        DLPack GPU array) → GPU backend. Must be symmetric to ``1e-5·max|K|``. The
        Predictor keeps a reference to it (no N² copy) until it is factorized: do not
        modify it in place afterwards.
    y_train : array, optional
        Targets ``(N,)`` or ``(N, ...)``; may instead be given per call.
    learning_rate : float
        η. With gradient flow only ``η·t`` matters; with momentum time is ``√η·t``.
    diag_reg, diag_reg_absolute_scale
        λ added to the diagonal; relative to the mean diagonal entry unless absolute.
    momentum : float in [0, 1), optional
        Heavy-ball momentum (closed form per eigenmode for MSE).
    loss : "mse", "cross_entropy" or callable
        Anything other than "mse" is integrated with Dormand–Prince 5(4).
    dynamics : "flow" or "gd"
        Continuous gradient flow, or discrete gradient-descent steps (MSE only).
    trace_axes : tuple of int, optional
        Output axes the kernel is traced over (docs/numerics.md §2). ``None`` with a 2-D kernel:
        every target axis after the first.
    precision : "float64" or "float32"
        Precision of the factorization. "float32" is faster (about 1.7x on a GPU) and uses
        half the memory but loses about 8 digits, and its default spectral cut is
        ``D·ε₃₂·max|μ|`` (2.4e-4·max|μ| at D = 2000): on an NTK with one dominant mode that
        removes much of the small spectrum, so late-time predictions differ from float64.
        Use it for kernels whose spectrum lies above that cut.
    rcond : float, optional
        Eigenvalues ``<= rcond·max|μ|`` are exact null directions (default ``D·ε``).
    rtol, atol, converge_tol
        ODE tolerances (``rtol=None``: 1.4e-8); ``converge_tol`` lets ``t=None`` stop at
        ``max|df/dτ| <= tol``. With a kernel operator ``rtol`` is the Krylov solver's
        target instead (``None``: 1e-8), relative to ``max|f₀ − Y|``.
    max_iter : int, optional
        Kernel operators: the cap on block iterations of one Krylov basis (default 1000);
        not converging within it is a ``NumericalWarning`` naming the achieved error.
    progress : bool, optional
        Kernel operators: a progress bar (tqdm when installed) with the iterations and
        the estimated error; ``None`` shows it on a terminal once a solve runs 2 s.

    A kernel operator (anything with ``.shape``, ``.dtype`` and ``.matmat``: a
    ``tangentflow.operators`` operator, a SciPy ``LinearOperator``, a Dask array) instead
    of an array selects the Krylov backend: the kernel is touched only through block
    products, never stored or factorized (MSE gradient flow; docs/numerics.md §15,
    docs/scale.md). ``solver_info`` reports each solve.

    Examples
    --------
    >>> import numpy as np
    >>> from tangentflow import Predictor
    >>> x = np.linspace(-1, 1, 5)[:, None]
    >>> k = np.exp(-(x - x.T) ** 2)
    >>> Predictor(k).at(None, y_train=np.sin(3 * x)).train.round(6).ravel().tolist()
    [-0.14112, -0.981688, 0.0, 0.981688, 0.14112]
    """

    def __init__(
        self,
        k_train_train: Any,
        y_train: Any = None,
        *,
        learning_rate: float = 1.0,
        diag_reg: float = 0.0,
        diag_reg_absolute_scale: bool = False,
        momentum: float | None = None,
        loss: Loss = "mse",
        dynamics: Dynamics = "flow",
        trace_axes: int | tuple[int, ...] | None = None,
        precision: Precision = "float64",
        rcond: float | None = None,
        rtol: float | None = None,
        atol: float = 1.4e-8,
        converge_tol: float | None = None,
        max_iter: int | None = None,
        progress: bool | None = None,
        _backend: str | None = None,
    ) -> None:
        opts = Options.create(
            learning_rate=learning_rate,
            diag_reg=diag_reg,
            diag_reg_absolute_scale=diag_reg_absolute_scale,
            momentum=momentum,
            loss=loss,
            dynamics=dynamics,
            trace_axes=trace_axes,
            precision=precision,
            rcond=rcond,
            rtol=rtol,
            atol=atol,
            converge_tol=converge_tol,
            max_iter=max_iter,
            progress=progress,
        )
        self._model = KernelModel.create(k_train_train, opts, y_train=y_train, backend=_backend)

    @property
    def model(self) -> KernelModel:
        """The kernel model behind this Predictor (internal: compat and the CLI)."""
        return self._model

    # -- construction helpers ---------------------------------------------------------------
    def with_params(
        self,
        *,
        learning_rate: float | None = None,
        diag_reg: float | None = None,
        diag_reg_absolute_scale: bool | None = None,
    ) -> Predictor:
        """A Predictor with other ``learning_rate``/``diag_reg`` sharing this factorization."""
        changes: dict[str, Any] = {}
        if learning_rate is not None:
            changes["learning_rate"] = learning_rate
        if diag_reg is not None:
            changes["diag_reg"] = diag_reg
        if diag_reg_absolute_scale is not None:
            changes["diag_reg_absolute_scale"] = diag_reg_absolute_scale
        new = object.__new__(Predictor)
        new._model = self._model.derive(**changes)
        return new

    def factorize(self) -> Predictor:
        """Computes the eigendecomposition now (it is otherwise done on first use); the
        eigenvectors stay in factored form until something needs them whole
        (docs/numerics.md §17)."""
        self._model.fact.modes()
        return self

    @property
    def _backend(self) -> Any:
        """The backend the model runs on (for introspection in tests)."""
        return self._model.backend

    # -- public properties ----------------------------------------------------------------
    @property
    def factorizations(self) -> int:
        """O(N³) factorizations run by this Predictor and its ``with_params`` family."""
        return self._model.fact.count

    @property
    def learning_rate(self) -> float:
        return self._model.options.learning_rate

    @property
    def diag_reg(self) -> float:
        return self._model.options.diag_reg

    @property
    def diag_reg_absolute_scale(self) -> bool:
        return self._model.options.diag_reg_absolute_scale

    @property
    def momentum(self) -> float | None:
        return self._model.options.momentum

    @property
    def precision(self) -> str:
        return self._model.options.precision

    @property
    def shift(self) -> float:
        """λ actually added to the diagonal (after the relative scaling)."""
        return self._model.shift

    @property
    def rcond(self) -> float:
        return self._model.rcond

    @property
    def solver_info(self) -> Any:
        """What the last Krylov solve of this Predictor did (kernel operators): a
        ``SolverInfo`` with ``method``, ``iterations``, ``matvecs``, ``error_estimate``,
        ``converged``; None before the first solve and for array kernels."""
        return getattr(self._model, "solver_info", None)

    @property
    def eigenvalues(self) -> Any:
        """Eigenvalues of ``sym(K) + λI``, ascending (factorizes if needed)."""
        return self._model.spectrum().eigenvalues(self._model.xp)

    # -- predictions ------------------------------------------------------------------------
    def at(
        self,
        t: Any = None,
        *,
        y_train: Any = None,
        fx_train_0: Any = 0.0,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ) -> Prediction:
        """Outputs at time(s) ``t`` (None or inf: converged).

        Returns ``Prediction(train, test)``: ``t.shape + y_train.shape`` on the training
        set (None when ``fx_train_0=None``) and ``t.shape + test shape`` on the test set
        (when ``k_test_train`` is given; ``fx_test_0`` defaults to 0).
        """
        return Prediction(
            *predict.at(
                self._model,
                t,
                y_train=y_train,
                fx_train_0=fx_train_0,
                fx_test_0=fx_test_0,
                k_test_train=k_test_train,
            )
        )

    def test_set(self, k_test_train: Any, fx_test_0: Any = 0.0) -> TestSet:
        """A handle whose ``.at`` reuses the test-dependent work ``K_te·V`` across calls."""
        return TestSet(self, k_test_train, fx_test_0)

    def train_loss(self, t: Any = None, *, y_train: Any = None, fx_train_0: Any = 0.0) -> Any:
        """MSE training loss ``‖f(t) − y‖²/(2n)`` at times ``t``, from the eigenbasis
        (O(N·R·T), no outputs formed)."""
        return predict.train_loss(self._model, t, y_train, fx_train_0)

    # -- diagnostics -------------------------------------------------------------------------
    def diagnostics(self) -> Diagnostics:
        """Spectral diagnostics (factorizes if needed)."""
        return Diagnostics(**predict.diagnostics(self._model))

    # -- pickling (the model's state: by backend name, checked on load) ----------------------
    def __getstate__(self) -> dict[str, Any]:
        return self._model.state()

    def __setstate__(self, state: Any) -> None:
        self._model = KernelModel.from_state(state)

    def __repr__(self) -> str:
        m = self._model
        o = m.options
        return (
            f"Predictor(N={m.size}, learning_rate={o.learning_rate}, "
            f"diag_reg={o.diag_reg}, loss={o.loss!r}, dynamics={o.dynamics!r}, "
            f"momentum={o.momentum}, backend={m.backend_name!r}, "
            f"factorized={m.fact.ready})"
        )


class TestSet:
    """A Predictor bound to one test set; ``at`` reuses ``K_te·V`` across calls."""

    __test__ = False  # not a pytest class

    def __init__(self, predictor: Predictor, k_test_train: Any, fx_test_0: Any = 0.0) -> None:
        self.predictor = predictor
        self._inputs = TestInputs(predictor.model, k_test_train, fx_test_0, cached=True)
        self._inputs.prepare()

    def at(self, t: Any = None, *, y_train: Any = None, fx_train_0: Any = 0.0) -> Prediction:
        """Like ``Predictor.at`` with this test set; returns ``Prediction(train, test)``."""
        return Prediction(
            *predict.predict(self.predictor.model, t, y_train, fx_train_0, self._inputs)
        )

    def with_params(
        self,
        *,
        learning_rate: float | None = None,
        diag_reg: float | None = None,
        diag_reg_absolute_scale: bool | None = None,
    ) -> TestSet:
        """This test set on ``predictor.with_params(...)``: the factorization and the cached
        ``K_te·V`` are shared, so a sweep over learning rates and ``diag_reg`` costs one
        eigendecomposition and one ``K_te·V`` in all."""
        p = self.predictor.with_params(
            learning_rate=learning_rate,
            diag_reg=diag_reg,
            diag_reg_absolute_scale=diag_reg_absolute_scale,
        )
        new = object.__new__(TestSet)
        new.predictor = p
        new._inputs = self._inputs.rebind(p.model)
        return new
