"""``gradient_descent``: an arbitrary loss (recognized built-ins, a ``.grad`` callable or
``jax.grad``), integrated as an ODE by the kernel model; momentum states as ``ODEState``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..._model import KernelModel, Options
from ._arrays import Value, as_array, as_scalar, symmetrized, to_host
from ._jax import Native, x64_context
from ._mse import predict_specs
from ._results import TraceAxes, check_inputs, train_test
from ._state import ODEState

FloatArray = npt.NDArray[np.float64]
#: The gradient of a loss with respect to the outputs, NumPy in and out.
GradFn = Callable[[Any, Any], Any]

__all__ = ["gradient_descent", "native_loss"]


def _builtin_grad(name: str, fx: FloatArray, y: FloatArray) -> FloatArray:
    """Gradient of tangentflow's built-in losses (used only to recognize a loss)."""
    n = fx.size
    if name == "mse":
        mse: FloatArray = (fx - y) / n
        return mse
    z = fx - fx.max(-1, keepdims=True)
    s = np.exp(z)
    s /= s.sum(-1, keepdims=True)
    ce: FloatArray = (s * y.sum(-1, keepdims=True) - y) / n
    return ce


def _jax_grad(loss: Callable[..., Any]) -> GradFn | None:
    """``jax.grad(loss)`` as a NumPy-in, NumPy-out gradient callable (or None without JAX)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    plain = jax.grad(loss)
    jit = getattr(jax, "jit", None)
    # compiled once per shape and dtype; dropped for a loss that cannot be jitted
    jitted = [jit(plain)] if jit is not None else []
    not_jittable = getattr(getattr(jax, "errors", None), "JAXTypeError", TypeError)

    def g(fx: Any, y_hat: Any) -> Any:
        if jitted:
            try:
                return jitted[0](fx, y_hat)
            except not_jittable:  # e.g. Python control flow on values
                jitted.clear()
        return plain(fx, y_hat)

    def grad(fx: Any, y_hat: Any) -> Any:
        ctx = None
        if np.dtype(fx.dtype) == np.float64 and not getattr(jax.config, "jax_enable_x64", 0):
            ctx = x64_context(jax)
        if ctx is None:
            out = g(jnp.asarray(fx), jnp.asarray(y_hat))
        else:
            with ctx:
                out = g(jnp.asarray(fx), jnp.asarray(y_hat))
        return np.asarray(out, dtype=fx.dtype)

    return grad


def native_loss(loss: Any, y_train: Value) -> Literal["mse", "cross_entropy"] | GradFn:
    """The ``loss`` option of the kernel model (as ``Predictor``'s): the built-in name when
    the loss is one of them with the same normalization (checked on a probe point), else a
    gradient callable ``grad(fx, y_hat) -> dL/dfx``."""
    user_grad = getattr(loss, "grad", None)
    grad: GradFn
    if callable(user_grad):

        def user(fx: Any, y_hat: Any) -> Any:
            return to_host(user_grad(fx, y_hat))

        grad = user

    elif callable(loss):
        jax_grad = _jax_grad(loss)
        if jax_grad is None:
            raise TypeError(
                "loss has no .grad attribute and JAX is not installed to differentiate it: "
                "pass a callable with .grad(fx, y_hat) giving dL/dfx, or install JAX"
            )
        grad = jax_grad
    else:
        raise TypeError(
            "loss must be a JAX-differentiable function loss(fx, y_hat) or a callable with a "
            f".grad(fx, y_hat) attribute, got {type(loss).__name__}"
        )
    name = getattr(loss, "name", None)
    if name in ("mse", "cross_entropy"):
        y = to_host(y_train).astype(np.float64)
        if y.size:
            fx = 0.5 * np.sin(1.3 * np.arange(y.size) + 0.2).reshape(y.shape)
            try:
                got = np.asarray(to_host(grad(fx, y)), dtype=np.float64)
            except Exception:  # noqa: BLE001 - not recognized: keep the callable
                got = None
            want = _builtin_grad(name, fx, y)
            scale = float(np.max(np.abs(want)))
            if (
                got is not None
                and got.shape == want.shape
                and np.all(np.isfinite(got))
                and float(np.max(np.abs(got - want))) <= 1e-5 * scale
            ):
                return "mse" if name == "mse" else "cross_entropy"
    return grad


def gradient_descent(
    loss: Any,
    k_train_train: Value,
    y_train: Value,
    learning_rate: Value = 1.0,
    momentum: Value = None,
    trace_axes: TraceAxes = (-1,),
) -> Callable[..., Any]:
    """Predicts the outcome of function space training with gradient descent on ``loss``.

    Integrates ``df/dτ = -K ⋆ ∇_f loss`` (or its momentum version) with an adaptive
    Dormand–Prince 5(4) solver; the MSE and cross-entropy losses of neural-tangents'
    examples are recognized and use tangentflow's built-ins (closed form for MSE).
    Works under ``jax.jit`` / ``jax.vmap`` (host callback).

    Args:
      loss: ``loss(fx, y_hat)``: a JAX-differentiable function, or a callable with
        ``.grad(fx, y_hat)`` giving the gradient with respect to ``fx``.
      k_train_train: kernel on the training data.
      y_train: targets for the training data.
      learning_rate: learning rate.
      momentum: momentum value (None: plain gradient descent).
      trace_axes: output axes along which the kernel is traced.

    Returns:
      ``predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)``
      returning ``(fx_train_t, fx_test_t)`` (or the one asked for), or an ``ODEState``
      when given one.
    """

    def build(k: Value, y: Value, lr: Value, mom: Value) -> KernelModel:
        y = as_array(y)
        opts = Options.create(
            learning_rate=as_scalar(lr),
            momentum=as_scalar(mom),
            loss=native_loss(loss, y),
            trace_axes=trace_axes,
        )
        return KernelModel.create(symmetrized(as_array(k), "k_train_train"), opts, y_train=y)

    native = Native(
        build,
        [as_array(k_train_train), as_array(y_train), as_array(learning_rate), as_array(momentum)],
    )

    def compute_state(
        m: KernelModel, t: Value, f0: Value, g0: Value, ktd: Value, q0: Value, q1: Value
    ) -> list[Value]:
        return list(
            m.ode_state(
                as_array(t), as_array(f0), as_array(g0), as_array(ktd), as_array(q0), as_array(q1)
            )
        )

    def compute(m: KernelModel, t: Value, f0: Value, g0: Value, ktd: Value) -> list[Value]:
        return list(
            m.at(
                as_array(t),
                fx_train_0=as_array(f0),
                fx_test_0=as_array(g0),
                k_test_train=as_array(ktd),
            )
        )

    def predict_fn(
        t: Value = None,
        fx_train_or_state_0: Value = 0.0,
        fx_test_0: Value = None,
        k_test_train: Value = None,
    ) -> Any:
        is_state = isinstance(fx_train_or_state_0, ODEState)
        if is_state:
            if fx_test_0 is not None:
                raise ValueError("`fx_test_0` is included in `ODEState` and must be set to `None`.")
            state = fx_train_or_state_0
            fx_train_0, fx_test_0 = state.fx_train, state.fx_test
            q_train, q_test = state.qx_train, state.qx_test
        else:
            fx_train_0, q_train, q_test = fx_train_or_state_0, None, None
        check_inputs(fx_train_0, fx_test_0, k_test_train)
        if momentum is None and (q_train is not None or q_test is not None):
            raise ValueError("Got passed momentum state variables, while `momentum is None`.")
        want_test = fx_test_0 is not None
        if is_state and fx_train_0 is None:
            fx_train_0 = 0.0  # the reference integrates the train outputs from zero
        call = [
            as_array(t),
            as_array(fx_train_0),
            as_array(fx_test_0) if want_test else None,
            as_array(k_test_train) if want_test else None,
        ]
        if is_state and momentum is not None:
            call += [as_array(q_train), as_array(q_test) if want_test else None]
            specs = predict_specs(
                native, trace_axes, call[0], True, want_test, call[3], call[1:], "momentum"
            )
            return ODEState(*native.call(compute_state, call, specs))
        specs = predict_specs(
            native, trace_axes, call[0], fx_train_0 is not None, want_test, call[3], call[1:]
        )
        train, test = native.call(compute, call, specs)
        if is_state:
            return ODEState(train, test, None, None)
        return train_test(train, test)

    return predict_fn
