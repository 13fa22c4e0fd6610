"""The core's eigendecomposition at small sizes, where the tridiagonal problem is solved by
the core's QL iteration (up to 150 columns) instead of faer's divide and conquer
(docs/performance.md, "Small problems"), against NumPy's LAPACK ``eigh``."""

from __future__ import annotations

import numpy as np
import pytest

from tangentflow import _core


def _kernels(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3))
    z = rng.standard_normal((n, 8))
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    u = np.linalg.qr(rng.standard_normal((n, n)))[0]
    graded = (u * np.logspace(0, -16, n)) @ u.T
    return {
        "rank3": x @ x.T,  # n - 3 round-off eigenvalues
        "rbf": np.exp(-sq / 16.0),  # clustered spectrum
        "graded": (graded + graded.T) / 2,  # eigenvalues over 16 decades
        "random": (lambda a: (a + a.T) / 2)(rng.standard_normal((n, n))),
        "diagonal": np.diag(np.linspace(-1.0, 1.0, n)),
    }


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 100, 150, 151, 200])
@pytest.mark.parametrize("kind", ["rank3", "rbf", "graded", "random", "diagonal"])
def test_small_factorization_against_lapack(n: int, kind: str) -> None:
    k = _kernels(n)[kind]
    w, v, e = _core.sym_eigh_f64_f64(k, 0.0)
    w = np.ldexp(w, e)
    norm = np.abs(np.linalg.eigvalsh(k)).max()
    ref = np.linalg.eigvalsh(k)
    assert np.all(np.diff(w) >= 0)
    # eigenvalues to a few ε·‖K‖, the accuracy of any backward-stable solver
    assert np.abs(w - ref).max() <= 50 * np.finfo(float).eps * max(norm, 1e-300) * np.sqrt(n)
    # residual and orthogonality of the eigenvectors
    assert np.abs(k @ v - v * w).max() <= 50 * np.finfo(float).eps * norm * np.sqrt(n)
    assert np.abs(v.T @ v - np.eye(n)).max() <= 50 * np.finfo(float).eps * np.sqrt(n)


@pytest.mark.parametrize("e", [-100, -40, 0, 40, 100])
def test_small_factorization_is_the_same_at_every_power_of_two(e: int) -> None:
    k = _kernels(100)["rank3"]
    w0, v0, e0 = _core.sym_eigh_f64_f64(k, 0.0)
    w, v, es = _core.sym_eigh_f64_f64(np.ldexp(k, e), 0.0)
    assert es == e0 + e
    assert np.array_equal(w, w0) and np.array_equal(v, v0)


def test_small_factorization_float32() -> None:
    k = _kernels(80)["rbf"].astype(np.float32)
    w, v, e = _core.sym_eigh_f32_f32(k, 0.0)
    w = np.ldexp(w, e)
    k64 = k.astype(np.float64)
    norm = np.abs(np.linalg.eigvalsh(k64)).max()
    assert np.abs(w - np.linalg.eigvalsh(k64)).max() <= 1e-5 * norm
    v = v.astype(np.float64)
    assert np.abs(v.T @ v - np.eye(80)).max() <= 1e-5
