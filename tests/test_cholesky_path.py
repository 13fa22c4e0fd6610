"""The t = ∞ Cholesky path (docs/numerics.md §3.2) against SciPy and dense references:
the scale from validation's max|K_ij|, the shared block solves of the estimators, the gate,
and the finiteness check of the inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sl

import tangentflow as tf
from tangentflow import _backends
from tangentflow._model.kernel import CHOLESKY_MAX_COND, KernelModel
from tangentflow._model.options import Options


def _spd(n: int, cond: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.geomspace(1.0, 1.0 / cond, n)
    k = (q * w) @ q.T
    return 0.5 * (k + k.T)


@pytest.mark.parametrize("e", [-60, 0, 45])
def test_given_max_abs_gives_the_same_bits_and_scipys_solution(e: int) -> None:
    k = np.ldexp(_spd(120, 1e3), e)
    rhs = np.random.default_rng(1).standard_normal((120, 3))
    be = _backends.by_name("cpu")
    max_abs = float(np.max(np.abs(k)))
    a = be.cholesky_solve(k, 0.0, rhs)
    b = be.cholesky_solve(k, 0.0, rhs, max_abs)
    assert a is not None and b is not None
    assert a[1:] == b[1:]
    np.testing.assert_array_equal(a[0], b[0])
    x, norm_inf, _, cond, exp = b
    assert exp == math.frexp(max_abs)[1]
    ref = sl.cho_solve(sl.cho_factor(k, lower=True), rhs)
    np.testing.assert_allclose(np.ldexp(x, -exp), ref, rtol=1e-10, atol=0)
    assert norm_inf == pytest.approx(np.max(np.sum(np.abs(np.ldexp(k, -exp)), axis=1)), rel=1e-14)
    true_cond = np.linalg.cond(k, 1)
    assert 0.1 * true_cond <= cond <= 1.000001 * true_cond


def test_t_none_matches_scipy_cho_solve() -> None:
    rng = np.random.default_rng(2)
    n, m, lam = 200, 30, 1e-3
    k = _spd(n, 1e4, seed=3)
    kte = rng.standard_normal((m, n)) * 0.1
    y, f0, g0 = (
        rng.standard_normal((n, 4)),
        rng.standard_normal((n, 4)),
        rng.standard_normal((m, 4)),
    )
    out = tf.Predictor(k, y, diag_reg=lam, diag_reg_absolute_scale=True).at(
        None, k_test_train=kte, fx_train_0=f0, fx_test_0=g0
    )
    c = sl.cho_factor(k + lam * np.eye(n), lower=True)
    ref = g0 + kte @ sl.cho_solve(c, y - f0)
    np.testing.assert_allclose(out.test, ref, rtol=1e-10, atol=1e-12 * np.max(np.abs(ref)))
    np.testing.assert_array_equal(out.train, y)


def test_gate_sends_an_ill_conditioned_kernel_to_the_spectral_path() -> None:
    k = _spd(150, 1e9, seed=4)
    y = np.random.default_rng(5).standard_normal((150, 2))
    model = KernelModel.create(k, Options.create(), y_train=y)
    res = model.backend.cholesky_solve(model.k, model.shift, y, model.max_abs)
    assert res is not None  # positive definite: the factorization succeeds
    assert res[3] > CHOLESKY_MAX_COND  # but the estimate sees cond ~1e9
    assert model.cholesky_solve(y) is None
    w = np.linalg.eigvalsh(k)
    assert res[3] >= 0.1 * w[-1] / w[0]


def test_finiteness_check() -> None:
    k = _spd(20, 10.0)
    big = np.full((20, 2), 1e308)  # finite, but its sum overflows
    tf.Predictor(k, big)
    for bad in (np.nan, np.inf, -np.inf):
        y = np.ones((20, 2))
        y[7, 1] = bad
        with pytest.raises(ValueError, match="y_train contains NaN or infinity"):
            tf.Predictor(k, y)
    y = big.copy()
    y[3, 0] = -np.inf  # -inf among huge finite entries: the sum is -inf or NaN
    with pytest.raises(ValueError, match="y_train contains NaN or infinity"):
        tf.Predictor(k, y)


@pytest.mark.parametrize("e", [-1000, -100, -7, 0, 57, 900])
def test_test_outputs_come_without_a_scaled_copy_and_keep_their_bits(e, monkeypatch) -> None:
    """``(2^-e·K_te)·x`` as ``K_te·(2^-e·x)`` (docs/numerics.md §3.2): no scaled copy of
    K_te, the bits of the scaled-copy product, and the same bits at every kernel scale."""
    from tangentflow._model.test_inputs import TestInputs

    rng = np.random.default_rng(4)
    k = _spd(80, 1e3, seed=2)
    kte = rng.standard_normal((9, 80)) @ k / 10
    y, g0 = rng.standard_normal((80, 2)), rng.standard_normal((9, 2))
    kw = dict(y_train=y, fx_train_0=0.0, fx_test_0=g0)
    ref = tf.Predictor(k).at(None, k_test_train=kte, **kw).test
    copies = []
    scaled_k = TestInputs.scaled_k
    monkeypatch.setattr(
        TestInputs, "scaled_k", lambda self, ex: copies.append(ex) or scaled_k(self, ex)
    )
    s = 2.0**e
    p = tf.Predictor(s * k)
    out = p.at(None, k_test_train=s * kte, **kw).test
    assert p.factorizations == 0  # the Cholesky path
    assert copies == []
    np.testing.assert_array_equal(out, ref)
    # the product through the scaled copy, on the same solve
    m = p.model
    sol = m.cholesky_solve(np.ascontiguousarray(y))
    assert sol is not None
    x, ex = sol
    t = TestInputs(m, s * kte, g0).bind(m.call_targets(y)[1])
    np.testing.assert_array_equal(t.scaled_times(ex, x), m.backend.test_basis(scaled_k(t, ex), x))
