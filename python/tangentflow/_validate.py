"""Every input check of the package, in one place: each error names the argument and
comes before any work (docs/migration.md, "Errors early"); inputs are never modified.

Scalars and options (``positive_float``, ``flag``, ``choice``, ``momentum``), times
(``times``), arrays on a backend (``as_float_array``, ``check_finite``, ``finite_max_abs``),
the three kernel kinds (``train_kernel``, ``test_train_kernel``, ``test_test_kernel``, with
the one symmetry rule ``check_symmetric``) and pickled Predictor states (``predictor_state``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core
from ._devices import cupy_or_none, is_gpu_array
from ._numerics import SYMMETRY_RTOL, all_finite, symmetrize
from ._shapes import flatten_kernel, kernel_dims, zip_dims

_FLOATS = (np.float32, np.float64)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(a: Any, name: str, backend: Any) -> Any:
    """A float32/float64 array on the backend's device; ints/bools become float64."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    if is_gpu_array(a) and not backend.on_gpu:
        raise TypeError(
            f"{name} is a GPU array but the kernel is on the CPU: pass a GPU (CuPy) "
            "k_train_train to run on the GPU, or move the array to the host"
        )
    try:
        arr = backend.asarray(a)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}: {e}") from None
    if arr.dtype in _FLOAT_DTYPES:
        return arr
    kind = np.dtype(arr.dtype).kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def host_float_array(a: Any, name: str) -> Any:
    """``as_float_array`` for the host (NumPy arrays; GPU arrays are refused)."""
    from ._backends import host

    return as_float_array(a, name, host())


def check_finite(a: Any, name: str, xp: Any) -> None:
    """The finiteness rule: a NaN or infinite entry is a ValueError naming the argument."""
    if not all_finite(a, xp):
        raise ValueError(f"{name} contains NaN or infinity")


def finite_max_abs(a: Any, name: str, xp: Any) -> float:
    """``max|a|`` (0 when empty), with ``check_finite``'s check in the same pass (a NaN or
    infinite entry makes the maximum non-finite). ``|a|`` is a temporary: for arrays of the
    targets' size, whose maximum is wanted anyway (the power-of-two scaling)."""
    if not a.size:
        return 0.0
    big = float(xp.abs(a).max())
    if not math.isfinite(big):
        check_finite(a, name, xp)
    return big


def positive_float(x: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    ok = v >= 0 if allow_zero else v > 0
    if not (math.isfinite(v) and ok):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {x!r}")
    return v


def optional_positive_float(x: object, name: str) -> float | None:
    return None if x is None else positive_float(x, name)


def optional_positive_int(x: object, name: str) -> int | None:
    """None or an int ``>= 1`` (NumPy ints too)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be None or an int >= 1, got {type(x).__name__}")
    if int(x) < 1:
        raise ValueError(f"{name} must be >= 1, got {x!r}")
    return int(x)


def flag(x: object, name: str) -> bool:
    """A bool (NumPy bools too)."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


def choice(x: object, name: str, choices: Sequence[str]) -> str:
    """One of the strings ``choices``."""
    if not isinstance(x, str) or x not in choices:
        allowed = " or ".join(f'"{c}"' for c in choices)
        raise ValueError(f"{name} must be {allowed}, got {x!r}")
    return x


def momentum(m: object, *, optional: bool) -> float | None:
    """Heavy-ball momentum in ``[0, 1)`` (or None when ``optional``)."""
    if m is None and optional:
        return None
    if isinstance(m, bool) or not isinstance(m, numbers.Real):
        what = "None or a float" if optional else "a float"
        raise TypeError(f"momentum must be {what} in [0, 1), got {m!r}")
    v = float(m)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {m!r}")
    return v


def times(
    t: Any, *, steps: bool = False
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], tuple[int, ...]]:
    """``t`` as ``(flat float64 array, shape)``; None means infinity."""
    if t is None:
        return np.array([np.inf]), ()
    if isinstance(t, bool):
        raise TypeError("t must be a number, an array of numbers or None, got bool")
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
    if arr.dtype == object and arr.ndim > 0 and any(v is None for v in arr.reshape(-1)):
        raise TypeError(
            "t contains None: None means t = ∞ (converged) only as a scalar (t=None); "
            "in an array of times use np.inf, e.g. [0, 1, np.inf]"
        )
    if arr.dtype == object or np.dtype(arr.dtype).kind not in "iuf":
        raise TypeError(
            f"t must be numeric (a number, an array of numbers or None), got dtype {arr.dtype}"
        )
    arr = arr.astype(np.float64)
    flat = arr.reshape(-1)
    # one pass: the smallest time is NaN when any is NaN, and negative when any is (-inf too)
    lo = float(flat.min()) if flat.size else 0.0
    if math.isnan(lo):
        raise ValueError("t contains NaN")
    if lo < 0:
        raise ValueError(f"t must be >= 0, got {flat[flat < 0][0]!r}")
    if steps:
        fin = flat[np.isfinite(flat)]
        if np.any(fin != np.round(fin)):
            raise ValueError('with dynamics="gd", t counts steps and must be integers (or inf)')
    return np.ascontiguousarray(flat), arr.shape


def check_symmetric(max_abs: float, max_asym: float, name: str) -> None:
    """The symmetry rule: ``max|K − Kᵀ| <= 1e-5·max|K|`` (docs/empirical-kernels.md)."""
    if max_asym > SYMMETRY_RTOL * max_abs:
        raise ValueError(
            f"{name} is not symmetric: max|K - K^T| = {max_asym:.3e} exceeds "
            f"1e-5 * max|K| = {SYMMETRY_RTOL * max_abs:.3e}"
        )


def train_kernel(
    raw: Any, name: str, backend: Any, trace_axes: tuple[int, ...] | None = ()
) -> tuple[Any, tuple[int, ...], float, np.dtype[Any], float]:
    """``(flat kernel, non-traced dims, trace, dtype, max|K_ij|)`` of a train–train kernel.

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
    check_symmetric(max_abs, max_asym, name)
    return k2, dims, trace, np.dtype(k.dtype), float(max_abs)


def test_train_kernel(
    raw: Any, name: str, backend: Any, kdims: tuple[int, ...], dtype: Any
) -> tuple[Any, tuple[int, ...]]:
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
        if len(kdims) == 1:
            expected = f"(M, {kdims[0]})"
        else:
            expected = "(" + ", ".join(f"M{i}, {d}" for i, d in enumerate(kdims)) + ")"
        hint = ""
        if tuple(k.shape[0::2]) == tuple(kdims):
            hint = (
                f"; it looks transposed (train axes first): pass {name}.T"
                if len(kdims) == 1
                else "; its test and train axes look swapped (train axes first)"
            )
        raise ValueError(
            f"{name} has shape {tuple(k.shape)}, expected {expected}: test axes at "
            f"positions 0, 2, ... (any sizes), train axes at 1, 3, ... with the train "
            f"kernel's sizes {tuple(kdims)}{hint}"
        )
    return xp.ascontiguousarray(flatten_kernel(k, xp), dtype=dtype), tuple(k.shape[0::2])


def test_test_kernel(
    raw: Any, name: str, backend: Any, test_dims: tuple[int, ...], dtype: Any
) -> Any:
    """Flat, exactly symmetrized ``(D_t, D_t)`` test–test kernel in ``dtype``."""
    xp = backend.xp
    k = as_float_array(raw, name, backend)
    check_finite(k, name, xp)
    want = zip_dims(test_dims)
    if tuple(k.shape) != want:
        raise ValueError(
            f"{name} must have shape {want} (from the test–train kernel), got {tuple(k.shape)}"
        )
    k2 = xp.asarray(flatten_kernel(k, xp), dtype=dtype)
    if k2.size:
        check_symmetric(float(xp.max(xp.abs(k2))), float(xp.max(xp.abs(k2 - k2.T))), name)
    return symmetrize(k2)


def wide_dtype(raw: Any, compute_dtype: Any) -> np.dtype[Any]:
    """The dtype a test–train kernel is read in: float64 when the compute dtype is float32
    and the kernel is float64, so that its power-of-two scaling happens before the rounding
    (a tiny kernel must not become float32 subnormals; docs/numerics.md §12)."""
    if np.dtype(compute_dtype) == np.float32 and getattr(raw, "dtype", None) == np.float64:
        return np.dtype(np.float64)
    out: np.dtype[Any] = np.dtype(compute_dtype)
    return out


_STATE_KEYS = ("backend", "k", "kdims", "out_dtype", "trace", "cfg", "y", "w", "v", "count")


def predictor_state(state: Any) -> None:
    """Checks a pickled Predictor's state before it is used: a corrupted or foreign pickle
    is a ValueError that says what is wrong, not a failure deep inside a later call."""

    def bad(what: str) -> ValueError:
        return ValueError(f"corrupted Predictor pickle: {what}")

    if not isinstance(state, dict):
        raise bad(f"the state is a {type(state).__name__}, not a dict")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise bad(f"missing entries {missing}")

    def array(key: str, ndim: int) -> Any:
        a = state[key]
        shape = getattr(a, "shape", None)
        dtype = getattr(a, "dtype", None)
        if shape is None or dtype is None or len(shape) != ndim:
            raise bad(f"{key!r} must be a {ndim}-D array, got {type(a).__name__} {shape}")
        if np.dtype(dtype) not in _FLOATS:
            raise bad(f"{key!r} must be float32 or float64, got {dtype}")
        return a

    k = array("k", 2)
    d = int(k.shape[0])
    if k.shape != (d, d):
        raise bad(f"the kernel 'k' must be square, got shape {tuple(k.shape)}")
    kdims = state["kdims"]
    try:
        kdims = tuple(int(x) for x in kdims)
    except (TypeError, ValueError):
        raise bad(f"'kdims' must be a tuple of ints, got {kdims!r}") from None
    if math.prod(kdims) != d:
        raise bad(f"'kdims' {kdims} do not multiply to the kernel size {d}")
    try:
        out = np.dtype(state["out_dtype"])
    except TypeError:
        raise bad(f"'out_dtype' is not a dtype: {state['out_dtype']!r}") from None
    if out not in _FLOATS:
        raise bad(f"'out_dtype' must be float32 or float64, got {out}")
    if not isinstance(state["cfg"], dict):
        raise bad("'cfg' must be a dict")
    y = state["y"]
    if getattr(y, "shape", None) is None or int(np.prod(y.shape)) % d:
        raise bad(
            f"the targets 'y' (shape {getattr(y, 'shape', None)}) do not match the kernel "
            f"(shape {tuple(k.shape)})"
        )
    w, v = state["w"], state["v"]
    z, q = state.get("z"), state.get("q")
    if (z is None) != (q is None):
        raise bad("the factors 'z' and reflectors 'q' must be both present or both absent")
    if (w is None) != (v is None and z is None):
        raise bad("the eigenvalues 'w' and eigenvectors 'v' must be both present or both absent")
    if w is not None:
        w = array("w", 1)
        if w.shape != (d,):
            raise bad(f"'w' holds {w.shape[0]} eigenvalues, the kernel needs {d}")
        for key in ("v", "z"):
            if state.get(key) is not None and array(key, 2).shape != (d, d):
                shape = tuple(state[key].shape)
                raise bad(f"{key!r} has shape {shape}, the kernel needs ({d}, {d})")
        if q is not None:
            if not isinstance(q, _core.Reflectors) or q.n != d:
                raise bad(f"'q' must be the kernel's reflectors (order {d}), got {q!r}")
            if q.dtype != np.dtype(state["z"].dtype).name:
                raise bad(f"'q' holds {q.dtype}, the factors 'z' are {state['z'].dtype}")
            if state["backend"] != "cpu":
                raise bad(f"reflectors 'q' come from the cpu backend, not {state['backend']!r}")
    count = state["count"]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise bad(f"'count' must be a non-negative int, got {count!r}")
    exp = state.get("exp", 0)
    if isinstance(exp, bool) or not isinstance(exp, (int, np.integer)) or abs(int(exp)) > 2100:
        raise bad(f"'exp' must be an int exponent, got {exp!r}")
    for key in ("k", "y", "w", "v", "z"):
        a = state.get(key)
        if isinstance(a, np.ndarray) and a.size and not bool(np.all(np.isfinite(a))):
            raise bad(f"{key!r} contains NaN or infinity")
