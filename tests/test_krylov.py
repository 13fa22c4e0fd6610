"""The operator (Krylov) backend of the kernel model against the dense Predictor on
constructed spectra (docs/numerics.md §15): outputs at 100 times and t = ∞, train and test,
train_loss, with_params, TestSet, Ensemble means, the error estimate against the true
error, the iteration cap, interrupts and exceptions from matmat, and bad input."""

from __future__ import annotations

import os
import signal
import warnings
from typing import Any

import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator, aslinearoperator

import tangentflow as tf
from tangentflow import operators

RTOL = 1e-8
N, R, M = 1000, 2, 40


class Counting(LinearOperator):  # type: ignore[misc]
    """A LinearOperator over a stored matrix that counts its products (columns)."""

    def __init__(self, k: np.ndarray) -> None:
        super().__init__(dtype=k.dtype, shape=k.shape)
        self.k = k
        self.columns = 0
        self.calls = 0

    def _matmat(self, v: np.ndarray) -> np.ndarray:
        self.columns += v.shape[1]
        self.calls += 1
        return self.k @ v

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        return self._matmat(v.reshape(-1, 1)).ravel()

    def _adjoint(self) -> LinearOperator:
        return self


def _orthogonal(n: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


_U: dict[int, np.ndarray] = {}


def spectrum(kind: str, n: int) -> np.ndarray:
    i = np.arange(1, n + 1, dtype=float)
    if kind == "well":  # cond 100
        return np.logspace(0, -2, n)
    if kind == "ill":  # power law, cond 1e8
        return i ** (-np.log(1e8) / np.log(n))
    if kind == "singular":  # rank n/2, power law on the range
        return np.r_[np.arange(1, n // 2 + 1, dtype=float) ** -2.0, np.zeros(n - n // 2)]
    raise AssertionError(kind)


def problem(kind: str, n: int = N, r: int = R, m: int = M) -> dict[str, Any]:
    """``K = U diag(λ) Uᵀ`` with a random orthogonal ``U``, targets, initial outputs and a
    test kernel ``K_td = G K`` (in the range of ``K``, as test kernels of real data are)."""
    if n not in _U:
        _U[n] = _orthogonal(n, 1)
    u = _U[n]
    lam = spectrum(kind, n)
    k = (u * lam) @ u.T
    k = 0.5 * (k + k.T)
    rng = np.random.default_rng(2)
    g = rng.standard_normal((m, n)) / np.sqrt(n)
    return {
        "k": k,
        "y": rng.standard_normal((n, r)),
        "f0": 0.1 * rng.standard_normal((n, r)),
        "kt": g @ k,
        "g0": 0.1 * rng.standard_normal((m, r)),
    }


def times(n: int, r: int) -> np.ndarray:
    """100 times from s = 1e-2 to s = 1e4 (``s = η t / n``, η = 1) and t = ∞."""
    return np.r_[np.logspace(-2, 4, 100) * (n * r), np.inf]


def _rel(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    return float(np.max(np.abs(a - b))) / scale


@pytest.mark.parametrize("kind", ["well", "ill", "singular"])
def test_agrees_with_dense_at_100_times_and_inf(kind: str) -> None:
    p = problem(kind)
    ts = times(N, R)
    dense = tf.Predictor(p["k"], p["y"])
    kry = tf.Predictor(aslinearoperator(p["k"]), p["y"])
    kw = {"fx_train_0": p["f0"], "fx_test_0": p["g0"]}
    a = dense.at(ts, k_test_train=p["kt"], **kw)
    b = kry.at(ts, k_test_train=aslinearoperator(p["kt"]), **kw)
    info = kry.solver_info
    assert info is not None and info.converged, info
    assert info.method == "block-lanczos + nystrom-pcg"
    assert info.matvecs > 0 and info.iterations > 0
    # the finite-time and t = inf solves share their sweeps over the kernel
    assert 0 < info.products < info.iterations, info
    scale = float(np.max(np.abs(p["f0"] - p["y"])))
    err = _rel(b.train, a.train, scale)
    # the train outputs to the requested rtol; the estimate bounds the true error (up to
    # the dense path's own round-off)
    assert err <= RTOL, err
    assert info.error_estimate <= RTOL
    assert err <= info.error_estimate + 1e-12, (err, info)
    # test outputs: K_td times the integral's error (not part of the estimate)
    assert _rel(b.test, a.test, float(np.max(np.abs(a.test)))) <= 100 * RTOL
    # t = 0 is the initial state exactly; t = inf of a singular kernel keeps null directions
    t0 = kry.at(0.0, k_test_train=p["kt"], **kw)
    assert np.array_equal(t0.train, p["f0"]) and np.array_equal(t0.test, p["g0"])
    if kind == "singular":
        y_err = float(np.max(np.abs(b.train[-1] - p["y"]))) / scale
        assert y_err > 1e-3  # the cut part stays at f0
    # the training loss from the coefficients
    la = dense.train_loss(ts, fx_train_0=p["f0"])
    lb = kry.train_loss(ts, fx_train_0=p["f0"])
    assert lb.shape == ts.shape
    assert np.max(np.abs(la - lb)) <= 4 * RTOL * float(np.max(la))
    # the same call again reuses both bases: no product
    kry.at(ts, fx_train_0=p["f0"])
    assert kry.solver_info is not None and kry.solver_info.matvecs == 0


def test_with_params_reuses_the_basis() -> None:
    p = problem("well")
    n = N * R
    ts = np.logspace(-2, 2, 30) * n
    op = Counting(p["k"])
    kry = tf.Predictor(op, p["y"], diag_reg=1e-3, diag_reg_absolute_scale=True)
    dense = tf.Predictor(p["k"], p["y"], diag_reg=1e-3, diag_reg_absolute_scale=True)
    scale = float(np.max(np.abs(p["y"])))
    kry.at(ts)
    built = op.columns
    assert built > 0
    # a smaller learning rate: smaller scaled times, the kept basis meets rtol (no product)
    for lr, reg in ((0.5, 1e-3), (0.25, 1e-2), (1.0, 0.0)):
        kp = kry.with_params(learning_rate=lr, diag_reg=reg)
        dp = dense.with_params(learning_rate=lr, diag_reg=reg)
        assert _rel(kp.at(ts).train, dp.at(ts).train, scale) <= RTOL
        assert kp.solver_info is not None and kp.solver_info.converged
    assert op.columns == built  # T + λI and rescaled times on the same basis
    # a larger learning rate may need more: the bound is checked again and the basis grows
    kp = kry.with_params(learning_rate=100.0)
    assert _rel(kp.at(ts).train, dense.with_params(learning_rate=100.0).at(ts).train, scale) <= (
        RTOL
    )
    assert kp.solver_info is not None and kp.solver_info.matvecs == op.columns - built > 0


def test_diag_reg_sweep_at_inf_reuses_the_flow_basis() -> None:
    n = 400
    p = problem("well", n=n)
    op = Counting(p["k"])
    kw = {"diag_reg": 1e-3, "diag_reg_absolute_scale": True}
    kry = tf.Predictor(op, p["y"], **kw)
    dense = tf.Predictor(p["k"], p["y"], **kw)
    ts = np.r_[np.logspace(-2, 5, 20) * (n * R), np.inf]
    scale = float(np.max(np.abs(p["y"])))
    kt = aslinearoperator(p["kt"])
    assert _rel(kry.at(ts).train, dense.at(ts).train, scale) <= RTOL
    built = op.columns
    for reg in (1e-2, 1e-1, 1.0):
        kp, dp = kry.with_params(diag_reg=reg), dense.with_params(diag_reg=reg)
        a, b = dp.at(np.inf, k_test_train=p["kt"]), kp.at(np.inf, k_test_train=kt)
        assert _rel(b.train, a.train, scale) <= RTOL
        assert _rel(b.test, a.test, float(np.max(np.abs(a.test)))) <= 100 * RTOL
        info = kp.solver_info
        assert info is not None and info.converged and info.matvecs == 0, info
        assert info.method == "block-lanczos"  # T + λI of the kept basis at s = ∞
        assert info.error_estimate <= RTOL
    assert op.columns == built


def test_test_set_applies_the_test_operator_once_per_basis() -> None:
    p = problem("well")
    ts = times(N, R)
    kt = Counting(p["kt"])
    kry = tf.Predictor(aslinearoperator(p["k"]), p["y"])
    dense = tf.Predictor(p["k"], p["y"])
    handle = kry.test_set(kt, fx_test_0=p["g0"])
    a = dense.at(ts, k_test_train=p["kt"], fx_test_0=p["g0"]).test
    b = handle.at(ts).test
    assert kt.calls == 1  # one product: [Q | x(∞)]
    assert _rel(b, a, float(np.max(np.abs(a)))) <= 100 * RTOL
    handle.at(ts[:50])
    assert kt.calls == 1  # the kept basis and image: nothing new
    # a dense test kernel with an operator train kernel
    c = kry.at(ts, k_test_train=p["kt"], fx_test_0=p["g0"]).test
    assert _rel(c, a, float(np.max(np.abs(a)))) <= 100 * RTOL


def test_stored_and_dask_operators() -> None:
    p = problem("well", n=300)
    ts = times(300, R)
    dense = tf.Predictor(p["k"], p["y"], diag_reg=1e-2).at(ts).train
    # a relative diag_reg needs the diagonal: stored operators have it
    got = tf.Predictor(operators.stored(p["k"]), p["y"], diag_reg=1e-2).at(ts).train
    assert _rel(got, dense, float(np.max(np.abs(p["y"])))) <= RTOL
    with pytest.raises(ValueError, match="diag_reg_absolute_scale"):
        tf.Predictor(aslinearoperator(p["k"]), p["y"], diag_reg=1e-2)
    da = pytest.importorskip("dask.array")
    kd = da.from_array(p["k"], chunks=(100, 300))
    got = tf.Predictor(kd, p["y"], diag_reg=1e-2).at(ts).train
    assert _rel(got, dense, float(np.max(np.abs(p["y"])))) <= RTOL


def test_iteration_cap_warns_with_the_achieved_error() -> None:
    p = problem("ill", n=300)
    kry = tf.Predictor(aslinearoperator(p["k"]), p["y"], max_iter=3)
    with pytest.warns(tf.NumericalWarning, match=r"achieved error estimate is \d"):
        out = kry.at(np.logspace(0, 4, 5))
    info = kry.solver_info
    assert info is not None and not info.converged and info.iterations == 3
    assert info.error_estimate > RTOL
    # the estimate still bounds the error of what was returned
    dense = tf.Predictor(p["k"], p["y"]).at(np.logspace(0, 4, 5)).train
    scale = float(np.max(np.abs(p["y"])))
    assert _rel(out.train, dense, scale) <= info.error_estimate
    # a looser rtol converges within the same cap on a short horizon
    loose = tf.Predictor(aslinearoperator(p["k"]), p["y"], max_iter=30, rtol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loose.at(1.0)
    assert loose.solver_info is not None and loose.solver_info.converged


class Boom(Exception):
    pass


@pytest.mark.parametrize("t", [1.0, np.inf, [1.0, np.inf]], ids=["flow", "inf", "both"])
def test_exceptions_and_interrupts_from_matmat_propagate(t: Any) -> None:
    p = problem("well", n=200)
    err = Boom("from matmat")

    def raising(v: np.ndarray) -> np.ndarray:
        raise err

    op = LinearOperator(p["k"].shape, matvec=None, matmat=raising, dtype=np.float64)
    with pytest.raises(Boom) as info:
        tf.Predictor(op, p["y"]).at(t)
    assert info.value is err  # unchanged
    calls = []

    def interrupting(v: np.ndarray) -> np.ndarray:
        calls.append(v.shape[1])
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return np.asarray(p["k"] @ v)

    op = LinearOperator(p["k"].shape, matvec=None, matmat=interrupting, dtype=np.float64)
    with pytest.raises(KeyboardInterrupt):
        tf.Predictor(op, p["y"]).at(t)
    assert len(calls) <= 4  # stopped at the next product
    # the test operator's exceptions too
    kt = LinearOperator((5, 200), matvec=None, matmat=raising, dtype=np.float64)
    with pytest.raises(Boom):
        tf.Predictor(aslinearoperator(p["k"]), p["y"]).at(t, k_test_train=kt)


def test_bad_input_is_rejected_before_any_product() -> None:
    p = problem("well", n=100)
    op = Counting(p["k"])
    y = p["y"]
    with pytest.raises(ValueError, match="k_train_train must be square"):
        tf.Predictor(Counting(p["k"][:, :50]), y)
    with pytest.raises(ValueError, match="y_train"):
        tf.Predictor(op, y[:50])
    with pytest.raises(TypeError, match="k_train_train must have dtype float32 or float64"):
        tf.Predictor(Counting(p["k"].astype(np.int64)), y)
    with pytest.raises(ValueError, match='loss="mse"'):
        tf.Predictor(op, y, loss="cross_entropy")
    with pytest.raises(ValueError, match="momentum"):
        tf.Predictor(op, y, momentum=0.9)
    with pytest.raises(ValueError, match="precision"):
        tf.Predictor(op, y, precision="float32")
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        tf.Predictor(op, y, max_iter=0)
    kry = tf.Predictor(op, y)
    with pytest.raises(ValueError, match=r"k_test_train has shape \(5, 99\)"):
        kry.at(1.0, k_test_train=Counting(np.zeros((5, 99))))
    with pytest.raises(ValueError, match="fx_train_0"):
        kry.at(1.0, fx_train_0=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="operator"):
        kry.diagnostics()
    assert op.columns == 0
    assert tf.Predictor(p["k"], y).solver_info is None  # the dense path has none


def test_float32_operator_gives_float32_outputs() -> None:
    p = problem("well", n=200)
    out = tf.Predictor(aslinearoperator(p["k"].astype(np.float32)), p["y"]).at([1.0, np.inf])
    assert out.train.dtype == np.float32


def test_ensemble_mean_with_operators() -> None:
    p = problem("well", n=400, m=20)
    ts = times(400, R)
    ntk = p["k"]
    nngp = 0.5 * p["k"]
    dense = tf.Ensemble(nngp, p["y"], ntk_train_train=ntk)
    kry = tf.Ensemble(aslinearoperator(nngp), p["y"], ntk_train_train=aslinearoperator(ntk))
    scale = float(np.max(np.abs(p["y"])))
    a = dense.at(ts, compute_cov=False).mean
    b = kry.at(ts, compute_cov=False).mean
    assert _rel(b, a, scale) <= RTOL
    at = dense.at(ts, ntk_test_train=p["kt"], compute_cov=False).mean
    bt = kry.at(ts, ntk_test_train=aslinearoperator(p["kt"]), compute_cov=False).mean
    assert _rel(bt, at, float(np.max(np.abs(at)))) <= 100 * RTOL
    with pytest.raises(NotImplementedError, match="compute_cov=True"):
        kry.at(ts)
    # "nngp" mode
    a = tf.Ensemble(nngp, p["y"]).at(ts, nngp_test_train=p["kt"], compute_cov=False).mean
    b = tf.Ensemble(aslinearoperator(nngp), p["y"]).at(
        ts, nngp_test_train=p["kt"], compute_cov=False
    )
    assert _rel(b.mean, a, float(np.max(np.abs(a)))) <= 100 * RTOL


def test_progress_bar_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    p = problem("well", n=200)
    tf.Predictor(aslinearoperator(p["k"]), p["y"], progress=True).at(np.inf)
    err = capsys.readouterr().err
    assert "error" in err and "matvecs" in err
    tf.Predictor(aslinearoperator(p["k"]), p["y"], progress=False).at(np.inf)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["well", "ill", "singular"])
def test_agrees_with_dense_at_n_4000(kind: str) -> None:
    n = 4000
    p = problem(kind, n=n, r=3, m=100)
    ts = times(n, 3)
    dense = tf.Predictor(p["k"], p["y"])
    kry = tf.Predictor(operators.stored(p["k"]), p["y"])
    kw = {"fx_train_0": p["f0"], "fx_test_0": p["g0"]}
    a = dense.at(ts, k_test_train=p["kt"], **kw)
    b = kry.at(ts, k_test_train=p["kt"], **kw)
    info = kry.solver_info
    assert info is not None and info.converged
    scale = float(np.max(np.abs(p["f0"] - p["y"])))
    err = _rel(b.train, a.train, scale)
    assert err <= RTOL and err <= info.error_estimate + 1e-12
    assert _rel(b.test, a.test, float(np.max(np.abs(a.test)))) <= 100 * RTOL


@pytest.mark.parametrize("e", [-100, -40, 0, 40, 100])
def test_operator_path_at_power_of_two_scales(e):
    """The Krylov path at kernel scales 2^-100 … 2^100 (times scaled by the inverse) agrees
    with the dense path as at scale 1, on an ill-conditioned (1e4) constructed spectrum
    (docs/numerics.md §2: every result is invariant under exact power-of-two scalings)."""
    rng = np.random.default_rng(3)
    n = 200
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = (q * np.geomspace(1e-4, 1.0, n)) @ q.T
    k = (k + k.T) / 2
    y = rng.standard_normal((n, 3))
    kte = rng.standard_normal((20, n)) / 20
    c = 2.0**e
    ts = np.r_[np.logspace(-1, 5, 20), np.inf] / c
    dense = tf.Predictor(k * c, y).at(ts, k_test_train=kte * c)
    p = tf.Predictor(operators.stored(k * c), y, diag_reg_absolute_scale=True)
    got = p.at(ts, k_test_train=operators.stored(kte * c))
    assert p.solver_info.converged
    scale = float(np.max(np.abs(y)))
    assert _rel(got.train, dense.train, scale) <= RTOL
    assert _rel(got.test, dense.test, scale) <= 1e3 * RTOL  # the estimate bounds train only
