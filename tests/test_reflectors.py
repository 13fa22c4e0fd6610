"""Eigenvectors kept as reflectors (docs/numerics.md §17): the closed forms apply ``Q`` to
thin products and never form ``V``; forming it gives the eigensolver's ``V`` bitwise; a
Predictor's outputs keep their bits whatever was asked of it before (a test set, whose
K_te·V comes through K_te·Q; V formed for another use; a pickle); and the outputs match
NumPy's eigendecomposition."""

import pickle

import numpy as np
import pytest
from test_compression import log_times, make

import tangentflow as tf
from tangentflow import _core
from tangentflow._backends import cpu

KINDS = ("smooth", "clustered", "16 decades", "negative cut", "singular")


@pytest.fixture(autouse=True)
def _keep_reflectors(monkeypatch):
    """This module's kernels are small: keep their reflectors as a large kernel's are."""
    monkeypatch.setattr(cpu, "FORM_BELOW", 0)


def _reference(k, kte, y, f0, g0, ts, p):
    """Train and test outputs from NumPy's eigh (same retained modes)."""
    mu, v = np.linalg.eigh(k)
    keep = mu > p.diagnostics().cut_threshold
    mu, v = mu[keep], v[:, keep]
    z = v.T @ (f0 - y)
    s = ts / y.size
    e = np.exp(-np.outer(s, mu))
    phi = np.where(np.isinf(s)[:, None], 1.0 / mu, -np.expm1(-np.outer(s, mu)) / mu)
    resid = (f0 - y) - v @ z  # the cut part does not evolve
    train = y + resid + np.einsum("nk,tk,kr->tnr", v, e, z)
    test = g0 - np.einsum("mk,tk,kr->tmr", kte @ v, phi, z)
    return train, test


@pytest.mark.parametrize("n", [1, 2, 17, 100, 151, 333])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forming_v_gives_the_eigensolvers_bits(n, dtype):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, n + 3))
    k = (x @ x.T / n).astype(dtype)
    w, v, e = (_core.sym_eigh_f64_f64 if dtype == np.float64 else _core.sym_eigh_f32_f32)(k, 0.0)
    fac = (
        _core.sym_eigh_factored_f64_f64 if dtype == np.float64 else _core.sym_eigh_factored_f32_f32
    )
    form = _core.form_eigenvectors_f64 if dtype == np.float64 else _core.form_eigenvectors_f32
    w2, z, e2, q = fac(k, 0.0)
    assert q.n == n and e2 == e
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(form(q, z), v)
    if dtype == np.float64 and n > 1:
        # V is orthogonal and diagonalizes the scaled kernel (LAPACK-level residual)
        eps = np.finfo(np.float64).eps
        assert np.abs(v.T @ v - np.eye(n)).max() < 50 * n * eps
        resid = k * 2.0**-e @ v - v * w
        assert np.abs(resid).max() < 50 * n * eps * np.abs(w).max()
        # Qᵀ undoes Q
        y = rng.standard_normal((n, 5))
        back = _core.apply_transpose_f64(q, form(q, y))
        assert np.abs(back - y).max() < 50 * n * eps


def test_reflectors_reject_bad_inputs():
    k = np.eye(4) + 0.1
    _, z, _, q = _core.sym_eigh_factored_f64_f64(k, 0.0)
    with pytest.raises(ValueError, match="rows"):
        _core.form_eigenvectors_f64(q, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="not f32"):
        _core.form_eigenvectors_f32(q, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="rows"):
        _core.project_f64(np.zeros((3, 2)), np.zeros((3, 1)), None, q)
    with pytest.raises(ValueError, match="blocks"):
        _core._reflectors_from_parts_f64(np.zeros((4, 4)), np.zeros((2, 2)), 32)
    back = pickle.loads(pickle.dumps(q))
    assert back.n == 4
    np.testing.assert_array_equal(
        _core.form_eigenvectors_f64(back, z), _core.form_eigenvectors_f64(q, z)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_closed_forms_do_not_form_v_and_match_numpy(kind):
    k, kte, y, f0, g0 = make(kind, n=240, seed=5)
    # 8 times take the direct path, 300 the compressed one (§16)
    for ts in (log_times(k, n_times=6), log_times(k, n_times=300)):
        p = tf.Predictor(k, y)
        out = p.at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
        fact = p._model.fact
        assert fact.v is None and fact.q is not None, "V must not be formed"
        p.train_loss(ts, fx_train_0=f0)
        assert fact.v is None
        train, test = _reference(k, kte, y, f0, g0, ts, p)
        # accurate to cond_R·ε relative (the kept spectrum spans up to 1e13)
        cond = 1e13 if kind == "16 decades" else 1e6
        tol = 1e-14 * cond
        assert np.abs(out.train - train).max() <= tol * max(1.0, np.abs(train).max())
        assert np.abs(out.test - test).max() <= tol * max(1.0, np.abs(test).max())


@pytest.mark.parametrize("kind", ("smooth", "16 decades", "negative cut"))
def test_small_kernels_form_v_at_once_and_agree(kind, monkeypatch):
    """Below ``FORM_BELOW`` rows V is formed by the eigensolver (§17, "Small kernels"); the
    outputs agree with the reflector path and with NumPy to cond_R·ε, and the cut is the
    same."""
    k, kte, y, f0, g0 = make(kind, n=120, seed=11)
    ts = log_times(k, n_times=6)
    monkeypatch.setattr(cpu, "FORM_BELOW", 256)
    p = tf.Predictor(k, y)
    out = p.at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
    fact = p._model.fact
    assert fact.q is None and fact.z is None and fact.v is not None
    # the same eigenvectors, bitwise, as the reflectors give once formed
    w, z, _, q = _core.sym_eigh_factored_f64_f64(k, 0.0)
    np.testing.assert_array_equal(fact.v, _core.form_eigenvectors_f64(q, z))
    monkeypatch.setattr(cpu, "FORM_BELOW", 0)
    pq = tf.Predictor(k, y)
    ref = pq.at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
    assert pq._model.fact.q is not None
    assert p.diagnostics().n_cut == pq.diagnostics().n_cut
    cond = 1e13 if kind == "16 decades" else 1e6
    train, test = _reference(k, kte, y, f0, g0, ts, p)
    for a, b in ((out, ref), (out, None)):
        bt, bs = (b.train, b.test) if b is not None else (train, test)
        assert np.abs(a.train - bt).max() <= 1e-14 * cond * max(1.0, np.abs(bt).max())
        assert np.abs(a.test - bs).max() <= 1e-14 * cond * max(1.0, np.abs(bs).max())
    # a pickle keeps V and its bits
    back = pickle.loads(pickle.dumps(p))
    again = back.at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
    np.testing.assert_array_equal(again.train, out.train)
    np.testing.assert_array_equal(again.test, out.test)


@pytest.mark.parametrize("kind", ("smooth", "negative cut"))
def test_outputs_keep_their_bits_after_v_is_formed(kind):
    k, kte, y, f0, g0 = make(kind, n=200, seed=7)
    few = np.array([0.0, 3.0, 40.0, np.inf])
    many = log_times(k, n_times=120)
    p = tf.Predictor(k, y)
    a1 = p.at(few, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
    a2 = p.at(many, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
    s1 = p.at(40.0, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
    assert p._model.fact.v is None
    # a test set's K_te·V comes from K_te·Q and Z, V still not formed
    tset = p.test_set(kte, fx_test_0=g0)
    t1 = tset.at(few, fx_train_0=f0)
    assert p._model.fact.v is None
    # ... and agrees with K_te·V of NumPy's eigenvectors (cond_R·ε)
    assert np.abs(t1.test - a1.test).max() <= 1e-9 * np.abs(a1.test).max()
    # forming V for another use (what covariances and GP posteriors take), then a pickle
    p._model.eigenvectors()
    assert p._model.fact.v is not None
    assert tset.at(few, fx_train_0=f0).test.tobytes() == t1.test.tobytes()
    for q in (p, pickle.loads(pickle.dumps(p))):
        b1 = q.at(few, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
        b2 = q.at(many, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)
        for a, b in ((a1, b1), (a2, b2)):
            np.testing.assert_array_equal(a.train, b.train)
            np.testing.assert_array_equal(a.test, b.test)
    # a time alone and inside an array: the same bits (docs/numerics.md §3.1)
    np.testing.assert_array_equal(s1.train, a1.train[2])
    np.testing.assert_array_equal(s1.test, a1.test[2])


def test_an_unfactored_pickle_and_an_old_one_still_load():
    k, kte, y, f0, g0 = make("smooth", n=60, seed=3)
    p = tf.Predictor(k, y)
    fresh = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(
        fresh.at(2.0, fx_train_0=f0).train, p.at(2.0, fx_train_0=f0).train
    )
    # a pickle from before the reflectors holds V only: it loads and uses V
    state = p.__getstate__()
    state["v"] = p._model.eigenvectors()
    del state["z"], state["q"]
    old = tf.Predictor.__new__(tf.Predictor)
    old.__setstate__(state)
    assert old._model.fact.q is None
    a, b = old.at(2.0, fx_train_0=f0).train, p.at(2.0, fx_train_0=f0).train
    assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
