"""Predictor (MSE closed forms) against independent references."""

import math
import pickle
import warnings

import numpy as np
import pytest

import tangentflow as tf

from conftest import rbf_problem, with_spectrum
from reference import mse_expm

TOL = 1e-9


def close(a, b, tol=TOL):
    scale = max(1.0, float(np.max(np.abs(b))))
    err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    assert err <= tol * scale, f"max err {err:.3e} > {tol:.1e}·{scale:.3g}"


@pytest.mark.parametrize("lr", [1.0, 0.37])
@pytest.mark.parametrize("reg,absolute", [(0.0, False), (0.1, False), (0.05, True)])
def test_matches_expm_at_many_times(problem, lr, reg, absolute):
    k, kte, _, y, f0, g0 = problem
    p = tf.Predictor(k, y, learning_rate=lr, diag_reg=reg, diag_reg_absolute_scale=absolute)
    ts = np.array([0.0, 0.01, 1.0, 30.0, 700.0, np.inf])
    out = p.at(ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    assert out.train.shape == (6,) + y.shape and out.test.shape == (6,) + g0.shape
    lam = reg if absolute else reg * np.trace(k) / len(k)
    for i, t in enumerate(ts):
        tr, te = mse_expm(k, y, f0, t, lr, lam, kte, g0)
        close(out.train[i], tr)
        close(out.test[i], te)
    assert p.factorizations == 1


def test_t_zero_is_exact(problem):
    k, kte, _, y, f0, g0 = problem
    out = tf.Predictor(k, y).at(0.0, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    assert np.array_equal(out.train, f0) and np.array_equal(out.test, g0)


def test_array_of_times_equals_stacked_scalars(problem):
    k, kte, _, y, f0, g0 = problem
    p = tf.Predictor(k, y, learning_rate=0.5)
    ts = np.array([[0.0, 2.0, 5.0], [11.0, 1e3, 3.0]])
    out = p.at(ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    assert out.train.shape == (2, 3) + y.shape and out.test.shape == (2, 3) + g0.shape
    for idx in np.ndindex(ts.shape):
        one = p.at(float(ts[idx]), fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
        close(out.train[idx], one.train, 1e-13)
        close(out.test[idx], one.test, 1e-13)


def test_none_inf_and_large_t_agree(problem):
    k, kte, _, y, f0, g0 = problem
    kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    p = tf.Predictor(k, y, learning_rate=0.3)
    a = p.at(None, **kw)  # Cholesky fast path (nothing cached yet)
    assert p.factorizations == 0
    b = p.at(np.inf, **kw)
    assert p.factorizations == 0
    mu_min = np.linalg.eigvalsh(k)[0]
    c = p.at(50 * y.size / (0.3 * mu_min), **kw)  # spectral path
    assert p.factorizations == 1
    d = p.at(None, **kw)  # spectral path now that the eigenbasis is cached
    for x in (b, c, d):
        close(x.train, a.train)
        close(x.test, a.test)
    # reference: plain solve
    close(a.test, g0 + kte @ np.linalg.solve(k, y - f0))
    close(a.train, y)


def test_constructed_spectrum_with_zero_tiny_and_negative_modes():
    rng = np.random.default_rng(3)
    lams = np.array([-1e-12, 0.0, 1e-14, 1e-3, 0.5, 1.0, 2.0, 7.0])
    k, u = with_spectrum(lams, rng)
    y = rng.normal(size=(8, 2))
    f0 = rng.normal(size=(8, 2))
    # test points in the span of the retained modes: k_td = C · diag(λ) Uᵀ (PSD joint kernel)
    c = rng.normal(size=(3, 8))
    lam_plus = np.where(lams > 1e-10, lams, 0.0)
    kte = c @ (lam_plus[:, None] * u.T)
    p = tf.Predictor(k, y)
    for t in [0.0, 3.0, 1e12, None]:
        out = p.at(t, fx_train_0=f0, k_test_train=kte)
        assert np.all(np.isfinite(out.train)) and np.all(np.isfinite(out.test))
        tt = np.inf if t is None else t
        e = np.where(lams > 1e-10, np.exp(-lam_plus * tt / y.size) if np.isfinite(tt) else 0.0, 1.0)
        z = u.T @ (f0 - y)
        close(out.train, y + u @ (e[:, None] * z))
        phi = np.where(
            lams > 1e-10,
            (1 - np.where(np.isfinite(tt), e, 0.0)) / np.where(lams > 1e-10, lams, 1.0),
            0.0,
        )
        close(out.test, -(kte @ u) @ (phi[:, None] * z))
    d = p.diagnostics()
    assert d.n_cut == 3 and abs(d.max_cut_magnitude - 1e-12) < 1e-14


def test_condition_1e12_against_analytic():
    rng = np.random.default_rng(4)
    lams = np.logspace(-12, 0, 30)
    k, u = with_spectrum(lams, rng)
    y = rng.normal(size=30)
    p = tf.Predictor(k, y)
    ts = np.array([1.0, 1e6, 1e12, 1e14])
    out = p.at(ts).train
    z = u.T @ (-y)
    for i, t in enumerate(ts):
        e = np.exp(-lams * t / 30)
        # e^{-Ks} moves by s·‖δK‖ under a round-off perturbation δK of the stored kernel
        tol = max(1e-9, 10 * np.finfo(float).eps * t / 30)
        close(out[i], y + u @ (e * z), tol)
    assert np.all(np.isfinite(out))


def test_non_psd_kernel_warns():
    rng = np.random.default_rng(5)
    k, _ = with_spectrum([-1e-3, 0.5, 1.0, 2.0], rng)
    with pytest.warns(tf.NumericalWarning, match="non-positive-semi-definite"):
        out = tf.Predictor(k, np.ones(4)).at(5.0)
    assert np.all(np.isfinite(out.train))
    # slightly negative (round-off sized) eigenvalues are cut silently
    k2, _ = with_spectrum([-1e-13, 0.5, 1.0, 2.0], rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tf.Predictor(k2, np.ones(4)).at(5.0)


def test_float32_inputs_follow_precision_policy(problem):
    k, kte, _, y, f0, g0 = problem
    k32, kte32, y32 = k.astype(np.float32), kte.astype(np.float32), y.astype(np.float32)
    p = tf.Predictor(k32, y32)
    out = p.at(4.0, k_test_train=kte32)
    assert out.train.dtype == np.float32 and out.test.dtype == np.float32
    # equal to the float64 computation on the rounded inputs
    ref = tf.Predictor(k32.astype(np.float64), y32.astype(np.float64)).at(
        4.0, k_test_train=kte32.astype(np.float64)
    )
    close(out.train, ref.train.astype(np.float32), 1e-6)
    close(out.test, ref.test.astype(np.float32), 1e-6)
    # and close to the float64-input result (the kernel is well conditioned)
    full = tf.Predictor(k, y).at(4.0, k_test_train=kte)
    close(out.test, full.test, 5e-3)
    # precision="float32" computes in single precision
    p32 = tf.Predictor(k, y, precision="float32")
    o32 = p32.at(4.0, k_test_train=kte)
    assert o32.train.dtype == np.float64
    close(o32.test, full.test, 1e-3)


def test_trace_axes_layouts():
    rng = np.random.default_rng(6)
    n, m, c = 6, 4, 3
    k, kte, _, y2, f0, _ = rbf_problem(n, m, c, seed=6)
    # y (N,) and (N, K1, K2) with a 2-D kernel
    y1 = y2[:, 0]
    o1 = tf.Predictor(k, y1).at(2.0, k_test_train=kte)
    assert o1.train.shape == (2, n)[1:] and o1.test.shape == (m,)
    y3 = rng.normal(size=(n, 2, 5))
    o3 = tf.Predictor(k, y3).at([1.0, 2.0], k_test_train=kte)
    assert o3.train.shape == (2, n, 2, 5) and o3.test.shape == (2, m, 2, 5)
    tr, te = mse_expm(k, y3.reshape(n, 10), np.zeros((n, 10)), 2.0, kte=kte, g0=np.zeros((m, 10)))
    close(o3.train[1], tr.reshape(n, 2, 5))
    close(o3.test[1], te.reshape(m, 2, 5))
    # trace_axes=() with an (N, N, K, K) kernel built as k ⊗ B: equals the flattened problem
    b = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.0]])
    k4 = np.einsum("ij,ab->iajb", k, b).transpose(0, 2, 1, 3)  # interleaved (N, N, K, K)
    kte4 = np.einsum("ij,ab->iajb", kte, b).transpose(0, 2, 1, 3)
    p4 = tf.Predictor(k4, y2, trace_axes=())
    o4 = p4.at(3.0, fx_train_0=f0, k_test_train=kte4)
    kf = np.kron(k, b)
    ktef = np.kron(kte, b)
    tr, te = mse_expm(
        kf, y2.reshape(-1, 1), f0.reshape(-1, 1), 3.0, kte=ktef, g0=np.zeros((m * c, 1))
    )
    close(o4.train, tr.reshape(n, c))
    close(o4.test, te.reshape(m, c))
    # trace_axes=(-1,) explicitly equals the default for a 2-D kernel
    o5 = tf.Predictor(k, y2, trace_axes=(-1,)).at(3.0, fx_train_0=f0, k_test_train=kte)
    o6 = tf.Predictor(k, y2).at(3.0, fx_train_0=f0, k_test_train=kte)
    close(o5.train, o6.train, 0)
    # traced example axis: (C, C) kernel over the class axis, test must match N
    p7 = tf.Predictor(b, y2, trace_axes=(0,))
    o7 = p7.at(1.5, fx_train_0=f0, k_test_train=b)
    tr, te = mse_expm(b, y2.T, f0.T, 1.5, kte=b, g0=np.zeros((c, n)))
    close(o7.train, tr.T)
    close(o7.test, te.T)


def test_with_params_shares_one_factorization(problem):
    k, kte, _, y, f0, g0 = problem
    p = tf.Predictor(k, y)
    ts = np.array([0.5, 5.0, np.inf])
    runs = []
    for lr in (0.5, 2.0):
        for reg in (0.0, 1e-3, 0.3):
            q = p.with_params(learning_rate=lr, diag_reg=reg)
            runs.append((lr, reg, q.at(ts, fx_train_0=f0, k_test_train=kte)))
    assert p.factorizations == 1
    for lr, reg, out in runs:
        ref = tf.Predictor(k, y, learning_rate=lr, diag_reg=reg).at(
            ts, fx_train_0=f0, k_test_train=kte
        )
        close(out.train, ref.train)
        close(out.test, ref.test)
    # made before the first call, shares too
    p2 = tf.Predictor(k, y)
    q2 = p2.with_params(diag_reg=0.1)
    q2.at(1.0)
    p2.at(1.0)
    assert p2.factorizations == 1 and q2.factorizations == 1


def test_test_set_reuses_work_and_matches(problem):
    k, kte, _, y, f0, g0 = problem
    p = tf.Predictor(k, y)
    s = p.test_set(kte, fx_test_0=g0)
    a = s.at([1.0, 3.0], fx_train_0=f0)
    b = p.at([1.0, 3.0], fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    close(a.train, b.train, 1e-13)
    close(a.test, b.test, 1e-12)
    c = s.at(7.0, fx_train_0=None)
    assert c.train is None and c.test.shape == g0.shape
    assert p.factorizations == 1


def test_per_call_targets(problem):
    k, _, _, y, _, _ = problem
    p = tf.Predictor(k)
    a = p.at(2.0, y_train=y)
    b = p.at(2.0, y_train=2 * y)
    close(b.train, 2 * a.train)
    assert p.factorizations == 1


def test_train_loss_matches_outputs(problem):
    k, _, _, y, f0, _ = problem
    p = tf.Predictor(k, y, learning_rate=0.8, diag_reg=0.01)
    ts = np.array([0.0, 1.0, 50.0, np.inf])
    loss = p.train_loss(ts, fx_train_0=f0)
    out = p.at(ts, fx_train_0=f0).train
    want = ((out - y) ** 2).sum(axis=(1, 2)) / (2 * y.size)
    close(loss, want, 1e-12)


def test_diagnostics_values(problem):
    k, _, _, y, _, _ = problem
    p = tf.Predictor(k, y, learning_rate=0.5, diag_reg=0.01, diag_reg_absolute_scale=True)
    d = p.diagnostics()
    mu = np.linalg.eigvalsh(k) + 0.01
    assert math.isclose(d.min_eigenvalue, mu[0], rel_tol=1e-9)
    assert math.isclose(d.max_eigenvalue, mu[-1], rel_tol=1e-12)
    assert d.n_cut == 0 and d.psd_correction == 0.0
    assert math.isclose(d.condition_number, mu[-1] / mu[0], rel_tol=1e-9)
    assert math.isclose(d.max_learning_rate, 2 * y.size / (mu[-1] + 1e-12), rel_tol=1e-12)
    assert math.isclose(d.time_to_1pct, y.size * math.log(100) / (0.5 * mu[0]), rel_tol=1e-9)
    close(p.eigenvalues, mu)


def test_pickle_keeps_factorization(problem):
    k, kte, _, y, _, _ = problem
    p = tf.Predictor(k, y, diag_reg=0.01).factorize()
    q = pickle.loads(pickle.dumps(p))
    assert q.factorizations == 1
    a, b = p.at(3.0, k_test_train=kte), q.at(3.0, k_test_train=kte)
    assert q.factorizations == 1
    close(a.test, b.test, 0)


def test_max_learning_rate(problem):
    k, _, _, y, _, _ = problem
    mu = np.linalg.eigvalsh(k)[-1]
    assert math.isclose(tf.max_learning_rate(k), 2 * len(k) / (mu + 1e-12), rel_tol=1e-12)
    assert math.isclose(
        tf.max_learning_rate(k, y_train_size=y.size, momentum=0.9),
        2 * 1.9 * y.size / (mu + 1e-12),
        rel_tol=1e-12,
    )


def test_gd_steps_match_explicit_iteration(problem):
    k, kte, _, y, f0, g0 = problem
    n = y.size
    lr = 0.9 * tf.max_learning_rate(k, y.size)
    p = tf.Predictor(k, y, learning_rate=lr, dynamics="gd")
    out = p.at(np.array([0, 1, 7, 40]), fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    f, g = f0.copy(), g0.copy()
    for step in range(41):
        if step in (0, 1, 7, 40):
            i = [0, 1, 7, 40].index(step)
            close(out.train[i], f, 1e-10)
            close(out.test[i], g, 1e-10)
        r = f - y
        f, g = f - lr / n * k @ r, g - lr / n * kte @ r
    with pytest.raises(ValueError, match="integers"):
        p.at(1.5)


def test_xp_backend_on_numpy_matches_rust_core(problem):
    k, kte, _, y, f0, g0 = problem
    ts = np.array([0.0, 1.0, 30.0, np.inf])
    for kw in ({}, {"diag_reg": 0.2}, {"dynamics": "gd", "learning_rate": 5.0}):
        a = tf.Predictor(k, y, **kw).at(ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
        b = tf.Predictor(k, y, _backend="numpy", **kw).at(
            ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte
        )
        close(a.train, b.train, 1e-11)
        close(a.test, b.test, 1e-11)
    # t = None through both Cholesky implementations
    a = tf.Predictor(k, y).at(None, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    b = tf.Predictor(k, y, _backend="numpy").at(None, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    close(a.test, b.test, 1e-10)


def test_inputs_not_mutated(problem):
    k, kte, _, y, f0, g0 = problem
    copies = [a.copy() for a in (k, kte, y, f0, g0)]
    tf.Predictor(k, y, diag_reg=0.1).at(
        [1.0, None and 2.0 or 3.0], fx_train_0=f0, fx_test_0=g0, k_test_train=kte
    )
    tf.Predictor(k, y).at(None, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    for a, b in zip((k, kte, y, f0, g0), copies):
        assert np.array_equal(a, b)


def test_threads_setting():
    tf.set_num_threads(1)
    assert tf.get_num_threads() == 1
    tf.set_num_threads(2)
    assert tf.get_num_threads() == 2
    tf.set_num_threads(0)
    with pytest.raises(ValueError, match="n must be"):
        tf.set_num_threads(-1)


def test_singular_duplicate_inputs_min_norm_limit():
    # duplicated input with different labels: unreachable targets; the limit is f0 + P(Y - f0)
    k, kte, _, y, _, _ = rbf_problem(10, 3, 0, seed=8)
    k[9, :], k[:, 9] = k[8, :], k[:, 8]
    k[9, 9] = k[8, 8]
    kte[:, 9] = kte[:, 8]
    y = y.copy()
    y[9] = y[8] + 1.0
    out = tf.Predictor(k, y).at(None, k_test_train=kte)
    lstsq = np.linalg.lstsq(k, y, rcond=1e-12)[0]
    close(out.test, kte @ lstsq, 1e-7)
    proj = k @ np.linalg.pinv(k, rcond=1e-12)
    close(out.train, proj @ y, 1e-7)
    assert abs(out.train[9] - out.train[8]) < 1e-8


def test_diag_reg_sweep_through_test_set_matches_fresh_predictors(problem):
    k, kte, _, y, f0, g0 = problem
    p = tf.Predictor(k, y, learning_rate=0.6)
    s = p.test_set(kte, fx_test_0=g0)
    ts = np.array([0.0, 0.5, 20.0, 3e3, np.inf])
    regs = [0.05, 0.0, 1e-4, 0.3, 0.3, 2.0]  # out of order: the memo restarts below λ_b
    for reg in regs:
        out = s.with_params(diag_reg=reg).at(ts, fx_train_0=f0)
        ref = tf.Predictor(k, y, learning_rate=0.6, diag_reg=reg).at(
            ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte
        )
        close(out.train, ref.train)
        close(out.test, ref.test)
        assert np.array_equal(out.train[0], f0) and np.array_equal(out.test[0], g0)
    assert p.factorizations == 1
    # other targets or times are not served from the memo
    out = s.with_params(diag_reg=0.4).at(ts, y_train=2 * y, fx_train_0=f0)
    ref = tf.Predictor(k, 2 * y, learning_rate=0.6, diag_reg=0.4).at(ts, fx_train_0=f0)
    close(out.train, ref.train)


def test_sweep_memo_with_cut_modes():
    rng = np.random.default_rng(9)
    k, _ = with_spectrum([0.0, 0.0, 0.2, 1.0, 3.0], rng)
    y = rng.normal(size=5)
    f0 = rng.normal(size=5)
    p = tf.Predictor(k, y)
    for reg in (1e-3, 1e-2):
        out = p.with_params(diag_reg=reg).at([1.0, 10.0], fx_train_0=f0).train
        ref = tf.Predictor(k, y, diag_reg=reg).at([1.0, 10.0], fx_train_0=f0).train
        close(out, ref)


@pytest.mark.parametrize(
    "y_shape,trace_axes,kdd_shape,ktd_shape,test_shape",
    [
        ((4, 3), (-1,), (4, 4), (5, 4), (5, 3)),
        ((4, 3), (), (4, 4, 3, 3), (5, 4, 3, 3), (5, 3)),
        ((4, 3), (0,), (3, 3), (3, 3), (4, 3)),
        ((4, 8, 8, 10), (-1,), (4, 4, 8, 8, 8, 8), (5, 4, 8, 8, 8, 8), (5, 8, 8, 10)),
        ((4, 3), (0, 1), (), (), (4, 3)),
    ],
)
def test_shape_contract_of_trace_axes_examples(
    y_shape, trace_axes, kdd_shape, ktd_shape, test_shape
):
    rng = np.random.default_rng(12)
    d = int(np.prod(kdd_shape[0::2])) if kdd_shape else 1
    dt = int(np.prod(ktd_shape[0::2])) if ktd_shape else 1
    x = rng.normal(size=(d + dt, 3))
    kall = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1)) + 0.1 * np.eye(d + dt)
    kdd_flat, ktd_flat = kall[:d, :d], kall[d:, :d]
    # un-flatten into the pair-interleaved layout
    nd = len(kdd_shape) // 2
    perm = [i // 2 + (nd if i % 2 else 0) for i in range(2 * nd)]
    kdd = (
        kdd_flat.reshape(kdd_shape[0::2] + kdd_shape[1::2]).transpose(perm)
        if nd
        else np.array(kdd_flat[0, 0])
    )
    ktd = (
        ktd_flat.reshape(ktd_shape[0::2] + ktd_shape[1::2]).transpose(perm)
        if nd
        else np.array(ktd_flat[0, 0])
    )
    y = rng.normal(size=y_shape)
    out = tf.Predictor(kdd, y, trace_axes=trace_axes).at([1.0, 2.0], k_test_train=ktd)
    assert out.train.shape == (2,) + y_shape
    assert out.test.shape == (2,) + test_shape
    # against the flattened problem
    order = [a for a in range(len(y_shape)) if a not in [t % len(y_shape) for t in trace_axes]]
    traced = [a for a in range(len(y_shape)) if a not in order]
    yf = np.transpose(y, order + traced).reshape(d, -1)
    tr, te = mse_expm(
        kdd_flat, yf, np.zeros_like(yf), 2.0, kte=ktd_flat, g0=np.zeros((dt, yf.shape[1]))
    )
    got = np.transpose(out.train[1], order + traced).reshape(d, -1)
    close(got, tr)
    got_te = np.transpose(out.test[1], order + traced).reshape(dt, -1)
    close(got_te, te)


def test_all_inf_and_empty_time_arrays_before_factorization(problem):
    k, kte, _, y, f0, g0 = problem
    kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    out = tf.Predictor(k, y).at([np.inf, np.inf], **kw)  # Cholesky path, two slices
    one = tf.Predictor(k, y).at(None, **kw)
    assert out.train.shape == (2,) + y.shape and out.test.shape == (2,) + g0.shape
    close(out.test[1], one.test, 0)
    out = tf.Predictor(k, y).at(np.full((2, 1), np.inf), **kw)
    assert out.test.shape == (2, 1) + g0.shape
    empty = tf.Predictor(k, y).at(np.array([]), **kw)
    assert empty.train.shape == (0,) + y.shape and empty.test.shape == (0,) + g0.shape


def test_empty_test_set_and_empty_targets(problem):
    k, _, _, y, _, _ = problem
    for backend in (None, "numpy"):
        p = tf.Predictor(k, y, _backend=backend)
        out = p.at([1.0, 2.0], k_test_train=np.zeros((0, len(k))))
        assert out.test.shape == (2, 0, y.shape[1])
        out = p.test_set(np.zeros((0, len(k)))).at(1.0)
        assert out.test.shape == (0, y.shape[1])
        with pytest.raises(ValueError, match="y_train is empty"):
            p.at(1.0, y_train=np.zeros((len(k), 0)))
