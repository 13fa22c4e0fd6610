"""``gp_inference``: NNGP/NTK/NTKGP posteriors through ``GaussianProcess`` and ``Ensemble``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ... import Ensemble, GaussianProcess
from ._arrays import Value, as_array, as_scalar, symmetrized
from ._jax import Native, Spec, find_jax, result_dtype
from ._results import (
    TraceAxes,
    canonicalize_get,
    fx_test_shape,
    gaussian_results,
    gaussians,
    get_kernel,
    has_kernel,
)

__all__ = ["gp_inference"]


def gp_inference(
    k_train_train: Any,
    y_train: Value,
    diag_reg: Value = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: TraceAxes = (-1,),
) -> Callable[..., Any]:
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
            g: get_kernel(k_train_train, g, "k_train_train")
            for g in ("nngp", "ntk")
            if has_kernel(k_train_train, g)
        }
        if not kdd:
            raise ValueError("k_train_train has neither an 'nngp' nor an 'ntk' kernel")
    else:
        a = get_kernel(k_train_train, "nngp", "k_train_train")
        kdd = {"nngp": a, "ntk": a}
    kinds = tuple(kdd)
    opts: dict[str, Any] = dict(
        diag_reg_absolute_scale=diag_reg_absolute_scale, trace_axes=trace_axes
    )

    class _State:
        """Native GaussianProcess/Ensemble objects over one set of train kernels, built
        once per distinct kernel (a plain-array ``k_train_train`` serves every kind with
        one factorization)."""

        def __init__(self, y: Value, reg: Value, *ks: Value) -> None:
            self.y, self.reg = as_array(y), as_scalar(reg)
            self.cache: dict[object, Any] = {}
            sym: dict[int, Value] = {}
            self.k: dict[str, Value] = {}
            for g, k in zip(kinds, ks):
                if id(k) not in sym:
                    sym[id(k)] = symmetrized(as_array(k), "k_train_train")
                self.k[g] = sym[id(k)]
            self.gp(kinds[0])  # validate the kernel and the targets now, as the reference

        def train_kernel(self, kind: str) -> Value:
            if kind not in self.k:
                raise ValueError(f"k_train_train has no {kind!r} kernel")
            return self.k[kind]

        def gp(self, kind: str) -> GaussianProcess:
            k = self.train_kernel(kind)
            key = ("gp", id(k))
            if key not in self.cache:
                self.cache[key] = GaussianProcess(k, self.y, diag_reg=self.reg, **opts)
            gp: GaussianProcess = self.cache[key]
            return gp

        def ensemble(
            self,
        ) -> Ensemble:  # the 'ntk' ensemble at t = inf (needs the NNGP for covariances)
            if "ens" not in self.cache:
                self.cache["ens"] = Ensemble(
                    self.train_kernel("nngp"),
                    self.y,
                    ntk_train_train=self.train_kernel("ntk"),
                    diag_reg=self.reg,
                    **opts,
                )
            ens: Ensemble = self.cache["ens"]
            return ens

    native = Native(_State, [as_array(y_train), as_array(diag_reg), *kdd.values()])
    y_shape = native.shapes[0] or ()

    def predict_fn(get: Any = None, k_test_train: Any = None, k_test_test: Any = None) -> Any:
        single, names = canonicalize_get(get, ("nngp", "ntk", "ntkgp"))
        cov = k_test_test is not None
        ks: list[
            Value
        ] = []  # per kind: its test-train kernel, the NNGP test-train kernel, test-test
        for g in names:
            kind = "ntk" if g == "ntkgp" else g
            if kind not in kinds:
                raise ValueError(f"k_train_train has no {kind!r} kernel")
            if k_test_train is None:
                ks += [None, None, None]
                continue
            k_td = get_kernel(k_test_train, kind, "k_test_train")
            nngp_td = None
            if g == "ntk" and cov:
                if not (is_container and "nngp" in kdd and has_kernel(k_test_train, "nngp")):
                    raise ValueError(
                        'If `"ntk" in get`, and `k_test_test` is not `None`, and '
                        "`k_test_train` and `k_train_train` must be Kernel objects (or dicts) "
                        "with `nngp` attributes."
                    )
                nngp_td = get_kernel(k_test_train, "nngp", "k_test_train")
                k_tt = get_kernel(k_test_test, "nngp", "k_test_test")
            else:
                k_tt = get_kernel(k_test_test, kind, "k_test_test") if cov else None
            ks += [k_td, nngp_td, k_tt]
        native_results: list[Any] = []  # Gaussians or means of the last host call

        def compute(state: _State, *ks: Value) -> list[Value]:
            """``[mean, covariance]`` per kind (the native results are kept as well)."""
            flat: list[Value] = []
            native_results.clear()
            for j, g in enumerate(names):
                k_td, nngp_td, k_tt = ks[3 * j : 3 * j + 3]
                kind = "ntk" if g == "ntkgp" else g
                if k_td is None:
                    r = state.gp(kind).posterior()  # training set: mean P·y, covariance 0
                elif g == "ntk" and cov:
                    r = state.ensemble().at(
                        None,
                        ntk_test_train=as_array(k_td),
                        nngp_test_train=as_array(nngp_td),
                        nngp_test_test=symmetrized(as_array(k_tt), "k_test_test"),
                        compute_cov=True,
                    )
                else:  # 'nngp', 'ntkgp', and the 'ntk' mean (the GP mean with the NTK prior)
                    r = state.gp(kind).posterior(
                        k_test_train=as_array(k_td),
                        k_test_test=symmetrized(as_array(k_tt), "k_test_test") if cov else None,
                    )
                native_results.append(r)
                flat += [r.mean, r.covariance if cov else None]
            return flat

        def specs(jax: ModuleType) -> list[Spec]:
            dt = result_dtype(jax, *native.dtypes, *ks)
            out: list[Spec] = []
            for j, g in enumerate(names):
                kind = "ntk" if g == "ntkgp" else g
                k_td, _, k_tt = ks[3 * j : 3 * j + 3]
                mean = (fx_test_shape(y_shape, k_td, trace_axes), dt)
                if not cov:
                    out += [mean, None]
                    continue
                if k_td is None:  # training set: covariance shaped as the train kernel
                    c_shape: Sequence[int] = native.shapes[2 + kinds.index(kind)] or ()
                else:
                    c_shape = np.shape(k_tt)
                out += [mean, (tuple(c_shape), dt)]
            return out

        flat = native.call(compute, ks, specs)
        if cov and not native.jax and find_jax(*ks) is None:
            out = list(native_results)  # NumPy path: the native Gaussians as they are
        else:
            out = gaussian_results(flat, cov, native_results or None)
        return out[0] if single else gaussians(names, out)

    return predict_fn
