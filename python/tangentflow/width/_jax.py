"""JAX model family: a callable ``width -> (apply_fn, params)`` (docs/width.md).

``apply_fn(params, x)`` in the style of plain JAX, Flax (``model.apply`` with the variables
as params), Equinox (a partitioned model) or stax. The empirical NTK is built from
per-example Jacobians (``jax.vmap`` of ``jax.jacrev``, in blocks of examples) contracted
block by block in float64; training is full-batch gradient descent on ``‖f − y‖²/(2n)`` with
``jax.grad`` in a jitted loop. JAX is imported only when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ._family import Family, Network, ProgressFn, call_factory, takes_seed

__all__ = ["JaxModel"]

#: Bytes one Jacobian block may take (examples × outputs × parameters × itemsize).
_BLOCK_BYTES = 1 << 27
#: Jacobian blocks of the second argument are kept when all of them fit in this.
_CACHE_BYTES = 1 << 30


class JaxModel(Family):
    """A JAX model family.

    Parameters
    ----------
    factory : callable
        ``factory(width) -> (apply_fn, params)``, or ``factory(width, seed)`` to give each
        seed its own initialization (needed for ``seeds > 1``).
    limit : callable, optional
        ``limit(x1, x2) -> (N1, N2)`` infinite-width NTK (e.g. neural-tangents'
        ``kernel_fn(x1, x2, "ntk")`` or :func:`tangentflow.kernels.fully_connected`);
        fills ``kernel_distance_inf``.
    name : str, optional
        Shown in the study's table.

    The model's outputs must be ``(N, K)`` or ``(N,)``; computations run in the dtype of
    the parameters (float32 unless ``jax_enable_x64`` is on).
    """

    def __init__(
        self,
        factory: Callable[..., tuple[Callable[..., Any], Any]],
        *,
        limit: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__}")
        if limit is not None and not callable(limit):
            raise TypeError(
                f"limit must be callable (x1, x2) -> kernel, got {type(limit).__name__}"
            )
        self.factory = factory
        self._limit = limit
        self._takes_seed = takes_seed(factory)
        self.seeded = self._takes_seed
        self.name = name

    def describe(self) -> str:
        return self.name or f"JAX model {getattr(self.factory, '__name__', 'factory')}"

    def limit_ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray | None:
        if self._limit is None:
            return None
        return np.asarray(self._limit(x1, x1 if x2 is None else x2), dtype=np.float64)

    def build(self, width: int, seed: int, d_in: int, d_out: int) -> Network:
        out = call_factory(self.factory, width, seed, self._takes_seed)
        if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
            raise TypeError(
                f"the JAX factory must return (apply_fn, params), got {type(out).__name__}"
            )
        return _JaxNet(out[0], out[1], d_out)


class _JaxNet(Network):
    def __init__(self, apply_fn: Callable[..., Any], params: Any, d_out: int) -> None:
        import jax
        import jax.numpy as jnp
        from jax.flatten_util import ravel_pytree

        self.jax, self.jnp = jax, jnp
        flat, unravel = ravel_pytree(params)
        self.theta = flat
        self.dtype = flat.dtype
        self.unravel = unravel
        self.n_params = int(flat.size)

        def f(theta: Any, x: Any) -> Any:
            out = apply_fn(unravel(theta), x)
            return jnp.reshape(out, (x.shape[0], -1))

        self.f = jax.jit(f)

        def f_one(theta: Any, x1: Any) -> Any:
            return f(theta, x1[None])[0]

        self._jac = jax.jit(jax.vmap(jax.jacrev(f_one), in_axes=(None, 0)))
        self._k = None
        self.d_out = d_out

    def _x(self, x: np.ndarray) -> Any:
        return self.jnp.asarray(np.asarray(x), dtype=self.dtype)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.f(self.theta, self._x(x)), dtype=np.float64)
        if out.shape[1] != self.d_out:
            raise ValueError(
                f"the JAX model gives {out.shape[1]} output(s) per example but y_train has "
                f"{self.d_out} column(s)"
            )
        return out

    def _blocks(self, x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Per-example Jacobians ``(b·K, P)`` (NumPy, float64) over blocks of examples."""
        k = self.d_out
        per = max(1, _BLOCK_BYTES // (k * self.n_params * 8))
        xa = self._x(x)
        for s in range(0, xa.shape[0], per):
            jb = np.asarray(self._jac(self.theta, xa[s : s + per]), dtype=np.float64)
            yield s, jb.reshape(-1, self.n_params)  # (b, K, P) -> rows i·K + k

    def ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        k = self.d_out
        second = x1 if x2 is None else x2
        n1, n2 = len(x1), len(second)
        out = np.empty((n1 * k, n2 * k))
        cache: list[tuple[int, np.ndarray]] | None = None
        if n2 * k * self.n_params * 8 <= _CACHE_BYTES:
            cache = list(self._blocks(second))
        for s1, j1 in self._blocks(x1):
            for s2, j2 in cache if cache is not None else self._blocks(second):
                out[s1 * k : s1 * k + j1.shape[0], s2 * k : s2 * k + j2.shape[0]] = j1 @ j2.T
        return out

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        learning_rate: float,
        steps: int,
        checkpoints: Sequence[int],
        x_test: np.ndarray | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        jax, jnp = self.jax, self.jnp
        xa, ya = self._x(x), jnp.asarray(np.asarray(y).reshape(len(x), -1), dtype=self.dtype)
        xt = None if x_test is None else self._x(x_test)
        n = ya.size
        f = self.f
        eta = jnp.asarray(learning_rate, dtype=self.dtype)

        def loss(theta: Any) -> Any:
            r = f(theta, xa) - ya
            return jnp.sum(r * r) / (2.0 * n)

        grad = jax.grad(loss)

        def run_steps(theta: Any, count: int) -> Any:
            return jax.lax.fori_loop(0, count, lambda _, th: th - eta * grad(th), theta)

        run = jax.jit(run_steps)

        f_tr = np.empty((len(checkpoints), len(x), ya.shape[1]))
        f_te = None if x_test is None else np.empty((len(checkpoints), len(x_test), ya.shape[1]))
        theta, done = self.theta, 0
        chunk = 10
        for i, c in enumerate(checkpoints):
            while done < c:
                m = min(chunk, c - done)
                theta = run(theta, m)
                done += m
                if progress is not None:
                    progress(done, steps)
            f_tr[i] = np.asarray(f(theta, xa))
            if xt is not None and f_te is not None:
                f_te[i] = np.asarray(f(theta, xt))
        self.theta = theta
        return f_tr, f_te
