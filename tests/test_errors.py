"""Bad input is refused before any work, with the argument named."""

import math

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


# -- messages that say what was expected ---------------------------------------------------
def _rbf(n, m, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, 3))
    k = np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))
    return k[:n, :n], k[n:, :n], rng.standard_normal((n, 2))


def test_transposed_k_test_train_names_expected_and_given_shape():
    k, kte, y = _rbf(20, 7)
    p = tf.Predictor(k, y)
    with pytest.raises(ValueError) as e:
        p.at(None, k_test_train=kte.T)
    msg = str(e.value)
    assert "k_test_train has shape (20, 7)" in msg
    assert "expected (M, 20)" in msg
    assert "k_test_train.T" in msg  # the transpose would fit
    # a shape that is simply wrong gets no transpose hint
    with pytest.raises(ValueError) as e:
        p.at(None, k_test_train=np.zeros((7, 19)))
    assert "has shape (7, 19), expected (M, 20)" in str(e.value)
    assert ".T" not in str(e.value)
    # the right one works and matches a dense solve
    got = p.at(None, k_test_train=kte).test
    np.testing.assert_allclose(got, kte @ np.linalg.solve(k, y), rtol=1e-9, atol=1e-12)


def test_none_inside_an_array_of_times_explains_np_inf():
    k, _, y = _rbf(12, 0)
    p = tf.Predictor(k, y)
    for bad in ([0, 1, None], np.array([0.0, None], dtype=object)):
        for call in (p.train_loss, p.at):
            with pytest.raises(TypeError) as e:
                call(bad)
            msg = str(e.value)
            assert "None means t = ∞" in msg and "only as a scalar" in msg and "np.inf" in msg
    # what the message recommends works, and agrees with the scalar None
    loss = p.train_loss([0, 1, np.inf])
    assert loss[2] == pytest.approx(float(p.train_loss(None)), abs=1e-15)
    assert loss[0] == pytest.approx(float((y**2).sum() / (2 * y.size)), rel=1e-12)


@pytest.mark.parametrize("ret", ["abc", object(), {"a": 1}])
def test_loss_returning_non_numbers_names_the_argument(ret):
    k, _, y = _rbf(6, 0)
    p = tf.Predictor(k, y, loss=lambda f, yy: ret)
    with pytest.raises(TypeError) as e:
        p.at(1.0)
    msg = str(e.value)
    assert msg.startswith("loss must return the gradient") and "(6, 2)" in msg
    assert type(ret).__name__ in msg


def test_loss_returning_the_wrong_shape_names_the_argument():
    k, _, y = _rbf(6, 0)
    p = tf.Predictor(k, y, loss=lambda f, yy: (f - yy)[:, :1])
    with pytest.raises(ValueError, match=r"loss returned a gradient of shape \(6, 1\), expected"):
        p.at(1.0)


def test_trace_axes_generator_is_read_once():
    """A generator works like the tuple it yields (it is consumed exactly once)."""
    k, kte, _ = _rbf(10, 4)
    rng = np.random.default_rng(3)
    y = rng.standard_normal((10, 3))
    want = tf.Predictor(k, y, trace_axes=(1,)).at(5.0, k_test_train=kte)
    got = tf.Predictor(k, y, trace_axes=(a for a in [1])).at(5.0, k_test_train=kte)
    np.testing.assert_array_equal(got.train, want.train)
    np.testing.assert_array_equal(got.test, want.test)
    # the dense reference: train outputs Y + e^{-K s}(f0 - Y) with f0 = 0, s = 5 / y.size
    w, v = np.linalg.eigh(k)
    ref = y - v @ (np.exp(-w * 5.0 / y.size)[:, None] * (v.T @ y))
    np.testing.assert_allclose(got.train, ref, rtol=1e-10, atol=1e-12)
    ktt = kte @ np.linalg.solve(k, kte.T) + np.eye(4)  # any PSD test-test block
    kw = dict(nngp_test_train=kte, nngp_test_test=ktt)
    e_want = tf.Ensemble(k, y, trace_axes=(1,)).at(2.0, **kw)
    e_got = tf.Ensemble(k, y, trace_axes=iter([1])).at(2.0, **kw)
    np.testing.assert_array_equal(e_got.mean, e_want.mean)
    np.testing.assert_array_equal(e_got.covariance, e_want.covariance)
    g_want = tf.GaussianProcess(k, y, trace_axes=(1,)).posterior(k_test_train=kte).mean
    g_got = tf.GaussianProcess(k, y, trace_axes=(a for a in (1,))).posterior(k_test_train=kte)
    np.testing.assert_array_equal(g_got.mean, g_want)


@pytest.mark.parametrize("bad", [(a for a in ["x"]), (a for a in [1.5]), "1", True, 2.0])
def test_trace_axes_of_non_ints_is_a_clear_error(bad):
    k, _, y = _rbf(6, 0)
    with pytest.raises(TypeError, match="trace_axes must be a tuple of ints"):
        tf.Predictor(k, y, trace_axes=bad)


def test_corrupted_pickle_says_what_is_wrong(monkeypatch):
    import pickle

    from tangentflow._backends import cpu

    monkeypatch.setattr(cpu, "FORM_BELOW", 0)  # a state with reflectors, as of a large kernel
    k, kte, y = _rbf(50, 5)
    p = tf.Predictor(k, y).factorize()
    good = p.__getstate__()
    cases = {
        "'z' has shape (50, 49)": dict(z=good["z"][:, :49]),
        "'v' has shape (50, 49)": dict(v=good["z"][:, :49]),
        "'w' holds 49 eigenvalues": dict(w=good["w"][:49]),
        "do not match the kernel": dict(y=good["y"][:49, :1]),
        "do not multiply to the kernel size 49": dict(k=good["k"][:49, :49]),
        "'w' and eigenvectors 'v' must be both present or both absent": dict(w=None),
        "'z' and reflectors 'q' must be both present or both absent": dict(q=None),
        "'q' must be the kernel's reflectors (order 50)": dict(q="Q"),
        "'q' holds float64, the factors 'z' are float32": dict(z=good["z"].astype(np.float32)),
        "'w' contains NaN": dict(w=np.full(50, np.nan)),
        "missing entries ['k']": dict(k=None, _drop="k"),
        "'count' must be a non-negative int": dict(count=-1),
    }
    for needle, change in cases.items():
        state = dict(good)
        drop = change.pop("_drop", None)
        state.update(change)
        if drop:
            del state[drop]
        q = tf.Predictor.__new__(tf.Predictor)
        with pytest.raises(ValueError) as e:
            q.__setstate__(state)
        assert "corrupted Predictor pickle" in str(e.value) and needle in str(e.value), needle
    # an intact pickle round-trips to the same numbers
    back = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(
        back.at(3.0, k_test_train=kte).test, p.at(3.0, k_test_train=kte).test
    )


def test_options_are_made_once_per_plain_set_and_still_checked():
    """``Options.create`` keeps what it made from plain values, keyed by type and exact
    value: ``True`` is not ``1``, ``-0.0`` is not ``0.0``, and a bad value still raises."""
    from tangentflow._model.options import Options

    a = Options.create(learning_rate=0.5, diag_reg=1e-3)
    assert Options.create(learning_rate=0.5, diag_reg=1e-3) is a
    assert Options.create(learning_rate=0.25, diag_reg=1e-3) is not a
    assert Options.create(learning_rate=0.5, diag_reg=1e-3).learning_rate == 0.5
    with pytest.raises(TypeError, match="learning_rate"):
        Options.create(learning_rate=True)
    assert Options.create(learning_rate=1).learning_rate == 1.0
    for _ in range(2):
        with pytest.raises(ValueError, match="diag_reg"):
            Options.create(diag_reg=-1.0)
    neg = Options.create(diag_reg=-0.0)
    assert math.copysign(1.0, neg.diag_reg) == -1.0
    assert math.copysign(1.0, Options.create(diag_reg=0.0).diag_reg) == 1.0
    # a callable loss or a list of axes is validated every time
    assert Options.create(trace_axes=[1]).trace_axes == (1,)


@pytest.mark.parametrize("layout", ("C", "F", "strided", "unaligned"))
def test_large_test_kernels_with_nan_are_named_in_any_layout(layout):
    """The finiteness check of large host arrays (the core's one pass from 2^14 entries, or
    NumPy for memory the core does not read) names the argument in every memory layout."""
    from tangentflow._numerics import all_finite

    rng = np.random.default_rng(3)
    k = rng.standard_normal((40, 40))
    k = k @ k.T / 40 + np.eye(40)
    wide = rng.standard_normal((600, 80))  # 24,000 entries: the core's pass
    kte = {
        "C": np.ascontiguousarray(wide[:, :40]),
        "F": np.asfortranarray(wide[:, :40]),
        "strided": wide[:, ::2],
        "unaligned": None,
    }[layout]
    if layout == "unaligned":
        buf = np.zeros(600 * 40 * 8 + 1, np.uint8)
        kte = np.frombuffer(buf.data, np.float64, 600 * 40, offset=1).reshape(600, 40)
        kte[...] = wide[:, :40]
        assert not kte.flags.aligned and kte.flags.c_contiguous
    assert all_finite(kte, np)
    p = tf.Predictor(k, np.ones(40))
    p.at(1.0, k_test_train=kte)  # fine
    bad = kte
    bad[599, 39] = np.nan
    assert not all_finite(bad, np)
    with pytest.raises(ValueError, match="k_test_train contains NaN"):
        p.at(1.0, k_test_train=bad)
