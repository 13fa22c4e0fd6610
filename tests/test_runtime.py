"""Threads, fork safety and the extension boundary (no panic reaches Python)."""

import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest

import tangentflow as tf
from tangentflow import _core

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
        lambda: _core.mode_factors("flow", [1.0], np.array([1.0, -1.0]), np.array([1.0])),
        lambda: _core.mode_factors("flow", [1.0], np.array([1.0]), np.array([-1.0])),
        lambda: _core.mode_factors("warp", [1.0], np.array([1.0]), np.array([1.0])),
        lambda: _core.mode_factors("momentum", [1.0, 1.5, 3.0], np.array([1.0]), np.array([1.0])),
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
