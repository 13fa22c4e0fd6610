"""Predictor with ODE losses and momentum, against solve_ivp and the closed forms."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import tangentflow as tf

from conftest import rbf_problem


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture
def onehot():
    k, kte, _, _, f0, g0 = rbf_problem(25, 6, 3, seed=11)
    rng = np.random.default_rng(11)
    y = np.eye(3)[rng.integers(0, 3, size=25)]
    return k, kte, y, f0, g0


def mse_grad(fx, y):
    return (fx - y) / fx.size


@pytest.mark.parametrize("momentum", [None, 0.0, 0.6, 0.95])
def test_mse_ode_matches_closed_form(onehot, momentum):
    k, kte, y, f0, g0 = onehot
    ts = np.array([4.0, 0.0, 60.0, 1.0])  # unsorted on purpose
    kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    a = tf.Predictor(k, y, learning_rate=0.7, momentum=momentum).at(ts, **kw)
    b = tf.Predictor(k, y, learning_rate=0.7, momentum=momentum, loss=mse_grad).at(ts, **kw)
    assert rel(b.train, a.train) < 1e-6 and rel(b.test, a.test) < 1e-6
    assert np.array_equal(b.train[1], f0) and np.array_equal(b.test[1], g0)


def _ce_rhs(k, kte, y, n, momentum=None, lr=1.0):
    d, r = y.shape

    def grad(f):
        z = f - f.max(-1, keepdims=True)
        s = np.exp(z)
        s /= s.sum(-1, keepdims=True)
        return (s * y.sum(-1, keepdims=True) - y) / n

    def rhs(_, state):
        if momentum is None:
            f = state[: d * r].reshape(d, r)
            g = grad(f)
            return np.concatenate([(-k @ g).ravel(), (-kte @ g).ravel()])
        c = (1 - momentum) / np.sqrt(lr)
        m = kte.shape[0]
        f = state[: d * r].reshape(d, r)
        q = state[d * r : 2 * d * r].reshape(d, r)
        qt = state[2 * d * r + m * r :].reshape(m, r)
        g = grad(f)
        return np.concatenate(
            [q.ravel(), (-k @ g - c * q).ravel(), qt.ravel(), (-kte @ g - c * qt).ravel()]
        )

    return rhs


@pytest.mark.parametrize("momentum", [None, 0.5])
def test_cross_entropy_matches_solve_ivp(onehot, momentum):
    k, kte, y, f0, g0 = onehot
    lr = 0.8
    ts = np.array([0.5, 5.0, 40.0])
    out = tf.Predictor(k, y, learning_rate=lr, loss="cross_entropy", momentum=momentum).at(
        ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte
    )
    d, r = y.shape
    m = kte.shape[0]
    scale = lr if momentum is None else np.sqrt(lr)
    if momentum is None:
        y0 = np.concatenate([f0.ravel(), g0.ravel()])
    else:
        y0 = np.concatenate([f0.ravel(), np.zeros(d * r), g0.ravel(), np.zeros(m * r)])
    sol = solve_ivp(
        _ce_rhs(k, kte, y, y.size, momentum, lr),
        (0, ts[-1] * scale),
        y0,
        t_eval=ts * scale,
        rtol=1e-12,
        atol=1e-12,
        method="DOP853",
    )
    for i in range(len(ts)):
        st = sol.y[:, i]
        ftr = st[: d * r].reshape(d, r)
        off = d * r if momentum is None else 2 * d * r
        fte = st[off : off + m * r].reshape(m, r)
        assert rel(out.train[i], ftr) < 1e-6
        assert rel(out.test[i], fte) < 1e-6


def test_cross_entropy_other_layouts_use_the_same_loss(onehot):
    k, kte, y, f0, _ = onehot
    # trace_axes=() with an (N, N, C, C) kernel k ⊗ I equals the traced problem
    c = y.shape[1]
    k4 = np.einsum("ij,ab->iajb", k, np.eye(c)).transpose(0, 2, 1, 3)
    a = tf.Predictor(k, y, loss="cross_entropy").at(3.0, fx_train_0=f0)
    b = tf.Predictor(k4, y, loss="cross_entropy", trace_axes=()).at(3.0, fx_train_0=f0)
    assert rel(b.train, a.train) < 1e-6


def test_converged_limit_and_errors(onehot):
    k, kte, y, f0, _ = onehot
    with pytest.raises(ValueError, match="converge_tol"):
        tf.Predictor(k, y, loss="cross_entropy").at(None)
    p = tf.Predictor(k, y, loss=mse_grad, converge_tol=1e-8)
    out = p.at(None, fx_train_0=f0, k_test_train=kte)
    ref = tf.Predictor(k, y).at(None, fx_train_0=f0, k_test_train=kte)
    # stopping at max|df/dτ| <= tol leaves a residual of about tol·n/μ_min
    assert rel(out.train, ref.train) < 1e-4 and rel(out.test, ref.test) < 1e-4

    def bad(fx, yy):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tf.Predictor(k, y, loss=bad).at(1.0)

    def wrong_shape(fx, yy):
        return np.zeros(3)

    with pytest.raises(ValueError, match="gradient"):
        tf.Predictor(k, y, loss=wrong_shape).at(1.0)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.99])
def test_momentum_closed_form_matches_high_accuracy_ode(onehot, momentum):
    # The heavy-ball flow (docs/numerics.md §7) integrated by DOP853 at rtol = atol = 1e-12: the
    # kernel's spectrum spans over-, under- and near-critically damped modes.
    k, kte, y, f0, g0 = onehot
    lr = 0.3
    d, r = y.shape
    m = kte.shape[0]
    c = (1 - momentum) / np.sqrt(lr)
    n = y.size

    def rhs(_, s):
        f = s[: d * r].reshape(d, r)
        q = s[d * r : 2 * d * r].reshape(d, r)
        qt = s[2 * d * r + m * r :].reshape(m, r)
        g = (f - y) / n
        return np.concatenate(
            [q.ravel(), (-k @ g - c * q).ravel(), qt.ravel(), (-kte @ g - c * qt).ravel()]
        )

    ts = np.array([0.7, 6.0, 45.0])
    y0 = np.concatenate([f0.ravel(), np.zeros(d * r), g0.ravel(), np.zeros(m * r)])
    sol = solve_ivp(
        rhs,
        (0, ts[-1] * np.sqrt(lr)),
        y0,
        t_eval=ts * np.sqrt(lr),
        rtol=1e-12,
        atol=1e-12,
        method="DOP853",
    )
    out = tf.Predictor(k, y, learning_rate=lr, momentum=momentum).at(
        ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte
    )
    for i in range(len(ts)):
        s = sol.y[:, i]
        assert rel(out.train[i], s[: d * r].reshape(d, r)) < 1e-8
        assert rel(out.test[i], s[2 * d * r : 2 * d * r + m * r].reshape(m, r)) < 1e-8
