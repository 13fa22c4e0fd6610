"""``TestInputs``: a validated test–train kernel and initial test outputs for one model,
with the ``K_te·V`` cache a ``TestSet`` shares across calls and ``with_params``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._numerics import ldexp
from .._shapes import Layout

if TYPE_CHECKING:
    from .kernel import KernelModel

__all__ = ["TestInputs"]


class TestInputs:
    """A test kernel and initial test outputs, flattened for the backend."""

    __test__ = False  # not a pytest class

    def __init__(
        self, model: KernelModel, k_test_train: Any, fx_test_0: Any, cached: bool = False
    ) -> None:
        self.model = model
        self.raw_k = k_test_train
        self.raw_g0 = fx_test_0
        self.cached = cached
        # 2^-e·K_te·V (and its retained columns as one C-ordered array, keyed by the first
        # retained mode), 2^-e·K_te and the time basis kept on K_te·V (docs/numerics.md §16,
        # "Reuse"), shared by the with_params family of a TestSet
        self._shared: dict[str, Any] = {"kv": None, "kv_r": None, "ks": None, "tb": None}
        self.k: Any = None
        self.shape: tuple[int, ...] = ()
        self.g0: Any = None
        self.g0_max = 0.0  # max|g₀|, from its validation
        self._prepared: tuple[Any, tuple[int, ...]] | None = None

    def prepare(self) -> tuple[Any, tuple[int, ...]]:
        """The flat test kernel and the test dims (converted and checked once a handle)."""
        if self._prepared is None:
            m = self.model
            # float32 compute with a float64 kernel: kept in float64 until scaled_k has
            # scaled it (so a tiny kernel does not become float32 subnormals first)
            dt = m.dtype
            if dt == np.float32 and getattr(self.raw_k, "dtype", None) == np.float64:
                dt = np.dtype(np.float64)
            self._prepared = m.test_train_kernel(self.raw_k, "k_test_train", dt)
        return self._prepared

    def bind(self, layout: Layout) -> TestInputs:
        """These inputs for one call's target layout: a new object, so that a handle can
        serve calls with different targets at once (threads)."""
        k2, test_dims = self.prepare()
        bound = self._copy()  # shares the prepared kernel and the K_te·V cache
        bound.k = k2
        bound.shape = layout.test_shape(test_dims)
        m = self.model
        g0, bound.g0_max = m.broadcast(self.raw_g0, bound.shape, "fx_test_0")
        bound.g0 = m.flat(g0, layout)
        return bound

    def scaled_k(self, e: int) -> Any:
        """``2^-e·K_te`` (exact) in the compute dtype: the test kernel in the units of the
        scaled train kernel."""
        dt = self.model.dtype
        if not e and self.k.dtype == dt:
            return self.k
        ks = self._shared["ks"]
        if ks is None or ks[0] != e:
            xp = self.model.xp
            with np.errstate(under="ignore"):
                ks = (e, xp.ascontiguousarray(ldexp(self.k, -e, xp), dtype=dt))
            self._shared["ks"] = ks
        return ks[1]

    def scaled_times(self, e: int, x: Any) -> Any:
        """``(2^-e·K_te)·x`` (the test outputs of a solve ``x`` on the scaled train kernel).
        Where ``2^-e·x`` is exact (no entry leaves the normal range) and the kernel is in
        the compute dtype, as ``K_te·(2^-e·x)``: every product is the same real number, so
        the same bits wherever ``2^-e·K_te`` is exact too, and no scaled copy of ``K_te``
        (``M × N``) is made. Otherwise through ``scaled_k``."""
        m = self.model
        xp, be = m.xp, m.backend
        if e and self.k.dtype == m.dtype:
            with np.errstate(over="ignore", under="ignore"):
                xs = ldexp(x, -e, xp)
                exact = bool(xp.all(ldexp(xs, e, xp) == x))
            if exact:
                return be.test_basis(self.k, xs)
        return be.test_basis(self.scaled_k(e), x)

    def basis(self) -> Any:
        """``2^-e·K_te·V`` of the shared factorization; where it keeps ``V = Q Z``
        unformed, ``((Qᵀ K_teᵀ)ᵀ) Z``: ``2N²M + 2MN²`` instead of forming ``V`` (``2N³``)
        and ``2MN²`` (docs/numerics.md §17)."""
        if self._shared["kv"] is None:
            m = self.model
            be = m.backend
            _, b, q = m.fact.modes()
            kte = self.scaled_k(m.fact.exp)
            if q is not None:
                kte = be.apply_transpose(q, kte.T).T  # K_te·Q (M × N)
            self._shared["kv"] = be.test_basis(kte, b)
        return self._shared["kv"]

    def retained_basis(self, first: int) -> Any:
        """``basis()[:, first:]`` C-ordered, made once per ``first`` (not per call)."""
        kr = self._shared["kv_r"]
        if kr is None or kr[0] != first:
            xp = self.model.xp
            kr = (first, xp.ascontiguousarray(self.basis()[:, first:]))
            self._shared["kv_r"] = kr
        return kr[1]

    def time_basis(self) -> Any:
        """The holder of the time basis kept on ``K_te·V`` (None where the backend keeps
        none)."""
        if self._shared["tb"] is None:
            self._shared["tb"] = self.model.backend.time_basis_cache()
        return self._shared["tb"]

    def rebind(self, model: KernelModel) -> TestInputs:
        """The same test inputs (and cached ``K_te·V``) for a model sharing the
        factorization."""
        new = self._copy()
        new.model = model
        return new

    def _copy(self) -> TestInputs:
        """A shallow copy (as ``copy.copy``, without its generic dispatch)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new
