"""Keyword arguments of ``kernel_fn`` as pytrees: leaves, array pytrees, the pairs
``(x1_value, x2_value)`` the reference recombines for the test-train call."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._arrays import is_jax

__all__ = ["tree_leaves", "is_array_tree", "differ", "test_kernel_kwargs"]


def _split_first(v: Any) -> Any:
    """The first-argument part of a kernel_fn keyword (a pair ``(x1_value, x2_value)``)."""
    return v[0] if isinstance(v, tuple) and len(v) == 2 else v


def tree_leaves(x: Any) -> list[Any]:
    """Leaves of a pytree: JAX's when JAX is loaded (custom nodes included), else through
    tuples, lists and dicts, with None an empty node (as in JAX)."""
    jax = sys.modules.get("jax")
    tree_util = getattr(jax, "tree_util", None) if jax is not None else None
    if tree_util is not None and hasattr(tree_util, "tree_leaves"):
        leaves: list[Any] = tree_util.tree_leaves(x)
        return leaves
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [leaf for v in x for leaf in tree_leaves(v)]
    if isinstance(x, dict):
        return [leaf for k in sorted(x) for leaf in tree_leaves(x[k])]
    return [x]


def is_array_tree(x: Any) -> bool:
    """Whether every leaf of the pytree ``x`` is an array (the reference's test: ``()``,
    ``None`` and empty containers have no leaves, so they pass)."""
    return all(_is_array(v) for v in tree_leaves(x))


def _is_array(x: object) -> bool:
    return (
        isinstance(x, np.ndarray)
        or is_jax(x)
        or type(x).__module__.split(".")[0] in ("jax", "jaxlib", "cupy", "torch")
    )


def differ(a: object, b: object) -> bool:
    """``a != b`` as a bool; values whose comparison is not a bool differ unless identical."""
    if a is b:
        return False
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - e.g. an array inside a tuple: compare by identity
        return True


def test_kernel_kwargs(
    train_kwargs: Mapping[str, Any], test_kwargs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments of the test-train and test-test kernel calls, as the reference
    builds them from the train-train ones (``train_kwargs``) and those of the call
    (``test_kwargs``): pairs ``(x1_value, x2_value)`` of array pytrees are recombined for
    the test-train call, other array pytrees are passed as given, and other values must
    match."""
    kw_td = dict(train_kwargs)
    kw_tt = dict(train_kwargs)
    for name, v_tt in test_kwargs.items():
        v_dd = train_kwargs[name]
        if is_array_tree(v_dd) and is_array_tree(v_tt):
            pairs = all(isinstance(v, tuple) and len(v) == 2 for v in (v_dd, v_tt))
            v_td = (_split_first(v_tt), _split_first(v_dd)) if pairs else v_tt
        elif differ(v_dd, v_tt):
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
