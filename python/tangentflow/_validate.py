"""Input checks shared by the public classes: every error names the argument."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._shapes import flatten_kernel, kernel_dims

_FLOATS = (np.float32, np.float64)


def as_float_array(a, name: str, backend, *, allow_gpu: bool = True):
    """A float32/float64 array on the backend's device; ints/bools become float64."""
    from ._backends import is_gpu_array

    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    if is_gpu_array(a) and backend.name != "cupy":
        raise TypeError(
            f"{name} is a GPU array but the kernel is on the CPU: pass a GPU (CuPy) "
            "k_train_train to run on the GPU, or move the array to the host"
        )
    try:
        arr = backend.asarray(a)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}: {e}") from None
    kind = np.dtype(arr.dtype).kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in _FLOATS:
        arr = arr.astype(np.float64)
    return arr


def check_finite(a, name: str, xp) -> None:
    if a.size and not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} contains NaN or infinity")


def positive_float(x, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    ok = v >= 0 if allow_zero else v > 0
    if not (math.isfinite(v) and ok):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {x!r}")
    return v


def times(t, *, steps: bool = False):
    """``t`` as ``(flat float64 array, shape)``; None means infinity."""
    if t is None:
        return np.array([np.inf]), ()
    if isinstance(t, bool):
        raise TypeError("t must be a number, an array of numbers or None, got bool")
    from ._backends import cupy_or_none, is_gpu_array

    if is_gpu_array(t):  # times are few: they live on the host
        cp = cupy_or_none()
        if cp is None:
            raise TypeError("t is a GPU array but CuPy is not installed")
        if not isinstance(t, cp.ndarray):
            t = cp.from_dlpack(t) if hasattr(t, "__dlpack__") else cp.asarray(t)
        t = cp.asnumpy(t)
    try:
        arr = np.asarray(t._array if hasattr(t, "_array") else t)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"t must be a number, an array of numbers or None: {e}") from None
    if arr.dtype == object or np.dtype(arr.dtype).kind not in "iuf":
        raise TypeError(f"t must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    flat = arr.reshape(-1)
    if np.any(np.isnan(flat)):
        raise ValueError("t contains NaN")
    if np.any(flat < 0):
        raise ValueError(f"t must be >= 0, got {flat[flat < 0][0]!r}")
    if np.any(np.isneginf(flat)):
        raise ValueError("t must be >= 0, got -inf")
    if steps:
        fin = flat[np.isfinite(flat)]
        if np.any(fin != np.round(fin)):
            raise ValueError('with dynamics="gd", t counts steps and must be integers (or inf)')
    return np.ascontiguousarray(flat), arr.shape


def train_kernel(raw, name, backend, trace_axes=()):
    """``(flat kernel, non-traced dims, trace, dtype)`` of a train–train kernel.

    ``trace_axes=None`` (trace every output axis after the first) needs a 2-D kernel."""
    k = as_float_array(raw, name, backend)
    dims = kernel_dims(tuple(k.shape), name)
    if trace_axes is None and len(dims) != 1:
        raise ValueError(
            f"trace_axes must be given for a {2 * len(dims)}-D {name} "
            "(trace_axes=None is for 2-D kernels)"
        )
    k2 = flatten_kernel(k, backend.xp)
    if not (k2.flags.c_contiguous or k2.flags.f_contiguous):
        k2 = backend.xp.ascontiguousarray(k2)
    max_abs, max_asym, trace, finite = backend.kernel_stats(k2)
    if not finite:
        raise ValueError(f"{name} contains NaN or infinity")
    if max_asym > 1e-5 * max_abs:
        raise ValueError(
            f"{name} is not symmetric: max|K - K^T| = {max_asym:.3e} exceeds "
            f"1e-5 * max|K| = {1e-5 * max_abs:.3e}"
        )
    return k2, dims, trace, np.dtype(k.dtype)


def test_train_kernel(raw, name, backend, kdims, dtype):
    """``(flat (D_t, D) kernel in dtype, test dims)`` of a test–train kernel."""
    xp = backend.xp
    k = as_float_array(raw, name, backend)
    check_finite(k, name, xp)
    nd = 2 * len(kdims)
    if k.ndim != nd:
        raise ValueError(
            f"{name} must have {nd} dimensions (interleaved test/train axes), "
            f"got shape {tuple(k.shape)}"
        )
    if tuple(k.shape[1::2]) != tuple(kdims):
        raise ValueError(
            f"{name} of shape {tuple(k.shape)} does not match the train kernel: its train "
            f"axes (1, 3, ...) must have sizes {tuple(kdims)}"
        )
    return xp.ascontiguousarray(flatten_kernel(k, xp), dtype=dtype), tuple(k.shape[0::2])
