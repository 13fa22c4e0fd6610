"""GPU backend tests: CuPy arrays through the same classes. Skipped without CuPy and a
CUDA device; the backend's logic runs in CI through the array-namespace backend with
NumPy (tests/test_predictor.py::test_xp_backend_on_numpy_matches_rust_core and the
ensemble/GP tests)."""

import numpy as np
import pytest

import tangentflow as tf

from conftest import rbf_problem, with_spectrum

cp = pytest.importorskip("cupy")
try:
    if cp.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no CUDA device", allow_module_level=True)
except Exception as e:  # noqa: BLE001
    pytest.skip(f"no usable CUDA runtime: {e}", allow_module_level=True)

pytestmark = pytest.mark.gpu


def rel(a, b):
    a, b = cp.asnumpy(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))


@pytest.fixture
def prob():
    return rbf_problem(300, 40, 5, seed=2)


def test_predictor_on_gpu_matches_cpu(prob):
    k, kte, _, y, f0, g0 = prob
    ts = np.array([0.0, 0.3, 10.0, 1e4, np.inf])
    ref = tf.Predictor(k, y, diag_reg=1e-3).at(ts, fx_train_0=f0, fx_test_0=g0, k_test_train=kte)
    p = tf.Predictor(cp.asarray(k), y, diag_reg=1e-3)  # NumPy targets are moved
    out = p.at(
        ts, fx_train_0=cp.asarray(f0), fx_test_0=cp.asarray(g0), k_test_train=cp.asarray(kte)
    )
    assert isinstance(out.train, cp.ndarray) and isinstance(out.test, cp.ndarray)
    assert rel(out.train, ref.train) < 1e-9 and rel(out.test, ref.test) < 1e-9
    assert bool(cp.all(out.train[0] == cp.asarray(f0)))
    s = p.test_set(cp.asarray(kte), fx_test_0=cp.asarray(g0))
    again = s.at(ts, fx_train_0=cp.asarray(f0))
    assert rel(again.test, ref.test) < 1e-9 and p.factorizations == 1


def test_gpu_cholesky_and_spectral_limits_agree(prob):
    k, kte, _, y, f0, g0 = prob
    kw = dict(fx_train_0=cp.asarray(f0), fx_test_0=cp.asarray(g0), k_test_train=cp.asarray(kte))
    p = tf.Predictor(cp.asarray(k), cp.asarray(y))
    a = p.at(None, **kw)
    assert p.factorizations == 0  # Cholesky fast path
    b = p.at(1e12, **kw)
    assert rel(a.test, cp.asnumpy(b.test)) < 1e-9


def test_gpu_indefinite_kernel_falls_back_without_nan():
    rng = np.random.default_rng(1)
    k, _ = with_spectrum([-1e-3, 0.0, 0.5, 1.0, 2.0, 3.0], rng)
    with pytest.warns(tf.NumericalWarning):
        out = tf.Predictor(cp.asarray(k), cp.ones(6)).at(None)
    assert bool(cp.all(cp.isfinite(out.train)))


def test_gpu_float32_precision(prob):
    k, kte, _, y, _, _ = prob
    ref = tf.Predictor(k, y).at(5.0, k_test_train=kte)
    out = tf.Predictor(cp.asarray(k), y, precision="float32").at(5.0, k_test_train=cp.asarray(kte))
    assert rel(out.test, ref.test) < 1e-3


def test_gpu_ensemble_and_gp_match_cpu(prob):
    k, kte, ktt, y, _, _ = prob
    e_cpu = tf.Ensemble(k, y, ntk_train_train=k * 1.5).at(
        [1.0, 50.0], ntk_test_train=kte * 1.5, nngp_test_train=kte, nngp_test_test=ktt
    )
    e_gpu = tf.Ensemble(cp.asarray(k), y, ntk_train_train=cp.asarray(k * 1.5)).at(
        [1.0, 50.0],
        ntk_test_train=cp.asarray(kte * 1.5),
        nngp_test_train=cp.asarray(kte),
        nngp_test_test=cp.asarray(ktt),
    )
    assert rel(e_gpu.mean, e_cpu.mean) < 1e-9 and rel(e_gpu.covariance, e_cpu.covariance) < 1e-9
    g_cpu = tf.GaussianProcess(k, y, diag_reg=1e-3).posterior(kte, ktt)
    g_gpu = tf.GaussianProcess(cp.asarray(k), y, diag_reg=1e-3).posterior(
        cp.asarray(kte), cp.asarray(ktt)
    )
    assert rel(g_gpu.mean, g_cpu.mean) < 1e-9 and rel(g_gpu.covariance, g_cpu.covariance) < 1e-9


def test_torch_cuda_tensors_through_dlpack(prob):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    k, _, _, y, _, _ = prob
    out = tf.Predictor(torch.as_tensor(k, device="cuda"), y).at(3.0)
    ref = tf.Predictor(k, y).at(3.0)
    assert isinstance(out.train, cp.ndarray) and rel(out.train, ref.train) < 1e-9


def test_numpy_kernel_with_gpu_targets_is_refused(prob):
    k, _, _, y, _, _ = prob
    with pytest.raises(TypeError, match="GPU array"):
        tf.Predictor(k, cp.asarray(y))


def test_gpu_inputs_are_not_modified(prob):
    k, kte, _, y, _, _ = prob
    kg, kteg, yg = cp.asarray(k), cp.asarray(kte), cp.asarray(y)
    tf.Predictor(kg, yg).at(None, k_test_train=kteg)  # Cholesky path on the kernel itself
    tf.Predictor(kg, yg, diag_reg=0.1).at([1.0, 5.0], k_test_train=kteg)
    tf.GaussianProcess(kg, yg).posterior(kteg)
    assert bool(cp.all(kg == cp.asarray(k))) and bool(cp.all(kteg == cp.asarray(kte)))
    assert bool(cp.all(yg == cp.asarray(y)))


def test_gpu_time_arrays(prob):
    k, _, _, y, _, _ = prob
    p = tf.Predictor(cp.asarray(k), y)
    a = p.at(cp.asarray([1.0, 2.0])).train
    b = p.at(np.array([1.0, 2.0])).train
    assert bool(cp.all(a == b))
    assert p.at([np.inf, np.inf]).train.shape == (2,) + y.shape
