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
* **Not JAX-traceable.** The functions accept JAX arrays (and anything ``numpy.asarray``
  takes) but compute outside JAX and return NumPy arrays (CuPy arrays for GPU input).
  Do not ``jax.jit``, ``jax.vmap`` or ``jax.grad`` through them.
* ``gradient_descent``: the ``loss`` may be a JAX-differentiable function (differentiated
  with ``jax.grad`` when JAX is installed) or any callable with a ``.grad(fx, y_hat)``
  attribute giving the gradient with respect to ``fx``. ``t=None`` (infinite time) is a
  ``ValueError`` for losses integrated as an ODE (the reference returns NaN); times need
  not be sorted (results come back in the caller's order).
* Errors on bad input are raised before any work, as ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

import collections
import dataclasses
import numbers
from typing import Any

import numpy as np

from .._backends import is_gpu_array
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


# -- helpers -------------------------------------------------------------------------------


def _arr(a):
    """Arrays as the native classes take them: NumPy arrays and GPU arrays as they are,
    other array-likes (JAX/torch CPU arrays, lists) through ``numpy.asarray``; scalars and
    None unchanged."""
    if a is None or isinstance(a, (np.ndarray, numbers.Number)) or is_gpu_array(a):
        return a
    return np.asarray(a)


def _scalar(x):
    """0-d arrays (e.g. a JAX scalar learning rate) as Python floats; the rest unchanged."""
    if x is not None and not isinstance(x, (numbers.Number, bool)) and np.shape(x) == ():
        return float(x)
    return x


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


# -- gradient_descent_mse -------------------------------------------------------------------


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
    ``tangentflow.Predictor``). Not JAX-traceable.

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
    p = Predictor(
        _arr(k_train_train),
        _arr(y_train),
        learning_rate=_scalar(learning_rate),
        diag_reg=_scalar(diag_reg),
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        trace_axes=trace_axes,
    )

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        _check_inputs(fx_train_0, fx_test_0, k_test_train)
        want_test = fx_test_0 is not None
        out = p.at(
            _arr(t),
            fx_train_0=_arr(fx_train_0),
            fx_test_0=_arr(fx_test_0) if want_test else None,
            k_test_train=_arr(k_test_train) if want_test else None,
        )
        return _train_test(out.train, out.test)

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


def _jax_grad(loss):
    """``jax.grad(loss)`` as a NumPy-in, NumPy-out gradient callable (or None without JAX)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    g = jax.grad(loss)

    def grad(fx, y_hat):
        ctx = None
        if np.dtype(fx.dtype) == np.float64 and not getattr(jax.config, "jax_enable_x64", 0):
            try:
                from jax.experimental import enable_x64

                ctx = enable_x64()
            except ImportError:  # pragma: no cover - depends on the JAX version
                ctx = None
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
    Not JAX-traceable.

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
    k = _arr(k_train_train)
    y = _arr(y_train)
    p = Predictor(
        k,
        y,
        learning_rate=_scalar(learning_rate),
        momentum=_scalar(momentum),
        loss=_native_loss(loss, y),
        trace_axes=trace_axes,
    )

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
        if is_state and momentum is not None:
            return ODEState(
                *p._at_state(
                    _arr(t),
                    _arr(fx_train_0),
                    _arr(fx_test_0),
                    _arr(k_test_train) if fx_test_0 is not None else None,
                    _arr(q_train),
                    _arr(q_test),
                )
            )
        out = p.at(
            _arr(t),
            fx_train_0=_arr(fx_train_0),
            fx_test_0=_arr(fx_test_0) if want_test else None,
            k_test_train=_arr(k_test_train) if want_test else None,
        )
        if is_state:
            return ODEState(out.train, out.test, None, None)
        return _train_test(out.train, out.test)

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
    trained to convergence; ``'ntkgp'``: GP with the NTK as prior. Not JAX-traceable.

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
    y = _arr(y_train)
    opts = dict(
        diag_reg=_scalar(diag_reg),
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        trace_axes=trace_axes,
    )
    # the train kernels, converted once; a plain array serves every kind
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
    cache: dict[Any, Any] = {}

    def train_kernel(kind):
        if kind not in kdd:
            raise ValueError(f"k_train_train has no {kind!r} kernel")
        return kdd[kind]

    def gp(kind):
        """GaussianProcess with prior kernel ``kind``, built once per distinct kernel (a
        plain-array ``k_train_train`` serves every kind with one factorization)."""
        k = train_kernel(kind)
        key = ("gp", id(k))
        if key not in cache:
            cache[key] = _tangentflow().GaussianProcess(k, y, **opts)
        return cache[key]

    def ensemble():  # the 'ntk' ensemble at t = inf (needs the NNGP for covariances)
        if "ens" not in cache:
            cache["ens"] = _tangentflow().Ensemble(
                train_kernel("nngp"), y, ntk_train_train=train_kernel("ntk"), **opts
            )
        return cache["ens"]

    # validate the kernel and the targets now (the reference fails at construction too)
    gp(next(iter(kdd)))

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        single, names = _canonicalize_get(get, ("nngp", "ntk", "ntkgp"))
        cov = k_test_test is not None
        out = []
        for g in names:
            kind = "ntk" if g == "ntkgp" else g
            if k_test_train is None:
                # training set: mean P·y, covariance 0 (the reference's convention)
                res = gp(kind).posterior()
                out.append(res if cov else res.mean)
                continue
            k_td = _get_attr(k_test_train, kind, "k_test_train")
            if g == "ntk" and cov:
                if not (is_container and "nngp" in kdd and _has(k_test_train, "nngp")):
                    raise ValueError(
                        'If `"ntk" in get`, and `k_test_test` is not `None`, and '
                        "`k_test_train` and `k_train_train` must be Kernel objects (or dicts) "
                        "with `nngp` attributes."
                    )
                res = ensemble().at(
                    None,
                    ntk_test_train=k_td,
                    nngp_test_train=_get_attr(k_test_train, "nngp", "k_test_train"),
                    nngp_test_test=_get_attr(k_test_test, "nngp", "k_test_test"),
                    compute_cov=True,
                )
                out.append(res)
                continue
            # 'nngp', 'ntkgp', and the 'ntk' mean (= the GP mean with the NTK as prior)
            k_tt = _get_attr(k_test_test, kind, "k_test_test") if cov else None
            res = gp(kind).posterior(k_test_train=k_td, k_test_test=k_tt)
            out.append(res if cov else res.mean)
        return out[0] if single else _gaussians(names, out)

    return predict_fn


# -- gradient_descent_mse_ensemble -----------------------------------------------------------


def _split_first(v):
    """The first-argument part of a kernel_fn keyword (a pair ``(x1_value, x2_value)``)."""
    return v[0] if isinstance(v, tuple) and len(v) == 2 else v


def _is_array_tree(x):
    """Whether ``x`` is an array or a tuple/list of arrays (the reference's tree test)."""
    if isinstance(x, (tuple, list)):
        return len(x) > 0 and all(_is_array_tree(v) for v in x)
    return _is_array(x)


def _is_array(x):
    return isinstance(x, np.ndarray) or type(x).__module__.split(".")[0] in (
        "jax",
        "jaxlib",
        "cupy",
        "torch",
    )


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
    Train-train kernels and factorizations are cached across calls. Not JAX-traceable.

    Returns:
      ``predict_fn(t=None, x_test=None, get=None, compute_cov=False,
      **kernel_fn_test_test_kwargs)``: means, or ``Gaussian(mean, covariance)`` when
      ``compute_cov``; a single result for a string ``get`` ('nngp' or 'ntk'), a named
      tuple for a tuple (None: ``('nngp', 'ntk')``). ``x_test=None``: the training set.
    """
    y = _arr(y_train)
    opts = dict(
        learning_rate=_scalar(learning_rate),
        diag_reg=_scalar(diag_reg),
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        trace_axes=trace_axes,
    )
    k_dd: dict[str, Any] = {}
    ens: dict[str, Any] = {}

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

    def ensemble(mode, cov):
        """The native Ensemble for ``mode``. The 'ntk' mean depends only on the NTK, so
        without covariances (and no NNGP at hand) it runs as the 'nngp' mode with K := Θ."""
        if mode == "nngp":
            key = "nngp"
        elif cov or "nngp" in k_dd or "ntk" in ens:
            key = "ntk"
        else:
            key = "ntk_mean"
        if key not in ens:
            tf = _tangentflow()
            if key == "nngp":
                ens[key] = tf.Ensemble(k_dd["nngp"], y, **opts)
            elif key == "ntk":
                ens[key] = tf.Ensemble(k_dd["nngp"], y, ntk_train_train=k_dd["ntk"], **opts)
            else:
                ens[key] = tf.Ensemble(k_dd["ntk"], y, **opts)
        return key, ens[key]

    def test_kwargs(kernel_fn_test_test_kwargs):
        """Keyword arguments of the test-train and test-test kernel calls, as the reference
        builds them: array pairs ``(x1_value, x2_value)`` are recombined for the test-train
        call, other arrays are passed as given, and other values must match."""
        kw_td = dict(kernel_fn_train_train_kwargs)
        kw_tt = dict(kernel_fn_train_train_kwargs)
        for name, v_tt in kernel_fn_test_test_kwargs.items():
            v_dd = kernel_fn_train_train_kwargs[name]
            if _is_array_tree(v_dd) and _is_array_tree(v_tt):
                pairs = all(isinstance(v, tuple) and len(v) == 2 for v in (v_dd, v_tt))
                v_td = (_split_first(v_tt), _split_first(v_dd)) if pairs else v_tt
            elif v_dd != v_tt:
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
        if x_test is not None:
            kw_td, kw_tt = test_kwargs(kernel_fn_test_test_kwargs)
            res = kernel_fn(x_test, x_train, deps, **kw_td)
            k_td = _kernels_from(res, deps, "x_test, x_train")
            if cov:
                res = kernel_fn(x_test, None, "nngp", **kw_tt)
                k_tt = _kernels_from(res, ("nngp",), "x_test, None")["nngp"]
        elif kernel_fn_test_test_kwargs:
            raise ValueError(
                "kernel_fn_test_test_kwargs were given without x_test: "
                f"{sorted(kernel_fn_test_test_kwargs)}"
            )

        t = _arr(t)
        out = []
        for g in names:
            key, e = ensemble(g, cov)
            kw = {}
            if k_td is not None:
                if key == "nngp":
                    kw["nngp_test_train"] = k_td["nngp"]
                elif key == "ntk_mean":
                    kw["nngp_test_train"] = k_td["ntk"]
                else:
                    kw["ntk_test_train"] = k_td["ntk"]
                    if cov:
                        kw["nngp_test_train"] = k_td["nngp"]
                if cov:
                    kw["nngp_test_test"] = k_tt
            res = e.at(t, compute_cov=cov, **kw)
            out.append(res if cov else res.mean)
        return out[0] if single else _gaussians(names, out)

    return predict_fn


# -- max_learning_rate -------------------------------------------------------------------------


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0.0, eps=1e-12):
    """Computes the maximal feasible learning rate for infinite width NNs.

    ``2 (1 + momentum) n / (λ_max(ntk_train_train) + eps)`` with ``n = y_train_size``
    (default: the number of rows of the flattened kernel; pass ``y_train.size`` when the
    kernel traces output axes). Not JAX-traceable.
    """
    if y_train_size is not None and not isinstance(y_train_size, bool):
        if isinstance(y_train_size, numbers.Integral):
            y_train_size = int(y_train_size)
        elif isinstance(y_train_size, numbers.Real) and float(y_train_size).is_integer():
            y_train_size = int(y_train_size)
    return _max_learning_rate(_arr(ntk_train_train), y_train_size, _scalar(momentum), eps)
