"""The JAX bridge: results as JAX arrays in the dtype neural-tangents computes in, on the
device of the inputs; tracers (``jax.jit``, ``jax.vmap``) through ``jax.pure_callback``
with the native computation on the host."""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any

import numpy as np

from ._arrays import Value, host_array, is_jax, is_tracer, jax_array_type
from ._state import ODEState

#: ``(shape, dtype)`` of one output of a host computation, or None for no output.
Spec = tuple[tuple[int, ...], np.dtype[Any]] | None

__all__ = ["Spec", "find_jax", "result_dtype", "run_on_host", "Native", "x64_context"]


def find_jax(*values: Value) -> ModuleType | None:
    """The ``jax`` module when one of ``values`` (through tuples, lists, dicts, ODEState and
    .nngp/.ntk attributes) is a JAX array or tracer, else None."""
    arr = jax_array_type()
    if arr is None:
        return None

    def has(v: Value, depth: int = 0) -> bool:
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


def result_dtype(jax: ModuleType, *values: Value) -> np.dtype[Any]:
    """The dtype neural-tangents computes in: ``jax.numpy.result_type`` of the arrays and
    scalars among ``values`` (Python scalars are weak), at least floating."""
    jnp = jax.numpy
    vals = [v for v in values if v is not None and (hasattr(v, "dtype") or isinstance(v, float))]
    dt = jnp.result_type(*vals) if vals else jnp.result_type(float)
    if not jnp.issubdtype(dt, jnp.inexact):
        dt = jnp.result_type(dt, 1.0)
    out: np.dtype[Any] = np.dtype(dt)
    return out


def _callback_options(jax: ModuleType) -> dict[str, Any]:
    """vmap rule of ``jax.pure_callback``: one host call per element ('sequential'), named
    ``vmap_method`` in current JAX and ``vectorized=False`` before it (JAX 0.4.30)."""
    params = inspect.signature(jax.pure_callback).parameters
    if "vmap_method" in params:
        return {"vmap_method": "sequential"}
    return {"vectorized": False}


def _device_of(values: Sequence[Value]) -> Any:
    for v in values:
        if is_jax(v) and not is_tracer(v):
            try:
                return next(iter(v.devices()))
            except (AttributeError, StopIteration, TypeError):
                continue
    return None


def run_on_host(
    jax: ModuleType,
    host: Callable[..., Sequence[Value]],
    values: Sequence[Value],
    specs: Sequence[Spec],
) -> list[Value]:
    """Outputs of ``host`` as JAX arrays.

    ``values``: the flat inputs (arrays, scalars, None); the JAX ones among them are the
    operands. ``host(*values)`` gets NumPy arrays in their place and returns one array or
    None per entry of ``specs`` (``(shape, dtype)`` or None). With tracers among the
    operands ``host`` runs under ``jax.pure_callback``; otherwise at once, and the results
    are put on the device of the first JAX input."""
    idx = [i for i, v in enumerate(values) if is_jax(v)]
    want = [(i, sp) for i, sp in enumerate(specs) if sp is not None]

    def call(*ops: Value) -> list[Value]:
        vals = list(values)
        for i, o in zip(idx, ops):
            vals[i] = np.asarray(o)
        outs = host(*vals)
        return [np.asarray(outs[i]).astype(sp[1], copy=False) for i, sp in want]

    ops = [values[i] for i in idx]
    if any(is_tracer(o) for o in ops):
        structs = [jax.ShapeDtypeStruct(tuple(sp[0]), sp[1]) for _, sp in want]
        flat = jax.pure_callback(call, structs, *ops, **_callback_options(jax))
    else:
        dev = _device_of(ops)
        flat = [jax.device_put(o, dev) for o in call(*ops)]
    out: list[Value] = [None] * len(specs)
    for (i, _), o in zip(want, flat):
        out[i] = o
    return out


class Native:
    """The native object of a compat function, built from host copies of its arguments at
    once, or inside each host call when one of them is a tracer (construction under
    ``jax.jit`` / ``jax.vmap``)."""

    def __init__(self, build: Callable[..., Any], args: Sequence[Value]) -> None:
        self.build = build
        self.traced = any(is_tracer(a) for a in args)
        self.jax = find_jax(*args) is not None
        self.dtypes = [
            a.dtype if hasattr(a, "dtype") else a
            for a in args
            if hasattr(a, "dtype") or isinstance(a, float)
        ]
        self.shapes = [tuple(np.shape(a)) if hasattr(a, "shape") else None for a in args]
        self.args = list(args) if self.traced else None
        self.obj = None if self.traced else build(*[host_array(a) for a in args])

    def call(
        self,
        compute: Callable[..., list[Value]],
        call_values: Sequence[Value],
        specs_fn: Callable[[ModuleType], Sequence[Spec]],
    ) -> list[Value]:
        """``compute(obj, *call_values)`` -> list of arrays/None: NumPy in, NumPy out; with
        JAX inputs (here or at construction) through ``run_on_host``; ``specs_fn(jax)`` gives the
        output ``(shape, dtype)`` list for the JAX path."""
        jax = sys.modules.get("jax") if self.jax else find_jax(*call_values)
        if jax is None:
            return compute(self.obj, *call_values)
        args = self.args if self.args is not None else []  # the traced construction
        n = len(args)
        values = args + list(call_values)

        def host(*vals: Value) -> list[Value]:
            obj = self.build(*vals[:n]) if self.traced else self.obj
            return compute(obj, *vals[n:])

        return run_on_host(jax, host, values, specs_fn(jax))


def x64_context(jax: ModuleType) -> AbstractContextManager[Any] | None:
    """A context manager enabling JAX's x64 mode (``jax.enable_x64(True)`` in current JAX,
    ``jax.experimental.enable_x64()`` before), or None."""
    state = getattr(jax, "enable_x64", None)
    if state is not None and callable(state):
        try:
            ctx: AbstractContextManager[Any] = state(True)
            return ctx
        except TypeError:  # pragma: no cover - depends on the JAX version
            pass
    try:
        from jax.experimental import enable_x64
    except ImportError:  # pragma: no cover - depends on the JAX version
        return None
    ctx = enable_x64()
    return ctx
