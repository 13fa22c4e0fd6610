"""Ensemble, GaussianProcess and Gaussian against independent NumPy/SciPy references.

References re-derive docs/numerics.md §8/§10 with ``scipy.linalg.expm`` and dense solves on the
flattened kernels; tolerances are those of docs/numerics.md §13 (``1e-9 · max(1, max|ref|)``).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg as sl
from scipy.stats import multivariate_normal

import tangentflow as tf
from tangentflow import Ensemble, Gaussian, GaussianProcess, NumericalWarning

TIMES = np.array([0.0, 0.05, 0.7, 3.0, 25.0, np.inf])


def close(a, ref, tol=1e-9):
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(a - ref))) if ref.size else 0.0
    assert err <= tol * scale, f"max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


# -- problems ---------------------------------------------------------------------------------


def _rbf(x, ell):
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d / ell)


def joint_kernels(n, m, k=1, seed=0):
    """Flat joint NNGP and NTK over (n + m) inputs × k outputs, row (i, a) = i·k + a."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, 3))
    s1 = np.eye(k) + 0.3 * np.ones((k, k))
    s2 = np.diag(np.linspace(0.5, 1.5, k))
    nngp = np.kron(_rbf(x, 2.0), s1) + np.kron(0.2 * x @ x.T, s2)
    ntk = np.kron(_rbf(x, 1.0) + 0.3 * _rbf(x, 4.0), s1) + np.kron(0.5 * x @ x.T, s2)
    eye = 0.02 * np.eye((n + m) * k)
    return nngp + eye, 1.5 * ntk + eye


def split(flat, n, k):
    d = n * k
    return flat[:d, :d], flat[d:, :d], flat[d:, d:]


def interleave(flat, n1, n2, k):
    """Flat (n1·k, n2·k) → pair-interleaved (n1, n2, k, k)."""
    return flat.reshape(n1, k, n2, k).transpose(0, 2, 1, 3).copy()


def cov_to_flat(c, m, k):
    """(T, m, m, k, k) → (T, m·k, m·k)."""
    return c.transpose(0, 1, 3, 2, 4).reshape(c.shape[0], m * k, m * k)


def reference(mode, kd, kt, kk, td, tt, y, lr, lam, t):
    """Semantics §10 on flat kernels: returns train/test (mean, cov) at time t."""
    n = y.size
    d = kd.shape[0]
    dyn_dd = td if mode == "ntk" else kd
    dyn_td = tt if mode == "ntk" else kt
    a = dyn_dd + lam * np.eye(d)
    eye = np.eye(d)
    if np.isinf(t):
        e = e2 = np.zeros_like(a)
        g = g2 = np.linalg.inv(a)
    else:
        s = lr * t / n
        e, e2 = sl.expm(-a * s), sl.expm(-2 * a * s)
        g, g2 = np.linalg.solve(a, eye - e), np.linalg.solve(a, eye - e2)
    train_mean = (eye - e) @ y
    test_mean = dyn_td @ g @ y
    if mode == "nngp":
        train_cov = a @ e2
        test_cov = kk - kt @ g2 @ kt.T
    else:
        train_cov = e @ kd @ e
        b = tt @ g
        test_cov = kk - b @ kt.T - kt @ b.T + b @ kd @ b.T
    return train_mean, train_cov, test_mean, test_cov


@pytest.fixture(scope="module")
def prob():
    n, m = 9, 4
    nngp, ntk = joint_kernels(n, m)
    kd, kt, kk = split(nngp, n, 1)
    td, tt, tk = split(ntk, n, 1)
    y = np.random.default_rng(3).standard_normal((n, 2))
    return dict(n=n, m=m, kd=kd, kt=kt, kk=kk, td=td, tt=tt, tk=tk, y=y)


def make(prob, mode, **kw):
    if mode == "ntk":
        return Ensemble(prob["kd"], prob["y"], ntk_train_train=prob["td"], **kw)
    return Ensemble(prob["kd"], prob["y"], **kw)


def tkw(prob, mode):
    if mode == "ntk":
        return dict(
            ntk_test_train=prob["tt"], nngp_test_train=prob["kt"], nngp_test_test=prob["kk"]
        )
    return dict(nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])


# -- closed forms -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
@pytest.mark.parametrize("diag_reg", [0.0, 0.1])
def test_ensemble_matches_expm_reference(prob, mode, diag_reg):
    lr = 0.8
    e = make(prob, mode, learning_rate=lr, diag_reg=diag_reg)
    dyn = prob["td"] if mode == "ntk" else prob["kd"]
    lam = diag_reg * np.trace(dyn) / prob["n"]
    assert e.shift == pytest.approx(lam)
    test = e.at(TIMES, **tkw(prob, mode))
    train = e.at(TIMES)
    assert test.mean.shape == (len(TIMES), prob["m"], 2)
    assert test.covariance.shape == (len(TIMES), prob["m"], prob["m"])
    assert train.mean.shape == (len(TIMES), prob["n"], 2)
    assert train.covariance.shape == (len(TIMES), prob["n"], prob["n"])
    for j, t in enumerate(TIMES):
        trm, trc, tem, tec = reference(
            mode, prob["kd"], prob["kt"], prob["kk"], prob["td"], prob["tt"], prob["y"], lr, lam, t
        )
        close(test.mean[j], tem)
        close(test.covariance[j], tec)
        close(train.mean[j], trm)
        close(train.covariance[j], trc)
    assert e.factorizations == 1


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
def test_trace_axes_empty_full_kernels(mode):
    n, m, k = 6, 3, 2
    nngp, ntk = joint_kernels(n, m, k, seed=5)
    kd, kt, kk = split(nngp, n, k)
    td, tt, _ = split(ntk, n, k)
    y = np.random.default_rng(1).standard_normal((n, k))
    kw = dict(trace_axes=(), learning_rate=1.3, diag_reg=0.05)
    ntk_arg = dict(ntk_train_train=interleave(td, n, n, k)) if mode == "ntk" else {}
    e = Ensemble(interleave(kd, n, n, k), y, **ntk_arg, **kw)
    tk = dict(nngp_test_train=interleave(kt, m, n, k), nngp_test_test=interleave(kk, m, m, k))
    if mode == "ntk":
        tk["ntk_test_train"] = interleave(tt, m, n, k)
    ts = TIMES[1:]
    g = e.at(ts, **tk)
    gt = e.at(ts)
    assert g.mean.shape == (len(ts), m, k)
    assert g.covariance.shape == (len(ts), m, m, k, k)
    assert gt.mean.shape == (len(ts), n, k)
    assert gt.covariance.shape == (len(ts), n, n, k, k)
    lam = 0.05 * np.trace(td if mode == "ntk" else kd) / (n * k)
    for j, t in enumerate(ts):
        trm, trc, tem, tec = reference(mode, kd, kt, kk, td, tt, y.reshape(-1, 1), 1.3, lam, t)
        close(g.mean[j].reshape(-1), tem[:, 0])
        close(cov_to_flat(g.covariance[j : j + 1], m, k)[0], tec)
        close(gt.mean[j].reshape(-1), trm[:, 0])
        close(cov_to_flat(gt.covariance[j : j + 1], n, k)[0], trc)


def test_scalar_time_and_trace_none_multi_axis(prob):
    # y (N, 2, 3) with a 2-D kernel: every axis after the first is traced.
    y = np.random.default_rng(0).standard_normal((prob["n"], 2, 3))
    e = Ensemble(prob["kd"], y)
    g = e.at(1.5, nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
    assert g.mean.shape == (prob["m"], 2, 3)
    assert g.covariance.shape == (prob["m"], prob["m"])
    _, _, tem, tec = reference(
        "nngp", prob["kd"], prob["kt"], prob["kk"], None, None, y.reshape(prob["n"], 6), 1.0, 0, 1.5
    )
    close(g.mean.reshape(prob["m"], 6), tem)
    close(g.covariance, tec)
    # an array of times equals stacked scalar calls
    ts = np.array([[0.5, 2.0], [7.0, np.inf]])
    ga = e.at(ts, nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
    assert ga.mean.shape == (2, 2, prob["m"], 2, 3)
    for idx in np.ndindex(ts.shape):
        gs = e.at(ts[idx], nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
        close(ga.mean[idx], gs.mean, 1e-13)
        close(ga.covariance[idx], gs.covariance, 1e-13)


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
def test_time_zero_is_the_prior(prob, mode):
    e = make(prob, mode, diag_reg=0.2)
    g = e.at(0.0, **tkw(prob, mode))
    assert np.all(g.mean == 0)
    close(g.covariance, prob["kk"], 1e-12)
    gt = e.at(0.0)
    assert np.all(gt.mean == 0)
    if mode == "nngp":
        close(gt.covariance, prob["kd"] + e.shift * np.eye(prob["n"]), 1e-12)
    else:
        close(gt.covariance, prob["kd"], 1e-12)


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
def test_infinite_time_equivalences(prob, mode):
    e = make(prob, mode, learning_rate=0.5)
    mu_min = float(e.eigenvalues[0])
    big = 50 * prob["y"].size / (0.5 * mu_min)
    kw = tkw(prob, mode)
    for train in (False, True):
        a = e.at(None) if train else e.at(None, **kw)
        b = e.at(np.inf) if train else e.at(np.inf, **kw)
        c = e.at(big) if train else e.at(big, **kw)
        close(a.mean, b.mean, 0)
        close(a.covariance, b.covariance, 0)
        close(c.mean, a.mean)
        close(c.covariance, a.covariance)
    assert e.at(None).mean.shape == prob["y"].shape
    # nothing is cut: the converged train mean is Y exactly, and the nngp train cov 0
    np.testing.assert_array_equal(e.at(None).mean, prob["y"])
    if mode == "nngp":
        np.testing.assert_array_equal(e.at(None).covariance, 0.0)


# -- identities of docs/numerics.md §13 ----------------------------------------------------------------


def test_means_depend_only_on_the_dynamics_kernel(prob):
    ntk = make(prob, "ntk", diag_reg=0.1)
    nngp_as_ntk = Ensemble(prob["td"], prob["y"], diag_reg=0.1)
    for t in TIMES:
        close(ntk.at(t).mean, nngp_as_ntk.at(t).mean, 1e-12)
        a = ntk.at(t, ntk_test_train=prob["tt"], compute_cov=False)
        b = nngp_as_ntk.at(t, nngp_test_train=prob["tt"], compute_cov=False)
        assert a.covariance is None and b.covariance is None
        close(a.mean, b.mean, 1e-12)


def test_ntk_covariance_with_theta_equal_k_is_nngp(prob):
    same = Ensemble(prob["kd"], prob["y"], ntk_train_train=prob["kd"])
    nngp = make(prob, "nngp")
    for t in TIMES:
        a = same.at(
            t, ntk_test_train=prob["kt"], nngp_test_train=prob["kt"], nngp_test_test=prob["kk"]
        )
        b = nngp.at(t, nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
        close(a.mean, b.mean, 1e-12)
        close(a.covariance, b.covariance, 1e-10)
        close(same.at(t).covariance, nngp.at(t).covariance, 1e-10)


def test_ntkgp_is_nngp_with_theta(prob):
    gp = GaussianProcess(prob["td"], prob["y"], diag_reg=0.01)
    ens = Ensemble(prob["td"], prob["y"], diag_reg=0.01)
    a = gp.posterior(prob["tt"], prob["tk"])
    b = ens.at(None, nngp_test_train=prob["tt"], nngp_test_test=prob["tk"])
    theta = prob["td"] + gp.shift * np.eye(prob["n"])
    close(a.covariance, prob["tk"] - prob["tt"] @ np.linalg.solve(theta, prob["tt"].T))
    close(a.mean, b.mean)
    close(a.covariance, b.covariance)


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
def test_train_set_as_test_set_equals_shortcut(prob, mode):
    e = make(prob, mode)
    kw = dict(nngp_test_train=prob["kd"], nngp_test_test=prob["kd"])
    if mode == "ntk":
        kw["ntk_test_train"] = prob["td"]
    for t in TIMES:
        a, b = e.at(t, **kw), e.at(t)
        close(a.mean, b.mean)
        close(a.covariance, b.covariance)


@pytest.mark.parametrize("diag_reg", [0.0, 0.05])
def test_gp_posterior_equals_converged_nngp_ensemble(prob, diag_reg):
    gp = GaussianProcess(prob["kd"], prob["y"], diag_reg=diag_reg)
    ens = make(prob, "nngp", diag_reg=diag_reg)
    a = gp.posterior(prob["kt"], prob["kk"])
    b = ens.at(None, nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
    close(a.mean, b.mean)
    close(a.covariance, b.covariance)
    a, b = gp.posterior(), ens.at(None)
    close(a.mean, b.mean)
    close(a.covariance, b.covariance)
    np.testing.assert_array_equal(a.mean, prob["y"])
    # mean only without k_test_test
    c = gp.posterior(prob["kt"])
    assert c.covariance is None
    lam = gp.shift
    ref = prob["kt"] @ np.linalg.solve(prob["kd"] + lam * np.eye(prob["n"]), prob["y"])
    close(c.mean, ref)


def test_gp_cholesky_and_spectral_paths_agree(prob):
    gp = GaussianProcess(prob["kd"], prob["y"], diag_reg=0.01)
    fast = gp.posterior(prob["kt"], prob["kk"])
    assert gp.factorizations == 0  # the Cholesky path took it
    gp.factorize()
    slow = gp.posterior(prob["kt"], prob["kk"])
    close(fast.mean, slow.mean)
    close(fast.covariance, slow.covariance)
    a = prob["kd"] + gp.shift * np.eye(prob["n"])
    close(slow.mean, prob["kt"] @ np.linalg.solve(a, prob["y"]))
    close(slow.covariance, prob["kk"] - prob["kt"] @ np.linalg.solve(a, prob["kt"].T))


@pytest.mark.parametrize("trace_axes", [None, ()])
def test_log_marginal_likelihood(trace_axes):
    n, k = 7, 2
    flat, _ = joint_kernels(n, 0, k, seed=2)
    y = np.random.default_rng(4).standard_normal((n, k))
    if trace_axes is None:
        kern = flat.reshape(n, k, n, k)[:, 0, :, 0]
        gp = GaussianProcess(kern, y, diag_reg=0.1)
        a = kern + gp.shift * np.eye(n)
        ref = sum(multivariate_normal(np.zeros(n), a).logpdf(y[:, c]) for c in range(k))
    else:
        gp = GaussianProcess(interleave(flat, n, n, k), y, diag_reg=0.1, trace_axes=())
        a = flat + gp.shift * np.eye(n * k)
        ref = multivariate_normal(np.zeros(n * k), a).logpdf(y.reshape(-1))
    lml = gp.log_marginal_likelihood()
    assert isinstance(lml, float)
    assert lml == pytest.approx(ref, rel=1e-10, abs=1e-10)


# -- Monte Carlo --------------------------------------------------------------------------------


def test_ntk_ensemble_covariance_by_monte_carlo():
    n, m, lr, t = 3, 2, 1.0, 2.0
    nngp, ntk = joint_kernels(n, m, seed=2)
    kd, kt, kk = split(nngp, n, 1)
    td, tt, _ = split(ntk, n, 1)
    y = np.array([[0.5], [-1.0], [2.0]])
    samples = 200_000
    rng = np.random.default_rng(1234)
    f = rng.standard_normal((samples, n + m)) @ np.linalg.cholesky(nngp).T
    f0, g0 = f[:, :n], f[:, n:]
    s = lr * t / y.size
    e = sl.expm(-td * s)
    b = tt @ np.linalg.solve(td, np.eye(n) - e)
    train = y[:, 0] + (f0 - y[:, 0]) @ e.T
    test = g0 + (y[:, 0] - f0) @ b.T
    ens = Ensemble(kd, y, ntk_train_train=td, learning_rate=lr)
    for emp, g in (
        (test, ens.at(t, ntk_test_train=tt, nngp_test_train=kt, nngp_test_test=kk)),
        (train, ens.at(t)),
    ):
        mean, cov = g.mean[:, 0], g.covariance
        se_mean = np.sqrt(np.diag(cov) / samples)
        assert np.all(np.abs(emp.mean(0) - mean) <= 5 * se_mean + 1e-12)
        emp_cov = np.cov(emp, rowvar=False)
        d = np.diag(cov)
        se_cov = np.sqrt((np.outer(d, d) + cov**2) / samples)
        assert np.all(np.abs(emp_cov - cov) <= 5 * se_cov + 1e-12)


# -- numerical policy ----------------------------------------------------------------------------


def test_singular_kernel_stays_finite():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2))
    x = np.concatenate([x, x[:2]])  # duplicated inputs
    xt = rng.standard_normal((3, 2))
    xa = np.concatenate([x, xt])
    kj = _rbf(xa, 1.5) + 0.1 * xa @ xa.T
    tj = 2 * _rbf(xa, 1.0)
    n = len(x)
    kd, kt, kk = kj[:n, :n], kj[n:, :n], kj[n:, n:]
    td, tt = tj[:n, :n], tj[n:, :n]
    y = rng.standard_normal((n, 1))  # unreachable: duplicated inputs, different labels
    for e in (Ensemble(kd, y), Ensemble(kd, y, ntk_train_train=td)):
        tk = dict(nngp_test_train=kt, nngp_test_test=kk)
        if e.mode == "ntk":
            tk["ntk_test_train"] = tt
        for g in (e.at(TIMES, **tk), e.at(TIMES)):
            assert np.all(np.isfinite(g.mean)) and np.all(np.isfinite(g.covariance))
        # the converged mean is the min-norm answer
        dyn_d, dyn_t = (td, tt) if e.mode == "ntk" else (kd, kt)
        close(e.at(None, **tk).mean, dyn_t @ np.linalg.pinv(dyn_d, rcond=1e-12) @ y, 1e-7)
        close(e.at(None).mean, dyn_d @ np.linalg.pinv(dyn_d, rcond=1e-12) @ y, 1e-7)
    gp = GaussianProcess(kd, y)
    with pytest.warns(NumericalWarning, match="cut"):
        p = gp.posterior(kt, kk)
    assert np.all(np.isfinite(p.mean)) and np.all(np.isfinite(p.covariance))
    close(p.mean, kt @ np.linalg.pinv(kd, rcond=1e-12) @ y, 1e-7)
    with pytest.warns(NumericalWarning, match="pseudo-determinant"):
        lml = gp.log_marginal_likelihood()
    assert np.isfinite(lml)
    with pytest.warns(NumericalWarning):
        pt = gp.posterior()
    assert np.all(np.isfinite(pt.mean)) and np.max(np.abs(pt.covariance)) < 1e-10


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
def test_covariances_symmetric_and_psd(prob, mode):
    e = make(prob, mode, diag_reg=0.01)
    for g, scale in (
        (e.at(TIMES, **tkw(prob, mode)), np.linalg.norm(prob["kk"], 2)),
        (e.at(TIMES), np.linalg.norm(prob["kd"], 2)),
    ):
        c = g.covariance
        np.testing.assert_array_equal(c, np.swapaxes(c, -1, -2))
        assert np.linalg.eigvalsh(c).min() >= -1e-10 * scale
    p = GaussianProcess(prob["kd"], prob["y"]).posterior(prob["kt"], prob["kk"]).covariance
    np.testing.assert_array_equal(p, p.T)
    assert np.linalg.eigvalsh(p).min() >= -1e-10 * np.linalg.norm(prob["kk"], 2)


def test_no_warning_on_regular_problems(prob):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gp = GaussianProcess(prob["kd"], prob["y"])
        gp.posterior(prob["kt"], prob["kk"])
        gp.log_marginal_likelihood()
        make(prob, "ntk").at(TIMES, **tkw(prob, "ntk"))


def test_float32_inputs_return_float32(prob):
    k32 = {k: v.astype(np.float32) for k, v in prob.items() if isinstance(v, np.ndarray)}
    e = Ensemble(k32["kd"], prob["y"], ntk_train_train=k32["td"])
    g = e.at(1.0, ntk_test_train=k32["tt"], nngp_test_train=k32["kt"], nngp_test_test=k32["kk"])
    assert g.mean.dtype == np.float32 and g.covariance.dtype == np.float32
    rounded = {**prob, **{k: v.astype(np.float64) for k, v in k32.items()}}
    ref = make(rounded, "ntk").at(1.0, **tkw(rounded, "ntk"))
    close(g.mean, ref.mean, 1e-6)
    p = GaussianProcess(k32["kd"], prob["y"]).posterior(k32["kt"], k32["kk"])
    assert p.mean.dtype == np.float32 and p.covariance.dtype == np.float32


# -- sampling --------------------------------------------------------------------------------


def test_sample_shapes_and_moments(prob):
    e = make(prob, "nngp")
    g = e.at([0.5, 4.0], nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
    s = g.sample(40_000, rng=0)
    assert s.shape == (40_000,) + g.mean.shape
    np.testing.assert_array_equal(s, g.sample(40_000, rng=np.random.default_rng(0)))
    for j in range(2):
        for c in range(2):  # traced column: same covariance, independent
            x = s[:, j, :, c]
            d = np.diag(g.covariance[j])
            assert np.all(np.abs(x.mean(0) - g.mean[j, :, c]) <= 5 * np.sqrt(d / len(x)) + 1e-12)
            se = np.sqrt((np.outer(d, d) + g.covariance[j] ** 2) / len(x))
            assert np.all(np.abs(np.cov(x, rowvar=False) - g.covariance[j]) <= 5 * se + 1e-12)
        cross = np.mean((s[:, j, :, 0] - g.mean[j, :, 0]) * (s[:, j, :, 1] - g.mean[j, :, 1]), 0)
        assert np.all(np.abs(cross) <= 5 * np.diag(g.covariance[j]) / np.sqrt(len(s)) + 1e-12)
    # a hand-made Gaussian with an untraced second axis, and one that pickles
    cov = np.array([[[[2.0, 0.5], [0.5, 1.0]]]])  # (1, 1, 2, 2): M=1, K=2 interleaved
    h = Gaussian(np.array([[1.0, -1.0]]), cov)
    hs = h.sample(30_000, rng=1)
    assert hs.shape == (30_000, 1, 2)
    np.testing.assert_allclose(np.cov(hs[:, 0, :], rowvar=False), cov[0, 0], atol=0.06)
    g2 = pickle.loads(pickle.dumps(g))
    assert g2.sample(3, rng=5).shape == (3,) + g.mean.shape
    np.testing.assert_array_equal(g2.sample(3, rng=5), g.sample(3, rng=5))


def test_sample_errors(prob):
    g = make(prob, "nngp").at(1.0, nngp_test_train=prob["kt"], compute_cov=False)
    with pytest.raises(ValueError, match="covariance"):
        g.sample(2)
    g = make(prob, "nngp").at(1.0)
    with pytest.raises(TypeError, match="rng"):
        g.sample(2, rng="seed")
    with pytest.raises(ValueError, match="n must"):
        g.sample(-1)
    with pytest.raises(TypeError, match="n must"):
        g.sample(2.0)
    assert g.sample(0).shape == (0,) + g.mean.shape


# -- input validation ----------------------------------------------------------------------------


def test_bad_inputs(prob):
    kd, y = prob["kd"], prob["y"]
    with pytest.raises(ValueError, match="y_train"):
        Ensemble(kd, y[:-1])
    with pytest.raises(ValueError, match="nngp_train_train is not symmetric"):
        Ensemble(kd + np.triu(np.ones_like(kd), 1), y)
    bad = kd.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="nngp_train_train contains NaN"):
        Ensemble(bad, y)
    with pytest.raises(ValueError, match="ntk_train_train"):
        Ensemble(kd, y, ntk_train_train=kd[:-1, :-1])
    with pytest.raises(TypeError, match="ntk_train_train"):
        Ensemble(kd, y, ntk_train_train="abc")
    with pytest.raises(ValueError, match="learning_rate"):
        Ensemble(kd, y, learning_rate=-1.0)
    with pytest.raises(ValueError, match="diag_reg"):
        Ensemble(kd, y, diag_reg=-1.0)
    with pytest.raises(TypeError, match="diag_reg_absolute_scale"):
        Ensemble(kd, y, diag_reg_absolute_scale=1)
    with pytest.raises(ValueError, match="precision"):
        GaussianProcess(kd, y, precision="float16")
    with pytest.raises(ValueError, match="rcond"):
        GaussianProcess(kd, y, rcond=0.0)
    with pytest.raises(ValueError, match="trace_axes"):
        Ensemble(np.zeros((3, 3, 2, 2)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="k_train_train"):
        GaussianProcess(None, y)
    e = make(prob, "nngp")
    et = make(prob, "ntk")
    with pytest.raises(ValueError, match="nngp_test_test"):
        e.at(1.0, nngp_test_train=prob["kt"])
    with pytest.raises(ValueError, match="nngp_test_train"):
        e.at(1.0, nngp_test_test=prob["kk"])
    with pytest.raises(ValueError, match="ntk_test_train"):
        e.at(1.0, ntk_test_train=prob["tt"], nngp_test_train=prob["kt"], compute_cov=False)
    with pytest.raises(ValueError, match="ntk_test_train"):
        et.at(1.0, nngp_test_train=prob["kt"], nngp_test_test=prob["kk"])
    with pytest.raises(ValueError, match="nngp_test_train and nngp_test_test"):
        et.at(1.0, ntk_test_train=prob["tt"])
    et.at(1.0, ntk_test_train=prob["tt"], compute_cov=False)  # mean only: fine
    with pytest.raises(ValueError, match="nngp_test_train"):
        e.at(1.0, nngp_test_train=prob["kt"][:, :-1], compute_cov=False)
    with pytest.raises(ValueError, match="nngp_test_test"):
        e.at(1.0, nngp_test_train=prob["kt"], nngp_test_test=prob["kk"][:-1])
    with pytest.raises(ValueError, match="different test sets"):
        et.at(
            1.0,
            ntk_test_train=prob["tt"][:-1],
            nngp_test_train=prob["kt"],
            nngp_test_test=prob["kk"],
        )
    with pytest.raises(ValueError, match="t must be >= 0"):
        e.at(-1.0)
    with pytest.raises(TypeError, match="compute_cov"):
        e.at(1.0, compute_cov="yes")
    gp = GaussianProcess(kd, y)
    with pytest.raises(ValueError, match="k_test_test was given without k_test_train"):
        gp.posterior(k_test_test=prob["kk"])
    with pytest.raises(ValueError, match="k_test_train"):
        gp.posterior(prob["kt"].T)
    with pytest.raises(ValueError, match="k_test_test is not symmetric"):
        gp.posterior(prob["kt"], prob["kk"] + np.triu(np.ones_like(prob["kk"]), 1))


# -- array-namespace backend (the GPU code, run with NumPy) ------------------------------------


@pytest.mark.parametrize("mode", ["nngp", "ntk"])
def test_numpy_namespace_backend_matches_cpu(prob, mode):
    kw = dict(learning_rate=0.9, diag_reg=0.03)
    a = make(prob, mode, **kw)
    b = make(prob, mode, _backend="numpy", **kw)
    assert b._backend.name == "numpy"
    tk = tkw(prob, mode)
    for x, z in ((a.at(TIMES, **tk), b.at(TIMES, **tk)), (a.at(TIMES), b.at(TIMES))):
        close(z.mean, x.mean, 1e-12)
        close(z.covariance, x.covariance, 1e-12)
    ga = GaussianProcess(prob["kd"], prob["y"], diag_reg=0.03)
    gb = GaussianProcess(prob["kd"], prob["y"], diag_reg=0.03, _backend="numpy")
    for x, z in (
        (ga.posterior(prob["kt"], prob["kk"]), gb.posterior(prob["kt"], prob["kk"])),
        (ga.posterior(), gb.posterior()),
    ):
        close(z.mean, x.mean, 1e-12)
        close(z.covariance, x.covariance, 1e-12)
    assert gb.log_marginal_likelihood() == pytest.approx(ga.log_marginal_likelihood(), rel=1e-12)


def test_exports():
    for name in ("Ensemble", "GaussianProcess", "Gaussian"):
        assert name in tf.__all__ and getattr(tf, name) is not None


def test_ensemble_and_gp_pickle_with_their_factorization():
    from conftest import rbf_problem

    k, kte, ktt, y, _, _ = rbf_problem(30, 6, 2, seed=4)
    e = tf.Ensemble(k, y, ntk_train_train=1.3 * k, diag_reg=1e-3)
    kw = dict(ntk_test_train=1.3 * kte, nngp_test_train=kte, nngp_test_test=ktt)
    a = e.at([1.0, 10.0], **kw)
    e2 = pickle.loads(pickle.dumps(e))
    b = e2.at([1.0, 10.0], **kw)
    assert e2.factorizations == e.factorizations
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.covariance, b.covariance)
    gp = tf.GaussianProcess(k, y)
    p1 = gp.posterior(kte, ktt)
    gp2 = pickle.loads(pickle.dumps(gp))
    p2 = gp2.posterior(kte, ktt)
    np.testing.assert_array_equal(p1.mean, p2.mean)
    q = tf.Predictor(k, y, _backend="numpy").factorize()
    q2 = pickle.loads(pickle.dumps(q))
    assert q2.factorizations == 1 and q2._backend.name == "numpy"
