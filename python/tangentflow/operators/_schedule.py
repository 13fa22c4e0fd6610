"""Row-block tasks on the active Dask scheduler (docs/scale.md).

A product ``K @ V`` is split into row blocks; each block is one task that calls the Rust
core (which releases the GIL and runs on the library's threads). The tasks run on the
scheduler Dask would use for ``dask.compute``: the threaded one by default, a
``dask.distributed.Client`` when one is active (then the operator's inputs are scattered
to every worker once, and ``V`` once per product). Without Dask the blocks run in this
process, one after the other.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Shared", "run_blocks"]


def _dask() -> Any:
    """The ``dask`` module, or None when it is not installed."""
    try:
        import dask
    except ImportError:
        return None
    return dask


def _client() -> Any:
    """The ``dask.distributed.Client`` that ``dask.compute`` would use now, or None."""
    if sys.modules.get("distributed") is None:
        return None
    from dask.base import get_scheduler
    from distributed import Client

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


class Shared:
    """Data shared by every task of many products (an operator's inputs).

    On a distributed client it is scattered (broadcast to every worker) on first use and
    kept for that client; elsewhere tasks get the object itself (threads share memory).
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self._futures: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def on(self, client: Any) -> Any:
        fut = self._futures.get(client)
        if fut is None or fut.status != "finished":
            # A list of one item: the item is one future, even when it is a tuple.
            (fut,) = client.scatter([self.data], broadcast=True, hash=False)
            self._futures[client] = fut
        return fut

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["data"])  # type: ignore[misc]


def run_blocks(
    fn: Callable[..., Any],
    shared: Shared,
    v: Any,
    blocks: Sequence[tuple[int, int]],
    *args: Any,
) -> list[Any]:
    """``[fn(shared.data, v, r0, r1, *args) for (r0, r1) in blocks]`` as Dask tasks.

    ``fn`` must be a module-level function (it is pickled by reference for workers).
    """
    dask = _dask()
    client = None if dask is None else _client()
    if dask is None or (client is None and len(blocks) == 1):
        return [fn(shared.data, v, r0, r1, *args) for r0, r1 in blocks]
    if client is not None:
        data = shared.on(client)
        vf = client.scatter(v, broadcast=True, hash=False)
        futs = [client.submit(fn, data, vf, r0, r1, *args, pure=False) for r0, r1 in blocks]
        try:
            return list(client.gather(futs))
        finally:
            for f in futs:
                f.release()
            vf.release()
    tasks = [dask.delayed(fn, pure=False)(shared.data, v, r0, r1, *args) for r0, r1 in blocks]
    return list(dask.compute(*tasks))
