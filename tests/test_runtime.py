"""Threads, fork safety and the extension boundary (no panic reaches Python)."""

import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest

import tangentflow as tf
from tangentflow import _core
from tangentflow._backends.cpu import CpuBackend

from conftest import rbf_problem


def test_env_var_sizes_the_pool():
    code = "import tangentflow as tf; print(tf.get_num_threads())"
    env = dict(os.environ, TANGENTFLOW_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def _child(q):
    k, kte, _, y, _, _ = rbf_problem(30, 4, 2, seed=1)
    q.put(tf.Predictor(k, y).at(2.0, k_test_train=kte).test)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")  # JAX, if loaded
def test_forked_child_runs_after_parent_used_the_pool():
    k, kte, _, y, _, _ = rbf_problem(30, 4, 2, seed=1)
    tf.set_num_threads(2)
    want = tf.Predictor(k, y).at(2.0, k_test_train=kte).test  # parent pool is live
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q,))
    proc.start()
    got = q.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    tf.set_num_threads(0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: _core.sym_eigh_f64_f64(np.ones((3, 4)), 0.0),
        lambda: _core.kernel_stats_f64(np.ones((2, 3))),
        lambda: _core.project_f64(np.ones((4, 4), order="F"), np.ones((3, 2))),
        lambda: _core.test_basis_f64(np.ones((2, 3)), np.ones((4, 4))),
        lambda: _core.train_outputs_f64(
            np.ones((4, 2)), np.ones((3, 1)), np.ones((2, 5)), np.ones((4, 1))
        ),
        lambda: _core.test_outputs_cached_f64(
            np.ones((4, 2)), np.ones((2, 1)), np.ones((2, 5)), np.ones((3, 1))
        ),
        lambda: _core.mode_factors(
            _core.Dynamics.flow(1.0), np.array([1.0, -1.0]), np.array([1.0])
        ),
        lambda: _core.mode_factors(_core.Dynamics.flow(1.0), np.array([1.0]), np.array([-1.0])),
        lambda: CpuBackend().mode_factors("warp", [1.0], np.array([1.0]), np.array([1.0])),
        lambda: _core.mode_factors(
            _core.Dynamics.momentum(1.0, 1.5, 3.0), np.array([1.0]), np.array([1.0])
        ),
        lambda: _core.cholesky_solve_f64_f64(np.eye(3), 0.0, np.ones((4, 1))),
        lambda: _core.fully_connected_f64(
            np.ones((3, 2)), np.ones((3, 4)), 1, "relu", 1.0, 0.0, True, True
        ),
        lambda: _core.fully_connected_f64(np.ones((3, 2)), None, 1, "tanh", 1.0, 0.0, True, True),
        lambda: _core.ode_solve(
            np.eye(3), np.ones((4, 1)), np.array([1.0]), "mse", y=np.ones((4, 1))
        ),
    ],
)
def test_core_rejects_bad_shapes_with_value_error(call):
    # A faer assertion would surface as pyo3's PanicException (a BaseException): the
    # bindings must check shapes first and raise ValueError.
    with pytest.raises(ValueError):
        call()


def test_cholesky_reports_indefinite_as_none():
    k = np.diag([1.0, -1.0, 2.0])
    assert _core.cholesky_solve_f64_f64(k, 0.0, np.ones((3, 1))) is None


def _child_threads(q):
    before = tf.get_num_threads()
    tf.set_num_threads(2)
    q.put((before, tf.get_num_threads()))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")  # JAX, if loaded
def test_forked_child_can_size_its_own_pool():
    tf.set_num_threads(2)
    tf.Predictor(np.eye(3), np.ones(3)).at(1.0)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child_threads, args=(q,))
    proc.start()
    before, after = q.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0 and before == 1 and after == 2
    tf.set_num_threads(0)


def test_unaligned_inputs_are_copied_to_aligned_memory():
    k, kte, _, y, _, _ = rbf_problem(20, 3, 2, seed=3)
    ku = np.frombuffer(bytearray(b"\0") + k.tobytes(), dtype=np.float64, offset=1).reshape(k.shape)
    assert not ku.flags.aligned
    a = tf.Predictor(ku, y).at(2.0, k_test_train=kte).test
    b = tf.Predictor(k, y).at(2.0, k_test_train=kte).test
    np.testing.assert_array_equal(a, b)


# -- bounded thread counts -------------------------------------------------------------------
@pytest.mark.parametrize("n", [tf.MAX_THREADS + 1, 10_000, 2**63, 2**64, np.int64(2**62)])
def test_set_num_threads_rejects_huge_counts(n):
    before = tf.get_num_threads()
    with pytest.raises(ValueError, match=r"0 \(the default\) to 1024"):
        tf.set_num_threads(n)
    assert tf.get_num_threads() == before


@pytest.mark.parametrize("n", [-1, -(2**64), np.int32(-3)])
def test_set_num_threads_rejects_negative_counts(n):
    with pytest.raises(ValueError, match="n must be an int from 0"):
        tf.set_num_threads(n)


@pytest.mark.parametrize("n", [True, False, np.bool_(True), 2.0, 2.5, "4", None])
def test_set_num_threads_rejects_non_integers(n):
    with pytest.raises(TypeError, match="n must be an int"):
        tf.set_num_threads(n)


def test_set_num_threads_accepts_the_bounds():
    try:
        tf.set_num_threads(1)
        assert tf.get_num_threads() == 1
        tf.set_num_threads(np.uint8(2))
        assert tf.get_num_threads() == 2
    finally:
        tf.set_num_threads(0)


@pytest.mark.parametrize("value", ["0", "-2", "1025", "99999999999999999999999", "two", "1.5"])
def test_bad_env_var_is_a_clear_error(value):
    code = "import tangentflow"
    env = dict(os.environ, TANGENTFLOW_NUM_THREADS=value)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "ValueError: TANGENTFLOW_NUM_THREADS must be an integer from 1 to 1024" in out.stderr
    assert repr(value) in out.stderr


# -- Ctrl-C reaches long ODE integrations ----------------------------------------------------
_SIGINT_CHILD = r"""
import sys, time
import numpy as np
import tangentflow as tf

rng = np.random.default_rng(0)
x = rng.standard_normal((40, 3))
k = 50.0 * np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))
y = np.eye(3)[rng.integers(0, 3, 40)]
kind = sys.argv[1]
if kind == "callable":
    # a quadratic loss written in Python, slowed down: t = 1e5 takes ~1e5 steps of
    # 6 evaluations each (about ten minutes)
    def loss(f, yy):
        time.sleep(1e-3)
        return (f - yy) / f.size

    p = tf.Predictor(k, y, loss=loss)
else:
    p = tf.Predictor(k, y, loss="cross_entropy")
print("ready", flush=True)
t0 = time.perf_counter()
try:
    p.at(1e5 if kind == "callable" else 1e17)
except KeyboardInterrupt:
    print(f"interrupted after {time.perf_counter() - t0:.2f} s", flush=True)
    sys.exit(42)
print("finished", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("kind", ["callable", "cross_entropy"])
def test_ctrl_c_interrupts_a_long_ode_integration(kind, tmp_path):
    """SIGINT during a long integration (a Python loss, or the built-in cross-entropy run
    in Rust) raises KeyboardInterrupt in the caller. The timeouts only guard against a
    hang; they are not a timing claim."""
    import signal
    import time

    script = tmp_path / "child.py"
    script.write_text(_SIGINT_CHILD)
    env = dict(os.environ, TANGENTFLOW_NUM_THREADS="1")
    with subprocess.Popen(
        [sys.executable, str(script), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # well inside the integration
            assert proc.poll() is None, "the integration ended before the signal"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 42, (out, err)
    assert "interrupted after" in out


def test_hopeless_cross_entropy_horizon_fails_early():
    """t = 1e300 with cross-entropy cannot be reached within max_steps: a clear error from
    an early estimate instead of ten million steps."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3))
    k = np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1) / 0.3)
    y = np.eye(3)[rng.integers(0, 3, 30)]
    p = tf.Predictor(k, y, loss="cross_entropy")
    with pytest.raises(tf.TangentflowError, match=r"^t = 1e\+300 is out of reach") as e:
        p.at(1e300)
    steps = int(str(e.value).split("after ")[1].split(" steps")[0])
    assert steps < 1_000_000  # far below max_steps = 10 million
    assert "max_steps" in str(e.value) and 'loss="mse"' in str(e.value)
    # a reachable horizon of the same problem still works, and is finite
    out = p.at(1e6).train
    assert np.all(np.isfinite(out))
