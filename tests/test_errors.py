"""Bad input is refused before any work, with the argument named."""

import numpy as np
import pytest

import tangentflow as tf

from conftest import rbf_problem

K, KTE, _, Y, F0, G0 = rbf_problem(8, 3, 2)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
        (dict(learning_rate="1"), TypeError, "learning_rate"),
        (dict(diag_reg=-0.1), ValueError, "diag_reg"),
        (dict(momentum=1.0), ValueError, "momentum"),
        (dict(momentum=-0.5), ValueError, "momentum"),
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(loss=3), TypeError, "loss"),
        (dict(dynamics="euler"), ValueError, "dynamics"),
        (dict(dynamics="gd", momentum=0.5), ValueError, "momentum"),
        (dict(loss="cross_entropy", diag_reg=0.1), ValueError, "diag_reg"),
        (dict(precision="float16"), ValueError, "precision"),
        (dict(rcond=0.0), ValueError, "rcond"),
        (dict(trace_axes=(5,)), ValueError, "trace_axes"),
    ],
)
def test_constructor_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tf.Predictor(K, Y, **kwargs)


@pytest.mark.parametrize(
    "k,exc,match",
    [
        (np.ones((3, 4)), ValueError, "square"),
        (np.ones(3), ValueError, "k_train_train"),
        (np.ones((2, 2, 3, 3))[..., 0], ValueError, "k_train_train"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), ValueError, "not symmetric"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), ValueError, "NaN"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric"),
        (np.eye(2, dtype=complex), TypeError, "real"),
    ],
)
def test_bad_kernels(k, exc, match):
    with pytest.raises(exc, match=match):
        tf.Predictor(k, np.ones(len(k)) if np.ndim(k) else None)


def test_small_asymmetry_is_accepted_and_symmetrized():
    k = K.copy()
    k[0, 1] += 1e-7 * np.abs(K).max()
    a = tf.Predictor(k, Y).at(2.0).train
    b = tf.Predictor((k + k.T) / 2, Y).at(2.0).train
    assert np.max(np.abs(a - b)) < 1e-14


def test_call_errors():
    p = tf.Predictor(K, Y)
    with pytest.raises(ValueError, match="t must be >= 0"):
        p.at(-1.0)
    with pytest.raises(ValueError, match="NaN"):
        p.at(np.nan)
    with pytest.raises(TypeError, match="t must be"):
        p.at("soon")
    with pytest.raises(ValueError, match="y_train"):
        tf.Predictor(K).at(1.0)
    with pytest.raises(ValueError, match="y_train"):
        p.at(1.0, y_train=np.ones(7))
    with pytest.raises(ValueError, match="y_train"):
        p.at(1.0, y_train=np.full(Y.shape, np.inf))
    with pytest.raises(ValueError, match="fx_train_0"):
        p.at(1.0, fx_train_0=np.ones((8, 5)))
    with pytest.raises(ValueError, match="fx_test_0 was given without k_test_train"):
        p.at(1.0, fx_test_0=G0)
    with pytest.raises(ValueError, match="k_test_train"):
        p.at(1.0, k_test_train=np.ones((3, 7)))
    with pytest.raises(ValueError, match="k_test_train"):
        p.at(1.0, k_test_train=np.ones((3, 8, 1)))
    with pytest.raises(ValueError, match="k_test_train contains NaN"):
        p.at(1.0, k_test_train=np.full((3, 8), np.nan))
    with pytest.raises(ValueError, match="fx_test_0"):
        p.at(1.0, k_test_train=KTE, fx_test_0=np.ones((4, 2)))
    with pytest.raises(ValueError, match="trace_axes must be given"):
        tf.Predictor(np.ones((2, 2, 3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="does not match y_train"):
        tf.Predictor(
            np.eye(6).reshape(2, 3, 2, 3).transpose(0, 2, 1, 3), np.ones((2, 4)), trace_axes=()
        )


def test_gpu_targets_with_cpu_kernel_are_refused():
    class FakeCuda:
        __cuda_array_interface__ = {}

    with pytest.raises(TypeError, match="GPU array"):
        tf.Predictor(K, FakeCuda())


def test_max_learning_rate_errors():
    with pytest.raises(ValueError, match="momentum"):
        tf.max_learning_rate(K, momentum=1.5)
    with pytest.raises(ValueError, match="y_train_size"):
        tf.max_learning_rate(K, y_train_size=0)
    with pytest.raises(ValueError, match="not symmetric"):
        tf.max_learning_rate(np.triu(K))


def test_gd_divergence_is_reported():
    p = tf.Predictor(K, Y, dynamics="gd", learning_rate=3 * tf.max_learning_rate(K, Y.size))
    with pytest.raises(ValueError, match="diverges"):
        p.at(None)
    with pytest.raises(tf.TangentflowError, match="overflowed"):
        p.at(5000)


def test_review_edge_cases():
    # trace_axes entries must be ints
    for bad in [(1.9,), ("1",), (True,), "x"]:
        with pytest.raises(TypeError, match="trace_axes"):
            tf.Predictor(K, Y, trace_axes=bad).at(1.0)
    # boolean times are not times
    with pytest.raises(TypeError, match="t must be numeric"):
        tf.Predictor(K, Y).at(np.array([True, False]))
    # a kernel without a positive eigenvalue has no largest stable learning rate
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        tf.max_learning_rate(np.zeros((3, 3)), eps=0.0)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        tf.max_learning_rate(-np.eye(3))
    # train_loss agrees with at() when steps diverge
    p = tf.Predictor(K, Y, dynamics="gd", learning_rate=3 * tf.max_learning_rate(K, Y.size))
    with pytest.raises(ValueError, match="diverges"):
        p.train_loss(None)
    with pytest.raises(tf.TangentflowError, match="overflowed"):
        p.train_loss(5000)
    # huge but finite kernels: diag_reg=0 adds exactly nothing; no overflow in sym(K)
    big = K / np.abs(K).max() * 1e300
    out = tf.Predictor(big, Y).at(1e-300)
    assert np.all(np.isfinite(out.train))
    with pytest.raises(ValueError, match="overflow"):
        tf.Predictor(K / np.abs(K).max() * 1e308, Y).at(1.0)


def test_warnings_point_at_user_code():
    import warnings

    from conftest import with_spectrum

    k, _ = with_spectrum([-1e-3, 0.5, 1.0, 2.0], np.random.default_rng(5))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tf.Predictor(k, np.ones(4)).at(5.0)
    assert rec and rec[0].filename == __file__


def test_more_edge_cases():
    from tangentflow.kernels import fully_connected

    with pytest.raises(ValueError, match="y_train is empty"):
        tf.Ensemble(K, np.zeros((8, 0)))
    with pytest.raises(ValueError, match="overflows"):
        fully_connected(np.full((2, 2), 1e160), hidden_layers=1)
    with pytest.raises(ValueError, match="overflows"):
        tf.Predictor(K, Y, loss="cross_entropy", learning_rate=10.0).at(1e308)
    tf.set_num_threads(np.int64(2))
    assert tf.get_num_threads() == 2
    with pytest.raises(TypeError, match="n must be"):
        tf.set_num_threads(2.0)
    tf.set_num_threads(0)
