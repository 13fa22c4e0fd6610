"""Time bases kept across calls (docs/numerics.md §16, "Reuse"): repeat calls through a
TestSet with new times, diag_reg sweeps in any order and alternating initial outputs agree
with the direct path within the bound of §16 on adversarial spectra, and with SciPy's
``expm`` on a small problem; the reuse really runs (checked through the core's hook, never
through timing)."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.linalg as sl
from test_compression import check, direct, log_times, make, natural_test_scale

import tangentflow as tf
from tangentflow import _core

KINDS = ("smooth", "clustered", "16 decades", "negative cut", "singular")
SIZES = {"smooth": 240, "clustered": 240, "16 decades": 500}


def _jittered(ts, seed, lo=0.85, hi=1.2):
    """The finite nonzero times of ``ts`` jittered (some beyond the original range), with
    0 and ∞ kept."""
    rng = np.random.default_rng(seed)
    fin = np.isfinite(ts) & (ts > 0)
    out = ts.copy()
    out[fin] = ts[fin] * rng.uniform(lo, hi, int(fin.sum()))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_repeat_calls_reuse_the_kept_bases(kind):
    k, kte, y, f0, g0 = make(kind, n=SIZES.get(kind, 400), seed=11)
    lr = 0.8
    ts = log_times(k, lr, n_times=300, y_size=y.size)
    p = tf.Predictor(k, y, learning_rate=lr)
    tset = p.test_set(kte, fx_test_0=g0)
    tset.at(ts, fx_train_0=f0)
    assert _core._basis_reuse() == (0, 0)  # the first call makes them
    # the sides whose table compresses (on "negative cut" at 300 times the train side's
    # rank does not pay, docs/numerics.md §16 "When")
    sides = [i for i, rank in enumerate(_core._compression_ranks()) if rank >= 0]
    assert 1 in sides
    train_scale = float(np.max(np.abs(f0 - y)))
    reused = []
    for seed in range(2):
        t2 = _jittered(ts, seed)
        got = tset.at(t2, fx_train_0=f0)
        reused.append(_core._basis_reuse())
        with direct():
            want = tset.at(t2, fx_train_0=f0)
        check(got.train, want.train, train_scale, f"train {kind} #{seed}")
        scale = natural_test_scale(k, kte, y, f0, t2, lr, p)
        check(got.test, want.test, scale, f"test {kind} #{seed}")
        # t = 0 and t = ∞ keep the direct path's bits
        for i in (0, int(np.flatnonzero(np.isinf(t2))[0])):
            assert np.array_equal(got.train[i], want.train[i])
            assert np.array_equal(got.test[i], want.test[i])
    assert all(r[i] > 0 for r in reused for i in sides), reused
    assert p.factorizations == 1


def test_a_repeated_call_gives_the_same_bits():
    k, kte, y, f0, g0 = make("smooth", seed=12)
    ts = log_times(k, n_times=200)
    tset = tf.Predictor(k, y).test_set(kte, fx_test_0=g0)
    a = tset.at(ts, fx_train_0=f0)
    b = tset.at(ts, fx_train_0=f0)
    assert _core._basis_reuse() == (1, 1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)


@pytest.mark.parametrize(
    ("kind", "order"),
    [("smooth", "shuffled"), ("16 decades", "descending"), ("negative cut", "ascending")],
)
def test_diag_reg_sweep_in_any_order(kind, order):
    """diag_reg from 0 to large through with_params members of one TestSet; on the
    "negative cut" spectrum the larger values retain modes the smaller ones cut (another
    retained set: the kept bases do not apply and are replaced)."""
    k, kte, y, f0, g0 = make(kind, n=SIZES.get(kind, 400), seed=13)
    ts = log_times(k, n_times=200)
    lams = np.array([0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 0.3, 10.0])
    if order == "descending":
        lams = lams[::-1]
    elif order == "shuffled":
        lams = np.random.default_rng(1).permutation(lams)
    p = tf.Predictor(k, y)
    tset = p.test_set(kte, fx_test_0=g0)
    train_scale = float(np.max(np.abs(f0 - y)))
    uses = 0
    for lam in lams:
        member = tset.with_params(diag_reg=float(lam))
        got = member.at(ts, fx_train_0=f0)
        uses += _core._basis_reuse()[1] > 0
        with direct():
            want = member.at(ts, fx_train_0=f0)
        check(got.train, want.train, train_scale, f"train λ={lam}")
        scale = natural_test_scale(k, kte, y, f0, ts, 1.0, member.predictor)
        check(got.test, want.test, scale, f"test λ={lam}")
    assert uses >= 3, uses
    assert p.factorizations == 1


def test_alternating_initial_outputs_and_threads():
    """Calls with other coefficients z do not use a basis made for another z; concurrent
    calls on one TestSet give the sequential results."""
    k, kte, y, f0, g0 = make("clustered", seed=14)
    ts = log_times(k, n_times=200)
    tset = tf.Predictor(k, y).test_set(kte, fx_test_0=g0)
    inits = [f0, -f0, 0.5 * f0, f0]
    with direct():
        refs = [tset.at(ts, fx_train_0=f) for f in inits]
    scale = float(np.max(np.abs(f0 - y))) * 2
    for f, ref in zip(inits, refs):
        got = tset.at(ts, fx_train_0=f)
        check(got.train, ref.train, scale, "train")
        check(got.test, ref.test, float(np.max(np.abs(ref.test))), "test")
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda f: tset.at(ts, fx_train_0=f), inits * 2))
    for got, ref in zip(outs, refs * 2):
        check(got.train, ref.train, scale, "threaded train")
        check(got.test, ref.test, float(np.max(np.abs(ref.test))), "threaded test")


def test_against_expm():
    """An independent reference: ``f(t) = Y + expm(−sA)(f₀ − Y)`` and
    ``g(t) = g₀ − K_te A⁻¹(I − expm(−sA))(f₀ − Y)``, repeat calls and a sweep."""
    rng = np.random.default_rng(15)
    n, m, r = 300, 20, 2
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = (q * np.geomspace(1e-3, 1.0, n)) @ q.T
    k = 0.5 * (k + k.T)
    kte = rng.standard_normal((m, n)) / np.sqrt(n)
    y = rng.standard_normal((n, r))
    f0 = 0.2 * rng.standard_normal((n, r))
    g0 = 0.2 * rng.standard_normal((m, r))
    ts = np.geomspace(1e-1, 1e5, 300) * n * r
    tset = tf.Predictor(k, y).test_set(kte, fx_test_0=g0)
    tset.at(ts, fx_train_0=f0)
    uses = 0
    for lam in (0.0, 1e-3):
        a = k + lam * np.eye(n)
        member = tset.with_params(diag_reg=lam, diag_reg_absolute_scale=True)
        for t2 in (_jittered(ts, 1), ts[::5]):
            got = member.at(t2, fx_train_0=f0)
            uses += _core._basis_reuse()[1] > 0
            for j in range(0, len(t2), 59):
                t = t2[j]
                e = sl.expm(-(t / y.size) * a)
                train = y + e @ (f0 - y)
                test = g0 - kte @ np.linalg.solve(a, (np.eye(n) - e) @ (f0 - y))
                assert np.max(np.abs(got.train[j] - train)) <= 1e-10
                assert np.max(np.abs(got.test[j] - test)) <= 1e-9 * max(1.0, np.abs(test).max())
    assert uses >= 2, uses


def test_a_predictor_with_kept_bases_pickles():
    k, kte, y, f0, g0 = make("smooth", seed=16)
    ts = log_times(k, n_times=200)
    p = tf.Predictor(k, y)
    a = p.at(ts, fx_train_0=f0, k_test_train=kte, fx_test_0=g0)
    q = pickle.loads(pickle.dumps(p))
    b = q.at(ts, fx_train_0=f0, k_test_train=kte, fx_test_0=g0)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
