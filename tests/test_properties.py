"""Hypothesis property tests over shapes, trace axes and times."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tangentflow as tf

from reference import mse_expm


def _problem(n, m, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + m, 3))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-d2 / 2) + 0.1 * np.eye(n + m)
    return k[:n, :n], k[n:, :n], rng


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 5),
    extra=st.lists(st.integers(1, 3), max_size=2),
    times=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=4),
    lr=st.floats(0.01, 10),
    reg=st.sampled_from([0.0, 1e-3, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_and_times_match_expm(n, m, extra, times, lr, reg, seed):
    k, kte, rng = _problem(n, m, seed)
    y = rng.normal(size=(n, *extra))
    f0 = rng.normal(size=y.shape)
    g0 = rng.normal(size=(m, *extra))
    ts = np.array(times)
    out = tf.Predictor(k, y, learning_rate=lr, diag_reg=reg).at(
        ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte
    )
    assert out.train.shape == ts.shape + y.shape
    assert out.test.shape == ts.shape + g0.shape
    r = int(np.prod(extra)) if extra else 1
    lam = reg * np.trace(k) / n
    for i, t in enumerate(ts):
        tr, te = mse_expm(k, y.reshape(n, r), f0.reshape(n, r), t, lr, lam, kte, g0.reshape(m, r))
        scale = max(1.0, np.abs(tr).max(), np.abs(te).max())
        assert np.abs(out.train[i].reshape(n, r) - tr).max() <= 1e-9 * scale
        assert np.abs(out.test[i].reshape(m, r) - te).max() <= 1e-9 * scale
        assert np.all(np.isfinite(out.train)) and np.all(np.isfinite(out.test))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 10),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_time_array_shapes_and_stacking(n, shape, seed):
    k, kte, rng = _problem(n, 2, seed)
    y = rng.normal(size=(n, 2))
    ts = rng.uniform(0, 50, size=shape)
    p = tf.Predictor(k, y)
    out = p.at(ts, k_test_train=kte)
    assert out.train.shape == shape + y.shape
    for idx in np.ndindex(shape):
        one = p.at(ts[idx], k_test_train=kte)
        np.testing.assert_allclose(out.test[idx], one.test, rtol=0, atol=1e-12)
