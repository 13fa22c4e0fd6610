"""``gradient_descent_mse`` (closed form) and ``max_learning_rate``."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ... import max_learning_rate as native_max_learning_rate
from ..._model import KernelModel, Options
from ._arrays import Value, as_array, as_scalar, host_array, symmetrized
from ._jax import Native, Spec, result_dtype
from ._results import TraceAxes, check_inputs, fx_test_shape, t_shape, train_test

__all__ = ["gradient_descent_mse", "max_learning_rate", "predict_specs"]


def predict_specs(
    native: Native,
    trace_axes: TraceAxes,
    t: Value,
    train: bool,
    test: bool,
    k_test_train: Value,
    extra: Sequence[Value] = (),
    state: str | bool = False,
) -> Callable[[ModuleType], list[Spec]]:
    """``specs_fn`` of the gradient-descent predictors: train/test outputs (and the
    momentum states when ``state``) of shape ``t.shape + ...``."""

    def specs(jax: ModuleType) -> list[Spec]:
        dt = result_dtype(jax, *native.dtypes, t, *extra)
        ts = t_shape(t)
        y_shape = native.shapes[1] or ()
        tr = (ts + y_shape, dt) if train else None
        te = (ts + fx_test_shape(y_shape, k_test_train, trace_axes), dt) if test else None
        if state:
            return [
                tr,
                te,
                tr if state == "momentum" else None,
                te if state == "momentum" else None,
            ]
        return [tr, te]

    return specs


def gradient_descent_mse(
    k_train_train: Value,
    y_train: Value,
    learning_rate: Value = 1.0,
    diag_reg: Value = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: TraceAxes = (-1,),
) -> Callable[..., Any]:
    """Predicts the outcome of function space gradient descent training on MSE.

    Solves in closed form for the continuous-time version of gradient descent
    (``f(t) = y + exp(-η t K / n)(f_0 - y)`` on the training set, see
    ``tangentflow.Predictor``). Works under ``jax.jit`` / ``jax.vmap`` (host callback).

    Args:
      k_train_train: kernel on the training data, ``(N, N)`` or pair-interleaved
        ``(N, N, K, K, ...)`` over the non-traced output axes.
      y_train: targets for the training data.
      learning_rate: learning rate (only ``learning_rate * t`` matters).
      diag_reg: a scalar added to the diagonal of ``k_train_train`` (relative to its mean
        diagonal entry unless ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: whether ``diag_reg`` is absolute.
      trace_axes: output axes along which the kernel is traced (as in neural-tangents).

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning
      ``(fx_train_t, fx_test_t)``, or the one of them that was asked for (``fx_train_0``
      None: no train output; ``fx_test_0`` None: no test output). ``t=None`` is infinite
      time; every output has ``t.shape`` prepended.
    """

    def build(k: Value, y: Value, lr: Value, reg: Value) -> KernelModel:
        opts = Options.create(
            learning_rate=as_scalar(lr),
            diag_reg=as_scalar(reg),
            diag_reg_absolute_scale=diag_reg_absolute_scale,
            trace_axes=trace_axes,
        )
        return KernelModel.create(
            symmetrized(as_array(k), "k_train_train"), opts, y_train=as_array(y)
        )

    native = Native(
        build,
        [as_array(k_train_train), as_array(y_train), as_array(learning_rate), as_array(diag_reg)],
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
        fx_train_0: Value = 0.0,
        fx_test_0: Value = None,
        k_test_train: Value = None,
    ) -> Any:
        check_inputs(fx_train_0, fx_test_0, k_test_train)
        want_test = fx_test_0 is not None
        call = [
            as_array(t),
            as_array(fx_train_0),
            as_array(fx_test_0) if want_test else None,
            as_array(k_test_train) if want_test else None,
        ]
        specs = predict_specs(
            native, trace_axes, call[0], fx_train_0 is not None, want_test, call[3], call[1:]
        )
        return train_test(*native.call(compute, call, specs))

    return predict_fn


def max_learning_rate(
    ntk_train_train: Value,
    y_train_size: Value = None,
    momentum: Value = 0.0,
    eps: float = 1e-12,
) -> float:
    """Computes the maximal feasible learning rate for infinite width NNs.

    ``2 (1 + momentum) n / (λ_max(ntk_train_train) + eps)`` with ``n = y_train_size``
    (default: the number of rows of the flattened kernel; pass ``y_train.size`` when the
    kernel traces output axes). Not JAX-traceable (returns a Python float).
    """
    if y_train_size is not None and not isinstance(y_train_size, bool):
        if isinstance(y_train_size, numbers.Integral):
            y_train_size = int(y_train_size)
        elif isinstance(y_train_size, numbers.Real) and float(y_train_size).is_integer():
            y_train_size = int(float(y_train_size))
    k = symmetrized(as_array(host_array(as_array(ntk_train_train))), "ntk_train_train")
    return native_max_learning_rate(k, y_train_size, as_scalar(host_array(as_array(momentum))), eps)
