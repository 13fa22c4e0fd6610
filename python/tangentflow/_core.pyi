# Typed surface of the private extension module tangentflow._core (rust/py).
# Checked in CI by `python -m mypy.stubtest tangentflow._core`.
from collections.abc import Callable
from typing import Any, final

import numpy as np
from numpy.typing import NDArray

_F64 = NDArray[np.float64]
_F32 = NDArray[np.float32]

__version__: str
build_profile: str

def kernel_stats_f64(k: _F64) -> tuple[float, float, float, bool]: ...
def kernel_stats_f32(k: _F32) -> tuple[float, float, float, bool]: ...
def sym_eigh_f64_f64(k: _F64, shift: float) -> tuple[_F64, _F64, int]: ...
def sym_eigh_f32_f64(k: _F32, shift: float) -> tuple[_F64, _F64, int]: ...
def sym_eigh_f32_f32(k: _F32, shift: float) -> tuple[_F64, _F32, int]: ...
def sym_eigh_f64_f32(k: _F64, shift: float) -> tuple[_F64, _F32, int]: ...
def _eigh_timings_f64(
    k: _F64,
    shift: float,
    staged: bool = True,
    tuning: tuple[int, int, int, int] = ...,
    process_cpu: bool = False,
) -> list[tuple[str, float]]: ...
def cholesky_solve_f64_f64(
    k: _F64, shift: float, rhs: _F64, max_abs: float | None = None
) -> tuple[_F64, float, float, float, int] | None: ...
def cholesky_solve_f32_f64(
    k: _F32, shift: float, rhs: _F64, max_abs: float | None = None
) -> tuple[_F64, float, float, float, int] | None: ...
def cholesky_solve_f32_f32(
    k: _F32, shift: float, rhs: _F32, max_abs: float | None = None
) -> tuple[_F32, float, float, float, int] | None: ...
def cholesky_solve_f64_f32(
    k: _F64, shift: float, rhs: _F32, max_abs: float | None = None
) -> tuple[_F32, float, float, float, int] | None: ...

@final
class Dynamics:
    """How each eigenmode evolves; passed to ``mode_factors`` and ``closed_form_*``."""
    @staticmethod
    def flow(scale: float) -> Dynamics: ...
    @staticmethod
    def gd(scale: float) -> Dynamics: ...
    @staticmethod
    def momentum(learning_rate: float, momentum: float, n: float) -> Dynamics: ...

@final
class TimeBasisCache:
    """A time basis kept across ``closed_form_*`` calls on one output basis."""
    def __new__(cls) -> TimeBasisCache: ...
    def rank(self) -> int: ...
    def clear(self) -> None: ...

def mode_factors(dynamics: Dynamics, mu: _F64, times: _F64) -> tuple[_F64, _F64]: ...
def project_f64(v: _F64, r: _F64, cache: TimeBasisCache | None = None) -> _F64: ...
def project_f32(v: _F32, r: _F32, cache: TimeBasisCache | None = None) -> _F32: ...
def test_basis_f64(kte: _F64, v: _F64) -> _F64: ...
def test_basis_f32(kte: _F32, v: _F32) -> _F32: ...
def train_outputs_f64(v: _F64, z: _F64, em1: _F64, f0: _F64) -> _F64: ...
def train_outputs_f32(v: _F32, z: _F32, em1: _F64, f0: _F32) -> _F32: ...
def test_outputs_f64(kte: _F64, v: _F64, z: _F64, phi: _F64, g0: _F64) -> _F64: ...
def test_outputs_f32(kte: _F32, v: _F32, z: _F32, phi: _F64, g0: _F32) -> _F32: ...
def test_outputs_cached_f64(kv: _F64, z: _F64, phi: _F64, g0: _F64) -> _F64: ...
def test_outputs_cached_f32(kv: _F32, z: _F32, phi: _F64, g0: _F32) -> _F32: ...
def closed_form_f64(
    dynamics: Dynamics,
    mu: _F64,
    times: _F64,
    v: _F64,
    r: _F64,
    f0: _F64 | None,
    test: _F64 | None,
    g0: _F64 | None,
    cached: bool,
    train_cache: TimeBasisCache | None = None,
    test_cache: TimeBasisCache | None = None,
) -> tuple[_F64, _F64 | None, _F64 | None]: ...
def closed_form_f32(
    dynamics: Dynamics,
    mu: _F64,
    times: _F64,
    v: _F32,
    r: _F32,
    f0: _F32 | None,
    test: _F32 | None,
    g0: _F32 | None,
    cached: bool,
    train_cache: TimeBasisCache | None = None,
    test_cache: TimeBasisCache | None = None,
) -> tuple[_F32, _F32 | None, _F32 | None]: ...
def loss_sums(dynamics: Dynamics, mu: _F64, times: _F64, zz: _F64) -> _F64: ...
def _set_time_compression(on: bool) -> bool: ...
def _time_compression() -> bool: ...
def _compression_ranks() -> tuple[int, int]: ...
def _basis_reuse() -> tuple[int, int]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def fully_connected_f64(
    x1: _F64,
    x2: _F64 | None,
    hidden_layers: int,
    activation: str,
    w_std: float,
    b_std: float,
    want_nngp: bool,
    want_ntk: bool,
) -> tuple[_F64 | None, _F64 | None]: ...
def fc_matmat_f64(
    x1: _F64,
    x2: _F64 | None,
    r0: int,
    r1: int,
    hidden_layers: int,
    activation: str,
    w_std: float,
    b_std: float,
    ntk: bool,
    v: _F64,
) -> _F64: ...
def fc_diagonal_f64(
    x: _F64, hidden_layers: int, activation: str, w_std: float, b_std: float
) -> tuple[_F64, _F64]: ...
def ode_solve(
    kernel: _F64,
    f0: _F64,
    times: _F64 | None,
    loss: str | Callable[[_F64], Any],
    y: _F64 | None = None,
    n: float | None = None,
    classes: int | None = None,
    q0: _F64 | None = None,
    damping: float | None = None,
    rtol: float = 1.4e-8,
    atol: float = 1.4e-8,
    converge_tol: float | None = None,
    first_step: float | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]: ...

# Krylov dynamics over a kernel operator given by its matmat (rust/py/src/krylov.rs)
_Info = tuple[str, int, int, float, bool]

@final
class KrylovFlow:
    @staticmethod
    def solve(
        matmat: Callable[[_F64], Any],
        n: int,
        r0: _F64,
        times: _F64,
        rtol: float,
        max_iter: int,
        rcond: float | None = None,
        shift: float = 0.0,
        augment: _F64 | None = None,
        progress: Callable[[int, int, float], Any] | None = None,
    ) -> KrylovFlow: ...
    def extend(
        self,
        matmat: Callable[[_F64], Any],
        times: _F64,
        rtol: float,
        max_iter: int,
        rcond: float | None = None,
        shift: float = 0.0,
        progress: Callable[[int, int, float], Any] | None = None,
    ) -> None: ...
    def info(self) -> _Info: ...
    def dim(self) -> int: ...
    def shift(self) -> float: ...
    def ritz_values(self) -> tuple[_F64, float]: ...
    def basis(self, start: int = 0) -> _F64: ...
    def coefficients(self, times: _F64, phi: bool) -> _F64: ...
    def apply(self, times: _F64, phi: bool, image: _F64 | None = None) -> _F64: ...
    def bounds(self, times: _F64, phi: bool) -> _F64: ...

@final
class KrylovPinv:
    @staticmethod
    def solve(
        matmat: Callable[[_F64], Any],
        n: int,
        b: _F64,
        rtol: float,
        max_iter: int,
        rcond: float | None = None,
        shift: float = 0.0,
        rank: int = 100,
        seed: int = 0x5EED,
        progress: Callable[[int, int, float], Any] | None = None,
    ) -> KrylovPinv: ...
    def info(self) -> _Info: ...
    def solution(self) -> _F64: ...
    def null_part(self) -> _F64: ...
    def train_bounds(self) -> list[float]: ...
