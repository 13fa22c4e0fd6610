"""The cached factorization of a train kernel and its spectrum with the spectral cut
(docs/numerics.md §5), in the power-of-two scaled units of docs/numerics.md §12.

The factorization is of ``Ã = 2^-e·A``: eigenvalues are stored as those of ``Ã`` with
``e`` beside them, and the dynamics run on ``Ã`` with ``η·2^e`` (only ``η·A`` enters).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import LinAlgError, NumericalWarning, warn
from .._numerics import all_finite, ldexp, ldexp_float

__all__ = ["Factorization", "Spectrum", "default_rcond"]

_SQRT_EPS64 = math.sqrt(np.finfo(np.float64).eps)


def default_rcond(d: int, dtype: Any) -> float:
    """``D · ε`` of the compute precision."""
    return max(d, 1) * float(np.finfo(dtype).eps)


class Factorization:
    """``sym(K) = V diag(w) Vᵀ``, computed once and shared by a Predictor and every
    Predictor made from it by ``with_params`` (a diagonal shift and a time scale change
    neither the eigenvectors nor their order)."""

    def __init__(self, kernel: Any, backend: Any, dtype: Any) -> None:
        self.kernel = kernel
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.count = 0
        # float64 eigenvalues of 2^-exp·sym(K), ascending (backend array); sym(K) itself has
        # eigenvalues w·2^exp (module docstring)
        self.w: Any = None
        self.exp = 0
        self.v: Any = None  # eigenvectors, compute dtype, columns (formed on demand)
        # V = Q Z with Q the reduction's reflectors, where the backend keeps them
        # (docs/numerics.md §17): the closed forms apply Q to thin products, always, so
        # their bits do not depend on whether V has been formed for another use
        self.z: Any = None
        self.q: Any = None
        # (key, λ, residual V diag(e) z): the last train residual of the family, reused by
        # a diag_reg sweep (see closed_form.train_outputs)
        self.train_memo: tuple[bytes, float, Any] | None = None
        # set once a with_params member shares this factorization: only then is the memo
        # kept (a lone predictor's call would pay an O(N·R·T) copy for nothing)
        self.shared = False
        # the compression basis kept on V across calls (docs/numerics.md §16, "Reuse"):
        # created on first use, never pickled
        self._time_basis: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_time_basis"] = None
        return state

    def time_basis(self) -> Any:
        """The backend's holder of the time basis kept on ``V`` (None where it keeps none)."""
        with self._lock:
            if self._time_basis is None:
                self._time_basis = self.backend.time_basis_cache()
            return self._time_basis

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("exp", 0)  # pickles from before the scaling hold unscaled w
        state.setdefault("shared", False)
        state.setdefault("z", None)
        state.setdefault("q", None)
        state["_time_basis"] = None
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.w is not None

    def _factorize(self) -> None:
        """The eigendecomposition, without forming V where the backend need not (call
        with the lock held)."""
        if self.w is not None:
            return
        be = self.backend
        fac = be.eigh_factored(self.kernel, self.dtype)
        if fac is None:
            w, v, e = be.eigh(self.kernel, self.dtype)
            z = q = None
        else:
            w, z, e, q = fac
            v = None
        xp = be.xp
        if not all_finite(w, xp):
            raise LinAlgError("the symmetric eigensolver returned non-finite eigenvalues")
        self.w = xp.asarray(w, dtype=xp.float64)
        self.v, self.z, self.q = v, z, q
        self.exp = int(e)
        self.count += 1

    def ensure(self) -> tuple[Any, Any]:
        """``(w, V)``, factorizing first and forming ``V = Q Z`` if needed."""
        with self._lock:
            self._factorize()
            if self.v is None:
                self.v = self.backend.form_eigenvectors(self.q, self.z)
        return self.w, self.v

    def modes(self) -> tuple[Any, Any, Any]:
        """``(w, B, Q)``: the eigenvectors as the closed forms use them, ``V = Q B`` with
        ``Q`` the reflectors, or ``B = V`` and ``Q = None`` where none are kept
        (docs/numerics.md §17); ``V`` is not formed."""
        with self._lock:
            self._factorize()
            if self.q is not None:
                return self.w, self.z, self.q
            return self.w, self.v, None


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of ``A = sym(K) + λI`` and the retained set ``{μ > rcond·max|μ|}``.

    ``mu`` holds the eigenvalues of the scaled ``Ã = 2^-exp·A`` (what the dynamics use with
    ``η·2^exp``); ``mu_min``, ``mu_max``, ``mu_max_abs`` and ``tol`` are in the kernel's
    units (for messages and diagnostics), ``s_*`` their scaled counterparts. The retained
    modes are a suffix of the ascending eigenvalues: ``mu[first:]``.
    """

    mu: Any  # backend float64 array, ascending, eigenvalues of 2^-exp·A
    first: int
    exp: int
    s_tol: float
    s_max_abs: float
    s_min: float
    s_max: float

    @classmethod
    def of(cls, w: Any, shift: float, rcond: float, xp: Any, exp: int = 0) -> Spectrum:
        mu = w + ldexp_float(shift, -exp)
        n = int(mu.shape[0])
        if n == 0:
            return cls(mu, 0, exp, 0.0, 0.0, 0.0, 0.0)
        mu_min, mu_max = float(mu[0]), float(mu[-1])
        mu_max_abs = max(abs(mu_min), abs(mu_max))
        tol = rcond * mu_max_abs
        first = int(xp.count_nonzero(mu <= tol))
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

    def eigenvalues(self, xp: Any) -> Any:
        """All eigenvalues of ``A`` in the kernel's units."""
        with np.errstate(over="ignore", under="ignore"):
            return ldexp(self.mu, self.exp, xp)

    @property
    def retained(self) -> Any:
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
