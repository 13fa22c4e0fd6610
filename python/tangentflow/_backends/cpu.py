"""The CPU backend: every O(N²) and O(N³) step runs in the Rust core (faer, rayon).

The core's entry points are monomorphic (``_f32``/``_f64`` suffixes, docs/architecture.md);
the tables below pick one from the dtypes, typed so that mypy checks every call against
``tangentflow/_core.pyi``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .. import _core

_Arr = NDArray[Any]
_F64 = NDArray[np.float64]
_Prec = Literal["f32", "f64"]


def _c(a: Any, dtype: Any) -> Any:
    """C-contiguous and aligned (the Rust views assume natural alignment; a NumPy array
    made with ``frombuffer`` at an odd offset may not be)."""
    if type(a) is np.ndarray and a.dtype == dtype:
        flags = a.flags
        if flags.c_contiguous and flags.aligned:
            return a  # what np.require returns for it, without its overhead
    return np.require(a, dtype=dtype, requirements=["C", "A"])


def _p(dtype: Any) -> _Prec:
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


_KERNEL_STATS: dict[_Prec, Callable[[_Arr], tuple[float, float, float, bool]]] = {
    "f32": _core.kernel_stats_f32,
    "f64": _core.kernel_stats_f64,
}
#: Kernels with fewer rows get their eigenvectors formed by the eigensolver instead of
#: kept as reflectors (docs/numerics.md §17, "Small kernels"): there forming ``V`` costs
#: less than what applying ``Q`` adds to a first call's products.
FORM_BELOW = 256

# keyed by (kernel dtype, compute dtype)
_EIGH: dict[tuple[_Prec, _Prec], Callable[[_Arr, float], tuple[_F64, _Arr, int]]] = {
    ("f64", "f64"): _core.sym_eigh_f64_f64,
    ("f32", "f64"): _core.sym_eigh_f32_f64,
    ("f32", "f32"): _core.sym_eigh_f32_f32,
    ("f64", "f32"): _core.sym_eigh_f64_f32,
}
_Factored = tuple[_F64, _Arr, int, _core.Reflectors]
_EIGH_FACTORED: dict[tuple[_Prec, _Prec], Callable[[_Arr, float], _Factored]] = {
    ("f64", "f64"): _core.sym_eigh_factored_f64_f64,
    ("f32", "f64"): _core.sym_eigh_factored_f32_f64,
    ("f32", "f32"): _core.sym_eigh_factored_f32_f32,
    ("f64", "f32"): _core.sym_eigh_factored_f64_f32,
}
_FORM: dict[_Prec, Callable[[_core.Reflectors, _Arr], _Arr]] = {
    "f32": _core.form_eigenvectors_f32,
    "f64": _core.form_eigenvectors_f64,
}
_APPLY_T: dict[_Prec, Callable[[_core.Reflectors, _Arr], _Arr]] = {
    "f32": _core.apply_transpose_f32,
    "f64": _core.apply_transpose_f64,
}
_CHOLESKY: dict[
    tuple[_Prec, _Prec],
    Callable[[_Arr, float, _Arr, float | None], tuple[_Arr, float, float, float, int] | None],
] = {
    ("f64", "f64"): _core.cholesky_solve_f64_f64,
    ("f32", "f64"): _core.cholesky_solve_f32_f64,
    ("f32", "f32"): _core.cholesky_solve_f32_f32,
    ("f64", "f32"): _core.cholesky_solve_f64_f32,
}
# keyed by the compute dtype
_PROJECT: dict[
    _Prec, Callable[[_Arr, _Arr, _core.TimeBasisCache | None, _core.Reflectors | None], _Arr]
] = {
    "f32": _core.project_f32,
    "f64": _core.project_f64,
}
_TEST_BASIS: dict[_Prec, Callable[[_Arr, _Arr], _Arr]] = {
    "f32": _core.test_basis_f32,
    "f64": _core.test_basis_f64,
}
_TRAIN_OUTPUTS: dict[_Prec, Callable[[_Arr, _Arr, _F64, _Arr], _Arr]] = {
    "f32": _core.train_outputs_f32,
    "f64": _core.train_outputs_f64,
}
_TEST_OUTPUTS: dict[_Prec, Callable[[_Arr, _Arr, _Arr, _F64, _Arr], _Arr]] = {
    "f32": _core.test_outputs_f32,
    "f64": _core.test_outputs_f64,
}
_TEST_OUTPUTS_CACHED: dict[_Prec, Callable[[_Arr, _Arr, _F64, _Arr], _Arr]] = {
    "f32": _core.test_outputs_cached_f32,
    "f64": _core.test_outputs_cached_f64,
}
_Cache = _core.TimeBasisCache | None
_CLOSED_FORM: dict[
    _Prec,
    Callable[
        [
            _core.Dynamics,
            _F64,
            _F64,
            _Arr,
            _Arr,
            _Arr | None,
            _Arr | None,
            _Arr | None,
            bool,
            _Cache,
            _Cache,
            _core.Reflectors | None,
        ],
        tuple[_Arr, _Arr | None, _Arr | None],
    ],
] = {
    "f32": _core.closed_form_f32,
    "f64": _core.closed_form_f64,
}
# the protocol's dynamics descriptions ("flow", [η/n]), ("gd", [η/n]), ("momentum", [η, m, n])
_DYNAMICS: dict[str, Callable[..., _core.Dynamics]] = {
    "flow": _core.Dynamics.flow,
    "gd": _core.Dynamics.gd,
    "momentum": _core.Dynamics.momentum,
}


def _dynamics(kind: str, params: list[float]) -> _core.Dynamics:
    try:
        make = _DYNAMICS[kind]
    except KeyError:
        raise ValueError(f"unknown dynamics {kind!r}") from None
    return make(*(float(p) for p in params))


class CpuBackend:
    name = "cpu"
    xp = np
    on_gpu = False
    runs_ode = True

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        from . import by_name

        return (by_name, (self.name,))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return np.asarray(a)

    def kernel_stats(self, k: Any) -> tuple[float, float, float, bool]:
        k = self._kernel(k)
        return _KERNEL_STATS[_p(k.dtype)](k)

    @staticmethod
    def _kernel(k: Any) -> Any:
        # float32 and float64 kernels go to Rust as they are (converted inside the
        # symmetrizing copy); anything else becomes float64 once.
        if k.dtype not in (np.float32, np.float64):
            k = k.astype(np.float64)
        if not (k.flags.c_contiguous or k.flags.f_contiguous) or not k.flags.aligned:
            k = np.require(k, requirements=["C", "A"])
        return k

    def eigh(self, k: Any, dtype: Any) -> tuple[Any, Any, int]:
        k = self._kernel(k)
        return _EIGH[_p(k.dtype), _p(dtype)](k, 0.0)

    def eigh_factored(self, k: Any, dtype: Any) -> tuple[Any, Any, int, Any] | None:
        # below FORM_BELOW training points V is formed at once (docs/numerics.md §17)
        if k.shape[0] < FORM_BELOW:
            return None
        k = self._kernel(k)
        return _EIGH_FACTORED[_p(k.dtype), _p(dtype)](k, 0.0)

    def form_eigenvectors(self, q: Any, z: Any) -> Any:
        return _FORM[_p(z.dtype)](q, z)

    def apply_transpose(self, q: Any, x: Any) -> Any:
        return _APPLY_T[_p(x.dtype)](q, x)

    def cholesky_solve(
        self, k: Any, shift: float, rhs: Any, max_abs: float | None = None
    ) -> tuple[Any, float, float, float, int] | None:
        k = self._kernel(k)
        return _CHOLESKY[_p(k.dtype), _p(rhs.dtype)](k, float(shift), rhs, max_abs)

    def mode_factors(self, kind: str, params: list[float], mu: Any, times: Any) -> tuple[Any, Any]:
        return _core.mode_factors(
            _dynamics(kind, params), _c(mu, np.float64), _c(times, np.float64)
        )

    def project(self, v: Any, r: Any, cache: Any = None, q: Any = None) -> Any:
        return _PROJECT[_p(v.dtype)](v, _c(r, v.dtype), cache, q)

    def test_basis(self, kte: Any, v: Any) -> Any:
        return _TEST_BASIS[_p(v.dtype)](_c(kte, v.dtype), v)

    def train_outputs(self, v: Any, z: Any, em1: Any, f0: Any) -> Any:
        return _TRAIN_OUTPUTS[_p(v.dtype)](v, z, em1, _c(f0, v.dtype))

    def test_outputs(self, kte: Any, v: Any, z: Any, phi: Any, g0: Any) -> Any:
        return _TEST_OUTPUTS[_p(v.dtype)](_c(kte, v.dtype), v, z, phi, _c(g0, v.dtype))

    def test_outputs_cached(self, kv: Any, z: Any, phi: Any, g0: Any) -> Any:
        return _TEST_OUTPUTS_CACHED[_p(kv.dtype)](kv, z, phi, _c(g0, kv.dtype))

    def closed_form(
        self,
        kind: str,
        params: list[float],
        mu: Any,
        times: Any,
        v: Any,
        r: Any,
        f0: Any | None,
        test: Any | None,
        g0: Any | None,
        cached: bool,
        train_cache: Any = None,
        test_cache: Any = None,
        q: Any = None,
    ) -> tuple[Any, Any | None, Any | None]:
        """``mode_factors`` + ``project`` + ``train_outputs`` (when ``f0`` is given) +
        ``test_outputs`` / ``test_outputs_cached`` (when ``test`` is given) in one core call:
        ``(z, train, test)``, bitwise the outputs of the separate calls (within the bound of
        docs/numerics.md §16 where times are compressed)."""
        dt = v.dtype
        return _CLOSED_FORM[_p(dt)](
            _dynamics(kind, params),
            _c(mu, np.float64),
            _c(times, np.float64),
            v,
            _c(r, dt),
            None if f0 is None else _c(f0, dt),
            None if test is None else _c(test, dt),
            None if g0 is None else _c(g0, dt),
            bool(cached),
            train_cache,
            test_cache,
            q,
        )

    def time_basis_cache(self) -> Any:
        return _core.TimeBasisCache()

    def loss_sums(self, kind: str, params: list[float], mu: Any, times: Any, zz: Any) -> Any:
        return _core.loss_sums(
            _dynamics(kind, params), _c(mu, np.float64), _c(times, np.float64), _c(zz, np.float64)
        )

    def ode_solve(self, k: Any, f0: Any, taus: Any, loss: Any, **kw: Any) -> dict[str, Any]:
        return _core.ode_solve(k, f0, taus, loss, **kw)
