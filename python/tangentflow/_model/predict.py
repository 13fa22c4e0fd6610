"""Predictions of a kernel model: a call's inputs are validated and flattened here, sent to
the engine its options choose (``closed_form`` for MSE, ``ode`` for any other loss) and the
flat results shaped and cast back (docs/numerics.md §2). ``Predictor`` and ``TestSet`` are
facades over these functions; so is the neural-tangents compatibility layer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _validate
from .._errors import TangentflowError
from .._numerics import all_finite, cast_outputs, ldexp, ldexp_float
from .._shapes import Layout
from . import closed_form, krylov, ode
from .test_inputs import TestInputs

if TYPE_CHECKING:
    from .kernel import KernelModel

__all__ = ["at", "predict", "ode_state", "train_loss", "diagnostics"]


def _resolve(m: KernelModel, y_train: Any, fx_train_0: Any) -> tuple[Layout, Any, Any, bool, float]:
    """``(layout, flat Y, flat f₀, whether train outputs are wanted, max(|Y|, |f₀|))``."""
    y, layout, yf, big = m.call_targets(y_train)
    want_train = fx_train_0 is not None
    if want_train:
        f0, f0_big = m.broadcast(fx_train_0, y.shape, "fx_train_0")
        f0 = m.flat(f0, layout)
        big = max(big, f0_big)
    else:
        f0 = m.xp.zeros_like(yf)
    return layout, yf, f0, want_train, big


def at(
    m: KernelModel,
    t: Any = None,
    *,
    y_train: Any = None,
    fx_train_0: Any = 0.0,
    fx_test_0: Any = None,
    k_test_train: Any = None,
) -> tuple[Any, Any]:
    """``(train, test)`` outputs at time(s) ``t``, as ``Predictor.at``."""
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("fx_test_0 was given without k_test_train")
    test = None
    if k_test_train is not None:
        test = TestInputs(m, k_test_train, fx_test_0 if fx_test_0 is not None else 0.0)
    return predict(m, t, y_train, fx_train_0, test)


def predict(
    m: KernelModel, t: Any, y_train: Any, fx_train_0: Any, test: TestInputs | None
) -> tuple[Any, Any]:
    steps = m.options.dynamics == "gd"
    ts, tshape = _validate.times(t, steps=steps)
    layout, yf, f0, want_train, big = _resolve(m, y_train, fx_train_0)
    if test is not None:
        test = test.bind(layout)
    if m.options.loss != "mse":
        train, tst, _, _ = ode.solve(m, ts, layout, yf, f0, test)
    elif isinstance(m, krylov.OperatorModel):  # the Krylov backend
        train, tst = krylov.outputs(m, ts, layout, yf, f0, test, want_train)
    else:
        if test is not None:
            big = max(big, test.g0_max)
        train, tst = closed_form.outputs(m, ts, layout, yf, f0, test, want_train, big)
    return _finish(m, train if want_train else None, tst, tshape, layout, test)


def ode_state(
    m: KernelModel,
    t: Any,
    fx_train_0: Any,
    fx_test_0: Any,
    k_test_train: Any,
    qx_train_0: Any,
    qx_test_0: Any,
) -> tuple[Any, Any, Any, Any]:
    """ODE outputs and velocities (for resumable states, e.g. the neural-tangents
    ``ODEState``): ``(train, test, q_train, q_test)``; the velocities are None without
    momentum."""
    ts, tshape = _validate.times(t)
    layout, yf, f0, _, _ = _resolve(m, None, fx_train_0)
    test = None
    if k_test_train is not None:
        test = TestInputs(m, k_test_train, fx_test_0 if fx_test_0 is not None else 0.0)
        test = test.bind(layout)
    qtr = qte = None
    if qx_train_0 is not None:
        qtr = m.flat(m.broadcast(qx_train_0, layout.y_shape, "qx_train_0")[0], layout)
    if qx_test_0 is not None and test is not None:
        qte = m.flat(m.broadcast(qx_test_0, test.shape, "qx_test_0")[0], layout)
    train, tst, q_train, q_test = ode.solve(m, ts, layout, yf, f0, test, qtr, qte)
    f = _finish(m, train, tst, tshape, layout, test)
    if q_train is None:
        return f[0], f[1], None, None
    q = _finish(m, q_train, q_test, tshape, layout, test)
    return f[0], f[1], q[0], q[1]


def _finish(
    m: KernelModel,
    train: Any,
    tst: Any,
    tshape: tuple[int, ...],
    layout: Layout,
    test: TestInputs | None,
) -> tuple[Any, Any]:
    xp = m.xp
    if train is not None:
        train = _shaped(layout.unflatten(train, layout.y_shape, xp), tshape + layout.y_shape, xp)
    if tst is not None and test is not None:
        tst = _shaped(layout.unflatten(tst, test.shape, xp), tshape + test.shape, xp)
    for name, a in (("train", train), ("test", tst)):
        if a is not None and not all_finite(a, xp):
            raise TangentflowError(f"{name} outputs overflowed: {_overflow_cause(m, layout)}")
    train = cast_outputs(train, m.out_dtype, "train outputs", xp)
    tst = cast_outputs(tst, m.out_dtype, "test outputs", xp)
    return train, tst


def _shaped(a: Any, shape: tuple[int, ...], xp: Any) -> Any:
    return a if a.shape == shape else xp.reshape(a, shape)


def _overflow_cause(m: KernelModel, layout: Layout) -> str:
    o = m.options
    if o.dynamics == "gd" and m.fact.ready:
        lr_max = m.max_learning_rate(layout.size)
        if not o.learning_rate < lr_max:
            return (
                f"with dynamics='gd' learning_rate {o.learning_rate:.6g} exceeds "
                f"the largest stable rate ({lr_max:.6g})"
            )
    return (
        "the results exceed the float64 range (about 1.8e308); every intermediate is "
        "scaled by powers of two, so it is the answer itself that is not representable "
        "(rescale y_train / the initial outputs)"
    )


def train_loss(m: KernelModel, t: Any, y_train: Any, fx_train_0: Any) -> Any:
    """MSE training loss ``‖f(t) − y‖²/(2n)`` at times ``t`` (``Predictor.train_loss``)."""
    if m.options.loss != "mse":
        raise ValueError('train_loss is available for loss="mse" only')
    if fx_train_0 is None:
        raise ValueError("fx_train_0 must be an array or a scalar for train_loss")
    ts, tshape = _validate.times(t, steps=m.options.dynamics == "gd")
    layout, yf, f0, _, big = _resolve(m, y_train, fx_train_0)
    xp = m.xp
    if isinstance(m, krylov.OperatorModel):  # the Krylov backend
        loss = krylov.train_loss(m, ts, layout, yf, f0)
        return cast_outputs(xp.reshape(loss, tshape), m.out_dtype, "training loss", xp)
    loss, ey = closed_form.train_loss(m, ts, layout, yf, f0, big)
    with np.errstate(over="ignore"):
        loss = ldexp(loss, 2 * ey, xp)
    if not all_finite(loss, xp):
        raise TangentflowError(f"the training loss overflowed: {_overflow_cause(m, layout)}")
    return cast_outputs(xp.reshape(loss, tshape), m.out_dtype, "training loss", xp)


def diagnostics(m: KernelModel) -> dict[str, Any]:
    """The fields of ``Diagnostics`` (factorizes if needed)."""
    spec = m.spectrum()
    xp = m.xp
    mu = spec.mu
    cut = mu[: spec.first]
    ret = spec.retained
    neg = xp.minimum(mu, 0.0)
    norm = float(xp.sqrt(xp.sum(mu * mu))) if mu.shape[0] else 0.0
    psd = float(xp.sqrt(xp.sum(neg * neg))) / norm if norm > 0 else 0.0
    n = m.y.size if m.y is not None else m.size
    # mu is scaled by 2^-exp (Spectrum): ratios as they are, magnitudes unscaled
    mu_min_r = float(ret[0]) if ret.shape[0] else math.nan
    cond = spec.s_max / mu_min_r if ret.shape[0] else math.inf
    t1 = (
        ldexp_float(n * math.log(100.0) / (m.options.learning_rate * mu_min_r), -spec.exp)
        if ret.shape[0]
        else math.inf
    )
    return {
        "min_eigenvalue": spec.mu_min,
        "max_eigenvalue": spec.mu_max,
        "n_cut": spec.n_cut,
        "max_cut_magnitude": spec.unscale(float(xp.max(xp.abs(cut)))) if spec.first else 0.0,
        "psd_correction": psd,
        "condition_number": cond,
        "max_learning_rate": m.max_learning_rate(n),
        "time_to_1pct": t1,
        "rcond": m.rcond,
        "cut_threshold": spec.tol,
    }
