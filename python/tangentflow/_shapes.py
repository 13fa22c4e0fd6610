"""Trace axes and the flattened view (docs/numerics.md §2).

A kernel over outputs of shape ``S`` stores the non-traced axes pair-interleaved:
``(S[a0], S[a0], S[a1], S[a1], ...)`` (first argument, second argument). All numerics run
on the flattened view: targets ``Y`` of shape ``(D, R)`` (non-traced axes flattened into
rows, traced axes into columns) and kernels ``(D, D)`` / ``(D_test, D)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Layout",
    "zip_dims",
    "kernel_dims",
    "flatten_kernel",
    "normalize_trace_axes",
    "freeze_trace_axes",
]


def kernel_dims(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """Dims of the non-traced output axes of a train-train kernel, checking the pairs."""
    if len(shape) % 2:
        raise ValueError(
            f"{name} must have an even number of dimensions (pairs of output axes; a scalar "
            f"when every output axis is traced), got shape {shape}"
        )
    first, second = shape[0::2], shape[1::2]
    if first != second:
        raise ValueError(
            f"{name} must be square over each pair of axes (interleaved layout "
            f"(N, N, K, K, ...)), got shape {shape}"
        )
    return tuple(first)


def flatten_kernel(k: Any, xp: Any = np) -> Any:
    """Unzips a pair-interleaved kernel and flattens it to 2-D (a view for 2-D input; a
    scalar kernel, every output axis traced, becomes 1×1)."""
    if k.ndim == 2:
        return k
    if k.ndim == 0:
        return xp.reshape(k, (1, 1))
    nd = k.ndim // 2
    perm = tuple(range(0, k.ndim, 2)) + tuple(range(1, k.ndim, 2))
    rows = math.prod(k.shape[0::2])
    cols = math.prod(k.shape[1::2])
    return xp.reshape(xp.transpose(k, perm), (rows, cols)) if nd else k


def freeze_trace_axes(trace_axes: Any, name: str = "trace_axes") -> tuple[int, ...] | None:
    """``trace_axes`` as given by the caller, read exactly once: None, or a tuple of ints
    (an int, a list, a generator or any other iterable of ints is accepted)."""
    if trace_axes is None:
        return None
    if isinstance(trace_axes, (int, np.integer)) and not isinstance(trace_axes, bool):
        return (int(trace_axes),)
    if isinstance(trace_axes, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a tuple of ints, got {trace_axes!r}")
    try:
        entries = tuple(trace_axes)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {trace_axes!r}") from None
    for a in entries:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{name} must be a tuple of ints, got an entry {a!r}")
    return tuple(int(a) for a in entries)


def normalize_trace_axes(trace_axes: Any, ndim: int, name: str = "trace_axes") -> tuple[int, ...]:
    """Sorted, de-duplicated non-negative axes; errors name the argument."""
    if isinstance(trace_axes, (int, np.integer)):
        trace_axes = (int(trace_axes),)
    if isinstance(trace_axes, (str, bytes)):
        raise TypeError(f"{name} must be a tuple of ints, got {trace_axes!r}")
    try:
        entries = list(trace_axes)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {trace_axes!r}") from None
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in entries):
        raise TypeError(f"{name} must be a tuple of ints, got {trace_axes!r}")
    axes = [int(a) for a in entries]
    out = set()
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} entry {a} is out of range for targets with {ndim} axes")
        out.add(a % ndim)
    return tuple(sorted(out))


@dataclass(frozen=True)
class Layout:
    """How targets of shape ``y_shape`` map to the flattened ``(D, R)`` view."""

    y_shape: tuple[int, ...]
    traced: tuple[int, ...]
    kept: tuple[int, ...]
    #: derived in ``__post_init__``: ``D``, ``R`` and the number of targets, the target axes
    #: in flattened order (kept, then traced) and whether that is their order already (then
    #: no transpose either way)
    rows: int = field(init=False, repr=False, compare=False)
    cols: int = field(init=False, repr=False, compare=False)
    size: int = field(init=False, repr=False, compare=False)
    _order: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _in_order: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        order = self.kept + self.traced
        derived = {
            "rows": math.prod(self.y_shape[a] for a in self.kept),
            "cols": math.prod(self.y_shape[a] for a in self.traced),
            "size": math.prod(self.y_shape),
            "_order": order,
            "_in_order": order == tuple(range(len(self.y_shape))),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: derived fields are set once here

    @classmethod
    def resolve(
        cls,
        y_shape: tuple[int, ...],
        trace_axes: tuple[int, ...] | None,
        k_dims: tuple[int, ...],
        kernel_name: str = "k_train_train",
    ) -> Layout:
        """Layout for targets ``y_shape`` and a kernel with non-traced dims ``k_dims``."""
        y_shape = tuple(int(s) for s in y_shape)
        ndim = len(y_shape)
        if ndim == 0:
            raise ValueError("y_train must have at least one axis (examples first), got a scalar")
        if trace_axes is None:
            if len(k_dims) != 1:
                raise ValueError(
                    f"trace_axes must be given for a {2 * len(k_dims)}-D {kernel_name}; "
                    "trace_axes=None is for 2-D kernels"
                )
            traced = tuple(range(1, ndim))
        else:
            traced = normalize_trace_axes(trace_axes, ndim)
        kept = tuple(a for a in range(ndim) if a not in traced)
        want = tuple(y_shape[a] for a in kept)
        if want != tuple(k_dims):
            raise ValueError(
                f"{kernel_name} of shape {zip_dims(k_dims)} does not match y_train of shape "
                f"{y_shape} with trace_axes={trace_axes}: expected a kernel of shape "
                f"{zip_dims(want)}"
            )
        return cls(y_shape, traced, kept)

    def test_shape(self, test_dims: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape on a test set whose non-traced dims are ``test_dims``."""
        shape = list(self.y_shape)
        for a, d in zip(self.kept, test_dims):
            shape[a] = d
        return tuple(shape)

    @functools.cached_property
    def _inverse(self) -> tuple[int, ...]:
        """The permutation that puts the flattened order back."""
        return tuple(int(i) for i in np.argsort(self._order))

    def flatten(self, a: Any, xp: Any = np) -> Any:
        """``(..., *shape)`` → ``(..., D, R)`` for an array shaped like the targets."""
        lead = a.ndim - len(self.y_shape)
        if not self._in_order:
            a = xp.transpose(a, tuple(range(lead)) + tuple(lead + i for i in self._order))
        nk = len(self.kept)
        flat = a.shape[:lead] + (math.prod(a.shape[lead : lead + nk]), self.cols)
        return a if a.shape == flat else xp.reshape(a, flat)

    def unflatten(self, a: Any, shape: tuple[int, ...], xp: Any = np) -> Any:
        """``(..., D, R)`` → ``(..., *shape)`` with traced axes back in place."""
        lead = a.shape[:-2]
        inter = lead + tuple(shape[i] for i in self._order)
        b = a if a.shape == inter else xp.reshape(a, inter)
        if self._in_order:
            return b
        return xp.transpose(
            b, tuple(range(len(lead))) + tuple(len(lead) + i for i in self._inverse)
        )


def zip_dims(dims: tuple[int, ...]) -> tuple[int, ...]:
    """``(d0, d0, d1, d1, ...)``: the pair-interleaved kernel shape over dims."""
    return tuple(d for d in dims for _ in (0, 1))
