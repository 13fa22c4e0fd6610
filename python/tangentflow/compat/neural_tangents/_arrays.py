"""Inputs of the compat functions as the native classes take them: array conversion
(NumPy, GPU and JAX arrays kept, other array-likes through NumPy), host copies, scalars,
and the symmetrization of slightly asymmetric kernels. JAX is never imported here."""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np

from ..._devices import cupy_or_none, is_gpu_array
from ..._errors import NumericalWarning, warn
from ..._numerics import SYMMETRY_RTOL

#: What the compat functions pass around: a NumPy, CuPy or JAX array, a JAX tracer, a
#: Python scalar or None (JAX and CuPy are optional, so these are not typed further).
Value = Any

__all__ = [
    "Value",
    "jax_array_type",
    "is_jax",
    "is_tracer",
    "as_array",
    "host_array",
    "to_host",
    "as_scalar",
    "symmetrized",
]


def jax_array_type() -> type | None:
    """``jax.Array`` (tracers are instances too) when JAX is already imported, else None.

    JAX is never imported here: a JAX array or tracer can only exist once it is."""
    jax = sys.modules.get("jax")
    return getattr(jax, "Array", None) if jax is not None else None


def is_jax(x: object) -> bool:
    arr = jax_array_type()
    return arr is not None and isinstance(x, arr)


def is_tracer(x: object) -> bool:
    jax = sys.modules.get("jax")
    core = getattr(jax, "core", None) if jax is not None else None
    tracer = getattr(core, "Tracer", None)
    return tracer is not None and isinstance(x, tracer)


def as_array(a: Value) -> Value:
    """Arrays as the native classes take them: NumPy, GPU and JAX arrays (and tracers) as
    they are, other array-likes (torch CPU arrays, lists) through ``numpy.asarray``;
    scalars and None unchanged. JAX values are moved to the host by ``host_array``."""
    if a is None or isinstance(a, (np.ndarray, numbers.Number)) or is_gpu_array(a) or is_jax(a):
        return a
    return np.asarray(a)


def host_array(a: Value) -> Value:
    """A concrete JAX array as a NumPy array; anything else unchanged."""
    return np.asarray(a) if is_jax(a) else a


def to_host(a: Value) -> np.ndarray[Any, np.dtype[Any]]:
    if is_gpu_array(a):
        get = getattr(a, "get", None)
        if get is not None:
            return np.asarray(get())
        cp = cupy_or_none()
        if cp is not None:
            host: np.ndarray[Any, np.dtype[Any]] = cp.asnumpy(cp.from_dlpack(a))
            return host
    return np.asarray(a)


def as_scalar(x: Value) -> Value:
    """0-d arrays (e.g. a JAX scalar learning rate) as Python floats; the rest unchanged."""
    if x is not None and not isinstance(x, (numbers.Number, bool)) and np.shape(x) == ():
        return float(x)
    return x


def symmetrized(k: Value, name: str) -> Value:
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
    if not (np.isfinite(max_abs) and np.isfinite(max_asym)) or max_asym <= SYMMETRY_RTOL * max_abs:
        return k
    kt = k.transpose(perm)
    warn(
        f"{name} is not symmetric: max|K - K^T| = {max_asym:.3e} is {max_asym / max_abs:.2%} "
        "of max|K|; using (K + K^T)/2, as neural-tangents does (its eigendecomposition "
        "symmetrizes the kernel). The native classes reject such a kernel.",
        NumericalWarning,
    )
    return (k + kt) * 0.5
