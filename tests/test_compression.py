"""Time compression (docs/numerics.md §16): outputs at many times from a low-rank
factorization of the mode-factor table agree with the direct path within the bound of §16
on adversarial spectra; t = 0 and t = ∞ keep the direct path's bits; the fast path really
runs (checked through the rank hook, never through timing)."""

import contextlib

import numpy as np
import pytest

import tangentflow as tf
from tangentflow import _core

from conftest import rbf_problem, with_spectrum

TOL = 1e-13


@contextlib.contextmanager
def direct():
    """The uncompressed computation (the core's switch; the array backend reads it too)."""
    before = _core._set_time_compression(False)
    try:
        yield
    finally:
        _core._set_time_compression(before)


def spectrum(kind, n, rng):
    if kind == "smooth":
        return np.geomspace(1e-3, 1.0, n)
    if kind == "clustered":  # three tight clusters
        c = rng.choice([1e-3, 0.05, 1.0], size=n)
        return np.sort(c * (1 + 1e-9 * rng.standard_normal(n)))
    if kind == "16 decades":  # the smallest fall below the spectral cut D·ε
        return np.geomspace(1e-16, 1.0, n)
    if kind == "negative cut":  # negative modes below the cut (and below the warning level)
        lam = np.geomspace(1e-6, 1.0, n)
        lam[: n // 10] = -1e-10 * rng.uniform(0.1, 1.0, n // 10)
        return lam
    if kind == "singular":  # a third of the modes exactly null
        lam = np.geomspace(1e-4, 1.0, n)
        lam[: n // 3] = 0.0
        return lam
    raise AssertionError(kind)


def make(kind, n=240, m=30, r=3, seed=0):
    rng = np.random.default_rng(seed)
    k, _ = with_spectrum(spectrum(kind, n, rng), rng)
    kte = rng.standard_normal((m, n)) / np.sqrt(n)
    y = rng.standard_normal((n, r))
    f0 = 0.3 * rng.standard_normal((n, r))
    g0 = 0.3 * rng.standard_normal((m, r))
    return k, kte, y, f0, g0


def log_times(k, lr=1.0, n_times=1000, span=(1e-2, 1e6), y_size=None):
    """Times from a fraction of the fastest mode's relaxation to far past it, with t = 0
    first and t = ∞ in the middle."""
    size = y_size if y_size is not None else k.shape[0]
    mu_max = np.linalg.eigvalsh(k)[-1]
    ts = np.geomspace(*span, n_times) * size / (lr * mu_max)
    return np.concatenate([[0.0], ts[: n_times // 2], [np.inf], ts[n_times // 2 :]])


def natural_test_scale(k, kte, y, f0, ts, lr, p):
    """``max_{t,i,r} Σ_j |(K_te V)_ij|·|φ_j(t) z_jr|``: the scale of the rounding of any
    evaluation of the test outputs (docs/numerics.md §16), from NumPy."""
    mu, v = np.linalg.eigh(k)
    keep = mu > p.diagnostics().cut_threshold
    mu, v = mu[keep], v[:, keep]
    z = v.T @ (f0 - y)
    s = lr * ts[np.isfinite(ts)] / y.size
    phi = -np.expm1(-np.outer(mu, s)) / mu[:, None]
    phi = np.concatenate([phi, (1.0 / mu)[:, None]], axis=1)
    kv = np.abs(kte @ v)
    return max(float(np.max(kv @ (phi * np.abs(z[:, c : c + 1])))) for c in range(z.shape[1]))


def check(a, b, scale, what):
    err = float(np.max(np.abs(a - b)))
    assert err <= TOL * scale, f"{what}: {err:.3e} > {TOL:.0e} x {scale:.3e}"


@pytest.mark.parametrize(
    ("kind", "backend"),
    [(kind, None) for kind in ("smooth", "clustered", "16 decades", "negative cut", "singular")]
    + [("clustered", "numpy"), ("16 decades", "numpy")],
)
def test_outputs_within_the_bound(kind, backend):
    # wide spectra need more modes for the rank to pay (r·(k + T) < k·T/2, docs/numerics.md §16)
    n = {"smooth": 240, "clustered": 240, "16 decades": 500}.get(kind, 400)
    k, kte, y, f0, g0 = make(kind, n=n)
    lr = 0.7
    ts = log_times(k, lr, y_size=y.size)
    p = tf.Predictor(k, y, learning_rate=lr, _backend=backend)
    kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    comp = p.at(ts, **kw)
    ranks = _ranks(p, backend)
    with direct():
        ref = p.at(ts, **kw)
        assert _ranks(p, backend) == (-1, -1)
    assert 0 <= ranks[0] < (len(ts) - 2) // 2 and 0 <= ranks[1] < (len(ts) - 2) // 2
    check(comp.train, ref.train, float(np.max(np.abs(f0 - y))), "train")
    check(comp.test, ref.test, natural_test_scale(k, kte, y, f0, ts, lr, p), "test")
    # t = 0 and t = ∞ are the direct path's bits (and f(0) = f0 exactly)
    j = int(np.flatnonzero(np.isinf(ts))[0])
    for i in (0, j):
        assert np.array_equal(comp.train[i], ref.train[i])
        assert np.array_equal(comp.test[i], ref.test[i])
    assert np.array_equal(comp.train[0], f0) and np.array_equal(comp.test[0], g0)
    one = p.at(np.inf, **kw)
    assert np.array_equal(comp.train[j], one.train) and np.array_equal(comp.test[j], one.test)
    # the cached test basis of a TestSet
    ts_set = p.test_set(kte, fx_test_0=g0)
    got = ts_set.at(ts, fx_train_0=f0)
    with direct():
        want = ts_set.at(ts, fx_train_0=f0)
    check(got.test, want.test, natural_test_scale(k, kte, y, f0, ts, lr, p), "cached test")
    assert p.factorizations == 1


def _ranks(p, backend):
    if backend is None:
        return _core._compression_ranks()
    return tuple(p._model.backend.compression_ranks)


@pytest.mark.parametrize("backend", [None, "numpy"])
def test_fast_path_runs_on_a_smooth_spectrum(backend):
    """On log-spaced times the table has a small numerical rank and the compressed path is
    taken for train and test outputs; few times or a switched-off compression go direct."""
    k, kte, y, f0, g0 = make("smooth")
    ts = log_times(k)
    p = tf.Predictor(k, y, _backend=backend)
    p.at(ts, fx_train_0=f0, k_test_train=kte)
    r_train, r_test = _ranks(p, backend)
    assert 5 < r_train < 150 and 5 < r_test < 150  # T = 1000 finite nonzero times
    p.at(ts[:12], fx_train_0=f0, k_test_train=kte)  # fewer than 16 times: direct
    assert _ranks(p, backend) == (-1, -1)


def test_linear_times_and_momentum_and_gd():
    k, kte, y, f0, g0 = make("smooth", seed=3)
    kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    mu_max = np.linalg.eigvalsh(k)[-1]
    lin = np.linspace(0.0, 50 * y.size / mu_max, 1001)
    cases = [
        (dict(learning_rate=1.0), lin),
        (dict(learning_rate=0.5, momentum=0.9), log_times(k, 0.5, y_size=y.size)),
        (dict(learning_rate=1.0, dynamics="gd"), np.round(log_times(k, y_size=y.size)[:-1])),
    ]
    for opts, ts in cases:
        if opts.get("dynamics") == "gd":
            ts = np.unique(np.concatenate([[0.0], ts[np.isfinite(ts)]]))
        p = tf.Predictor(k, y, **opts)
        comp = p.at(ts, **kw)
        assert _core._compression_ranks()[0] >= 0, opts
        with direct():
            ref = p.at(ts, **kw)
        scale = float(np.max(np.abs(f0 - y)))
        check(comp.train, ref.train, scale, f"train {opts}")
        check(comp.test, ref.test, float(np.max(np.abs(ref.test - g0))), f"test {opts}")


def test_float32_inputs():
    k, kte, y, f0, g0 = make("smooth", seed=4)
    k32, kte32 = k.astype(np.float32), kte.astype(np.float32)
    ts = log_times(k)
    for precision in ("float64", "float32"):
        p = tf.Predictor(k32, y.astype(np.float32), precision=precision)
        kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte32)
        comp = p.at(ts, **kw)
        assert _core._compression_ranks()[0] > 0
        with direct():
            ref = p.at(ts, **kw)
        assert comp.train.dtype == np.float32
        # float64 compute: the float32 cast dominates; float32 compute: 90·ε₃₂ (§16)
        tol = 1e-6 if precision == "float64" else 2e-5
        scale = float(np.max(np.abs(f0 - y)))
        assert np.max(np.abs(comp.train - ref.train)) <= tol * scale
        assert np.max(np.abs(comp.test - ref.test)) <= tol * float(np.max(np.abs(ref.test)))


def test_diag_reg_sweep_through_a_test_set():
    k, kte, _, y, f0, g0 = rbf_problem(200, 25, 3, seed=5)
    ts = log_times(k)
    tset = tf.Predictor(k, y).test_set(kte, fx_test_0=g0)
    for lam in (1e-6, 1e-4, 1e-2):
        member = tset.with_params(diag_reg=lam)
        got = member.at(ts, fx_train_0=f0)
        with direct():
            want = member.at(ts, fx_train_0=f0)
        check(got.train, want.train, float(np.max(np.abs(f0 - y))), f"train λ={lam}")
        check(got.test, want.test, float(np.max(np.abs(want.test))), f"test λ={lam}")


def test_thread_count_does_not_change_the_bits():
    k, kte, y, f0, g0 = make("smooth", seed=6)
    ts = log_times(k)
    kw = dict(fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    p = tf.Predictor(k, y)
    before = tf.get_num_threads()
    try:
        tf.set_num_threads(1)
        a = p.at(ts, **kw)
        tf.set_num_threads(2)
        b = p.at(ts, **kw)
    finally:
        tf.set_num_threads(before)
    assert _core._compression_ranks()[0] > 0
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)


@pytest.mark.parametrize("backend", [None, "numpy"])
@pytest.mark.parametrize("kind", ["smooth", "16 decades", "negative cut"])
def test_train_loss_from_the_projected_residual(backend, kind):
    """``train_loss`` at 10,000 times is ``Σ_j e_j(t)²|z_j|²`` plus the frozen part: it
    equals the loss of the (direct) outputs, and ``t = 0`` is the initial loss."""
    k, _, y, f0, _ = make(kind, seed=7)
    lr = 0.9
    ts = log_times(k, lr, n_times=10_000, y_size=y.size)
    p = tf.Predictor(k, y, learning_rate=lr, _backend=backend)
    loss = p.train_loss(ts, fx_train_0=f0)
    sel = np.arange(0, len(ts), 97)
    with direct():
        out = p.at(ts[sel], fx_train_0=f0).train
    want = np.sum((out - y) ** 2, axis=(1, 2)) / (2 * y.size)
    l0 = np.sum((f0 - y) ** 2) / (2 * y.size)
    assert np.max(np.abs(loss[sel] - want)) <= TOL * l0
    assert loss[0] == pytest.approx(l0, rel=1e-15)
    assert np.all(np.diff(loss[np.argsort(ts)]) <= 1e-15 * l0)  # gradient flow decreases it
