"""PyTorch model family: a callable ``width -> torch.nn.Module`` (docs/width.md).

The empirical NTK comes from per-example Jacobians with ``torch.func`` (``vmap`` of
``jacrev`` over ``functional_call``), contracted block by block; training is full-batch
gradient descent on ``‖f − y‖²/(2n)`` with autograd. torch is imported only when a model
is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ._family import Family, Network, ProgressFn, call_factory, takes_seed

__all__ = ["TorchModel"]

_BLOCK_BYTES = 1 << 27


class TorchModel(Family):
    """A PyTorch model family.

    Parameters
    ----------
    factory : callable
        ``factory(width) -> torch.nn.Module`` (seeded with ``torch.manual_seed(seed)``
        before the call), or ``factory(width, seed)``.
    limit : callable, optional
        ``limit(x1, x2) -> (N1, N2)`` infinite-width NTK; fills ``kernel_distance_inf``.
    name : str, optional

    The module maps ``(N, d)`` to ``(N, K)`` (or ``(N,)``); it runs in the dtype and on
    the device of its parameters.
    """

    def __init__(
        self,
        factory: Callable[..., Any],
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
        self.name = name

    def describe(self) -> str:
        return self.name or f"PyTorch model {getattr(self.factory, '__name__', 'factory')}"

    def limit_ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray | None:
        if self._limit is None:
            return None
        return np.asarray(self._limit(x1, x1 if x2 is None else x2), dtype=np.float64)

    def build(self, width: int, seed: int, d_in: int, d_out: int) -> Network:
        import torch

        if not self._takes_seed:
            torch.manual_seed(int(seed))
        module = call_factory(self.factory, width, seed, self._takes_seed)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"the PyTorch factory must return a torch.nn.Module, got {type(module).__name__}"
            )
        return _TorchNet(module, d_out)


class _TorchNet(Network):
    def __init__(self, module: Any, d_out: int) -> None:
        import torch
        from torch.func import functional_call, jacrev, vmap

        self.torch = torch
        self.module = module
        self.d_out = d_out
        self.names = [n for n, _ in module.named_parameters()]
        self.params = {n: p.detach().clone() for n, p in module.named_parameters()}
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.n_params = sum(p.numel() for p in self.params.values())

        def f(params: dict[str, Any], x: Any) -> Any:
            return functional_call(module, params, (x,)).reshape(x.shape[0], -1)

        def f_one(params: dict[str, Any], x1: Any) -> Any:
            return f(params, x1.unsqueeze(0))[0]

        self.f = f
        self._jac = vmap(jacrev(f_one), in_dims=(None, 0))

    def _x(self, x: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            out: np.ndarray = self.f(self.params, self._x(x)).double().cpu().numpy()
        if out.shape[1] != self.d_out:
            raise ValueError(
                f"the PyTorch model gives {out.shape[1]} output(s) per example but y_train has "
                f"{self.d_out} column(s)"
            )
        return out

    def _blocks(self, x: np.ndarray) -> Iterator[tuple[int, Any]]:
        torch = self.torch
        k = self.d_out
        per = max(1, _BLOCK_BYTES // (k * self.n_params * self.dtype.itemsize))
        xa = self._x(x)
        for s in range(0, xa.shape[0], per):
            jac = self._jac(self.params, xa[s : s + per])  # name -> (b, K, *shape)
            b = jac[self.names[0]].shape[0]
            yield s, torch.cat([jac[n].reshape(b * k, -1) for n in self.names], dim=1)

    def ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        k = self.d_out
        second = x1 if x2 is None else x2
        out = np.empty((len(x1) * k, len(second) * k))
        cache = list(self._blocks(second))
        for s1, j1 in self._blocks(x1):
            for s2, j2 in cache:
                out[s1 * k : s1 * k + j1.shape[0], s2 * k : s2 * k + j2.shape[0]] = (
                    (j1 @ j2.T).double().cpu().numpy()
                )
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
        torch = self.torch
        xa = self._x(x)
        ya = torch.as_tensor(
            np.asarray(y).reshape(len(x), -1), dtype=self.dtype, device=self.device
        )
        xt = None if x_test is None else self._x(x_test)
        n = ya.numel()
        params = {name: p.clone().requires_grad_(True) for name, p in self.params.items()}
        ck = {int(c): i for i, c in enumerate(checkpoints)}
        f_tr = np.empty((len(ck), len(x), ya.shape[1]))
        f_te = None if x_test is None else np.empty((len(ck), len(x_test), ya.shape[1]))
        for t in range(steps + 1):
            out = self.f(params, xa)
            if t in ck:
                f_tr[ck[t]] = out.detach().double().cpu().numpy()
                if xt is not None and f_te is not None:
                    with torch.no_grad():
                        f_te[ck[t]] = self.f(params, xt).double().cpu().numpy()
            if progress is not None:
                progress(t, steps)
            if t == steps:
                break
            loss = ((out - ya) ** 2).sum() / (2.0 * n)
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads):
                    p -= learning_rate * g
        self.params = {name: p.detach() for name, p in params.items()}
        return f_tr, f_te
