r"""Arguments and results of the reference's ``predict_fn``\ s: the train/test convention,
output shapes, ``get`` names, kernels given as objects, dicts or arrays, and Gaussians."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ... import Gaussian
from ._arrays import Value, as_array

Shape = tuple[int, ...]
#: ``trace_axes`` of the reference: output axes along which kernels are traced.
TraceAxes = tuple[int, ...] | None

__all__ = [
    "check_inputs",
    "train_test",
    "fx_test_shape",
    "t_shape",
    "canonicalize_get",
    "gaussians",
    "has_kernel",
    "get_kernel",
    "gaussian_results",
    "kernels_from",
]


def check_inputs(fx_train_0: Value, fx_test_0: Value, k_test_train: Value) -> None:
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError(
            "Both `fx_train_0` and `fx_test_0` are `None`, i.e. no predictions will be computed."
        )
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError(
            "To get predictions on the test set, please provide `k_test_train` kernel to the "
            "parametric `predict_fn`."
        )


def train_test(train: Value, test: Value) -> Value:
    """The reference's return convention: a tuple when both exist, else the one array."""
    if train is None:
        return test
    if test is None:
        return train
    return train, test


def _trace_set(trace_axes: TraceAxes, ndim: int) -> set[int]:
    if trace_axes is None:
        return set(range(1, ndim))
    return {int(a) % ndim for a in trace_axes} if ndim else set()


def fx_test_shape(y_shape: Sequence[int], k_test_train: Value, trace_axes: TraceAxes) -> Shape:
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


def t_shape(t: Value) -> Shape:
    return () if t is None else tuple(np.shape(t))


def canonicalize_get(get: Any, allowed: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
    """``(is_single_string, tuple of lower-case names)``; None means ``('nngp', 'ntk')``."""
    if get is None:
        return False, ("nngp", "ntk")
    parts: tuple[Any, ...]
    if isinstance(get, str):
        single, parts = True, (get,)
    else:
        try:
            parts = tuple(get)
        except TypeError:
            raise TypeError(
                f"get must be a string, a tuple of strings or None, got {type(get).__name__}"
            ) from None
        single = False
        if not parts:
            raise ValueError('"get" must be non-empty.')
    names = tuple(g.lower() for g in parts if isinstance(g, str))
    if len(names) < len(parts):
        raise TypeError(f"get must be a string, a tuple of strings or None, got {get!r}")
    if len(set(names)) < len(names):
        raise ValueError(f'All entries in "get" must be unique. Got {names}')
    for g in names:
        if g not in allowed:
            raise ValueError(f"get entries must be in {allowed}, got {g!r}")
    return single, names


_NAMEDTUPLES: dict[tuple[str, ...], type[tuple[Any, ...]]] = {}
#: ``collections.namedtuple`` with fields known only at run time.
_make_namedtuple: Callable[[str, Sequence[str]], type[tuple[Any, ...]]] = collections.namedtuple


def gaussians(names: tuple[str, ...], values: Iterable[Any]) -> tuple[Any, ...]:
    """A named tuple ``Gaussians`` with fields in the requested order."""
    cls = _NAMEDTUPLES.get(names)
    if cls is None:
        cls = _NAMEDTUPLES[names] = _make_namedtuple("Gaussians", names)
    return cls(*values)


def has_kernel(k: object, g: str) -> bool:
    if isinstance(k, dict):
        return k.get(g) is not None
    return getattr(k, g, None) is not None


def get_kernel(k: object, g: str, name: str) -> Value:
    """Kernel ``g`` ('nngp' or 'ntk') from a Kernel-like object, a dict, or an array."""
    if isinstance(k, dict):
        if g not in k or k[g] is None:
            raise ValueError(f"{name} has no {g!r} kernel (dict keys: {sorted(k)})")
        return as_array(k[g])
    if hasattr(k, "nngp") or hasattr(k, "ntk"):
        v = getattr(k, g, None)
        if v is None:
            raise ValueError(f"{name} has no {g!r} kernel ({type(k).__name__}.{g} is missing/None)")
        return as_array(v)
    if isinstance(k, (bool, str)) or (not hasattr(k, "shape") and not isinstance(k, (list, tuple))):
        raise TypeError(
            f"{name} must be an array, a dict or an object with .nngp/.ntk, got {type(k).__name__}"
        )
    return as_array(k)


def gaussian_results(
    flat: Sequence[Value], cov: bool, native: Sequence[Any] | None = None
) -> list[Any]:
    """Per-kind results from ``[mean, cov, mean, cov, ...]``: Gaussians (keeping the
    native results' layout when given) or means."""
    out: list[Any] = []
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


def kernels_from(result: object, names: Sequence[str], what: str) -> dict[str, Value]:
    """``{name: array}`` from a kernel_fn result: object with .nngp/.ntk, dict, or array."""
    out: dict[str, Value] = {}
    for g in names:
        if isinstance(result, dict) or hasattr(result, "nngp") or hasattr(result, "ntk"):
            out[g] = get_kernel(result, g, f"kernel_fn result ({what})")
        elif len(names) == 1:
            if not hasattr(result, "shape"):
                raise TypeError(
                    f"kernel_fn returned {type(result).__name__} for {what}: expected an array, "
                    "a dict or an object with .nngp/.ntk"
                )
            out[g] = as_array(result)
        else:
            raise TypeError(
                f"kernel_fn returned a single {type(result).__name__} for {what} with get="
                f"{names}: expected an object with .nngp and .ntk, or a dict"
            )
    return out
