"""The native ODE integrator (`tangentflow._core.ode_solve`) against SciPy and closed forms.

Semantics §7, §8, §14: at the default rtol = atol = 1.4e-8 the solution must be within 1e-6
(relative to the largest entry) of a high-accuracy solution (`solve_ivp`, rtol = atol = 1e-12).
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from tangentflow import _core
from tangentflow._errors import TangentflowError

D, R = 20, 3
N = D * R
TOL = 1e-6


def rel(got, want):
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


def problem(seed=0, m=7):
    """A random-features NTK-like joint kernel over D train and m test points."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(D + m, 40))
    k = np.maximum(x @ x.T / 40, 0) + 0.5 * (x @ x.T) / 40 + 0.1 * np.eye(D + m)
    k = (k + k.T) / 2 * 4.0
    f0 = 0.5 * rng.normal(size=(D, R))
    g0 = 0.5 * rng.normal(size=(m, R))
    labels = rng.integers(0, R, size=D)
    y_onehot = np.eye(R)[labels]
    y_soft = 0.7 * y_onehot + 0.1
    return k[:D, :D].copy(), k[D:, :D].copy(), f0, g0, y_onehot, y_soft


def softmax(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ce_grad(y, n=N):
    return lambda f: (softmax(f) * y.sum(-1, keepdims=True) - y) / n


def mse_grad(y, n=N):
    return lambda f: (f - y) / n


def reference(k, f0, grad, times, damping=None, q0=None, k_td=None, g0=None, qt0=None):
    """solve_ivp (DOP853, rtol = atol = 1e-12) on the train system (and the test outputs,
    integrated directly), at `times`."""
    m = 0 if k_td is None else k_td.shape[0]
    dr, mr = D * R, m * R
    if damping is None:

        def fun(_, z):
            g = grad(z[:dr].reshape(D, R))
            out = [-(k @ g).ravel(), g.ravel()]
            if m:
                out.append(-(k_td @ g).ravel())
            return np.concatenate(out)

        z0 = [f0.ravel(), np.zeros(dr)] + ([g0.ravel()] if m else [])
        blocks = ["f", "s"] + (["test"] if m else [])
        sizes = [dr, dr] + ([mr] if m else [])
    else:
        c = damping

        def fun(_, z):
            f, q, p = (z[i * dr : (i + 1) * dr] for i in range(3))
            g = grad(f.reshape(D, R))
            out = [q, -(k @ g).ravel() - c * q, g.ravel() - c * p, p]
            if m:
                qt = z[4 * dr + mr :]
                out += [qt, -(k_td @ g).ravel() - c * qt]
            return np.concatenate(out)

        q0 = np.zeros((D, R)) if q0 is None else q0
        z0 = [f0.ravel(), q0.ravel(), np.zeros(dr), np.zeros(dr)]
        blocks = ["f", "q", "p", "s"]
        sizes = [dr] * 4
        if m:
            z0 += [g0.ravel(), qt0.ravel()]
            blocks += ["test", "qtest"]
            sizes += [mr, mr]
    sol = solve_ivp(
        fun,
        (0.0, times[-1]),
        np.concatenate(z0),
        method="DOP853",
        t_eval=times,
        rtol=1e-12,
        atol=1e-12,
    )
    assert sol.success
    out, i = {}, 0
    for name, size in zip(blocks, sizes):
        rows = size // R
        out[name] = sol.y[i : i + size].T.reshape(len(times), rows, R)
        i += size
    return out


TIMES = np.array([0.0, 0.3, 2.0, 10.0, 60.0, 300.0])


def test_mse_matches_closed_form_and_scipy():
    k, k_td, f0, g0, _, y = problem(1)
    out = _core.ode_solve(k, f0, TIMES, "mse", y)
    assert out["f"].shape == out["s"].shape == (len(TIMES), D, R)
    assert "q" not in out and out["tau_end"] == TIMES[-1]
    # closed form: F = Y + V e^{-λτ/n} Vᵀ r0,  S = V (1 - e^{-λτ/n})/λ Vᵀ r0
    lam, v = np.linalg.eigh(k)
    z = v.T @ (f0 - y)
    e = np.exp(-np.outer(TIMES, lam) / N)
    want_f = y + np.einsum("ij,tj,jr->tir", v, e, z)
    want_s = np.einsum("ij,tj,jr->tir", v, (1 - e) / lam, z)
    assert rel(out["f"], want_f) < TOL
    assert rel(out["s"], want_s) < TOL
    # τ = 0 exactly
    np.testing.assert_array_equal(out["f"][0], f0)
    np.testing.assert_array_equal(out["s"][0], 0.0)
    ref = reference(k, f0, mse_grad(y), TIMES, k_td=k_td, g0=g0)
    assert rel(out["f"], ref["f"]) < TOL
    # test outputs from S: g0 - Θ_td S
    assert rel(g0 - np.einsum("md,tdr->tmr", k_td, out["s"]), ref["test"]) < TOL


def test_cross_entropy_flow_matches_scipy():
    k, k_td, f0, g0, y, _ = problem(2)
    out = _core.ode_solve(k, f0, TIMES, "cross_entropy", y, N, R)
    ref = reference(k, f0, ce_grad(y), TIMES, k_td=k_td, g0=g0)
    assert rel(out["f"], ref["f"]) < TOL
    assert rel(out["s"], ref["s"]) < TOL
    assert rel(g0 - np.einsum("md,tdr->tmr", k_td, out["s"]), ref["test"]) < TOL
    assert out["n_steps"] > 0 and out["n_evals"] >= 6 * out["n_steps"]


def test_cross_entropy_groups_across_rows():
    # R = 1 with classes = 3: softmax over 3 consecutive rows (trace_axes=() layout).
    k, _, f0, _, y, _ = problem(3)
    kk = np.kron(k[:8, :8], np.eye(3)) + 0.05 * np.eye(24)
    f = f0[:8].reshape(24, 1)
    yy = y[:8].reshape(24, 1)
    out = _core.ode_solve(kk, f, TIMES[:4], "cross_entropy", yy, 24.0, 3)

    def grad(ff):
        return ce_grad(yy.reshape(8, 3), 24.0)(ff.reshape(8, 3)).reshape(24, 1)

    def fun(_, z):
        g = grad(z.reshape(24, 1))
        return -(kk @ g).ravel()

    sol = solve_ivp(
        fun, (0, TIMES[3]), f.ravel(), "DOP853", t_eval=TIMES[:4], rtol=1e-12, atol=1e-12
    )
    assert rel(out["f"][:, :, 0], sol.y.T) < TOL


@pytest.mark.parametrize("with_q0", [False, True])
def test_cross_entropy_momentum_matches_scipy(with_q0):
    k, k_td, f0, g0, y, _ = problem(4)
    rng = np.random.default_rng(5)
    q0 = 0.05 * rng.normal(size=(D, R)) if with_q0 else None
    qt0 = 0.05 * rng.normal(size=(k_td.shape[0], R)) if with_q0 else np.zeros((k_td.shape[0], R))
    c = 0.4
    times = np.array([0.0, 0.5, 3.0, 20.0, 80.0])
    out = _core.ode_solve(k, f0, times, "cross_entropy", y, N, R, q0, c)
    ref = reference(k, f0, ce_grad(y), times, damping=c, q0=q0, k_td=k_td, g0=g0, qt0=qt0)
    for name in ("f", "q", "p", "s"):
        assert out[name].shape == (len(times), D, R)
        assert rel(out[name], ref[name]) < TOL, name
    # test outputs: f_test = g0 + qt0 (1 - e^{-cτ})/c - Θ_td S,  q_test = e^{-cτ} qt0 - Θ_td P
    decay = np.exp(-c * times)[:, None, None]
    f_test = g0 + qt0 * (1 - decay) / c - np.einsum("md,tdr->tmr", k_td, out["s"])
    q_test = decay * qt0 - np.einsum("md,tdr->tmr", k_td, out["p"])
    assert rel(f_test, ref["test"]) < TOL
    assert rel(q_test, ref["qtest"]) < TOL


def test_python_callable_gradient():
    k, _, f0, _, y, _ = problem(6)
    calls = []

    def grad(f):
        assert f.shape == (D, R) and f.dtype == np.float64
        calls.append(1)
        return ce_grad(y)(f)

    out = _core.ode_solve(k, f0, TIMES, grad)
    builtin = _core.ode_solve(k, f0, TIMES, "cross_entropy", y, N, R)
    assert len(calls) == out["n_evals"]
    np.testing.assert_allclose(out["f"], builtin["f"], rtol=0, atol=1e-12)
    ref = reference(k, f0, ce_grad(y), TIMES)
    assert rel(out["f"], ref["f"]) < TOL
    # array-likes and other float dtypes are converted
    out32 = _core.ode_solve(k, f0, TIMES[:3], lambda f: ce_grad(y)(f).astype(np.float32).tolist())
    assert rel(out32["f"], ref["f"][:3]) < 1e-5


def test_converge_tol():
    k, _, f0, _, _, y = problem(7)  # soft targets: cross-entropy has a finite minimiser
    tol = 1e-6
    out = _core.ode_solve(k, f0, None, "cross_entropy", y, N, R, converge_tol=tol)
    assert out["f"].shape == (1, D, R)
    f_inf = out["f"][0]
    assert np.max(np.abs(k @ ce_grad(y)(f_inf))) <= tol
    tau = out["tau_end"]
    assert 0 < tau < 1e12
    ref = reference(k, f0, ce_grad(y), np.array([0.0, tau]))
    assert rel(f_inf, ref["f"][-1]) < TOL
    # times and convergence together: the converged state is the extra last slot
    both = _core.ode_solve(k, f0, TIMES[:3], "cross_entropy", y, N, R, converge_tol=tol)
    assert both["f"].shape == (4, D, R)
    assert rel(both["f"][:3], reference(k, f0, ce_grad(y), TIMES[:3])["f"]) < TOL
    np.testing.assert_allclose(both["f"][3], f_inf, atol=1e-6)
    # one-hot targets: logits grow forever; a tiny tolerance fails with TangentflowError
    _, _, _, _, y1, _ = problem(7)
    with pytest.raises(TangentflowError):
        _core.ode_solve(k, f0, None, "cross_entropy", y1, N, R, converge_tol=1e-15)


class Boom(Exception):
    pass


def test_errors():
    k, _, f0, _, y, _ = problem(8)
    calls = []

    def bad(f):
        calls.append(1)
        if len(calls) > 5:
            raise Boom("from the callable")
        return f * 0.01

    with pytest.raises(Boom, match="from the callable"):
        _core.ode_solve(k, f0, TIMES, bad)
    with pytest.raises(ValueError, match="shape"):
        _core.ode_solve(k, f0, TIMES, lambda f: f[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        _core.ode_solve(k, f0, TIMES, lambda f: f * np.nan)
    with pytest.raises(ValueError):
        _core.ode_solve(k, f0[:5], TIMES, "mse", y[:5])
    with pytest.raises(ValueError):
        _core.ode_solve(k[:, :5], f0, TIMES, "mse", y)
    with pytest.raises(ValueError, match="shape"):
        _core.ode_solve(k, f0, TIMES, "mse", y[:, :2])
    with pytest.raises(ValueError, match="needs the targets"):
        _core.ode_solve(k, f0, TIMES, "mse")
    with pytest.raises(ValueError, match="sorted"):
        _core.ode_solve(k, f0, TIMES[::-1].copy(), "mse", y)
    with pytest.raises(ValueError):
        _core.ode_solve(k, f0, np.array([-1.0]), "mse", y)
    with pytest.raises(ValueError):
        _core.ode_solve(k, f0, np.array([np.inf]), "mse", y)
    with pytest.raises(ValueError, match="classes"):
        _core.ode_solve(k, f0, TIMES, "cross_entropy", y, N, 7)
    with pytest.raises(ValueError, match="loss"):
        _core.ode_solve(k, f0, TIMES, "hinge", y)
    with pytest.raises(TypeError):
        _core.ode_solve(k, f0, TIMES, 3.0, y)
    with pytest.raises(ValueError, match="q0"):
        _core.ode_solve(k, f0, TIMES, "mse", y, q0=f0)
    with pytest.raises(ValueError):
        _core.ode_solve(k, f0, TIMES, "mse", y, damping=-1.0)
    with pytest.raises(ValueError):
        _core.ode_solve(k, f0, None, "mse", y, converge_tol=0.0)
    kn = k.copy()
    kn[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _core.ode_solve(kn, f0, TIMES, "mse", y)
    with pytest.raises(TangentflowError, match="max_steps"):
        _core.ode_solve(k, f0, np.array([1e4]), "mse", y, max_steps=3)
