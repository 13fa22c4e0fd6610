"""``gradient_descent_mse_ensemble``: the infinite ensemble's Gaussian through ``Ensemble``,
with the kernels computed by the caller's ``kernel_fn``."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ... import Ensemble
from ._arrays import Value, as_array, as_scalar, host_array, is_tracer, symmetrized
from ._jax import Spec, find_jax, result_dtype, run_on_host
from ._pytrees import test_kernel_kwargs
from ._results import (
    TraceAxes,
    canonicalize_get,
    fx_test_shape,
    gaussian_results,
    gaussians,
    kernels_from,
    t_shape,
)

__all__ = ["gradient_descent_mse_ensemble"]


def gradient_descent_mse_ensemble(
    kernel_fn: Callable[..., Any],
    x_train: Value,
    y_train: Value,
    learning_rate: Value = 1.0,
    diag_reg: Value = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: TraceAxes = (-1,),
    **kernel_fn_train_train_kwargs: Any,
) -> Callable[..., Any]:
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
    y = as_array(y_train)
    y_shape = tuple(np.shape(y))
    opts = dict(
        learning_rate=as_scalar(learning_rate),
        diag_reg=as_scalar(diag_reg),
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        trace_axes=trace_axes,
    )
    k_dd: dict[str, Any] = {}
    ens: dict[str, Ensemble] = {}  # native Ensembles over concrete train kernels
    host_kdd: dict[str, Any] = {}

    def train_kernels(deps: tuple[str, ...]) -> dict[str, Value]:
        """Train-train kernels ``deps``, asking kernel_fn only for missing ones (as the
        reference does: one call for both when neither is cached)."""
        missing = tuple(g for g in deps if g not in k_dd)
        if len(missing) == 2:
            res = kernel_fn(x_train, None, missing, **kernel_fn_train_train_kwargs)
            k_dd.update(kernels_from(res, missing, "x_train, None"))
        else:
            for g in missing:
                res = kernel_fn(x_train, None, g, **kernel_fn_train_train_kwargs)
                k_dd.update(kernels_from(res, (g,), "x_train, None"))
        return k_dd

    def mode_key(mode: str, cov: bool) -> str:
        """The native Ensemble for ``mode``. The 'ntk' mean depends only on the NTK, so
        without covariances (and no NNGP at hand) it runs as the 'nngp' mode with K := Θ."""
        if mode == "nngp":
            return "nngp"
        if cov or "nngp" in k_dd or "ntk" in ens:
            return "ntk"
        return "ntk_mean"

    def build(key: str, y_np: Value, kn: Value, kt: Value) -> Ensemble:
        if key == "nngp":
            return Ensemble(kn, y_np, **opts)
        if key == "ntk":
            return Ensemble(kn, y_np, ntk_train_train=kt, **opts)
        return Ensemble(kt, y_np, **opts)

    def sym_train(g: str, k: Value) -> Value:
        """Host copy of a train kernel, symmetrized once (with one warning) per kernel."""
        if g not in host_kdd:
            host_kdd[g] = symmetrized(as_array(host_array(k)), "kernel_fn(x_train, None) kernel")
        return host_kdd[g]

    def predict_fn(
        t: Value = None,
        x_test: Value = None,
        get: Any = None,
        compute_cov: bool = False,
        **kernel_fn_test_test_kwargs: Any,
    ) -> Any:
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
        single, names = canonicalize_get(get, ("nngp", "ntk"))
        cov = bool(compute_cov)
        deps: tuple[str, ...] = ()
        if "nngp" in names or ("ntk" in names and cov):
            deps += ("nngp",)
        if "ntk" in names:
            deps += ("ntk",)
        train_kernels(deps)

        k_td = k_tt = None
        if x_test is not None:  # without x_test the test-test keywords are not used
            kw_td, kw_tt = test_kernel_kwargs(
                kernel_fn_train_train_kwargs, kernel_fn_test_test_kwargs
            )
            res = kernel_fn(x_test, x_train, deps, **kw_td)
            k_td = kernels_from(res, deps, "x_test, x_train")
            if cov:
                res = kernel_fn(x_test, None, "nngp", **kw_tt)
                k_tt = kernels_from(res, ("nngp",), "x_test, None")["nngp"]

        t = as_array(t)
        keys = [mode_key(g, cov) for g in names]
        kn, kt = k_dd.get("nngp"), k_dd.get("ntk")
        td_n = k_td.get("nngp") if k_td is not None else None
        td_t = k_td.get("ntk") if k_td is not None else None
        values = [t, y, kn, kt, td_n, td_t, k_tt]
        traced_train = any(is_tracer(v) for v in (y, kn, kt))

        native_results: list[Any] = []  # the Ensembles' results of the last host call

        def compute(
            t: Value, y_np: Value, kn_np: Value, kt_np: Value, td_n: Value, td_t: Value, k_tt: Value
        ) -> list[Value]:
            if traced_train:  # built from this call's kernels
                objs: dict[str, Ensemble] = {}
                kn_np = symmetrized(as_array(kn_np), "kernel_fn(x_train, None) kernel")
                kt_np = symmetrized(as_array(kt_np), "kernel_fn(x_train, None) kernel")

                def obj(key: str) -> Ensemble:
                    if key not in objs:
                        objs[key] = build(key, as_array(y_np), kn_np, kt_np)
                    return objs[key]
            else:

                def obj(key: str) -> Ensemble:
                    if key not in ens:
                        kn_h = sym_train("nngp", kn) if key != "ntk_mean" else None
                        kt_h = sym_train("ntk", kt) if key != "nngp" else None
                        ens[key] = build(key, as_array(host_array(y)), kn_h, kt_h)
                    return ens[key]

            tt = symmetrized(as_array(k_tt), "kernel_fn(x_test, None) kernel") if cov else None
            flat: list[Value] = []
            native_results.clear()
            for key in keys:
                kw: dict[str, Value] = {}
                if k_td is not None:
                    if key == "nngp":
                        kw["nngp_test_train"] = as_array(td_n)
                    elif key == "ntk_mean":
                        kw["nngp_test_train"] = as_array(td_t)
                    else:
                        kw["ntk_test_train"] = as_array(td_t)
                        if cov:
                            kw["nngp_test_train"] = as_array(td_n)
                    if cov:
                        kw["nngp_test_test"] = tt
                r = obj(key).at(as_array(t), compute_cov=cov, **kw)
                native_results.append(r)
                flat += [r.mean, r.covariance if cov else None]
            return flat

        def specs(jax: ModuleType) -> list[Spec]:
            dt = result_dtype(jax, t, y, kn, kt, td_n, td_t, k_tt)
            ts = t_shape(t)
            out: list[Spec] = []
            for g in names:
                k = None if k_td is None else k_td[g]
                mean = (ts + fx_test_shape(y_shape, k, trace_axes), dt)
                if not cov:
                    out += [mean, None]
                    continue
                cov_of: Any = kn if k_td is None else k_tt  # train or test-test kernel
                c = np.shape(cov_of)
                out += [mean, (ts + tuple(c), dt)]
            return out

        jax = find_jax(*values)
        if jax is None:
            compute(*values)
            out = native_results if cov else [r.mean for r in native_results]
        else:
            flat = run_on_host(jax, compute, values, specs(jax))
            out = gaussian_results(flat, cov, native_results or None)
        return out[0] if single else gaussians(names, out)

    return predict_fn
