"""``KernelModel``: one train kernel and everything derived from it.

It owns the validated kernel (flattened to ``(D, D)``, docs/numerics.md §2) on one backend,
its ``Options``, the factorization (shared by every model ``derive`` makes from it), the
power-of-two scale, the shift ``λ``, the spectral cut, the Cholesky gate and the largest
stable learning rate. The engines beside it (``closed_form``, ``ode``, ``covariance``) act
on it; the facades (``Predictor``, ``Ensemble``, ``GaussianProcess``) hold one (or two) and
translate their arguments. Only this package talks to ``tangentflow._backends``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _backends, _validate
from .._backends import Backend
from .._numerics import ldexp_float
from .._shapes import Layout
from .options import Options
from .spectrum import Factorization, Spectrum, default_rcond

__all__ = ["KernelModel", "CHOLESKY_MAX_COND", "max_stable_rate"]

#: Condition-number gate of the Cholesky fast path for t = ∞ (docs/numerics.md §3.2).
CHOLESKY_MAX_COND = 1e6


def max_stable_rate(n: float, momentum: float, s_max: float, exp: int) -> float:
    """``2(1 + m)·n/μ_max`` from the scaled ``μ̃_max = 2^-exp·μ_max`` (docs/numerics.md §11),
    exact at every kernel scale."""
    return ldexp_float(2.0 * (1.0 + momentum) * n / s_max, -exp)


def select_backend(kernel: Any, override: str | None = None) -> Backend:
    """The backend for a kernel (``override``: "cpu", "numpy", "cupy"; for tests)."""
    return _backends.select(kernel, override)


class KernelModel:
    """One validated train kernel, its options, factorization and spectrum.

    Build with ``KernelModel.create``; ``derive`` gives a model with other options that
    shares this one's factorization (``Predictor.with_params``)."""

    #: True for ``OperatorModel`` (a kernel operator, the Krylov backend: ``_model/krylov.py``).
    is_operator: bool = False
    backend: Backend
    k: Any
    name: str
    dims: tuple[int, ...]
    trace: float
    out_dtype: np.dtype[Any]
    options: Options
    fact: Factorization
    y: Any
    #: ``max|K_ij|`` from validation (None when unknown, e.g. unpickled): the Cholesky
    #: path's power-of-two scale without another pass over the kernel.
    max_abs: float | None
    #: ``(Y, layout, flat Y, max|Y|)`` of ``y``, the targets given at construction, worked
    #: out once for every call that uses them (``call_targets``; keyed by ``y`` itself).
    _own_targets: tuple[Any, Layout, Any, float] | None

    def __init__(
        self,
        backend: Backend,
        k: Any,
        name: str,
        dims: tuple[int, ...],
        trace: float,
        out_dtype: np.dtype[Any],
        options: Options,
        fact: Factorization | None = None,
    ) -> None:
        self.backend = backend
        self.k = k
        self.name = name
        self.dims = tuple(dims)
        self.trace = trace
        self.out_dtype = np.dtype(out_dtype)
        self.options = options
        self.fact = fact if fact is not None else Factorization(k, backend, options.dtype)
        self.y = None
        self.max_abs = None
        self._own_targets = None
        self._spec: Spectrum | None = None

    @classmethod
    def create(
        cls,
        k_train_train: Any,
        options: Options,
        *,
        name: str = "k_train_train",
        y_train: Any = None,
        backend: Backend | str | None = None,
        check_trace_axes: bool = True,
    ) -> KernelModel:
        """Validates the kernel (and the targets, kept as a copy) on the backend chosen for
        it; ``backend`` is an override name or an already chosen backend (a second kernel
        of the same facade). ``check_trace_axes``: ``trace_axes=None`` needs a 2-D kernel.
        A kernel operator (``tangentflow.operators.is_operator``) gives an ``OperatorModel``
        (the Krylov backend; docs/numerics.md §15)."""
        if not isinstance(k_train_train, np.ndarray):
            from . import krylov

            if krylov.is_operator(k_train_train):
                return krylov.OperatorModel.from_operator(
                    k_train_train,
                    options,
                    name=name,
                    y_train=y_train,
                    check_trace_axes=check_trace_axes,
                )
        be = backend if backend is not None and not isinstance(backend, str) else None
        if be is None:
            be = select_backend(k_train_train, backend if isinstance(backend, str) else None)
        trace_axes = options.trace_axes if check_trace_axes else ()
        k2, dims, trace, kdtype, max_abs = _validate.train_kernel(
            k_train_train, name, be, trace_axes
        )
        model = cls(be, k2, name, dims, trace, kdtype, options)
        model.max_abs = max_abs
        if y_train is not None:
            y, layout, big = model._targets(y_train)
            model.y = y.copy()  # targets are small: kept as a copy
            model._own_targets = (model.y, layout, model.flat(model.y, layout), big)
        return model

    def derive(self, **changes: Any) -> KernelModel:
        """A model with ``changes`` to the options, sharing this factorization."""
        self.fact.shared = True
        new = KernelModel(
            self.backend,
            self.k,
            self.name,
            self.dims,
            self.trace,
            self.out_dtype,
            self.options.replace(**changes),
            self.fact,
        )
        new.y = self.y
        new.max_abs = self.max_abs
        return new

    # -- pickling (by backend name; docs/architecture.md) ------------------------------------
    def state(self) -> dict[str, Any]:
        """The pickled form of a Predictor (keys checked by ``_validate.predictor_state``)."""
        return {
            "backend": self.backend.name,
            "k": self.k,
            "kdims": self.dims,
            "out_dtype": self.out_dtype.str,
            "trace": self.trace,
            "cfg": self.options.as_dict(),
            "y": self.y,
            "w": self.fact.w,
            "exp": self.fact.exp,
            # the factors as they are (docs/numerics.md §17): the reflectors Q with Z where
            # they are kept (V, were it formed, is Q·Z bitwise and formed again on demand),
            # else V; the unpickled Predictor uses the same procedure and gives the same bits
            "v": self.fact.v if self.fact.q is None else None,
            "z": self.fact.z,
            "q": self.fact.q,
            "count": self.fact.count,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KernelModel:
        _validate.predictor_state(state)
        be = _backends.by_name(state["backend"])
        options = Options.create(**state["cfg"])
        model = cls(
            be,
            state["k"],
            "k_train_train",
            tuple(state["kdims"]),
            state["trace"],
            np.dtype(state["out_dtype"]),
            options,
        )
        fact = model.fact
        fact.w, fact.v, fact.count = state["w"], state["v"], state["count"]
        fact.z, fact.q = state.get("z"), state.get("q")
        fact.exp = int(state.get("exp", 0))  # older pickles hold unscaled w
        model.y = state["y"]
        return model

    # -- derived quantities --------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def dtype(self) -> np.dtype[Any]:
        """The compute dtype."""
        return self.options.dtype

    @property
    def size(self) -> int:
        """``D``, the side of the flattened kernel."""
        return int(self.k.shape[0])

    @property
    def shift(self) -> float:
        """λ actually added to the diagonal (relative to the mean diagonal entry unless
        ``diag_reg_absolute_scale``; docs/numerics.md §4)."""
        o = self.options
        if o.diag_reg_absolute_scale or o.diag_reg == 0.0:
            return o.diag_reg
        d = self.size
        return o.diag_reg * (self.trace / d) if d else 0.0

    @property
    def rcond(self) -> float:
        rc = self.options.rcond
        return rc if rc is not None else default_rcond(self.size, self.options.precision)

    def spectrum(self) -> Spectrum:
        """Eigenvalues of ``sym(K) + λI`` with the cut (factorizes if needed)."""
        if self._spec is None:
            w = self.fact.modes()[0]
            spec = Spectrum.of(w, self.shift, self.rcond, self.xp, self.fact.exp)
            spec.warn_if_not_psd(name=self.name)
            self._spec = spec
        return self._spec

    def eigenvectors(self) -> Any:
        """``V`` (formed on first use where the factorization keeps ``Q`` and ``Z``)."""
        return self.fact.ensure()[1]

    def modes(self, first: int) -> tuple[Any, Any]:
        """``(B, Q)``: the retained eigenvectors ``V_R`` as the closed forms use them,
        ``Q·B`` with the reduction's reflectors ``Q``, or ``B = V_R`` and ``Q = None``
        (docs/numerics.md §17)."""
        _, b, q = self.fact.modes()
        return b[:, first:], q

    def scaled_lr(self) -> float:
        """``η·2^e``: the learning rate that goes with the scaled eigenvalues (only ``η·A``
        enters the dynamics; docs/numerics.md §12, "Scale invariance")."""
        lr = ldexp_float(self.options.learning_rate, self.fact.exp)
        if not math.isfinite(lr):
            raise ValueError(
                f"learning_rate {self.options.learning_rate:.6g} times the kernel's scale "
                f"2^{self.fact.exp} overflows float64"
            )
        return lr

    def dynamics(self, n: int) -> tuple[str, list[float]]:
        """``(kind, params)`` of the dynamics of the scaled eigenvalues (``Spectrum.mu``)
        for a loss over ``n`` outputs."""
        o = self.options
        lr = self.scaled_lr()
        if o.momentum is not None:
            return "momentum", [lr, o.momentum, float(n)]
        if o.dynamics == "gd":
            return "gd", [lr / n]
        return "flow", [lr / n]

    def mode_factors(self, ts: Any, n: int) -> tuple[Any, Any]:
        """``(e^{−μs} − 1, φ)`` of the retained modes at the times ``ts``."""
        kind, params = self.dynamics(n)
        return self.backend.mode_factors(kind, params, self.spectrum().retained, ts)

    def max_learning_rate(self, n: float) -> float:
        """The largest stable learning rate for a loss over ``n`` outputs (docs/numerics.md
        §11); NaN without a positive eigenvalue (no rate is then the largest stable one)."""
        spec = self.spectrum()
        if not spec.s_max > 0.0:
            return math.nan
        return max_stable_rate(n, self.options.momentum or 0.0, spec.s_max, spec.exp)

    def check_steps_converge(self, ts: Any, n: int) -> None:
        """``t = ∞`` with discrete steps exists only below the largest stable rate."""
        if self.options.dynamics == "gd" and np.any(np.isinf(ts)):
            spec = self.spectrum()
            if spec.retained.shape[0] and self.scaled_lr() * spec.s_max / n >= 2.0:
                raise ValueError(
                    f"t=inf with dynamics='gd' diverges: learning_rate "
                    f"{self.options.learning_rate} >= the largest stable rate "
                    f"{self.max_learning_rate(n):.6g}"
                )

    def cholesky_solve(self, rhs: Any) -> tuple[Any, int] | None:
        """``(Ã⁻¹·rhs, e)`` with ``Ã = 2^-e·A`` when the Cholesky fast path is safe: not
        factorized yet, estimated condition <= 1e6 and nothing to cut (docs/numerics.md
        §3.2); None → the spectral path."""
        if self.fact.ready:
            return None
        res = self.backend.cholesky_solve(self.k, self.shift, rhs, self.max_abs)
        if res is None:
            return None
        x, norm_inf, mu_min_est, cond_est, e = res
        if not (cond_est <= CHOLESKY_MAX_COND and mu_min_est > 2.0 * self.rcond * norm_inf):
            return None
        return x, e

    # -- predictions (the engines in predict.py) -----------------------------------------------
    def at(
        self,
        t: Any = None,
        *,
        y_train: Any = None,
        fx_train_0: Any = 0.0,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ) -> tuple[Any, Any]:
        """``(train, test)`` outputs at time(s) ``t``, exactly as ``Predictor.at``."""
        from . import predict

        return predict.at(
            self,
            t,
            y_train=y_train,
            fx_train_0=fx_train_0,
            fx_test_0=fx_test_0,
            k_test_train=k_test_train,
        )

    def ode_state(
        self,
        t: Any,
        fx_train_0: Any,
        fx_test_0: Any,
        k_test_train: Any,
        qx_train_0: Any,
        qx_test_0: Any,
    ) -> tuple[Any, Any, Any, Any]:
        """ODE outputs and velocities ``(train, test, q_train, q_test)`` (None velocities
        without momentum), for resumable states such as neural-tangents' ``ODEState``."""
        from . import predict

        return predict.ode_state(
            self, t, fx_train_0, fx_test_0, k_test_train, qx_train_0, qx_test_0
        )

    # -- inputs on this model's backend ----------------------------------------------------------
    def array(self, a: Any, name: str) -> tuple[Any, float]:
        """A finite float array on the backend and its ``max|a|`` (errors name the argument)."""
        arr = _validate.as_float_array(a, name, self.backend)
        return arr, _validate.finite_max_abs(arr, name, self.xp)

    def _targets(
        self, y: Any, name: str = "y_train", kernel_name: str = "k_train_train"
    ) -> tuple[Any, Layout, float]:
        """``(targets, layout, max|Y|)``, validated (their shape checked against the kernel)."""
        arr, big = self.array(y, name)
        return arr, self.layout(arr, kernel_name), big

    def targets(self, y: Any, name: str = "y_train", kernel_name: str = "k_train_train") -> Any:
        """Validated targets (their shape checked against the kernel now)."""
        return self._targets(y, name, kernel_name)[0]

    def call_targets(self, y_train: Any) -> tuple[Any, Layout, Any, float]:
        """``(Y, layout, flat Y, max|Y|)`` of one call: ``y_train`` validated now, or else
        the targets given at construction (all four worked out once for every call)."""
        facts: tuple[Any, Layout, Any, float]
        if y_train is not None:
            y, layout, big = self._targets(y_train)
            facts = (y, layout, self.flat(y, layout), big)
        elif self.y is None:
            raise ValueError("y_train is required: pass it to the constructor or to this call")
        elif self._own_targets is not None and self._own_targets[0] is self.y:
            facts = self._own_targets
        else:  # a derived or unpickled model: its targets' facts are not worked out yet
            y = self.y
            layout = self.layout(y)
            big = _validate.finite_max_abs(y, "y_train", self.xp)
            facts = self._own_targets = (y, layout, self.flat(y, layout), big)
        if facts[0].size == 0:
            raise ValueError(f"y_train is empty (shape {tuple(facts[0].shape)})")
        return facts

    def layout(self, y: Any, kernel_name: str = "k_train_train") -> Layout:
        return Layout.resolve(y.shape, self.options.trace_axes, self.dims, kernel_name=kernel_name)

    def broadcast(self, value: Any, shape: tuple[int, ...], name: str) -> tuple[Any, float]:
        """``value`` validated and broadcast to ``shape``, and its ``max|value|``."""
        a, big = self.array(value, name)
        if tuple(a.shape) == shape:
            return a, big
        try:
            return self.xp.broadcast_to(a, shape), big
        except ValueError:
            raise ValueError(
                f"{name} of shape {tuple(a.shape)} does not broadcast to {shape}"
            ) from None

    def flat(self, a: Any, layout: Layout, dtype: Any = None) -> Any:
        """``a`` (shaped like the targets) as ``(D, R)`` in the compute dtype."""
        xp = self.xp
        f = layout.flatten(a, xp)
        dt = self.dtype if dtype is None else dtype
        return xp.ascontiguousarray(f, dtype=dt) if hasattr(xp, "ascontiguousarray") else f

    def test_train_kernel(self, raw: Any, name: str, dtype: Any) -> tuple[Any, tuple[int, ...]]:
        return _validate.test_train_kernel(raw, name, self.backend, self.dims, dtype)

    def test_test_kernel(self, raw: Any, name: str, test_dims: tuple[int, ...]) -> Any:
        return _validate.test_test_kernel(raw, name, self.backend, test_dims, self.dtype)

    def __repr__(self) -> str:
        return (
            f"KernelModel({self.name}, D={self.size}, backend={self.backend.name!r}, "
            f"factorized={self.fact.ready})"
        )
