"""Drop-in replacement for ``neural_tangents.predict`` (0.6.x).

Change one import line::

    from neural_tangents import predict                         # before
    from tangentflow.compat import neural_tangents as predict   # after

and ``predict.gradient_descent_mse``, ``predict.gradient_descent``,
``predict.gradient_descent_mse_ensemble``, ``predict.gp_inference``,
``predict.max_learning_rate``, ``predict.ODEState`` and ``predict.Gaussian`` keep their
signatures, defaults (including ``trace_axes=(-1,)``), argument meanings, return
containers and shapes. The numbers come from tangentflow's native classes
(``Predictor``, ``Ensemble``, ``GaussianProcess``): factorizations in float64 whatever
the input dtype, results in the kernel's dtype, and the numerical policy of tangentflow
where the reference returns NaN (singular or slightly indefinite kernels, ``t=inf``).

Differences from neural-tangents
--------------------------------
* **JAX.** Given NumPy (or other host) arrays the functions return NumPy arrays (CuPy
  arrays for GPU input). Given JAX arrays they return JAX arrays, on the device of the
  inputs, in the dtype neural-tangents would return (``jax.numpy.result_type`` of the
  inputs: float32 unless x64 is on). Under ``jax.jit`` and ``jax.vmap`` (tracers) the
  native computation runs on the host through ``jax.pure_callback`` (one call per vmapped
  element); ``jax.grad`` through them is not supported. JAX is never imported unless the
  inputs are JAX arrays.
* **Asymmetric kernels.** neural-tangents uses a train-train or test-test kernel that is
  not symmetric as given (its eigendecomposition symmetrizes it), which happens with its
  batched Monte Carlo kernels. Here such a kernel is replaced by ``(K + K^T)/2`` with a
  ``NumericalWarning`` that says so (the native classes reject it).
* ``gradient_descent``: the ``loss`` may be a JAX-differentiable function (differentiated
  with ``jax.grad`` when JAX is installed) or any callable with a ``.grad(fx, y_hat)``
  attribute giving the gradient with respect to ``fx``. ``t=None`` (infinite time) is a
  ``ValueError`` for losses integrated as an ODE (the reference returns NaN); times need
  not be sorted (results come back in the caller's order).
* Errors on bad input are raised before any work, as ``ValueError`` / ``TypeError``
  (a ``kernel_fn`` keyword given to an ensemble's ``predict_fn`` that was not given at
  construction is a ``TypeError`` naming it).
* ``neural_tangents.predict`` is this module too: ``nt.predict.gradient_descent_mse``
  works after ``from tangentflow.compat import neural_tangents as nt``.
"""

from __future__ import annotations

import sys

from ... import Gaussian
from ._ensemble import gradient_descent_mse_ensemble
from ._gp import gp_inference
from ._mse import gradient_descent_mse, max_learning_rate
from ._ode import gradient_descent
from ._state import ODEState

# Layout: one module per function (_mse: gradient_descent_mse and max_learning_rate, _ode:
# gradient_descent, _gp: gp_inference, _ensemble: gradient_descent_mse_ensemble) over the
# shared parts: _arrays (inputs as the native classes take them), _jax (the JAX bridge:
# dtypes, devices, pure_callback), _results (predict_fn arguments and result containers),
# _pytrees (kernel_fn keywords), _state (ODEState). The numbers come from the kernel model
# (gradient descent) and the public Ensemble and GaussianProcess (docs/architecture.md).

__all__ = [
    "gradient_descent_mse",
    "gradient_descent",
    "gradient_descent_mse_ensemble",
    "gp_inference",
    "max_learning_rate",
    "ODEState",
    "Gaussian",
    "predict",
]

# ``neural_tangents.predict`` users write ``nt.predict.gradient_descent_mse``: the module
# stands for that submodule too.
predict = sys.modules[__name__]
