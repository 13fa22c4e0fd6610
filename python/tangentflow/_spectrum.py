"""The cached factorization of a train kernel, the spectral cut (docs/numerics.md §5), and
the power-of-two scaling that makes every result independent of the kernel's overall scale
(docs/numerics.md §12, "Scale invariance").

The factorization is of ``Ã = 2^-e·A`` with ``e`` the binary exponent of ``max|A_ij|``
(the Rust core and the array backend choose it): eigenvalues are stored as those of ``Ã``
with ``e`` beside them, and the dynamics run on ``Ã`` with ``η·2^e`` (only ``η·A`` enters),
so no intermediate depends on the scale and none over- or underflows while the answer is
representable. Targets are scaled the same way (``2^-ey``; the outputs are linear in them).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ._errors import NumericalWarning, warn

__all__ = [
    "Factorization",
    "Spectrum",
    "default_rcond",
    "exponent",
    "ldexp",
    "ldexp_float",
    "array_exponent",
    "cast_outputs",
]

_SQRT_EPS64 = math.sqrt(np.finfo(np.float64).eps)


def exponent(x: float) -> int:
    """Binary exponent ``e`` of ``x = f·2^e``, ``|f|`` in ``[0.5, 1)``; 0 for 0 and non-finite."""
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return 0
    return math.frexp(x)[1]


def ldexp_float(x: float, e: int) -> float:
    """``x·2^e`` as a Python float, ``±inf`` on overflow (``math.ldexp`` raises)."""
    try:
        return math.ldexp(float(x), int(e))
    except OverflowError:
        return math.copysign(math.inf, x)


def ldexp(a, e: int, xp):
    """``a·2^e`` elementwise, exact on normal results, in ``a``'s dtype (``a`` itself if
    ``e == 0``)."""
    if e == 0:
        return a
    out = xp.ldexp(a, int(e))
    return out.astype(a.dtype, copy=False) if out.dtype != a.dtype else out


def array_exponent(xp, *arrays) -> int:
    """The binary exponent of the largest magnitude over ``arrays`` (None entries skipped)."""
    m = 0.0
    for a in arrays:
        if a is not None and a.size:
            m = max(m, float(xp.max(xp.abs(a))))
    return exponent(m)


def cast_outputs(a, dtype, name: str, xp):
    """``a`` in the output ``dtype``; a clear error (not an overflow warning) when a finite
    result does not fit it, e.g. float64 results above 3.4e38 for a float32 kernel."""
    dtype = np.dtype(dtype)
    if a is None or a.dtype == dtype:
        return a
    if a.size and dtype.itemsize < np.dtype(a.dtype).itemsize:
        big = float(xp.max(xp.abs(a)))
        if math.isfinite(big) and big > float(np.finfo(dtype).max):
            from ._errors import TangentflowError

            raise TangentflowError(
                f"the {name} reach {big:.3e}, beyond the range of the kernel's dtype {dtype} "
                f"(max {float(np.finfo(dtype).max):.3e}); pass the kernel as float64 to get "
                "float64 results"
            )
    return a.astype(dtype, copy=False)


def default_rcond(d: int, dtype) -> float:
    """``D · ε`` of the compute precision."""
    return max(d, 1) * float(np.finfo(dtype).eps)


class Factorization:
    """``sym(K) = V diag(w) Vᵀ``, computed once and shared by a Predictor and every
    Predictor made from it by ``with_params`` (a diagonal shift and a time scale change
    neither the eigenvectors nor their order)."""

    def __init__(self, kernel, backend, dtype):
        self.kernel = kernel
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.count = 0
        # float64 eigenvalues of 2^-exp·sym(K), ascending (backend array); sym(K) itself has
        # eigenvalues w·2^exp (module docstring)
        self.w = None
        self.exp = 0
        self.v = None  # eigenvectors, compute dtype, columns
        # (key, λ, residual V diag(e) z): the last train residual of the family, reused by
        # a diag_reg sweep (see Predictor._train_outputs)
        self.train_memo = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        state.setdefault("exp", 0)  # pickles from before the scaling hold unscaled w
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.w is not None

    def ensure(self):
        with self._lock:
            if self.w is None:
                w, v, e = self.backend.eigh(self.kernel, self.dtype)
                xp = self.backend.xp
                if not bool(xp.all(xp.isfinite(w))):
                    from ._errors import LinAlgError

                    raise LinAlgError("the symmetric eigensolver returned non-finite eigenvalues")
                self.w = self.backend.xp.asarray(w, dtype=self.backend.xp.float64)
                self.v = v
                self.exp = int(e)
                self.count += 1
        return self.w, self.v


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of ``A = sym(K) + λI`` and the retained set ``{μ > rcond·max|μ|}``.

    ``mu`` holds the eigenvalues of the scaled ``Ã = 2^-exp·A`` (what the dynamics use with
    ``η·2^exp``); ``mu_min``, ``mu_max``, ``mu_max_abs`` and ``tol`` are in the kernel's
    units (for messages and diagnostics), ``s_*`` their scaled counterparts. The retained
    modes are a suffix of the ascending eigenvalues: ``mu[first:]``.
    """

    mu: object  # backend float64 array, ascending, eigenvalues of 2^-exp·A
    first: int
    exp: int
    s_tol: float
    s_max_abs: float
    s_min: float
    s_max: float

    @classmethod
    def of(cls, w, shift: float, rcond: float, xp, exp: int = 0) -> Spectrum:
        mu = w + ldexp_float(shift, -exp)
        n = int(mu.shape[0])
        if n == 0:
            return cls(mu, 0, exp, 0.0, 0.0, 0.0, 0.0)
        mu_min, mu_max = float(mu[0]), float(mu[-1])
        mu_max_abs = max(abs(mu_min), abs(mu_max))
        tol = rcond * mu_max_abs
        first = int(xp.sum(mu <= tol))
        return cls(mu, first, int(exp), tol, mu_max_abs, mu_min, mu_max)

    def unscale(self, x: float) -> float:
        """A scaled eigenvalue-like number in the kernel's units."""
        return ldexp_float(x, self.exp)

    @property
    def tol(self) -> float:
        return self.unscale(self.s_tol)

    @property
    def mu_max_abs(self) -> float:
        return self.unscale(self.s_max_abs)

    @property
    def mu_min(self) -> float:
        return self.unscale(self.s_min)

    @property
    def mu_max(self) -> float:
        return self.unscale(self.s_max)

    def eigenvalues(self, xp):
        """All eigenvalues of ``A`` in the kernel's units."""
        with np.errstate(over="ignore", under="ignore"):
            return ldexp(self.mu, self.exp, xp)

    @property
    def retained(self):
        return self.mu[self.first :]

    @property
    def n_cut(self) -> int:
        return self.first

    def warn_if_not_psd(self, name: str = "k_train_train") -> None:
        if self.s_max_abs > 0 and self.s_min < -_SQRT_EPS64 * self.s_max_abs:
            warn(
                f"{name} (+ diag_reg) is materially non-positive-semi-definite: its smallest "
                f"eigenvalue is {self.mu_min:.3e} ({self.s_min / self.s_max_abs:.2e} of the "
                f"largest); the {self.n_cut} eigenvalue(s) <= {self.tol:.3e} are treated as "
                "null directions (spectral cut)",
                NumericalWarning,
            )
