"""Results do not depend on the kernel's overall scale (docs/numerics.md §12).

A kernel multiplied by an exact power of two ``s = 2^e`` is the same problem in other
units: eigenvalues scale by ``s``, outputs at ``t/s`` equal the unscaled ones at ``t``
(with momentum and discrete steps: the kernel scaled by ``s`` equals the learning rate
scaled by ``s``), ``t = ∞`` test outputs and posterior means do not change, covariances in
kernel units scale by ``s``. The reference of every case is the same call on the unscaled
problem, so it is exact; the tolerance is 1e-9 relative. Also here: the numeric cases of a
hostile review (huge/tiny targets and kernels, subnormal kernels, the same bits for the
same question, the Cholesky gate's condition estimate, diagnostics, likelihood).
"""

import math
import warnings

import numpy as np
import pytest

import tangentflow as tf
from tangentflow import _core

from conftest import orthogonal, rbf_problem, with_spectrum

TOL = 1e-9
EXPS = (-100, -40, -1, 57, 100)
EVEN_EXPS = (-100, -40, 40, 100)
KINDS = ("well", "ill", "singular")
N, M, R = 60, 7, 2


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b)))
    assert scale > 0 and np.all(np.isfinite(a))
    return float(np.max(np.abs(a - b))) / scale


def close(a, b, tol=TOL):
    err = rel(a, b)
    assert err <= tol, f"relative error {err:.3e} > {tol:.1e}"


def make(kind, seed=0):
    """``(k, k_test_train, k_test_test, y, f0, g0)``: well-conditioned, condition 1e8, or
    rank 15 of 60 (exact null directions, cut)."""
    rng = np.random.default_rng(seed)
    if kind == "well":
        return rbf_problem(N, M, R, seed=seed)
    if kind == "ill":
        k, _ = with_spectrum(np.geomspace(1.0, 1e-8, N), rng)
    else:
        x = rng.normal(size=(N, 15))
        k = x @ x.T / 15
    c = 0.3 * rng.normal(size=(M, N)) / np.sqrt(N)
    kte = c @ k  # in the range of k: a PSD joint kernel [[k, kᵀcᵀ], [ck, ckcᵀ]]
    ktt = kte @ c.T
    ktt = (ktt + ktt.T) / 2 + 0.1 * np.eye(M)
    y = rng.normal(size=(N, R))
    f0 = 0.1 * rng.normal(size=y.shape)
    g0 = 0.1 * rng.normal(size=(M, R))
    return k, kte, ktt, y, f0, g0


@pytest.fixture(autouse=True)
def _quiet_cut():
    # the singular kernels warn about their cut modes (at every scale alike)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tf.NumericalWarning)
        yield


# -- eigenvalues ------------------------------------------------------------------------------
def rbf5(n=200, seed=0):
    """The kernel of the report: RBF over 5-d inputs + 1e-3·I, N = 200."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (n, 5))
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 2) + 1e-3 * np.eye(n)
    return k


@pytest.mark.parametrize("e", (-100, -40, 0, 40, 100))
def test_eigenvalues_match_numpy_at_every_scale(e):
    """faer's divide and conquer lost 2e-4·μ_max at 2^-40 and 9e-3 at 2^-100 here."""
    k = rbf5()
    s = 2.0**e
    w = tf.Predictor(s * k).eigenvalues
    ref = np.linalg.eigvalsh(k)
    assert np.max(np.abs(w / s - ref)) <= 1e-12 * ref[-1]


@pytest.mark.parametrize("e", (-100, 0, 100))
@pytest.mark.parametrize("spectrum", ("ill", "singular"))
def test_blocked_threaded_factorization_at_every_scale(e, spectrum):
    """N = 700: many panels of the blocked tridiagonalization, and trailing sizes above
    its parallel cut (docs/performance.md), on cond 1e12 and on rank-40 kernels."""
    rng = np.random.default_rng(7)
    n = 700
    if spectrum == "ill":
        lams = np.geomspace(1.0, 1e-12, n)
    else:
        lams = np.concatenate([np.zeros(n - 40), rng.uniform(0.5, 2.0, 40)])
    k, q = with_spectrum(lams, rng)
    s = 2.0**e
    p = tf.Predictor(s * k)
    w = p.eigenvalues / s
    # eigenvalues to a few ε·‖K‖ against the constructed spectrum, and bitwise the same
    # at every power-of-two scale
    assert np.max(np.abs(np.sort(w) - np.sort(lams))) <= 1e-13 * lams.max()
    if e:
        np.testing.assert_array_equal(w, tf.Predictor(k).eigenvalues)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("e", EXPS)
def test_eigenvalues_and_cut_scale(kind, e):
    k = make(kind)[0]
    s = 2.0**e
    p0, p = tf.Predictor(k), tf.Predictor(s * k)
    close(p.eigenvalues / s, p0.eigenvalues)
    d0, d = p0.diagnostics(), p.diagnostics()
    assert d.n_cut == d0.n_cut
    close(d.max_eigenvalue / s, d0.max_eigenvalue)
    close(d.cut_threshold / s, d0.cut_threshold)
    close(d.condition_number, d0.condition_number)
    close(d.max_learning_rate * s, d0.max_learning_rate)
    close(d.time_to_1pct * s, d0.time_to_1pct)


@pytest.mark.parametrize("e", EXPS)
def test_max_learning_rate_scales(e):
    k, _, _, y, _, _ = make("well")
    s = 2.0**e
    want = tf.max_learning_rate(k, y.size, eps=0.0)
    close(tf.max_learning_rate(s * k, y.size, eps=0.0) * s, want)
    close(tf.max_learning_rate(s * k, y.size, momentum=0.5, eps=0.0) * s, 1.5 * want)
    assert want == pytest.approx(2 * y.size / np.linalg.eigvalsh(k)[-1], rel=1e-12)


# -- Predictor --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", (None, "numpy"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("e", EXPS)
def test_flow_outputs_at_rescaled_times(backend, kind, e):
    k, kte, _, y, f0, g0 = make(kind)
    s = 2.0**e
    ts = np.array([0.0, 0.3, 5.0, 200.0, np.inf])
    kw = dict(fx_train_0=f0, fx_test_0=g0)
    ref = tf.Predictor(k, y, learning_rate=0.7, _backend=backend).factorize()
    ref = ref.at(ts, k_test_train=kte, **kw)
    p = tf.Predictor(s * k, y, learning_rate=0.7, _backend=backend).factorize()
    out = p.at(ts / s, k_test_train=s * kte, **kw)
    close(out.train, ref.train)
    close(out.test, ref.test)


@pytest.mark.parametrize("backend", (None, "numpy"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("e", EXPS)
def test_infinite_time_before_and_after_factorize(backend, kind, e):
    """The Cholesky fast path (taken for the well-conditioned kernel) and the spectral path
    agree, at every scale, with the unscaled problem and with each other."""
    k, kte, _, y, f0, g0 = make(kind)
    s = 2.0**e
    kw = dict(y_train=y, fx_train_0=f0, fx_test_0=g0)
    ref = tf.Predictor(k, _backend=backend).at(None, k_test_train=kte, **kw).test
    p = tf.Predictor(s * k, _backend=backend)
    before = p.at(None, k_test_train=s * kte, **kw).test
    assert p.factorizations == (0 if kind == "well" else 1)
    after = p.factorize().at(None, k_test_train=s * kte, **kw).test
    close(before, ref)
    close(after, ref)
    close(before, after)


@pytest.mark.parametrize("backend", (None, "numpy"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("e", EXPS)
def test_momentum_and_steps_follow_learning_rate_times_kernel(backend, kind, e):
    """Only η·K enters: the kernel scaled by s equals the learning rate scaled by s."""
    k, kte, _, y, f0, g0 = make(kind)
    s = 2.0**e
    kw = dict(fx_train_0=f0, fx_test_0=g0)
    ts = np.array([0.0, 0.7, 20.0, 900.0, np.inf])
    ref = tf.Predictor(k, y, learning_rate=s * 0.8, momentum=0.9, _backend=backend)
    ref = ref.at(ts, k_test_train=kte, **kw)
    out = tf.Predictor(s * k, y, learning_rate=0.8, momentum=0.9, _backend=backend)
    out = out.at(ts, k_test_train=s * kte, **kw)
    close(out.train, ref.train)
    close(out.test, ref.test)
    lr = 0.5 * tf.max_learning_rate(k, y.size, eps=0.0)
    steps = np.array([0, 1, 7, 50, np.inf])
    ref = tf.Predictor(k, y, learning_rate=lr, dynamics="gd", _backend=backend)
    ref = ref.at(steps, k_test_train=kte, **kw)
    out = tf.Predictor(s * k, y, learning_rate=lr / s, dynamics="gd", _backend=backend)
    out = out.at(steps, k_test_train=s * kte, **kw)
    close(out.train, ref.train)
    close(out.test, ref.test)


@pytest.mark.parametrize("kind", ("well", "ill"))
@pytest.mark.parametrize("e", EXPS)
def test_train_loss_scales(kind, e):
    k, _, _, y, f0, _ = make(kind)
    s = 2.0**e
    ts = np.array([0.0, 1.0, 50.0, np.inf])
    ref = tf.Predictor(k, y).train_loss(ts, fx_train_0=f0)
    close(tf.Predictor(s * k, y).train_loss(ts / s, fx_train_0=f0), ref)


def _classes(seed=1):
    rng = np.random.default_rng(seed)
    k, kte, _, _, _, _ = rbf_problem(30, 5, 0, seed=seed)
    y = np.eye(3)[rng.integers(0, 3, 30)]
    return k, kte, y


@pytest.mark.parametrize("e", EXPS)
def test_ode_flow_at_rescaled_times(e):
    k, kte, y = _classes()
    s = 2.0**e
    ts = np.array([0.5, 4.0, 30.0])
    ref = tf.Predictor(k, y, loss="cross_entropy").at(ts, k_test_train=kte)
    out = tf.Predictor(s * k, y, loss="cross_entropy").at(ts / s, k_test_train=s * kte)
    close(out.train, ref.train)
    close(out.test, ref.test)


@pytest.mark.parametrize("e", EVEN_EXPS)
def test_ode_momentum_follows_learning_rate_times_kernel(e):
    k, kte, y = _classes()
    s = 2.0**e
    ts = np.array([0.5, 4.0, 30.0])
    ref = tf.Predictor(k, y, loss="cross_entropy", momentum=0.8).at(ts, k_test_train=kte)
    out = tf.Predictor(s * k, y, loss="cross_entropy", momentum=0.8, learning_rate=1 / s)
    out = out.at(ts, k_test_train=s * kte)
    close(out.train, ref.train)
    close(out.test, ref.test)


# -- Ensemble and GaussianProcess -------------------------------------------------------------
@pytest.mark.parametrize("backend", (None, "numpy"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("e", EXPS)
def test_ensemble_scales(backend, kind, e):
    k, kte, ktt, y, _, _ = make(kind)
    s = 2.0**e
    ts = np.array([0.0, 2.0, 60.0, np.inf])
    tests = dict(nngp_test_train=kte, nngp_test_test=ktt)
    scaled = {a: s * b for a, b in tests.items()}
    ref = tf.Ensemble(k, y, _backend=backend).at(ts, **tests)
    out = tf.Ensemble(s * k, y, _backend=backend).at(ts / s, **scaled)
    close(out.mean, ref.mean)
    close(out.covariance / s, ref.covariance)
    ref_tr = tf.Ensemble(k, y, _backend=backend).at(ts)
    out_tr = tf.Ensemble(s * k, y, _backend=backend).at(ts / s)
    close(out_tr.mean, ref_tr.mean)
    close(out_tr.covariance / s, ref_tr.covariance)
    # "ntk" mode: only the NTK is scaled; means and covariances do not change
    th, th_te = 1.3 * k + 0.1 * np.eye(N), 1.3 * kte
    ref = tf.Ensemble(k, y, ntk_train_train=th, _backend=backend)
    ref = ref.at(ts, ntk_test_train=th_te, **tests)
    out = tf.Ensemble(k, y, ntk_train_train=s * th, _backend=backend)
    out = out.at(ts / s, ntk_test_train=s * th_te, **tests)
    close(out.mean, ref.mean)
    close(out.covariance, ref.covariance)


@pytest.mark.parametrize("backend", (None, "numpy"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("e", EXPS)
def test_gaussian_process_scales(backend, kind, e):
    k, kte, ktt, y, _, _ = make(kind)
    s = 2.0**e
    ref = tf.GaussianProcess(k, y, _backend=backend).posterior(kte, ktt)
    for factorize in (False, True):
        gp = tf.GaussianProcess(s * k, y, _backend=backend)
        if factorize:
            gp.factorize()
        out = gp.posterior(s * kte, s * ktt)
        close(out.mean, ref.mean)
        close(out.covariance / s, ref.covariance)
        tr = gp.posterior()
        close(tr.mean, tf.GaussianProcess(k, y).posterior().mean)


@pytest.mark.parametrize("e", EXPS)
def test_log_marginal_likelihood_closed_form(e):
    """Data-fit term divided by s, log-determinant shifted by D·log s (well-conditioned
    kernel; the reference is a dense float64 computation)."""
    k, _, _, y, _, _ = make("well")
    s = 2.0**e
    mu = np.linalg.eigvalsh(k)
    quad = float(np.sum(y * np.linalg.solve(k, y)))
    d, r = k.shape[0], y.shape[1]
    want = -0.5 * quad / s - 0.5 * r * (np.sum(np.log(mu)) + d * math.log(s))
    want -= 0.5 * r * d * math.log(2 * math.pi)
    got = tf.GaussianProcess(s * k, y).log_marginal_likelihood()
    assert got == pytest.approx(want, rel=TOL)


# -- float32 -----------------------------------------------------------------------------
@pytest.mark.parametrize("e", (-100, -40, 40, 100))
def test_float32_factorization_scales(e):
    k = make("well")[0]
    s = 2.0**e
    w0 = tf.Predictor(k, precision="float32").eigenvalues
    close(tf.Predictor(s * k, precision="float32").eigenvalues / s, w0)
    assert np.max(np.abs(w0 - np.linalg.eigvalsh(k))) <= 1e-5 * w0[-1]


# -- hostile cases: finite inputs give finite, right outputs ---------------------------------
@pytest.fixture
def small():
    k, kte, ktt, y, _, _ = make("well")
    return k, kte, ktt, y[:, 0].copy(), kte @ np.linalg.solve(k, y[:, 0])


def test_huge_targets(small):
    k, kte, _, y, ref = small
    close(tf.GaussianProcess(k, 1e306 * y).posterior(kte).mean, 1e306 * ref)
    close(tf.GaussianProcess(k, 1e306 * y).factorize().posterior(kte).mean, 1e306 * ref)
    ens = tf.Ensemble(k, 1e306 * y).at(None, nngp_test_train=kte, compute_cov=False)
    close(ens.mean, 1e306 * ref)
    close(tf.Predictor(k, 1e306 * y).at(None, k_test_train=kte).test, 1e306 * ref)


def test_tiny_kernel_with_large_targets(small):
    k, kte, _, y, ref = small
    close(tf.GaussianProcess(1e-300 * k, 1e10 * y).posterior(1e-300 * kte).mean, 1e10 * ref)
    p = tf.Predictor(1e-200 * k, 1e200 * y)
    close(p.at(None, k_test_train=1e-200 * kte).test, 1e200 * ref)
    close(p.factorize().at(None, k_test_train=1e-200 * kte).test, 1e200 * ref)


def test_overflowing_answer_names_the_cause(small):
    k, kte, _, y, _ = small
    # the answer itself (~ a few times 1.7e308) is beyond float64: a clear error, not gd
    with pytest.raises(tf.TangentflowError, match="not representable") as info:
        tf.Predictor(k, y / np.max(np.abs(y)) * 1.7e308).at(None, k_test_train=30 * kte)
    assert "gd" not in str(info.value)


def test_float32_kernel_with_targets_beyond_float32(small):
    k, kte, _, y, _ = small
    p = tf.Predictor(k.astype(np.float32), 1e39 * y)
    with pytest.raises(tf.TangentflowError, match="float32"):
        p.at(None, k_test_train=kte.astype(np.float32), fx_train_0=None)


@pytest.mark.parametrize("factor", (1e-309, 1e-320))
def test_subnormal_kernel(small, factor):
    k, kte, _, y, _ = small
    w = tf.Predictor(factor * k).eigenvalues
    want = np.linalg.eigvalsh(factor * k)
    assert np.max(np.abs(w - want)) <= 1e-9 * want[-1]
    # 1e-320·k keeps ~14 bits of each entry: the reference is the answer for the kernel as
    # it is, scaled up exactly
    ks, ktes = factor * k, factor * kte
    ref = np.ldexp(ktes, 1060) @ np.linalg.solve(np.ldexp(ks, 1060), y)
    close(tf.Predictor(ks, y).at(None, k_test_train=ktes).test, ref)
    close(tf.Predictor(ks, y).factorize().at(None, k_test_train=ktes).test, ref)


def test_subnormal_float32_kernel(small):
    k, kte, _, y, ref = small
    w = tf.Predictor(1e-40 * k, precision="float32").eigenvalues
    want = np.linalg.eigvalsh(1e-40 * k)
    assert np.max(np.abs(w - want)) <= 1e-5 * want[-1]
    out = tf.Predictor(1e-40 * k, y, precision="float32").factorize()
    close(out.at(None, k_test_train=1e-40 * kte).test, ref, 1e-4)
    gp = tf.GaussianProcess(1e-40 * k, y, precision="float32")
    close(gp.posterior(1e-40 * kte).mean, ref, 1e-4)
    ens = tf.Ensemble(1e-40 * k, y, precision="float32")
    close(ens.at(None, nngp_test_train=1e-40 * kte, compute_cov=False).mean, ref, 1e-4)


@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_power_of_two_scaling_has_the_bits_of_ldexp(dtype):
    # the scaling helper multiplies by 2^e where 2^e is a normal number of the dtype: the
    # same correctly rounded results as np.ldexp, subnormal, overflowing and special ones too
    from tangentflow._numerics import ldexp

    fi = np.finfo(dtype)
    rng = np.random.default_rng(3)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.tiny, -fi.tiny / 3, fi.smallest_subnormal]
    with np.errstate(over="ignore"):
        a = np.concatenate(
            [rng.standard_normal(500) * 10.0 ** rng.uniform(-45, 45, 500), special, [fi.max]]
        ).astype(dtype)
    uint = np.uint64 if dtype == np.float64 else np.uint32
    for e in [*range(-1100, 1100, 13), -1074, -1023, -1022, -150, -149, -127, -126, 127, 128]:
        with np.errstate(over="ignore", under="ignore"):
            want, got = np.ldexp(a, e), ldexp(a, e, np)
        assert got.dtype == want.dtype
        assert np.array_equal(got.view(uint), want.view(uint)), e


# -- the same question gives the same bits ----------------------------------------------
@pytest.mark.parametrize("backend", (None, "numpy"))
@pytest.mark.parametrize("r", (1, 3))
def test_infinite_and_scalar_times_give_the_same_bits(backend, r):
    """An ill-conditioned kernel whose 1e-14 eigenvalue is kept: the answer is accurate to
    cond·ε only, but t=None, t=inf and inf in an array (and a scalar time in an array) give
    identical bits, on every path."""
    rng = np.random.default_rng(3)
    n = 20
    k, _ = with_spectrum(np.concatenate([[1e-14], np.linspace(0.1, 1.0, n - 1)]), rng)
    kte = rng.normal(size=(4, n))
    y = rng.normal(size=(n, r))
    p = tf.Predictor(k, y, _backend=backend)
    assert p.rcond * 1.0 < 1e-14  # the small mode is kept
    for pred in (p, p.test_set(kte)):
        kw = {} if pred is not p else {"k_test_train": kte}
        one = pred.at(None, **kw)
        for t in (np.inf, [np.inf], [0.0, np.inf, 3.0], [np.inf] * 9, np.full(40, np.inf)):
            many = pred.at(t, **kw)
            j = int(np.flatnonzero(np.isinf(np.ravel(t)))[0])
            idx = j if np.ndim(t) else ()
            assert np.array_equal(many.train[idx], one.train)
            assert np.array_equal(many.test[idx], one.test)
        scalar = pred.at(3.0, **kw)
        arr = pred.at([0.5, 3.0, np.inf, 7.0], **kw)
        assert np.array_equal(arr.train[1], scalar.train)
        assert np.array_equal(arr.test[1], scalar.test)
    assert p.factorizations == 1


# -- the Cholesky gate's condition estimate -------------------------------------------------
def _old_probes(n, p=4):
    i = np.arange(n)[:, None] + 1.0
    j = np.arange(p)[None, :]
    h = np.modf(i * (0.618033988749895 + j * 0.414213562))[0] - 0.5
    return np.linalg.qr(h)[0]


def _hidden_kernel(n=120, small=1e-7, seed=5):
    """SPD, condition ~1e7, its smallest eigenvector orthogonal to the four fixed probe
    vectors the gate used to rely on."""
    rng = np.random.default_rng(seed)
    p = _old_probes(n)
    u = rng.normal(size=n)
    u -= p @ (p.T @ u)
    u /= np.linalg.norm(u)
    q = orthogonal(n, rng)
    q[:, 0] = u
    q = np.linalg.qr(q)[0]  # first column ±u, the rest orthogonal to it
    lam = np.concatenate([[small], rng.uniform(0.5, 1.0, n - 1)])
    k = (q * lam) @ q.T
    return (k + k.T) / 2, u


def test_condition_estimate_finds_a_hidden_small_eigenvalue():
    k, u = _hidden_kernel()
    mu = np.linalg.eigvalsh(k)
    true = mu[-1] / mu[0]
    # the old estimate (inverse iteration on the fixed probes) misses it by far
    p = _old_probes(len(k))
    g = p.T @ np.linalg.solve(k, p)
    old = np.max(np.sum(np.abs(k), axis=1)) * np.linalg.eigvalsh((g + g.T) / 2)[-1]
    assert old < 1e-3 * true
    for backend in (None, "numpy"):
        be = tf._backends.select(k, backend)
        x, norm_inf, mu_min, cond, e = be.cholesky_solve(k, 0.0, np.ones((len(k), 1)))
        assert cond >= 0.5 * true and cond > tf._model.CHOLESKY_MAX_COND
        assert mu_min * 2.0**e <= 1.5 * mu[0]
        assert cond <= len(k) * np.linalg.cond(k, 1)
        close(np.ldexp(x, -e), np.linalg.solve(k, np.ones((len(k), 1))), 1e-6)
        pred = tf.Predictor(k, np.ones(len(k)), _backend=backend)
        pred.at(None, k_test_train=np.ones((1, len(k))))
        assert pred.factorizations == 1  # the gate sent it to the spectral path


@pytest.mark.parametrize("seed", range(5))
def test_condition_estimate_brackets_the_truth(seed):
    rng = np.random.default_rng(seed)
    n = 50
    k, _ = with_spectrum(np.geomspace(1.0, 10.0 ** -rng.uniform(1, 9), n), rng)
    _, norm_inf, mu_min, cond, e = _core.cholesky_solve_f64_f64(k, 0.0, np.ones((n, 1)))
    row_sum = np.max(np.sum(np.abs(k), axis=1))
    assert norm_inf * 2.0**e == pytest.approx(row_sum, rel=1e-14)
    mu0 = np.linalg.eigvalsh(k)[0]
    assert mu0 * (1 - 1e-9) <= mu_min * 2.0**e <= 3 * mu0
    # the 2-norm condition number (docs/numerics.md §3.2): from below within the inverse
    # iteration's factor, from above by ‖A‖₁·‖A⁻¹‖₂; at most the 1-norm one
    kappa2 = np.linalg.cond(k, 2)
    assert kappa2 / 3 <= cond <= row_sum / mu0 * (1 + 1e-9)
    assert cond <= np.linalg.cond(k, 1) * (1 + 1e-9)


# -- diagnostics and likelihood --------------------------------------------------------------
def test_negative_definite_kernel_has_no_max_learning_rate():
    k = make("well")[0]
    with pytest.warns(tf.NumericalWarning, match="non-positive"):
        d = tf.Predictor(-k).diagnostics()
    assert math.isnan(d.max_learning_rate)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        tf.max_learning_rate(-k)


def test_log_marginal_likelihood_of_huge_targets():
    k, _, _, y, _, _ = make("well")
    c = 1e200
    mu = np.linalg.eigvalsh(k)
    quad = float(np.sum(y * np.linalg.solve(k, y)))
    d, r = k.shape[0], y.shape[1]
    # y and K both times 1e200: yᵀA⁻¹y = 1e200·quad, log det = Σ log μ + D log 1e200
    want = -0.5 * c * quad - 0.5 * r * (np.sum(np.log(mu)) + d * math.log(c))
    want -= 0.5 * r * d * math.log(2 * math.pi)
    got = tf.GaussianProcess(c * k, c * y).log_marginal_likelihood()
    assert math.isfinite(got) and got == pytest.approx(want, rel=1e-12)
    # with an O(1) kernel the value is about -1e400: not a float64, and said so (not -inf)
    with pytest.raises(tf.TangentflowError, match=r"1e40\d"):
        tf.GaussianProcess(k, c * y).log_marginal_likelihood()
