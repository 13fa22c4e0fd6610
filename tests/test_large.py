"""Large sizes (run with ``pytest --runslow``): a realistic NTK at N = 2500 against
independent float64 formulas written with numpy.linalg.eigh and scipy.linalg.cho_solve."""

import numpy as np
import pytest
import scipy.linalg as sl

import tangentflow as tf
from tangentflow.kernels import fully_connected

pytestmark = pytest.mark.slow


def test_realistic_ntk_at_n2500():
    rng = np.random.default_rng(0)
    n, m, r = 2500, 300, 10
    x = rng.standard_normal((n + m, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = fully_connected(x, hidden_layers=3, get="ntk")
    kdd, ktd = k[:n, :n], k[n:, :n]
    y = rng.standard_normal((n, r))
    ts = np.logspace(-1, 5, 12)
    p = tf.Predictor(kdd, y, learning_rate=0.5)
    out = p.at(ts, k_test_train=ktd)
    w, v = np.linalg.eigh(kdd)
    z = v.T @ (-y)
    for i, t in enumerate(ts):
        e = np.exp(-w * 0.5 * t / y.size)
        want_train = y + v @ (e[:, None] * z)
        want_test = -(ktd @ v) @ (((1 - e) / w)[:, None] * z)
        scale = max(1.0, np.abs(want_test).max())
        assert np.abs(out.train[i] - want_train).max() <= 1e-9 * max(1.0, np.abs(y).max())
        assert np.abs(out.test[i] - want_test).max() <= 1e-9 * scale
    inf = tf.Predictor(kdd, y).at(None, k_test_train=ktd)
    c = sl.cho_factor(kdd, lower=True)
    assert np.abs(inf.test - ktd @ sl.cho_solve(c, y)).max() <= 1e-9 * np.abs(inf.test).max()
    assert p.factorizations == 1
