"""The problems ``tangentflow bench`` times: an analytic ReLU NTK of random unit-norm
inputs, its targets and initial outputs, and a log grid of times."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["N_OUTPUTS", "D_INPUT", "HIDDEN_LAYERS", "make_inputs", "times"]

N_OUTPUTS = 10
D_INPUT = 64
HIDDEN_LAYERS = 3

FloatArray = npt.NDArray[np.float64]


def _relu_ntk_numpy(x1: FloatArray, x2: FloatArray, hidden_layers: int) -> FloatArray:
    """Analytic ReLU NTK (arc-cosine recursion), NumPy fallback of tangentflow.kernels."""
    d = x1.shape[1]
    k = x1 @ x2.T / d
    q1 = np.einsum("ij,ij->i", x1, x1) / d
    q2 = np.einsum("ij,ij->i", x2, x2) / d
    theta = k.copy()
    for _ in range(hidden_layers):
        s = np.sqrt(np.outer(q1, q2))
        c = np.clip(k / s, -1.0, 1.0)
        a = np.arccos(c)
        k = s * (np.sqrt(1.0 - c * c) + (np.pi - a) * c) / (2 * np.pi)
        theta = k + (np.pi - a) / (2 * np.pi) * theta
        q1, q2 = q1 / 2, q2 / 2
    out: FloatArray = theta
    return out


def _ntk(x1: FloatArray, x2: FloatArray | None = None) -> Any:
    try:
        from ..kernels import fully_connected
    except ImportError:
        return _relu_ntk_numpy(x1, x1 if x2 is None else x2, HIDDEN_LAYERS)
    return fully_connected(x1, x2, hidden_layers=HIDDEN_LAYERS, get="ntk")


def make_inputs(n: int, m: int, r: int = N_OUTPUTS, seed: int = 0) -> dict[str, FloatArray]:
    """A realistic NTK-like problem: kernel, test kernel, targets, initial outputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, D_INPUT))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return {
        "k": np.ascontiguousarray(_ntk(x[:n])),
        "k_te": np.ascontiguousarray(_ntk(x[n:], x[:n])),
        "y": rng.standard_normal((n, r)),
        "f0": 0.1 * rng.standard_normal((n, r)),
        "g0": 0.1 * rng.standard_normal((m, r)),
    }


def times(k: FloatArray, n_times: int, n_outputs: int, seed: int = 0) -> FloatArray:
    """A log grid spanning the dynamics: from before the fastest mode moves to after the
    slowest has relaxed (times in steps at learning rate 1, n = N·R)."""
    w_max = float(np.trace(k))  # >= μ_max, cheap
    n = k.shape[0] * n_outputs
    ts = np.geomspace(1e-2 * n / w_max, 1e6 * n / w_max, n_times)
    jitter = np.random.default_rng(seed).uniform(0.9, 1.1, n_times)
    out: FloatArray = ts * jitter
    return out
