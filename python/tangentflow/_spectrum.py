"""The cached factorization of a train kernel and the spectral cut (docs/numerics.md §5)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ._errors import NumericalWarning, warn

__all__ = ["Factorization", "Spectrum", "default_rcond"]

_SQRT_EPS64 = math.sqrt(np.finfo(np.float64).eps)


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
        self.w = None  # float64 eigenvalues of sym(K), ascending (backend array)
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
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.w is not None

    def ensure(self):
        with self._lock:
            if self.w is None:
                w, v = self.backend.eigh(self.kernel, self.dtype)
                xp = self.backend.xp
                if not bool(xp.all(xp.isfinite(w))):
                    raise ValueError(
                        "the eigenvalues of the kernel overflow the floating-point range: "
                        "rescale it (the dynamics depend on learning_rate · kernel only)"
                    )
                self.w = self.backend.xp.asarray(w, dtype=self.backend.xp.float64)
                self.v = v
                self.count += 1
        return self.w, self.v


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of ``A = sym(K) + λI`` and the retained set ``{μ > rcond·max|μ|}``.

    The retained modes are a suffix of the ascending eigenvalues: ``mu[first:]``.
    """

    mu: object  # backend float64 array, ascending
    first: int
    tol: float
    mu_max_abs: float
    mu_min: float
    mu_max: float

    @classmethod
    def of(cls, w, shift: float, rcond: float, xp) -> Spectrum:
        mu = w + shift
        n = int(mu.shape[0])
        if n == 0:
            return cls(mu, 0, 0.0, 0.0, 0.0, 0.0)
        mu_min, mu_max = float(mu[0]), float(mu[-1])
        mu_max_abs = max(abs(mu_min), abs(mu_max))
        tol = rcond * mu_max_abs
        first = int(xp.sum(mu <= tol))
        return cls(mu, first, tol, mu_max_abs, mu_min, mu_max)

    @property
    def retained(self):
        return self.mu[self.first :]

    @property
    def n_cut(self) -> int:
        return self.first

    def warn_if_not_psd(self, name: str = "k_train_train") -> None:
        if self.mu_max_abs > 0 and self.mu_min < -_SQRT_EPS64 * self.mu_max_abs:
            warn(
                f"{name} (+ diag_reg) is materially non-positive-semi-definite: its smallest "
                f"eigenvalue is {self.mu_min:.3e} ({self.mu_min / self.mu_max_abs:.2e} of the "
                f"largest); the {self.n_cut} eigenvalue(s) <= {self.tol:.3e} are treated as "
                "null directions (spectral cut)",
                NumericalWarning,
            )
