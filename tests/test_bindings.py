"""The extension's boundary: the closed form in one call equals the step-by-step calls
bitwise, errors cross as precise exceptions that name both shapes."""

import numpy as np
import pytest

import tangentflow as tf
from tangentflow import _core
from tangentflow._backends.cpu import CpuBackend

from conftest import rbf_problem

DYNAMICS = [("flow", [0.05]), ("gd", [0.05]), ("momentum", [0.5, 0.9, 40.0])]


def _problem(dtype):
    k, kte, _, y, _, _ = rbf_problem(40, 7, 3, seed=4)
    be = CpuBackend()
    w, v, _ = be.eigh(k, dtype)
    first = int(np.searchsorted(w, 1e-6 * w[-1]))
    mu, vr = w[first:], v[:, first:]
    f0 = (0.1 * np.arange(y.size).reshape(y.shape)).astype(dtype)
    g0 = np.full((kte.shape[0], y.shape[1]), 0.25, dtype=dtype)
    return be, mu, vr, (f0 - y.astype(dtype)), f0, kte.astype(dtype), g0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,params", DYNAMICS)
@pytest.mark.parametrize("cached", [False, True])
def test_closed_form_equals_the_separate_calls_bitwise(dtype, kind, params, cached):
    be, mu, vr, r, f0, kte, g0 = _problem(dtype)
    ts = np.array([0.0, 0.5, 3.0, 40.0, np.inf])
    em1, phi = be.mode_factors(kind, params, mu, ts)
    z = be.project(vr, r)
    train = be.train_outputs(vr, z, em1, f0)
    if cached:
        kv = np.ascontiguousarray(be.test_basis(kte, vr))
        test = be.test_outputs_cached(kv, z, phi, g0)
    else:
        kv = kte
        test = be.test_outputs(kte, vr, z, phi, g0)
    z1, train1, test1 = be.closed_form(kind, params, mu, ts, vr, r, f0, kv, g0, cached)
    assert z1.dtype == train1.dtype == test1.dtype == dtype
    np.testing.assert_array_equal(z1, z)
    np.testing.assert_array_equal(train1, train)
    np.testing.assert_array_equal(test1, test)
    # t = 0 gives the initial outputs exactly, t = inf the interpolant on the train set
    np.testing.assert_array_equal(train1[0], f0)
    np.testing.assert_array_equal(test1[0], g0)
    # parts left out are not computed
    _, tr, te = be.closed_form(kind, params, mu, ts, vr, r, None, None, None, cached)
    assert tr is None and te is None


def test_closed_form_matches_a_dense_reference():
    be, mu, vr, r, f0, kte, g0 = _problem(np.float64)
    ts = np.array([0.7, 5.0])
    _, train, test = be.closed_form("flow", [0.05], mu, ts, vr, r, f0, kte, g0, False)
    for j, t in enumerate(ts):
        e = np.exp(-mu * 0.05 * t)
        want_train = f0 + vr @ ((e - 1.0)[:, None] * (vr.T @ r))
        want_test = g0 - kte @ (vr @ (((1.0 - e) / mu)[:, None] * (vr.T @ r)))
        np.testing.assert_allclose(train[j], want_train, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(test[j], want_test, rtol=1e-11, atol=1e-11)


def test_closed_form_rejects_a_test_kernel_without_g0():
    be, mu, vr, r, f0, kte, _ = _problem(np.float64)
    with pytest.raises(ValueError, match="test and g0"):
        be.closed_form("flow", [0.05], mu, np.array([1.0]), vr, r, f0, kte, None, False)


def test_unknown_dynamics_is_a_value_error():
    be, mu, vr, r, f0, _, _ = _problem(np.float64)
    with pytest.raises(ValueError, match="unknown dynamics 'warp'"):
        be.closed_form("warp", [1.0], mu, np.array([1.0]), vr, r, f0, None, None, False)


def test_dimension_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"expected shape \(4, \*\), got \(3, 2\)"):
        _core.project_f64(np.ones((4, 4), order="F"), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"initial outputs: expected shape \(4, 1\), got \(4, 2\)"):
        _core.train_outputs_f64(np.eye(4), np.ones((4, 1)), np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"expected shape \(\*, 2\), got \(3, 4\)"):
        _core.fully_connected_f64(np.ones((3, 2)), np.ones((3, 4)), 1, "relu", 1.0, 0.0, True, True)


def test_solver_failure_is_an_integration_error():
    assert issubclass(tf.IntegrationError, tf.TangentflowError)
    assert "IntegrationError" in tf.__all__
    with pytest.raises(tf.IntegrationError, match="max_steps = 2"):
        _core.ode_solve(
            np.eye(3), np.ones((3, 1)), np.array([100.0]), "mse", y=np.zeros((3, 1)), max_steps=2
        )


def test_dynamics_is_a_typed_value():
    d = _core.Dynamics.flow(0.25)
    assert repr(d) == "Dynamics.flow(0.25)"
    with pytest.raises(ValueError, match="momentum must be in"):
        _core.Dynamics.momentum(1.0, 1.5, 3.0)
    with pytest.raises(TypeError):
        _core.mode_factors("flow", np.array([1.0]), np.array([1.0]))  # type: ignore[arg-type]
