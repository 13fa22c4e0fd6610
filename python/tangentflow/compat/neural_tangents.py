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

import collections
import dataclasses
import inspect
import numbers
import sys
from typing import Any

import numpy as np

from .._backends import is_gpu_array
from .._errors import NumericalWarning, warn
from .._gaussian import Gaussian
from .._lr import max_learning_rate as _max_learning_rate
from .._predictor import Predictor

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


@dataclasses.dataclass
class ODEState:
    """State of the ODE of ``gradient_descent``: outputs and auxiliary variables.

    Attributes:
      fx_train: training set outputs.
      fx_test: test set outputs.
      qx_train: training set auxiliary state (momentum), or None.
      qx_test: test set auxiliary state (momentum), or None.
    """

    fx_train: Any = None
    fx_test: Any = None
    qx_train: Any = None
    qx_test: Any = None

    def __post_init__(self):
        _register_ode_state()


_ODE_STATE_REGISTERED = False


def _register_ode_state():
    """Make ``ODEState`` a JAX pytree (as in neural-tangents) so that it passes through
    ``jax.jit``/``jax.vmap``. Done when a state is created once JAX is loaded: a state can
    only be flattened by JAX after it exists."""
    global _ODE_STATE_REGISTERED
    jax = sys.modules.get("jax")
    if _ODE_STATE_REGISTERED or jax is None or not hasattr(jax, "tree_util"):
        return
    _ODE_STATE_REGISTERED = True
    jax.tree_util.register_pytree_node(
        ODEState,
        lambda s: ((s.fx_train, s.fx_test, s.qx_train, s.qx_test), None),
        lambda _, children: ODEState(*children),
    )


# -- helpers -------------------------------------------------------------------------------


def _jax_array_type():
    """``jax.Array`` (tracers are instances too) when JAX is already imported, else None.

    JAX is never imported here: a JAX array or tracer can only exist once it is."""
    jax = sys.modules.get("jax")
    return getattr(jax, "Array", None) if jax is not None else None


def _is_jax(x) -> bool:
    arr = _jax_array_type()
    return arr is not None and isinstance(x, arr)


def _is_tracer(x) -> bool:
    jax = sys.modules.get("jax")
    core = getattr(jax, "core", None) if jax is not None else None
    tracer = getattr(core, "Tracer", None)
    return tracer is not None and isinstance(x, tracer)


def _arr(a):
    """Arrays as the native classes take them: NumPy, GPU and JAX arrays (and tracers) as
    they are, other array-likes (torch CPU arrays, lists) through ``numpy.asarray``;
    scalars and None unchanged. JAX values are moved to the host by ``_host``."""
    if a is None or isinstance(a, (np.ndarray, numbers.Number)) or is_gpu_array(a) or _is_jax(a):
        return a
    return np.asarray(a)


def _host(a):
    """A concrete JAX array as a NumPy array; anything else unchanged."""
    return np.asarray(a) if _is_jax(a) else a


def _scalar(x):
    """0-d arrays (e.g. a JAX scalar learning rate) as Python floats; the rest unchanged."""
    if x is not None and not isinstance(x, (numbers.Number, bool)) and np.shape(x) == ():
        return float(x)
    return x


def _symmetric(k, name):
    """``k`` unchanged when it is symmetric to the native tolerance (docs/numerics.md);
    otherwise ``(K + K^T)/2`` (over the pair-interleaved axes) with a NumericalWarning.

    neural-tangents uses such kernels as given (its ``eigh`` symmetrizes its input); its
    batched Monte Carlo kernels are asymmetric by several percent of ``max|K|``."""
    if k is None or not hasattr(k, "ndim") or k.ndim < 2 or k.ndim % 2:
        return k
    perm = tuple(i ^ 1 for i in range(k.ndim))
    if tuple(k.shape[i] for i in perm) != tuple(k.shape) or k.size == 0:
        return k  # the native validation names the problem
    max_abs = max(float(k.max()), -float(k.min()))
    if k.ndim == 2:  # by row blocks: no N x N temporary on top of the kernel
        n = k.shape[0]
        step = max(1, (1 << 22) // n)
        max_asym = max(
            float(abs(k[i : i + step] - k[:, i : i + step].T).max()) for i in range(0, n, step)
        )
    else:
        max_asym = float(abs(k - k.transpose(perm)).max())
    if not (np.isfinite(max_abs) and np.isfinite(max_asym)) or max_asym <= 1e-5 * max_abs:
        return k
    kt = k.transpose(perm)
    warn(
        f"{name} is not symmetric: max|K - K^T| = {max_asym:.3e} is {max_asym / max_abs:.2%} "
        "of max|K|; using (K + K^T)/2, as neural-tangents does (its eigendecomposition "
        "symmetrizes the kernel). The native classes reject such a kernel.",
        NumericalWarning,
    )
    return (k + kt) * 0.5


def _check_inputs(fx_train_0, fx_test_0, k_test_train):
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError(
            "Both `fx_train_0` and `fx_test_0` are `None`, i.e. no predictions will be computed."
        )
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError(
            "To get predictions on the test set, please provide `k_test_train` kernel to the "
            "parametric `predict_fn`."
        )


def _train_test(train, test):
    """The reference's return convention: a tuple when both exist, else the one array."""
    if train is None:
        return test
    if test is None:
        return train
    return train, test


# -- JAX: results as JAX arrays, tracers through a host callback ------------------------------


def _find_jax(*values):
    """The ``jax`` module when one of ``values`` (through tuples, lists, dicts, ODEState and
    .nngp/.ntk attributes) is a JAX array or tracer, else None."""
    arr = _jax_array_type()
    if arr is None:
        return None

    def has(v, depth=0):
        if isinstance(v, arr):
            return True
        if depth > 8 or v is None or isinstance(v, (np.ndarray, numbers.Number, str)):
            return False
        if isinstance(v, dict):
            return any(has(x, depth + 1) for x in v.values())
        if isinstance(v, (tuple, list)):
            return any(has(x, depth + 1) for x in v)
        if isinstance(v, ODEState):
            return any(has(x, depth + 1) for x in dataclasses.astuple(v))
        return any(has(getattr(v, g, None), depth + 1) for g in ("nngp", "ntk"))

    return sys.modules["jax"] if any(has(v) for v in values) else None


def _result_dtype(jax, *values):
    """The dtype neural-tangents computes in: ``jax.numpy.result_type`` of the arrays and
    scalars among ``values`` (Python scalars are weak), at least floating."""
    jnp = jax.numpy
    vals = [v for v in values if v is not None and (hasattr(v, "dtype") or isinstance(v, float))]
    dt = jnp.result_type(*vals) if vals else jnp.result_type(float)
    if not jnp.issubdtype(dt, jnp.inexact):
        dt = jnp.result_type(dt, 1.0)
    return np.dtype(dt)


def _callback_options(jax):
    """vmap rule of ``jax.pure_callback``: one host call per element ('sequential'), named
    ``vmap_method`` in current JAX and ``vectorized=False`` before it (JAX 0.4.30)."""
    params = inspect.signature(jax.pure_callback).parameters
    if "vmap_method" in params:
        return {"vmap_method": "sequential"}
    return {"vectorized": False}


def _device_of(values):
    for v in values:
        if _is_jax(v) and not _is_tracer(v):
            try:
                return next(iter(v.devices()))
            except (AttributeError, StopIteration, TypeError):
                continue
    return None


def _run(jax, host, values, specs):
    """Outputs of ``host`` as JAX arrays.

    ``values``: the flat inputs (arrays, scalars, None); the JAX ones among them are the
    operands. ``host(*values)`` gets NumPy arrays in their place and returns one array or
    None per entry of ``specs`` (``(shape, dtype)`` or None). With tracers among the
    operands ``host`` runs under ``jax.pure_callback``; otherwise at once, and the results
    are put on the device of the first JAX input."""
    idx = [i for i, v in enumerate(values) if _is_jax(v)]
    want = [i for i, sp in enumerate(specs) if sp is not None]

    def call(*ops):
        vals = list(values)
        for i, o in zip(idx, ops):
            vals[i] = np.asarray(o)
        outs = host(*vals)
        return [np.asarray(outs[i]).astype(specs[i][1], copy=False) for i in want]

    ops = [values[i] for i in idx]
    if any(_is_tracer(o) for o in ops):
        structs = [jax.ShapeDtypeStruct(tuple(specs[i][0]), specs[i][1]) for i in want]
        flat = jax.pure_callback(call, structs, *ops, **_callback_options(jax))
    else:
        dev = _device_of(ops)
        flat = [jax.device_put(o, dev) for o in call(*ops)]
    out = [None] * len(specs)
    for i, o in zip(want, flat):
        out[i] = o
    return out


class _Native:
    """The native object of a compat function, built from host copies of its arguments at
    once, or inside each host call when one of them is a tracer (construction under
    ``jax.jit`` / ``jax.vmap``)."""

    def __init__(self, build, args):
        self.build = build
        self.traced = any(_is_tracer(a) for a in args)
        self.jax = _find_jax(*args) is not None
        self.dtypes = [
            a.dtype if hasattr(a, "dtype") else a
            for a in args
            if hasattr(a, "dtype") or isinstance(a, float)
        ]
        self.shapes = [tuple(np.shape(a)) if hasattr(a, "shape") else None for a in args]
        self.args = list(args) if self.traced else None
        self.obj = None if self.traced else build(*[_host(a) for a in args])

    def call(self, compute, call_values, specs_fn):
        """``compute(obj, *call_values)`` -> list of arrays/None: NumPy in, NumPy out; with
        JAX inputs (here or at construction) through ``_run``; ``specs_fn(jax)`` gives the
        output ``(shape, dtype)`` list for the JAX path."""
        jax = sys.modules.get("jax") if self.jax else _find_jax(*call_values)
        if jax is None:
            return compute(self.obj, *call_values)
        n = len(self.args) if self.traced else 0
        values = (self.args if self.traced else []) + list(call_values)

        def host(*vals):
            obj = self.build(*vals[:n]) if self.traced else self.obj
            return compute(obj, *vals[n:])

        return _run(jax, host, values, specs_fn(jax))


def _trace_set(trace_axes, ndim):
    if trace_axes is None:
        return set(range(1, ndim))
    return {int(a) % ndim for a in trace_axes} if ndim else set()


def _fx_test_shape(y_shape, k_test_train, trace_axes):
    """Test output shape (as neural-tangents computes it): the test dims of the kernel with
    the traced output axes of ``y`` inserted."""
    if k_test_train is None:
        return tuple(y_shape)
    shape = list(np.shape(k_test_train)[::2])
    traced = _trace_set(trace_axes, len(y_shape))
    for i, c in enumerate(y_shape):
        if i in traced:
            shape.insert(i, c)
    return tuple(shape)


def _t_shape(t):
    return () if t is None else tuple(np.shape(t))


def _canonicalize_get(get, allowed):
    """``(is_single_string, tuple of lower-case names)``; None means ``('nngp', 'ntk')``."""
    if get is None:
        return False, ("nngp", "ntk")
    if isinstance(get, str):
        single, names = True, (get,)
    else:
        try:
            names = tuple(get)
        except TypeError:
            raise TypeError(
                f"get must be a string, a tuple of strings or None, got {type(get).__name__}"
            ) from None
        single = False
        if not names:
            raise ValueError('"get" must be non-empty.')
    if not all(isinstance(g, str) for g in names):
        raise TypeError(f"get must be a string, a tuple of strings or None, got {get!r}")
    names = tuple(g.lower() for g in names)
    if len(set(names)) < len(names):
        raise ValueError(f'All entries in "get" must be unique. Got {names}')
    for g in names:
        if g not in allowed:
            raise ValueError(f"get entries must be in {allowed}, got {g!r}")
    return single, names


_NAMEDTUPLES: dict[tuple[str, ...], type] = {}


def _gaussians(names, values):
    """A named tuple ``Gaussians`` with fields in the requested order."""
    cls = _NAMEDTUPLES.get(names)
    if cls is None:
        cls = _NAMEDTUPLES[names] = collections.namedtuple("Gaussians", names)
    return cls(*values)


def _has(k, g) -> bool:
    if isinstance(k, dict):
        return k.get(g) is not None
    return getattr(k, g, None) is not None


def _get_attr(k, g, name):
    """Kernel ``g`` ('nngp' or 'ntk') from a Kernel-like object, a dict, or an array."""
    if isinstance(k, dict):
        if g not in k or k[g] is None:
            raise ValueError(f"{name} has no {g!r} kernel (dict keys: {sorted(k)})")
        return _arr(k[g])
    if hasattr(k, "nngp") or hasattr(k, "ntk"):
        v = getattr(k, g, None)
        if v is None:
            raise ValueError(f"{name} has no {g!r} kernel ({type(k).__name__}.{g} is missing/None)")
        return _arr(v)
    if isinstance(k, (bool, str)) or (not hasattr(k, "shape") and not isinstance(k, (list, tuple))):
        raise TypeError(
            f"{name} must be an array, a dict or an object with .nngp/.ntk, got {type(k).__name__}"
        )
    return _arr(k)


def _gaussian_parts(res):
    """``[mean, covariance]`` of a Gaussian result, ``[mean, None]`` of a mean."""
    if isinstance(res, Gaussian):
        return [res.mean, res.covariance]
    return [res, None]


def _gaussian_results(flat, cov, native=None):
    """Per-kind results from ``[mean, cov, mean, cov, ...]``: Gaussians (keeping the
    native results' layout when given) or means."""
    out = []
    for j in range(len(flat) // 2):
        mean, c = flat[2 * j], flat[2 * j + 1]
        if not cov:
            out.append(mean)
            continue
        g = Gaussian(mean, c)
        info = getattr(native[j], "_info", None) if native is not None else None
        if info is not None:
            g = Gaussian._with_layout(mean, c, *info)
        out.append(g)
    return out


# -- gradient_descent_mse -------------------------------------------------------------------


def _predict_specs(native, trace_axes, t, train, test, k_test_train, extra=(), state=False):
    """``specs_fn`` of the gradient-descent predictors: train/test outputs (and the
    momentum states when ``state``) of shape ``t.shape + ...``."""

    def specs(jax):
        dt = _result_dtype(jax, *native.dtypes, t, *extra)
        ts = _t_shape(t)
        y_shape = native.shapes[1]
        tr = (ts + y_shape, dt) if train else None
        te = (ts + _fx_test_shape(y_shape, k_test_train, trace_axes), dt) if test else None
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
    k_train_train,
    y_train,
    learning_rate=1.0,
    diag_reg=0.0,
    diag_reg_absolute_scale=False,
    trace_axes=(-1,),
):
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

    def build(k, y, lr, reg):
        return Predictor(
            _symmetric(_arr(k), "k_train_train"),
            _arr(y),
            learning_rate=_scalar(lr),
            diag_reg=_scalar(reg),
            diag_reg_absolute_scale=diag_reg_absolute_scale,
            trace_axes=trace_axes,
        )

    native = _Native(
        build, [_arr(k_train_train), _arr(y_train), _arr(learning_rate), _arr(diag_reg)]
    )

    def compute(p, t, f0, g0, ktd):
        out = p.at(_arr(t), fx_train_0=_arr(f0), fx_test_0=_arr(g0), k_test_train=_arr(ktd))
        return [out.train, out.test]

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        _check_inputs(fx_train_0, fx_test_0, k_test_train)
        want_test = fx_test_0 is not None
        call = [
            _arr(t),
            _arr(fx_train_0),
            _arr(fx_test_0) if want_test else None,
            _arr(k_test_train) if want_test else None,
        ]
        specs = _predict_specs(
            native, trace_axes, call[0], fx_train_0 is not None, want_test, call[3], call[1:]
        )
        return _train_test(*native.call(compute, call, specs))

    return predict_fn


# -- gradient_descent (arbitrary loss, ODE) ---------------------------------------------------


def _builtin_grad(name, fx, y):
    """Gradient of tangentflow's built-in losses (used only to recognize a loss)."""
    n = fx.size
    if name == "mse":
        return (fx - y) / n
    z = fx - fx.max(-1, keepdims=True)
    s = np.exp(z)
    s /= s.sum(-1, keepdims=True)
    return (s * y.sum(-1, keepdims=True) - y) / n


def _to_host(a):
    if is_gpu_array(a):
        get = getattr(a, "get", None)
        if get is not None:
            return np.asarray(get())
        from .._backends import cupy_or_none

        cp = cupy_or_none()
        if cp is not None:
            return cp.asnumpy(cp.from_dlpack(a))
    return np.asarray(a)


def _x64_context(jax):
    """A context manager enabling JAX's x64 mode (``jax.enable_x64(True)`` in current JAX,
    ``jax.experimental.enable_x64()`` before), or None."""
    state = getattr(jax, "enable_x64", None)
    if state is not None and callable(state):
        try:
            return state(True)
        except TypeError:  # pragma: no cover - depends on the JAX version
            pass
    try:
        from jax.experimental import enable_x64
    except ImportError:  # pragma: no cover - depends on the JAX version
        return None
    return enable_x64()


def _jax_grad(loss):
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

    def g(fx, y_hat):
        if jitted:
            try:
                return jitted[0](fx, y_hat)
            except not_jittable:  # e.g. Python control flow on values
                jitted.clear()
        return plain(fx, y_hat)

    def grad(fx, y_hat):
        ctx = None
        if np.dtype(fx.dtype) == np.float64 and not getattr(jax.config, "jax_enable_x64", 0):
            ctx = _x64_context(jax)
        if ctx is None:
            out = g(jnp.asarray(fx), jnp.asarray(y_hat))
        else:
            with ctx:
                out = g(jnp.asarray(fx), jnp.asarray(y_hat))
        return np.asarray(out, dtype=fx.dtype)

    return grad


def _native_loss(loss, y_train):
    """The ``loss`` argument of ``Predictor``: the built-in name when the loss is one of
    them with the same normalization (checked on a probe point), else a gradient
    callable ``grad(fx, y_hat) -> dL/dfx``."""
    user_grad = getattr(loss, "grad", None)
    if callable(user_grad):

        def grad(fx, y_hat):
            return _to_host(user_grad(fx, y_hat))

    elif callable(loss):
        grad = _jax_grad(loss)
        if grad is None:
            raise TypeError(
                "loss has no .grad attribute and JAX is not installed to differentiate it: "
                "pass a callable with .grad(fx, y_hat) giving dL/dfx, or install JAX"
            )
    else:
        raise TypeError(
            "loss must be a JAX-differentiable function loss(fx, y_hat) or a callable with a "
            f".grad(fx, y_hat) attribute, got {type(loss).__name__}"
        )
    name = getattr(loss, "name", None)
    if name in ("mse", "cross_entropy"):
        y = _to_host(y_train).astype(np.float64)
        if y.size:
            fx = 0.5 * np.sin(1.3 * np.arange(y.size) + 0.2).reshape(y.shape)
            try:
                got = np.asarray(_to_host(grad(fx, y)), dtype=np.float64)
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
                return name
    return grad


def gradient_descent(
    loss, k_train_train, y_train, learning_rate=1.0, momentum=None, trace_axes=(-1,)
):
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

    def build(k, y, lr, mom):
        y = _arr(y)
        return Predictor(
            _symmetric(_arr(k), "k_train_train"),
            y,
            learning_rate=_scalar(lr),
            momentum=_scalar(mom),
            loss=_native_loss(loss, y),
            trace_axes=trace_axes,
        )

    native = _Native(
        build, [_arr(k_train_train), _arr(y_train), _arr(learning_rate), _arr(momentum)]
    )

    def compute_state(p, t, f0, g0, ktd, q0, q1):
        return list(p._at_state(_arr(t), _arr(f0), _arr(g0), _arr(ktd), _arr(q0), _arr(q1)))

    def compute(p, t, f0, g0, ktd):
        out = p.at(_arr(t), fx_train_0=_arr(f0), fx_test_0=_arr(g0), k_test_train=_arr(ktd))
        return [out.train, out.test]

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        is_state = isinstance(fx_train_or_state_0, ODEState)
        if is_state:
            if fx_test_0 is not None:
                raise ValueError("`fx_test_0` is included in `ODEState` and must be set to `None`.")
            state = fx_train_or_state_0
            fx_train_0, fx_test_0 = state.fx_train, state.fx_test
            q_train, q_test = state.qx_train, state.qx_test
        else:
            fx_train_0, q_train, q_test = fx_train_or_state_0, None, None
        _check_inputs(fx_train_0, fx_test_0, k_test_train)
        if momentum is None and (q_train is not None or q_test is not None):
            raise ValueError("Got passed momentum state variables, while `momentum is None`.")
        want_test = fx_test_0 is not None
        if is_state and fx_train_0 is None:
            fx_train_0 = 0.0  # the reference integrates the train outputs from zero
        call = [
            _arr(t),
            _arr(fx_train_0),
            _arr(fx_test_0) if want_test else None,
            _arr(k_test_train) if want_test else None,
        ]
        if is_state and momentum is not None:
            call += [_arr(q_train), _arr(q_test) if want_test else None]
            specs = _predict_specs(
                native, trace_axes, call[0], True, want_test, call[3], call[1:], "momentum"
            )
            return ODEState(*native.call(compute_state, call, specs))
        specs = _predict_specs(
            native, trace_axes, call[0], fx_train_0 is not None, want_test, call[3], call[1:]
        )
        train, test = native.call(compute, call, specs)
        if is_state:
            return ODEState(train, test, None, None)
        return _train_test(train, test)

    return predict_fn


# -- gp_inference ---------------------------------------------------------------------------


def _tangentflow():
    import tangentflow

    return tangentflow


def gp_inference(
    k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False, trace_axes=(-1,)
):
    """Compute the mean and variance of the 'posterior' of NNGP/NTK/NTKGP.

    ``'nngp'``: Bayesian posterior with the NNGP prior; ``'ntk'``: the infinite ensemble
    trained to convergence; ``'ntkgp'``: GP with the NTK as prior. Works under
    ``jax.jit`` / ``jax.vmap`` (host callback).

    Args:
      k_train_train: train-train kernel: an object with ``.nngp``/``.ntk``, a dict with
        those keys, or an array (then used for every ``get``).
      y_train: train targets.
      diag_reg: a scalar added to the diagonal of the train-train kernel.
      diag_reg_absolute_scale: whether ``diag_reg`` is absolute.
      trace_axes: output axes along which the kernels are traced.

    Returns:
      ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: means (when
      ``k_test_test`` is None) or ``Gaussian(mean, covariance)``; a single result for a
      string ``get``, a named tuple for a tuple (``None``: ``('nngp', 'ntk')``). Without
      ``k_test_train`` the predictions are on the training set.
    """
    # the train kernels; a plain array serves every kind
    is_container = isinstance(k_train_train, dict) or any(
        hasattr(k_train_train, g) for g in ("nngp", "ntk")
    )
    if is_container:
        kdd = {
            g: _get_attr(k_train_train, g, "k_train_train")
            for g in ("nngp", "ntk")
            if _has(k_train_train, g)
        }
        if not kdd:
            raise ValueError("k_train_train has neither an 'nngp' nor an 'ntk' kernel")
    else:
        a = _get_attr(k_train_train, "nngp", "k_train_train")
        kdd = {"nngp": a, "ntk": a}
    kinds = tuple(kdd)
    opts = dict(diag_reg_absolute_scale=diag_reg_absolute_scale, trace_axes=trace_axes)

    class _State:
        """Native GaussianProcess/Ensemble objects over one set of train kernels, built
        once per distinct kernel (a plain-array ``k_train_train`` serves every kind with
        one factorization)."""

        def __init__(self, y, reg, *ks):
            self.y, self.reg, self.cache = _arr(y), _scalar(reg), {}
            sym = {}
            self.k = {}
            for g, k in zip(kinds, ks):
                if id(k) not in sym:
                    sym[id(k)] = _symmetric(_arr(k), "k_train_train")
                self.k[g] = sym[id(k)]
            self.gp(kinds[0])  # validate the kernel and the targets now, as the reference

        def train_kernel(self, kind):
            if kind not in self.k:
                raise ValueError(f"k_train_train has no {kind!r} kernel")
            return self.k[kind]

        def gp(self, kind):
            k = self.train_kernel(kind)
            key = ("gp", id(k))
            if key not in self.cache:
                self.cache[key] = _tangentflow().GaussianProcess(
                    k, self.y, diag_reg=self.reg, **opts
                )
            return self.cache[key]

        def ensemble(self):  # the 'ntk' ensemble at t = inf (needs the NNGP for covariances)
            if "ens" not in self.cache:
                self.cache["ens"] = _tangentflow().Ensemble(
                    self.train_kernel("nngp"),
                    self.y,
                    ntk_train_train=self.train_kernel("ntk"),
                    diag_reg=self.reg,
                    **opts,
                )
            return self.cache["ens"]

    native = _Native(_State, [_arr(y_train), _arr(diag_reg), *kdd.values()])
    y_shape = native.shapes[0]

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        single, names = _canonicalize_get(get, ("nngp", "ntk", "ntkgp"))
        cov = k_test_test is not None
        ks = []  # per kind: its test-train kernel, the NNGP test-train kernel, test-test
        for g in names:
            kind = "ntk" if g == "ntkgp" else g
            if kind not in kinds:
                raise ValueError(f"k_train_train has no {kind!r} kernel")
            if k_test_train is None:
                ks += [None, None, None]
                continue
            k_td = _get_attr(k_test_train, kind, "k_test_train")
            nngp_td = None
            if g == "ntk" and cov:
                if not (is_container and "nngp" in kdd and _has(k_test_train, "nngp")):
                    raise ValueError(
                        'If `"ntk" in get`, and `k_test_test` is not `None`, and '
                        "`k_test_train` and `k_train_train` must be Kernel objects (or dicts) "
                        "with `nngp` attributes."
                    )
                nngp_td = _get_attr(k_test_train, "nngp", "k_test_train")
                k_tt = _get_attr(k_test_test, "nngp", "k_test_test")
            else:
                k_tt = _get_attr(k_test_test, kind, "k_test_test") if cov else None
            ks += [k_td, nngp_td, k_tt]
        native_results = []

        def compute(state, *ks):
            """``[mean, covariance]`` per kind (the native results are kept as well)."""
            flat = []
            native_results.clear()
            for j, g in enumerate(names):
                k_td, nngp_td, k_tt = ks[3 * j : 3 * j + 3]
                kind = "ntk" if g == "ntkgp" else g
                if k_td is None:
                    r = state.gp(kind).posterior()  # training set: mean P·y, covariance 0
                elif g == "ntk" and cov:
                    r = state.ensemble().at(
                        None,
                        ntk_test_train=_arr(k_td),
                        nngp_test_train=_arr(nngp_td),
                        nngp_test_test=_symmetric(_arr(k_tt), "k_test_test"),
                        compute_cov=True,
                    )
                else:  # 'nngp', 'ntkgp', and the 'ntk' mean (the GP mean with the NTK prior)
                    r = state.gp(kind).posterior(
                        k_test_train=_arr(k_td),
                        k_test_test=_symmetric(_arr(k_tt), "k_test_test") if cov else None,
                    )
                native_results.append(r)
                flat += [r.mean, r.covariance if cov else None]
            return flat

        def specs(jax):
            dt = _result_dtype(jax, *native.dtypes, *ks)
            out = []
            for j, g in enumerate(names):
                kind = "ntk" if g == "ntkgp" else g
                k_td, _, k_tt = ks[3 * j : 3 * j + 3]
                mean = (_fx_test_shape(y_shape, k_td, trace_axes), dt)
                if not cov:
                    out += [mean, None]
                    continue
                if k_td is None:  # training set: covariance shaped as the train kernel
                    c_shape = native.shapes[2 + kinds.index(kind)]
                else:
                    c_shape = np.shape(k_tt)
                out += [mean, (tuple(c_shape), dt)]
            return out

        flat = native.call(compute, ks, specs)
        if cov and not native.jax and _find_jax(*ks) is None:
            out = list(native_results)  # NumPy path: the native Gaussians as they are
        else:
            out = _gaussian_results(flat, cov, native_results or None)
        return out[0] if single else _gaussians(names, out)

    return predict_fn


# -- gradient_descent_mse_ensemble -----------------------------------------------------------


def _split_first(v):
    """The first-argument part of a kernel_fn keyword (a pair ``(x1_value, x2_value)``)."""
    return v[0] if isinstance(v, tuple) and len(v) == 2 else v


def _tree_leaves(x):
    """Leaves of a pytree: JAX's when JAX is loaded (custom nodes included), else through
    tuples, lists and dicts, with None an empty node (as in JAX)."""
    jax = sys.modules.get("jax")
    tree_util = getattr(jax, "tree_util", None) if jax is not None else None
    if tree_util is not None and hasattr(tree_util, "tree_leaves"):
        return tree_util.tree_leaves(x)
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [leaf for v in x for leaf in _tree_leaves(v)]
    if isinstance(x, dict):
        return [leaf for k in sorted(x) for leaf in _tree_leaves(x[k])]
    return [x]


def _is_array_tree(x):
    """Whether every leaf of the pytree ``x`` is an array (the reference's test: ``()``,
    ``None`` and empty containers have no leaves, so they pass)."""
    return all(_is_array(v) for v in _tree_leaves(x))


def _is_array(x):
    return (
        isinstance(x, np.ndarray)
        or _is_jax(x)
        or type(x).__module__.split(".")[0] in ("jax", "jaxlib", "cupy", "torch")
    )


def _differ(a, b) -> bool:
    """``a != b`` as a bool; values whose comparison is not a bool differ unless identical."""
    if a is b:
        return False
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - e.g. an array inside a tuple: compare by identity
        return True


def _kernels_from(result, names, what):
    """``{name: array}`` from a kernel_fn result: object with .nngp/.ntk, dict, or array."""
    out = {}
    for g in names:
        if isinstance(result, dict) or hasattr(result, "nngp") or hasattr(result, "ntk"):
            out[g] = _get_attr(result, g, f"kernel_fn result ({what})")
        elif len(names) == 1:
            if not hasattr(result, "shape"):
                raise TypeError(
                    f"kernel_fn returned {type(result).__name__} for {what}: expected an array, "
                    "a dict or an object with .nngp/.ntk"
                )
            out[g] = _arr(result)
        else:
            raise TypeError(
                f"kernel_fn returned a single {type(result).__name__} for {what} with get="
                f"{names}: expected an object with .nngp and .ntk, or a dict"
            )
    return out


def gradient_descent_mse_ensemble(
    kernel_fn,
    x_train,
    y_train,
    learning_rate=1.0,
    diag_reg=0.0,
    diag_reg_absolute_scale=False,
    trace_axes=(-1,),
    **kernel_fn_train_train_kwargs,
):
    """Predicts the Gaussian of an infinite ensemble trained with MSE gradient descent.

    ``kernel_fn`` is called as neural-tangents calls it: ``kernel_fn(x_train, None, get,
    **kernel_fn_train_train_kwargs)``, ``kernel_fn(x_test, x_train, get, **kwargs)`` and
    ``kernel_fn(x_test, None, 'nngp', **kwargs)``; its results may be objects with
    ``.nngp``/``.ntk``, dicts with those keys, or arrays when one kind is asked for.
    Train-train kernels and factorizations are cached across calls. Works under
    ``jax.jit`` / ``jax.vmap`` (host callback; the kernels are computed by ``kernel_fn``
    in JAX).

    Returns:
      ``predict_fn(t=None, x_test=None, get=None, compute_cov=False,
      **kernel_fn_test_test_kwargs)``: means, or ``Gaussian(mean, covariance)`` when
      ``compute_cov``; a single result for a string ``get`` ('nngp' or 'ntk'), a named
      tuple for a tuple (None: ``('nngp', 'ntk')``). ``x_test=None``: the training set
      (the test-test keywords are then not used, as in neural-tangents).
    """
    y = _arr(y_train)
    y_shape = tuple(np.shape(y))
    opts = dict(
        learning_rate=_scalar(learning_rate),
        diag_reg=_scalar(diag_reg),
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        trace_axes=trace_axes,
    )
    k_dd: dict[str, Any] = {}
    ens: dict[str, Any] = {}  # native Ensembles over concrete train kernels
    host_kdd: dict[str, Any] = {}

    def train_kernels(deps):
        """Train-train kernels ``deps``, asking kernel_fn only for missing ones (as the
        reference does: one call for both when neither is cached)."""
        missing = tuple(g for g in deps if g not in k_dd)
        if len(missing) == 2:
            res = kernel_fn(x_train, None, missing, **kernel_fn_train_train_kwargs)
            k_dd.update(_kernels_from(res, missing, "x_train, None"))
        else:
            for g in missing:
                res = kernel_fn(x_train, None, g, **kernel_fn_train_train_kwargs)
                k_dd.update(_kernels_from(res, (g,), "x_train, None"))
        return k_dd

    def mode_key(mode, cov):
        """The native Ensemble for ``mode``. The 'ntk' mean depends only on the NTK, so
        without covariances (and no NNGP at hand) it runs as the 'nngp' mode with K := Θ."""
        if mode == "nngp":
            return "nngp"
        if cov or "nngp" in k_dd or "ntk" in ens:
            return "ntk"
        return "ntk_mean"

    def build(key, y_np, kn, kt):
        tf = _tangentflow()
        if key == "nngp":
            return tf.Ensemble(kn, y_np, **opts)
        if key == "ntk":
            return tf.Ensemble(kn, y_np, ntk_train_train=kt, **opts)
        return tf.Ensemble(kt, y_np, **opts)

    def sym_train(g, k):
        """Host copy of a train kernel, symmetrized once (with one warning) per kernel."""
        if g not in host_kdd:
            host_kdd[g] = _symmetric(_arr(_host(k)), "kernel_fn(x_train, None) kernel")
        return host_kdd[g]

    def test_kwargs(kernel_fn_test_test_kwargs):
        """Keyword arguments of the test-train and test-test kernel calls, as the reference
        builds them: pairs ``(x1_value, x2_value)`` of array pytrees are recombined for the
        test-train call, other array pytrees are passed as given, and other values must
        match."""
        kw_td = dict(kernel_fn_train_train_kwargs)
        kw_tt = dict(kernel_fn_train_train_kwargs)
        for name, v_tt in kernel_fn_test_test_kwargs.items():
            v_dd = kernel_fn_train_train_kwargs[name]
            if _is_array_tree(v_dd) and _is_array_tree(v_tt):
                pairs = all(isinstance(v, tuple) and len(v) == 2 for v in (v_dd, v_tt))
                v_td = (_split_first(v_tt), _split_first(v_dd)) if pairs else v_tt
            elif _differ(v_dd, v_tt):
                raise ValueError(
                    f"Same keyword argument {name} of `kernel_fn` is set to different values "
                    f"{v_dd} != {v_tt} when computing the train-train and test-train/test-test "
                    "kernels."
                )
            else:
                v_td = v_tt
            kw_td[name] = v_td
            kw_tt[name] = v_tt
        return kw_td, kw_tt

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs):
        unknown = sorted(set(kernel_fn_test_test_kwargs) - set(kernel_fn_train_train_kwargs))
        if unknown:
            raise TypeError(
                f"predict_fn got kernel_fn keyword argument(s) {unknown} that were not given "
                "to gradient_descent_mse_ensemble; keywords for kernel_fn must be given there "
                "too (its kernel_fn keywords: "
                f"{sorted(kernel_fn_train_train_kwargs) or 'none'})"
            )
        if get is not None and not isinstance(get, str):
            get = tuple(get)
        if isinstance(get, str) or isinstance(get, tuple):
            for g in (get,) if isinstance(get, str) else get:
                if isinstance(g, str) and g.lower() not in ("nngp", "ntk"):
                    raise NotImplementedError(
                        f'Can only get either "nngp" or "ntk" predictions, got {g}.'
                    )
        single, names = _canonicalize_get(get, ("nngp", "ntk"))
        cov = bool(compute_cov)
        deps = ()
        if "nngp" in names or ("ntk" in names and cov):
            deps += ("nngp",)
        if "ntk" in names:
            deps += ("ntk",)
        train_kernels(deps)

        k_td = k_tt = None
        if x_test is not None:  # without x_test the test-test keywords are not used
            kw_td, kw_tt = test_kwargs(kernel_fn_test_test_kwargs)
            res = kernel_fn(x_test, x_train, deps, **kw_td)
            k_td = _kernels_from(res, deps, "x_test, x_train")
            if cov:
                res = kernel_fn(x_test, None, "nngp", **kw_tt)
                k_tt = _kernels_from(res, ("nngp",), "x_test, None")["nngp"]

        t = _arr(t)
        keys = [mode_key(g, cov) for g in names]
        kn, kt = k_dd.get("nngp"), k_dd.get("ntk")
        td_n = k_td.get("nngp") if k_td is not None else None
        td_t = k_td.get("ntk") if k_td is not None else None
        values = [t, y, kn, kt, td_n, td_t, k_tt]
        traced_train = any(_is_tracer(v) for v in (y, kn, kt))

        def compute(t, y_np, kn_np, kt_np, td_n, td_t, k_tt):
            if traced_train:  # built from this call's kernels
                objs = {}
                kn_np = _symmetric(_arr(kn_np), "kernel_fn(x_train, None) kernel")
                kt_np = _symmetric(_arr(kt_np), "kernel_fn(x_train, None) kernel")

                def obj(key):
                    if key not in objs:
                        objs[key] = build(key, _arr(y_np), kn_np, kt_np)
                    return objs[key]
            else:

                def obj(key):
                    if key not in ens:
                        kn_h = sym_train("nngp", kn) if key != "ntk_mean" else None
                        kt_h = sym_train("ntk", kt) if key != "nngp" else None
                        ens[key] = build(key, _arr(_host(y)), kn_h, kt_h)
                    return ens[key]

            tt = _symmetric(_arr(k_tt), "kernel_fn(x_test, None) kernel") if cov else None
            res, flat = [], []
            for key in keys:
                kw = {}
                if k_td is not None:
                    if key == "nngp":
                        kw["nngp_test_train"] = _arr(td_n)
                    elif key == "ntk_mean":
                        kw["nngp_test_train"] = _arr(td_t)
                    else:
                        kw["ntk_test_train"] = _arr(td_t)
                        if cov:
                            kw["nngp_test_train"] = _arr(td_n)
                    if cov:
                        kw["nngp_test_test"] = tt
                r = obj(key).at(_arr(t), compute_cov=cov, **kw)
                res.append(r)
                flat += [r.mean, r.covariance if cov else None]
            compute.native_results = res
            return flat

        def specs(jax):
            dt = _result_dtype(jax, t, y, kn, kt, td_n, td_t, k_tt)
            ts = _t_shape(t)
            out = []
            for g in names:
                k = None if k_td is None else k_td[g]
                mean = (ts + _fx_test_shape(y_shape, k, trace_axes), dt)
                if not cov:
                    out += [mean, None]
                    continue
                c = np.shape(kn) if k_td is None else np.shape(k_tt)
                out += [mean, (ts + tuple(c), dt)]
            return out

        compute.native_results = None
        jax = _find_jax(*values)
        if jax is None:
            compute(*values)
            out = compute.native_results
            out = out if cov else [r.mean for r in out]
        else:
            flat = _run(jax, compute, values, specs(jax))
            out = _gaussian_results(flat, cov, compute.native_results)
        return out[0] if single else _gaussians(names, out)

    return predict_fn


# -- max_learning_rate -------------------------------------------------------------------------


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0.0, eps=1e-12):
    """Computes the maximal feasible learning rate for infinite width NNs.

    ``2 (1 + momentum) n / (λ_max(ntk_train_train) + eps)`` with ``n = y_train_size``
    (default: the number of rows of the flattened kernel; pass ``y_train.size`` when the
    kernel traces output axes). Not JAX-traceable (returns a Python float).
    """
    if y_train_size is not None and not isinstance(y_train_size, bool):
        if isinstance(y_train_size, numbers.Integral):
            y_train_size = int(y_train_size)
        elif isinstance(y_train_size, numbers.Real) and float(y_train_size).is_integer():
            y_train_size = int(y_train_size)
    k = _symmetric(_arr(_host(_arr(ntk_train_train))), "ntk_train_train")
    return _max_learning_rate(k, y_train_size, _scalar(_host(_arr(momentum))), eps)


# ``neural_tangents.predict`` users write ``nt.predict.gradient_descent_mse``: the module
# stands for that submodule too.
predict = sys.modules[__name__]
