"""``Predictor``: outputs of a model trained by gradient descent in the kernel regime."""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _backends, _validate
from ._errors import TangentflowError
from ._shapes import Layout, freeze_trace_axes
from ._spectrum import (
    Factorization,
    Spectrum,
    array_exponent,
    cast_outputs,
    default_rcond,
    ldexp,
    ldexp_float,
)

__all__ = ["Predictor", "Prediction", "Diagnostics", "TestSet"]

#: Condition-number gate of the Cholesky fast path for t = ∞ (docs/numerics.md §3.2).
CHOLESKY_MAX_COND = 1e6
_LOSSES = ("mse", "cross_entropy")


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


class _Config:
    """Validated constructor options (shared logic of Predictor and with_params)."""

    __slots__ = (
        "learning_rate",
        "diag_reg",
        "diag_reg_absolute_scale",
        "momentum",
        "loss",
        "dynamics",
        "trace_axes",
        "precision",
        "rcond",
        "rtol",
        "atol",
        "converge_tol",
    )

    def __init__(self, **kw):
        lr = _validate.positive_float(kw["learning_rate"], "learning_rate")
        reg = _validate.positive_float(kw["diag_reg"], "diag_reg", allow_zero=True)
        if not isinstance(kw["diag_reg_absolute_scale"], (bool, np.bool_)):
            raise TypeError("diag_reg_absolute_scale must be a bool")
        m = kw["momentum"]
        if m is not None:
            if isinstance(m, bool) or not isinstance(m, (int, float, np.floating, np.integer)):
                raise TypeError(f"momentum must be None or a float in [0, 1), got {m!r}")
            m = float(m)
            if not 0.0 <= m < 1.0:
                raise ValueError(f"momentum must be in [0, 1), got {m!r}")
        loss = kw["loss"]
        if isinstance(loss, str):
            if loss not in _LOSSES:
                raise ValueError(f'loss must be "mse", "cross_entropy" or a callable, got {loss!r}')
        elif not callable(loss):
            raise TypeError(f"loss must be a string or a callable, got {type(loss).__name__}")
        dyn = kw["dynamics"]
        if dyn not in ("flow", "gd"):
            raise ValueError(f'dynamics must be "flow" or "gd", got {dyn!r}')
        if dyn == "gd" and loss != "mse":
            raise ValueError('dynamics="gd" is available for loss="mse" only')
        if dyn == "gd" and m is not None:
            raise ValueError('dynamics="gd" does not take momentum (use dynamics="flow")')
        if loss != "mse" and reg != 0.0:
            raise ValueError(
                "diag_reg must be 0 with an ODE loss (it applies to the MSE closed forms)"
            )
        prec = kw["precision"]
        if prec not in ("float64", "float32"):
            raise ValueError(f'precision must be "float64" or "float32", got {prec!r}')
        rc = kw["rcond"]
        if rc is not None:
            rc = _validate.positive_float(rc, "rcond")
        rtol = _validate.positive_float(kw["rtol"], "rtol")
        atol = _validate.positive_float(kw["atol"], "atol")
        ct = kw["converge_tol"]
        if ct is not None:
            ct = _validate.positive_float(ct, "converge_tol")
        self.learning_rate, self.diag_reg = lr, reg
        self.diag_reg_absolute_scale = bool(kw["diag_reg_absolute_scale"])
        self.momentum, self.loss, self.dynamics = m, loss, dyn
        self.trace_axes = freeze_trace_axes(kw["trace_axes"])  # a generator is read once
        self.precision, self.rcond, self.rtol, self.atol, self.converge_tol = (
            prec,
            rc,
            rtol,
            atol,
            ct,
        )

    def as_dict(self):
        return {s: getattr(self, s) for s in self.__slots__}


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
        ODE tolerances; ``converge_tol`` lets ``t=None`` stop at ``max|df/dτ| <= tol``.

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
        k_train_train,
        y_train=None,
        *,
        learning_rate=1.0,
        diag_reg=0.0,
        diag_reg_absolute_scale=False,
        momentum=None,
        loss="mse",
        dynamics="flow",
        trace_axes=None,
        precision="float64",
        rcond=None,
        rtol=1.4e-8,
        atol=1.4e-8,
        converge_tol=None,
        _backend=None,
    ):
        cfg = _Config(
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
        )
        backend = _backends.select(k_train_train, _backend)
        k2, dims, trace, kdtype = _validate.train_kernel(
            k_train_train, "k_train_train", backend, trace_axes
        )
        self._backend = backend
        self._k = k2
        self._kdims = dims
        self._out_dtype = kdtype
        self._trace = trace
        self._cfg = cfg
        self._fact = Factorization(k2, backend, np.dtype(cfg.precision))
        self._spec = None
        self._y = None
        if y_train is not None:
            self._y = self._targets(y_train).copy()  # targets are small: kept as a copy

    # -- construction helpers ---------------------------------------------------------------
    def _derive(self, **changes) -> Predictor:
        new = object.__new__(Predictor)
        new.__dict__.update(self.__dict__)
        kw = self._cfg.as_dict()
        kw.update(changes)
        new._cfg = _Config(**kw)
        new._spec = None
        return new

    def with_params(self, *, learning_rate=None, diag_reg=None, diag_reg_absolute_scale=None):
        """A Predictor with other ``learning_rate``/``diag_reg`` sharing this factorization."""
        changes = {}
        if learning_rate is not None:
            changes["learning_rate"] = learning_rate
        if diag_reg is not None:
            changes["diag_reg"] = diag_reg
        if diag_reg_absolute_scale is not None:
            changes["diag_reg_absolute_scale"] = diag_reg_absolute_scale
        return self._derive(**changes)

    def factorize(self) -> Predictor:
        """Computes the eigendecomposition now (it is otherwise done on first use)."""
        self._fact.ensure()
        return self

    # -- public properties ----------------------------------------------------------------
    @property
    def factorizations(self) -> int:
        """O(N³) factorizations run by this Predictor and its ``with_params`` family."""
        return self._fact.count

    @property
    def learning_rate(self) -> float:
        return self._cfg.learning_rate

    @property
    def diag_reg(self) -> float:
        return self._cfg.diag_reg

    @property
    def diag_reg_absolute_scale(self) -> bool:
        return self._cfg.diag_reg_absolute_scale

    @property
    def momentum(self):
        return self._cfg.momentum

    @property
    def precision(self) -> str:
        return self._cfg.precision

    @property
    def shift(self) -> float:
        """λ actually added to the diagonal (after the relative scaling)."""
        c = self._cfg
        if c.diag_reg_absolute_scale or c.diag_reg == 0.0:
            return c.diag_reg
        d = self._k.shape[0]
        return c.diag_reg * (self._trace / d) if d else 0.0

    @property
    def rcond(self) -> float:
        rc = self._cfg.rcond
        return rc if rc is not None else default_rcond(self._k.shape[0], self._cfg.precision)

    @property
    def eigenvalues(self):
        """Eigenvalues of ``sym(K) + λI``, ascending (factorizes if needed)."""
        return self._spectrum().eigenvalues(self._backend.xp)

    def _spectrum(self) -> Spectrum:
        if self._spec is None:
            w, _ = self._fact.ensure()
            spec = Spectrum.of(w, self.shift, self.rcond, self._backend.xp, self._fact.exp)
            spec.warn_if_not_psd()
            self._spec = spec
        return self._spec

    # -- inputs -----------------------------------------------------------------------------
    def _targets(self, y, name="y_train"):
        be = self._backend
        y = _validate.as_float_array(y, name, be)
        _validate.check_finite(y, name, be.xp)
        Layout.resolve(y.shape, self._cfg.trace_axes, self._kdims)  # shape check now
        return y

    def _compute_dtype(self):
        return np.dtype(self._cfg.precision)

    def _broadcast(self, value, shape, name):
        be = self._backend
        a = _validate.as_float_array(value, name, be)
        _validate.check_finite(a, name, be.xp)
        try:
            return be.xp.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(
                f"{name} of shape {tuple(a.shape)} does not broadcast to {shape}"
            ) from None

    def _flat(self, a, layout, dtype):
        xp = self._backend.xp
        f = layout.flatten(a, xp)
        return xp.ascontiguousarray(f, dtype=dtype) if hasattr(xp, "ascontiguousarray") else f

    def _resolve(self, y_train, fx_train_0):
        y = self._targets(y_train) if y_train is not None else self._y
        if y is None:
            raise ValueError("y_train is required: pass it to the constructor or to this call")
        if y.size == 0:
            raise ValueError(f"y_train is empty (shape {tuple(y.shape)})")
        layout = Layout.resolve(y.shape, self._cfg.trace_axes, self._kdims)
        dt = self._compute_dtype()
        yf = self._flat(y, layout, dt)
        want_train = fx_train_0 is not None
        if want_train:
            f0 = self._flat(self._broadcast(fx_train_0, y.shape, "fx_train_0"), layout, dt)
        else:
            f0 = self._backend.xp.zeros_like(yf)
        return layout, yf, f0, want_train

    # -- predictions ------------------------------------------------------------------------
    def at(self, t=None, *, y_train=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        """Outputs at time(s) ``t`` (None or inf: converged).

        Returns ``Prediction(train, test)``: ``t.shape + y_train.shape`` on the training
        set (None when ``fx_train_0=None``) and ``t.shape + test shape`` on the test set
        (when ``k_test_train`` is given; ``fx_test_0`` defaults to 0).
        """
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("fx_test_0 was given without k_test_train")
        test = None
        if k_test_train is not None:
            test = _TestInputs(self, k_test_train, fx_test_0 if fx_test_0 is not None else 0.0)
        return self._predict(t, y_train, fx_train_0, test)

    def _at_state(self, t, fx_train_0, fx_test_0, k_test_train, qx_train_0, qx_test_0):
        """ODE outputs and velocities (for resumable states, e.g. the neural-tangents
        ``ODEState``): ``(train, test, q_train, q_test)``; the velocities are None without
        momentum."""
        from ._ode import solve_ode

        ts, tshape = _validate.times(t)
        layout, yf, f0, _ = self._resolve(None, fx_train_0)
        dt = self._compute_dtype()
        test = None
        if k_test_train is not None:
            test = _TestInputs(self, k_test_train, fx_test_0 if fx_test_0 is not None else 0.0)
            test = test.bind(layout)
        qtr = qte = None
        if qx_train_0 is not None:
            qtr = self._flat(self._broadcast(qx_train_0, layout.y_shape, "qx_train_0"), layout, dt)
        if qx_test_0 is not None and test is not None:
            qte = self._flat(self._broadcast(qx_test_0, test.shape, "qx_test_0"), layout, dt)
        train, tst, q_train, q_test = solve_ode(self, ts, layout, yf, f0, test, qtr, qte)
        f = self._finish(train, tst, tshape, layout, test)
        if q_train is None:
            return f.train, f.test, None, None
        q = self._finish(q_train, q_test, tshape, layout, test)
        return f.train, f.test, q.train, q.test

    def test_set(self, k_test_train, fx_test_0=0.0) -> TestSet:
        """A handle whose ``.at`` reuses the test-dependent work ``K_te·V`` across calls."""
        return TestSet(self, k_test_train, fx_test_0)

    def _predict(self, t, y_train, fx_train_0, test):
        cfg = self._cfg
        ts, tshape = _validate.times(t, steps=cfg.dynamics == "gd")
        layout, yf, f0, want_train = self._resolve(y_train, fx_train_0)
        if test is not None:
            test = test.bind(layout)
        if cfg.loss != "mse":
            from ._ode import predict_ode

            train, tst = predict_ode(self, ts, layout, yf, f0, test)
        else:
            train, tst = self._closed_form(ts, layout, yf, f0, test, want_train)
        return self._finish(train if want_train else None, tst, tshape, layout, test)

    def _finish(self, train, tst, tshape, layout, test):
        xp = self._backend.xp
        out_dt = self._out_dtype
        if train is not None:
            train = layout.unflatten(train, layout.y_shape, xp)
            train = xp.reshape(train, tshape + layout.y_shape)
        if tst is not None:
            tst = layout.unflatten(tst, test.shape, xp)
            tst = xp.reshape(tst, tshape + test.shape)
        for name, a in (("train", train), ("test", tst)):
            if a is not None and a.size and not bool(xp.all(xp.isfinite(a))):
                raise TangentflowError(f"{name} outputs overflowed: {self._overflow_cause(layout)}")
        train = cast_outputs(train, out_dt, "train outputs", xp)
        tst = cast_outputs(tst, out_dt, "test outputs", xp)
        return Prediction(train, tst)

    def _overflow_cause(self, layout):
        if self._cfg.dynamics == "gd" and self._fact.ready:
            lr_max = self._max_lr_for(layout.size)
            if not self._cfg.learning_rate < lr_max:
                return (
                    f"with dynamics='gd' learning_rate {self._cfg.learning_rate:.6g} exceeds "
                    f"the largest stable rate ({lr_max:.6g})"
                )
        return (
            "the results exceed the float64 range (about 1.8e308); every intermediate is "
            "scaled by powers of two, so it is the answer itself that is not representable "
            "(rescale y_train / the initial outputs)"
        )

    def _scaled_lr(self):
        """``η·2^e``: the learning rate that goes with the scaled eigenvalues (only ``η·A``
        enters the dynamics; docs/numerics.md §12, "Scale invariance")."""
        lr = ldexp_float(self._cfg.learning_rate, self._fact.exp)
        if not math.isfinite(lr):
            raise ValueError(
                f"learning_rate {self._cfg.learning_rate:.6g} times the kernel's scale "
                f"2^{self._fact.exp} overflows float64"
            )
        return lr

    def _dynamics(self, n):
        """Dynamics of the scaled eigenvalues (``Spectrum.mu``)."""
        cfg = self._cfg
        lr = self._scaled_lr()
        if cfg.momentum is not None:
            return "momentum", [lr, cfg.momentum, float(n)]
        if cfg.dynamics == "gd":
            return "gd", [lr / n]
        return "flow", [lr / n]

    def _closed_form(self, ts, layout, yf, f0, test, want_train=True):
        """The MSE closed forms. The outputs are linear in ``(Y, f₀, g₀)``: these are scaled
        by ``2^-ey`` (``ey`` the exponent of their largest entry) and the outputs by ``2^ey``,
        so that no intermediate such as ``A⁻¹Y`` overflows while the answer is representable
        (docs/numerics.md §12, "Scale invariance")."""
        xp = self._backend.xp
        g0 = None if test is None else test.g0
        ey = array_exponent(xp, yf, f0, g0)
        if ey:
            yf, f0 = ldexp(yf, -ey, xp), ldexp(f0, -ey, xp)
            g0 = None if g0 is None else ldexp(g0, -ey, xp)
        train, tst = self._closed_form_scaled(ts, layout, yf, f0, test, g0, want_train)
        if ey:
            with np.errstate(over="ignore"):
                train = None if train is None else ldexp(train, ey, xp)
                tst = None if tst is None else ldexp(tst, ey, xp)
        return train, tst

    def _closed_form_scaled(self, ts, layout, yf, f0, test, g0, want_train):
        be = self._backend
        xp = be.xp
        n = layout.size
        all_inf = ts.size > 0 and bool(np.all(np.isinf(ts)))
        if all_inf and not self._fact.ready and self._cfg.dynamics == "flow":
            fast = self._cholesky_limit(yf, f0, test, g0, ts.size)
            if fast is not None:
                return fast
        spec = self._spectrum()
        self._check_steps_converge(ts, spec, n)
        _, v = self._fact.ensure()
        vr = v[:, spec.first :]
        kind, params = self._dynamics(n)
        em1, phi = be.mode_factors(kind, params, spec.retained, ts)
        z = be.project(vr, f0 - yf)
        train = None
        if want_train:
            train = self._train_outputs(ts, spec, vr, z, em1, yf, f0, kind)
        tst = None
        if test is not None:
            if test.cached:
                kv = test.basis()[:, spec.first :]
                tst = be.test_outputs_cached(xp.ascontiguousarray(kv), z, phi, g0)
            else:
                tst = be.test_outputs(test.scaled_k(self._fact.exp), vr, z, phi, g0)
        return train, tst

    def _train_outputs(self, ts, spec, vr, z, em1, yf, f0, kind):
        """Train outputs; under gradient flow, a ``diag_reg`` sweep reuses the previous
        member's residual: ``e^{−(A+λI)s} = e^{−λs} e^{−As}`` on the same retained modes, so
        for λ > λ_b the residual ``V diag(e) z`` is ``e^{−(λ−λ_b)s}`` times the stored one
        (docs/numerics.md §3 in O(N·R·T) instead of a GEMM). The memo is keyed by the values of the
        times, targets, initial outputs and learning rate, never by object identity."""
        be = self._backend
        if kind != "flow" or be.name == "cupy":
            return be.train_outputs(vr, z, em1, f0)
        xp = be.xp
        lam = self.shift
        h = hashlib.blake2b(digest_size=16)
        for a in (ts, yf, f0):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((self._cfg.learning_rate, spec.first, yf.shape, str(yf.dtype))).encode())
        key = h.digest()
        memo = self._fact.train_memo
        if spec.first:
            r0 = f0 - yf
            pperp = r0 - vr @ z
        else:
            pperp = None
        if memo is not None and memo[0] == key and lam > memo[1]:
            _, lam_b, resid = memo
            s = (self._cfg.learning_rate / yf.size) * ts
            fin = np.isfinite(ts)
            scale = np.where(fin, np.exp(-(lam - lam_b) * np.where(fin, s, 0.0)), 0.0)
            train = yf[None] + xp.asarray(scale, dtype=yf.dtype)[:, None, None] * resid
            if pperp is not None:
                train += pperp[None]
            zero = ts == 0
            if zero.any():
                train[zero] = f0
            return train
        train = be.train_outputs(vr, z, em1, f0)
        resid = train - yf[None]
        if pperp is not None:
            resid -= pperp[None]
        if memo is None or memo[0] != key or lam < memo[1]:
            self._fact.train_memo = (key, lam, resid)
        return train

    def _cholesky_limit(self, yf, f0, test, g0, nt):
        """t = ∞ by Cholesky when well conditioned (docs/numerics.md §3.2); None → spectral path.

        The core solves ``Ã x = Y − f₀`` with ``Ã = 2^-e·A``, so ``K_te A⁻¹ (Y − f₀)`` is
        ``(2^-e·K_te) x``: the same bits at every kernel scale."""
        be = self._backend
        xp = be.xp
        res = be.cholesky_solve(self._k, self.shift, xp.ascontiguousarray(yf - f0))
        if res is None:
            return None
        x, norm_inf, mu_min_est, cond_est, e = res
        if not (cond_est <= CHOLESKY_MAX_COND and mu_min_est > 2.0 * self.rcond * norm_inf):
            return None
        train = xp.broadcast_to(yf, (nt,) + yf.shape).copy()
        tst = None
        if test is not None:
            g = g0 + test.scaled_k(e) @ x
            tst = xp.broadcast_to(g, (nt,) + g.shape).copy()
        return train, tst

    def _check_steps_converge(self, ts, spec, n):
        """``t = ∞`` with discrete steps exists only below the largest stable rate."""
        if self._cfg.dynamics == "gd" and np.any(np.isinf(ts)):
            if spec.retained.shape[0] and self._scaled_lr() * spec.s_max / n >= 2.0:
                raise ValueError(
                    f"t=inf with dynamics='gd' diverges: learning_rate {self._cfg.learning_rate}"
                    f" >= the largest stable rate {self._max_lr_for(n):.6g}"
                )

    def train_loss(self, t=None, *, y_train=None, fx_train_0=0.0):
        """MSE training loss ``‖f(t) − y‖²/(2n)`` at times ``t``, from the eigenbasis
        (O(N·R·T), no outputs formed)."""
        if self._cfg.loss != "mse":
            raise ValueError('train_loss is available for loss="mse" only')
        if fx_train_0 is None:
            raise ValueError("fx_train_0 must be an array or a scalar for train_loss")
        ts, tshape = _validate.times(t, steps=self._cfg.dynamics == "gd")
        layout, yf, f0, _ = self._resolve(y_train, fx_train_0)
        be = self._backend
        xp = be.xp
        spec = self._spectrum()
        self._check_steps_converge(ts, spec, layout.size)
        _, v = self._fact.ensure()
        # the loss is quadratic in the residual: scale it by 2^-ey, the loss by 2^(2·ey)
        ey = array_exponent(xp, yf, f0)
        yf, f0 = ldexp(yf, -ey, xp), ldexp(f0, -ey, xp)
        r0 = (f0 - yf).astype(xp.float64)
        z = be.project(v[:, spec.first :], f0 - yf).astype(xp.float64)
        zz = xp.sum(z * z, axis=1)
        rest = max(float(xp.sum(r0 * r0)) - float(xp.sum(zz)), 0.0) if spec.first else 0.0
        kind, params = self._dynamics(layout.size)
        em1, _ = be.mode_factors(kind, params, spec.retained, ts)
        loss = (xp.sum((1.0 + em1) ** 2 * zz[:, None], axis=0) + rest) / (2.0 * layout.size)
        with np.errstate(over="ignore"):
            loss = ldexp(loss, 2 * ey, xp)
        if not bool(xp.all(xp.isfinite(loss))):
            raise TangentflowError(f"the training loss overflowed: {self._overflow_cause(layout)}")
        return cast_outputs(xp.reshape(loss, tshape), self._out_dtype, "training loss", xp)

    # -- diagnostics -------------------------------------------------------------------------
    def _max_lr_for(self, n):
        """``2(1 + m)·n/μ_max`` (docs/numerics.md §11); NaN without a positive eigenvalue,
        where ``max_learning_rate()`` raises: no rate is then the largest stable one."""
        spec = self._spectrum()
        m = self._cfg.momentum or 0.0
        if not spec.s_max > 0.0:
            return math.nan
        return ldexp_float(2.0 * (1.0 + m) * n / spec.s_max, -spec.exp)

    def diagnostics(self) -> Diagnostics:
        """Spectral diagnostics (factorizes if needed)."""
        spec = self._spectrum()
        xp = self._backend.xp
        mu = spec.mu
        cut = mu[: spec.first]
        ret = spec.retained
        neg = xp.minimum(mu, 0.0)
        norm = float(xp.sqrt(xp.sum(mu * mu))) if mu.shape[0] else 0.0
        psd = float(xp.sqrt(xp.sum(neg * neg))) / norm if norm > 0 else 0.0
        n = self._y.size if self._y is not None else self._k.shape[0]
        # mu is scaled by 2^-exp (Spectrum): ratios as they are, magnitudes unscaled
        mu_min_r = float(ret[0]) if ret.shape[0] else math.nan
        cond = spec.s_max / mu_min_r if ret.shape[0] else math.inf
        t1 = (
            ldexp_float(n * math.log(100.0) / (self._cfg.learning_rate * mu_min_r), -spec.exp)
            if ret.shape[0]
            else math.inf
        )
        return Diagnostics(
            min_eigenvalue=spec.mu_min,
            max_eigenvalue=spec.mu_max,
            n_cut=spec.n_cut,
            max_cut_magnitude=spec.unscale(float(xp.max(xp.abs(cut)))) if spec.first else 0.0,
            psd_correction=psd,
            condition_number=cond,
            max_learning_rate=self._max_lr_for(n),
            time_to_1pct=t1,
            rcond=self.rcond,
            cut_threshold=spec.tol,
        )

    # -- pickling ----------------------------------------------------------------------------
    def __getstate__(self):
        be = self._backend
        state = {
            "backend": be.name,
            "k": self._k,
            "kdims": self._kdims,
            "out_dtype": self._out_dtype.str,
            "trace": self._trace,
            "cfg": self._cfg.as_dict(),
            "y": self._y,
            "w": self._fact.w,
            "exp": self._fact.exp,
            "v": self._fact.v,
            "count": self._fact.count,
        }
        return state

    def __setstate__(self, state):
        _validate.predictor_state(state)
        name = state["backend"]
        self._backend = _backends.select(state["k"], None if name == "cpu" else name)
        self._k = state["k"]
        self._kdims = tuple(state["kdims"])
        self._out_dtype = np.dtype(state["out_dtype"])
        self._trace = state["trace"]
        self._cfg = _Config(**state["cfg"])
        self._fact = Factorization(self._k, self._backend, np.dtype(self._cfg.precision))
        self._fact.w, self._fact.v, self._fact.count = state["w"], state["v"], state["count"]
        self._fact.exp = int(state.get("exp", 0))  # older pickles hold unscaled w
        self._spec = None
        self._y = state["y"]

    def __repr__(self):
        c = self._cfg
        return (
            f"Predictor(N={self._k.shape[0]}, learning_rate={c.learning_rate}, "
            f"diag_reg={c.diag_reg}, loss={c.loss!r}, dynamics={c.dynamics!r}, "
            f"momentum={c.momentum}, backend={self._backend.name!r}, "
            f"factorized={self._fact.ready})"
        )


class _TestInputs:
    """A validated test kernel and initial test outputs, flattened for the backend."""

    def __init__(self, predictor, k_test_train, fx_test_0, cached=False):
        self.p = predictor
        self.raw_k = k_test_train
        self.raw_g0 = fx_test_0
        self.cached = cached
        # 2^-e·K_te·V and 2^-e·K_te, shared by the with_params family of a TestSet
        self._shared = {"kv": None, "ks": None}
        self._layout = None
        self.k = None
        self.shape = None
        self.g0 = None
        self._prepared = None

    def _prepare(self):
        # kernel conversion and checks happen once per handle
        if self._prepared is None:
            p = self.p
            # float32 compute with a float64 kernel: kept in float64 until scaled_k has
            # scaled it (so a tiny kernel does not become float32 subnormals first)
            dt = p._compute_dtype()
            if dt == np.float32 and getattr(self.raw_k, "dtype", None) == np.float64:
                dt = np.dtype(np.float64)
            self._prepared = _validate.test_train_kernel(
                self.raw_k, "k_test_train", p._backend, p._kdims, dt
            )
        return self._prepared

    def bind(self, layout):
        """These inputs for one call's target layout: a new object, so that a handle can
        serve calls with different targets at once (threads)."""
        k2, test_dims = self._prepare()
        bound = copy.copy(self)  # shares the prepared kernel and the K_te·V cache
        bound.k = k2
        bound.shape = layout.test_shape(test_dims)
        g0 = self.p._broadcast(self.raw_g0, bound.shape, "fx_test_0")
        bound.g0 = self.p._flat(g0, layout, self.p._compute_dtype())
        return bound

    def scaled_k(self, e):
        """``2^-e·K_te`` (exact) in the compute dtype: the test kernel in the units of the
        scaled train kernel."""
        dt = self.p._compute_dtype()
        if not e and self.k.dtype == dt:
            return self.k
        ks = self._shared["ks"]
        if ks is None or ks[0] != e:
            xp = self.p._backend.xp
            with np.errstate(under="ignore"):
                ks = (e, xp.ascontiguousarray(ldexp(self.k, -e, xp), dtype=dt))
            self._shared["ks"] = ks
        return ks[1]

    def basis(self):
        """``2^-e·K_te·V`` of the shared factorization."""
        if self._shared["kv"] is None:
            _, v = self.p._fact.ensure()
            self._shared["kv"] = self.p._backend.test_basis(self.scaled_k(self.p._fact.exp), v)
        return self._shared["kv"]

    def rebind(self, predictor):
        """The same test inputs (and cached ``K_te·V``) for a Predictor sharing the
        factorization."""
        new = copy.copy(self)
        new.p = predictor
        return new


class TestSet:
    """A Predictor bound to one test set; ``at`` reuses ``K_te·V`` across calls."""

    __test__ = False  # not a pytest class

    def __init__(self, predictor: Predictor, k_test_train, fx_test_0=0.0):
        self.predictor = predictor
        self._inputs = _TestInputs(predictor, k_test_train, fx_test_0, cached=True)
        self._inputs._prepare()

    def at(self, t=None, *, y_train=None, fx_train_0=0.0):
        """Like ``Predictor.at`` with this test set; returns ``Prediction(train, test)``."""
        return self.predictor._predict(t, y_train, fx_train_0, self._inputs)

    def with_params(self, *, learning_rate=None, diag_reg=None, diag_reg_absolute_scale=None):
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
        new._inputs = self._inputs.rebind(p)
        return new
