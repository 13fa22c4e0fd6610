"""``tangentflow.compat.neural_tangents``: the reference cases of neural-tangents 0.6.5
(tests/data/nt, replayed by its own checker) and the drop-in contract around them."""

import collections
import dataclasses
import importlib.util
import io
import json
import pathlib
import types

import numpy as np
import pytest

import tangentflow as tf
from tangentflow.compat import neural_tangents as nt

from conftest import rbf_problem

CASES_DIR = pathlib.Path(__file__).parent / "data" / "nt"


def _load_checker():
    spec = importlib.util.spec_from_file_location("nt_check_compat", CASES_DIR / "check_compat.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check_compat = _load_checker()
CASE_IDS = [c["id"] for c in json.loads((CASES_DIR / "manifest.json").read_text())["cases"]]


@pytest.fixture(scope="module")
def replay():
    """Every reference case through the checker's own ``run`` (once per module)."""
    out = io.StringIO()
    n_pass, n_fail, results = check_compat.run(nt, str(CASES_DIR), out=out)
    return n_pass, n_fail, {r["id"]: r for r in results}, out.getvalue()


def test_all_reference_cases(replay):
    n_pass, n_fail, results, log = replay
    assert len(results) == len(CASE_IDS) == 190
    failed = [line for line in log.splitlines() if line.startswith("FAIL")]
    assert n_fail == 0, f"{n_fail} reference cases failed:\n" + "\n".join(failed)
    assert n_pass == 190


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_reference_case(replay, case_id):
    r = replay[2][case_id]
    assert r["ok"], r["msg"]


# -- shared problem ----------------------------------------------------------------------------

K, KTE, KTT, Y, F0, G0 = rbf_problem(30, 7, 3, seed=3)
# an NNGP-like second kernel for the same inputs (PSD, different from K)
_KJ = np.block([[K, KTE.T], [KTE, KTT]])
_NJ = _KJ @ _KJ / np.trace(_KJ) + 0.1 * np.eye(_KJ.shape[0])
NK, NKTE, NKTT = _NJ[:30, :30].copy(), _NJ[30:, :30].copy(), _NJ[30:, 30:].copy()
T = np.array([0.0, 2.0, 30.0, 0.5])


def _flow_reference(k, kte, y, f0, g0, t, lr=1.0):
    """Independent MSE gradient flow (docs/numerics.md §3) by eigendecomposition."""
    mu, v = np.linalg.eigh(k)
    s = lr * np.asarray(t, dtype=float)[..., None] / y.size
    e = np.exp(-mu * s)
    r0 = v.T @ (f0 - y)
    train = y + np.einsum("ij,...j,jk->...ik", v, e, r0)
    test = g0 - np.einsum("ij,...j,jk->...ik", kte @ v, (1 - e) / mu, r0)
    return train, test


# -- gradient_descent_mse ------------------------------------------------------------------


def test_gd_mse_matches_independent_reference():
    fn = nt.gradient_descent_mse(K, Y, learning_rate=0.7)
    train, test = fn(T, F0, G0, KTE)
    want_train, want_test = _flow_reference(K, KTE, Y, F0, G0, T, lr=0.7)
    np.testing.assert_allclose(train, want_train, rtol=0, atol=1e-10)
    np.testing.assert_allclose(test, want_test, rtol=0, atol=1e-10)
    assert train.shape == (4,) + Y.shape and test.shape == (4, 7, 3)


def test_gd_mse_is_the_native_predictor():
    fn = nt.gradient_descent_mse(K, Y, diag_reg=1e-2, trace_axes=(-1,))
    p = tf.Predictor(K, Y, diag_reg=1e-2)
    got = fn(T, F0, G0, KTE)
    want = p.at(T, fx_train_0=F0, fx_test_0=G0, k_test_train=KTE)
    np.testing.assert_array_equal(got[0], want.train)
    np.testing.assert_array_equal(got[1], want.test)


def test_gd_mse_return_conventions():
    fn = nt.gradient_descent_mse(K, Y)
    both = fn(2.0, F0, G0, KTE)
    assert isinstance(both, tuple) and len(both) == 2
    train_only = fn(2.0, F0, None, KTE)  # k_test_train without fx_test_0: no test output
    assert isinstance(train_only, np.ndarray) and train_only.shape == Y.shape
    np.testing.assert_array_equal(train_only, both[0])
    test_only = fn(2.0, None, G0, KTE)
    assert isinstance(test_only, np.ndarray) and test_only.shape == (7, 3)
    # fx_train_0=None: the test formula uses f_0 = 0
    np.testing.assert_allclose(test_only, fn(2.0, 0.0, G0, KTE)[1], atol=1e-13)
    # scalars broadcast; t=None and t=inf agree
    a, b = fn(None, 0.25, -0.4, KTE), fn(np.inf, 0.25, -0.4, KTE)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-9)
    np.testing.assert_allclose(a[0], Y, atol=1e-9)
    assert a[1].shape == (7, 3)


def test_gd_mse_float32_in_float32_out():
    k32, y32, kte32 = K.astype(np.float32), Y.astype(np.float32), KTE.astype(np.float32)
    train, test = nt.gradient_descent_mse(k32, y32)(T.astype(np.float32), 0.0, 0.0, kte32)
    assert train.dtype == np.float32 and test.dtype == np.float32


def test_gd_mse_accepts_array_likes_and_does_not_modify_inputs():
    class HostArray:  # stands in for a JAX/torch CPU array: only __array__
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.a, dtype=dtype)

    ks, ys, ftrain = K.copy(), Y.copy(), F0.copy()
    fn = nt.gradient_descent_mse(HostArray(ks), HostArray(ys))
    got = fn(HostArray(T), HostArray(ftrain), HostArray(G0), HostArray(KTE))
    want = nt.gradient_descent_mse(K, Y)(T, F0, G0, KTE)
    assert all(type(g) is np.ndarray for g in got)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(ks, K)
    np.testing.assert_array_equal(ys, Y)
    np.testing.assert_array_equal(ftrain, F0)


@pytest.mark.parametrize(
    "args",
    [
        (1.0, None, None, KTE),  # nothing requested
        (1.0, F0, G0, None),  # test output without k_test_train
        (1.0, None, G0, None),
    ],
)
def test_gd_mse_input_errors(args):
    with pytest.raises(ValueError):
        nt.gradient_descent_mse(K, Y)(*args)


def test_gd_mse_bad_shapes_and_times():
    with pytest.raises(ValueError, match="k_train_train"):
        nt.gradient_descent_mse(K[:5, :5], Y)  # does not match y_train
    fn = nt.gradient_descent_mse(K, Y)
    with pytest.raises(ValueError, match="t"):
        fn(-1.0, F0)
    with pytest.raises(ValueError, match="k_test_train"):
        fn(1.0, F0, G0, KTE[:, :5])


def test_gd_mse_trace_axes_empty():
    """trace_axes=() with an interleaved (N, N, C, C) kernel equals the traced kernel ⊗ I."""
    c = Y.shape[1]
    k4 = np.einsum("ij,ab->iajb", K, np.eye(c)).transpose(0, 2, 1, 3).copy()
    kte4 = np.einsum("ij,ab->iajb", KTE, np.eye(c)).transpose(0, 2, 1, 3).copy()
    got = nt.gradient_descent_mse(k4, Y, trace_axes=())(T, F0, G0, kte4)
    want = nt.gradient_descent_mse(K, Y)(T, F0, G0, KTE)
    np.testing.assert_allclose(got[0], want[0], atol=1e-10)
    np.testing.assert_allclose(got[1], want[1], atol=1e-10)


# -- gradient_descent ---------------------------------------------------------------------


class Loss:
    """A loss like the checker's: callable, with .name and a .grad (optionally scaled)."""

    def __init__(self, name, scale=1.0):
        self.name, self.scale = name, scale
        self.calls = 0

    def __call__(self, fx, y):
        if self.name == "mse":
            return self.scale * 0.5 * np.mean((fx - y) ** 2)
        z = fx - fx.max(-1, keepdims=True)
        return -self.scale * np.mean((z - np.log(np.exp(z).sum(-1, keepdims=True))) * y)

    def grad(self, fx, y):
        self.calls += 1
        if self.name == "mse":
            return self.scale * (fx - y) / fx.size
        z = np.exp(fx - fx.max(-1, keepdims=True))
        z /= z.sum(-1, keepdims=True)
        return self.scale * (z * y.sum(-1, keepdims=True) - y) / fx.size


def test_builtin_losses_are_recognized_only_with_the_same_normalization():
    assert nt._native_loss(Loss("mse"), Y) == "mse"
    assert nt._native_loss(Loss("cross_entropy"), Y) == "cross_entropy"
    for loss in (Loss("mse", scale=Y.size), Loss("cross_entropy", scale=2.0)):
        g = nt._native_loss(loss, Y)
        assert callable(g) and not isinstance(g, str)
    named_wrong = Loss("mse", scale=3.0)
    named_wrong.name = "cross_entropy"  # a name that lies is not trusted
    assert callable(nt._native_loss(named_wrong, Y))
    anonymous = types.SimpleNamespace(grad=Loss("mse").grad)  # no name: a gradient callable
    assert callable(nt._native_loss(anonymous, Y))


def test_gradient_descent_mse_loss_is_the_closed_form():
    fn = nt.gradient_descent(Loss("mse"), K, Y, learning_rate=0.5)
    got = fn(T, F0, G0, KTE)
    want = nt.gradient_descent_mse(K, Y, learning_rate=0.5)(T, F0, G0, KTE)
    np.testing.assert_allclose(got[0], want[0], atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], atol=1e-12)
    # unsorted times come back in the caller's order
    np.testing.assert_allclose(fn(T[::-1], F0, G0, KTE)[0], got[0][::-1], atol=1e-12)


def test_gradient_descent_custom_loss_by_ode():
    """A loss with another normalization goes through the ODE with its own gradient:
    the sum loss ½‖f − y‖² is the mean loss with the learning rate scaled by n."""
    loss = Loss("mse", scale=Y.size)
    t = np.array([3.0, 0.0, 1.0])  # unsorted on purpose
    fn = nt.gradient_descent(loss, K, Y, learning_rate=0.01)
    train, test = fn(t, F0, G0, KTE)
    assert loss.calls > 0
    want = _flow_reference(K, KTE, Y, F0, G0, t, lr=0.01 * Y.size)
    np.testing.assert_allclose(train, want[0], rtol=0, atol=1e-6 * np.abs(want[0]).max())
    np.testing.assert_allclose(test, want[1], rtol=0, atol=1e-6 * np.abs(want[1]).max())


def test_gradient_descent_ode_state_resume():
    fn = nt.gradient_descent(Loss("mse"), K, Y)
    s0 = nt.ODEState(F0, G0)
    s1 = fn(2.0, s0, None, KTE)
    assert isinstance(s1, nt.ODEState)
    assert s1.qx_train is None and s1.qx_test is None
    s2 = fn(3.0, s1, None, KTE)
    direct = fn(5.0, F0, G0, KTE)
    np.testing.assert_allclose(s2.fx_train, direct[0], atol=1e-12)
    np.testing.assert_allclose(s2.fx_test, direct[1], atol=1e-12)
    # fx_train None in a state: integrated from zero, as the reference does
    s = fn(2.0, nt.ODEState(None, G0), None, KTE)
    np.testing.assert_allclose(s.fx_train, fn(2.0, 0.0, None, None), atol=1e-12)
    assert [f.name for f in dataclasses.fields(nt.ODEState)] == [
        "fx_train",
        "fx_test",
        "qx_train",
        "qx_test",
    ]


@pytest.mark.parametrize("name", ["mse", "cross_entropy"])
def test_gradient_descent_momentum_state_resume(name):
    """With momentum the state carries the velocities: stopping at t = 2 and resuming
    for 3 more equals running to 5 (MSE: the closed form; cross-entropy: one ODE run)."""
    y = Y if name == "mse" else np.eye(3)[np.arange(30) % 3]
    fn = nt.gradient_descent(Loss(name), K, y, learning_rate=0.5, momentum=0.9)
    s1 = fn(2.0, nt.ODEState(F0, G0), None, KTE)
    assert s1.qx_train.shape == y.shape and s1.qx_test.shape == (7, 3)
    assert np.abs(s1.qx_train).max() > 0
    s2 = fn(3.0, s1, None, KTE)
    direct = fn(5.0, F0, G0, KTE)
    for got, want in ((s2.fx_train, direct[0]), (s2.fx_test, direct[1])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    # times as an array: every field gets the time axis, in the caller's order
    s = fn(np.array([3.0, 1.0]), nt.ODEState(F0, G0), None, KTE)
    assert s.fx_train.shape == (2,) + y.shape and s.qx_test.shape == (2, 7, 3)
    np.testing.assert_allclose(s.fx_train[1], fn(1.0, F0, None)[...], atol=1e-6)
    # no test outputs in, none out
    s = fn(1.0, nt.ODEState(F0), None, None)
    assert s.fx_test is None and s.qx_test is None and s.qx_train.shape == y.shape


def test_gradient_descent_errors():
    fn = nt.gradient_descent(Loss("mse"), K, Y)
    with pytest.raises(ValueError, match="fx_test_0"):
        fn(1.0, nt.ODEState(F0, G0), G0, KTE)
    with pytest.raises(ValueError, match="momentum"):
        fn(1.0, nt.ODEState(F0, None, np.zeros_like(F0)))
    with pytest.raises(ValueError):
        fn(1.0, None, None, KTE)
    with pytest.raises(TypeError, match="loss"):
        nt.gradient_descent(42, K, Y)
    with pytest.raises(ValueError, match="momentum"):
        nt.gradient_descent(Loss("mse"), K, Y, momentum=1.5)


def test_gradient_descent_plain_function_loss_needs_jax_or_grad():
    def loss(fx, y):
        return 0.5 * ((fx - y) ** 2).mean()

    if importlib.util.find_spec("jax") is None:
        with pytest.raises(TypeError, match="JAX"):
            nt.gradient_descent(loss, K, Y)
    else:  # differentiated by jax.grad: same as the built-in MSE
        got = nt.gradient_descent(loss, K, Y)(T, F0, G0, KTE)
        want = nt.gradient_descent_mse(K, Y)(T, F0, G0, KTE)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_gradient_descent_plain_function_loss_goes_through_jax_grad(monkeypatch):
    """The jax.grad plumbing, with a stand-in ``jax`` (central differences)."""
    import sys

    def fake_grad(f):
        def g(fx, y):
            fx = np.asarray(fx, dtype=float)
            out = np.empty_like(fx)
            for i in np.ndindex(fx.shape):
                e = np.zeros_like(fx)
                e[i] = 1e-4
                out[i] = (f(fx + e, y) - f(fx - e, y)) / 2e-4
            return out

        return g

    jnp = types.ModuleType("jax.numpy")
    jnp.asarray = np.asarray
    jax = types.ModuleType("jax")
    jax.grad, jax.numpy, jax.config = fake_grad, jnp, types.SimpleNamespace(jax_enable_x64=True)
    monkeypatch.setitem(sys.modules, "jax", jax)
    monkeypatch.setitem(sys.modules, "jax.numpy", jnp)

    def loss(fx, y):  # the sum loss: learning rate scaled by n against the mean loss
        return 0.5 * ((fx - y) ** 2).sum()

    k, kte, _, y, f0, g0 = rbf_problem(6, 2, 2, seed=1)
    got = nt.gradient_descent(loss, k, y, learning_rate=0.05)(np.array([0.5, 2.0]), f0, g0, kte)
    want = _flow_reference(k, kte, y, f0, g0, [0.5, 2.0], lr=0.05 * y.size)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)


# -- gp_inference ---------------------------------------------------------------------------

Kernel = types.SimpleNamespace  # any object with .nngp / .ntk


def _kernels():
    return (Kernel(nngp=NK, ntk=K), Kernel(nngp=NKTE, ntk=KTE), Kernel(nngp=NKTT, ntk=KTT))


def test_gp_inference_get_handling():
    kdd, ktd, ktt = _kernels()
    fn = nt.gp_inference(kdd, Y, diag_reg=1e-3)
    both = fn(None, ktd, ktt)
    assert type(both).__name__ == "Gaussians" and both._fields == ("nngp", "ntk")
    assert all(isinstance(g, tf.Gaussian) for g in both)
    ordered = fn(("NTKgp", "nngp", "ntk"), ktd, ktt)  # case-insensitive, order kept
    assert ordered._fields == ("ntkgp", "nngp", "ntk")
    single = fn("NNGP", ktd, ktt)
    assert isinstance(single, tf.Gaussian)
    np.testing.assert_array_equal(single.mean, both.nngp.mean)
    np.testing.assert_array_equal(fn(["ntk"], ktd, ktt).ntk.covariance, both.ntk.covariance)
    means = fn(("nngp", "ntk"), ktd)  # no k_test_test: means only
    assert isinstance(means.nngp, np.ndarray) and means.ntk.shape == (7, 3)
    np.testing.assert_allclose(means.ntk, both.ntk.mean, rtol=1e-12, atol=1e-14)
    for bad, exc in (
        (("nngp", "nngp"), ValueError),
        ((), ValueError),
        ("hinge", ValueError),
        (3, TypeError),
    ):
        with pytest.raises(exc):
            fn(bad, ktd, ktt)


def test_gp_inference_matches_the_native_classes():
    kdd, ktd, ktt = _kernels()
    g = nt.gp_inference(kdd, Y, diag_reg=1e-3)(("nngp", "ntk", "ntkgp"), ktd, ktt)
    nngp = tf.GaussianProcess(NK, Y, diag_reg=1e-3).posterior(NKTE, NKTT)
    ntkgp = tf.GaussianProcess(K, Y, diag_reg=1e-3).posterior(KTE, KTT)
    ntk = tf.Ensemble(NK, Y, ntk_train_train=K, diag_reg=1e-3).at(
        None, ntk_test_train=KTE, nngp_test_train=NKTE, nngp_test_test=NKTT
    )
    for got, want in ((g.nngp, nngp), (g.ntkgp, ntkgp), (g.ntk, ntk)):
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(got.covariance, want.covariance, rtol=1e-10, atol=1e-13)


def test_gp_inference_kernel_containers_agree():
    kdd, ktd, ktt = _kernels()
    want = nt.gp_inference(kdd, Y)(("nngp", "ntk"), ktd, ktt)
    as_dict = [vars(k) for k in (kdd, ktd, ktt)]
    got = nt.gp_inference(as_dict[0], Y)(("nngp", "ntk"), as_dict[1], as_dict[2])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.covariance, b.covariance)
    # a plain array is used for every get; k_test_test as an array is the NNGP test kernel
    plain = nt.gp_inference(K, Y)("nngp", KTE, KTT)
    np.testing.assert_array_equal(plain.mean, nt.gp_inference(kdd, Y)("ntkgp", ktd, ktt).mean)
    mixed = nt.gp_inference(kdd, Y)("ntk", ktd, NKTT)
    np.testing.assert_array_equal(mixed.covariance, want.ntk.covariance)


def test_gp_inference_training_set():
    kdd, _, _ = _kernels()
    fn = nt.gp_inference(kdd, Y, diag_reg=1e-2)
    means = fn(("nngp", "ntk"))
    np.testing.assert_allclose(means.nngp, Y, atol=1e-10)
    g = fn("ntk", None, True)  # any k_test_test asks for the (zero) covariance
    np.testing.assert_allclose(g.mean, Y, atol=1e-10)
    assert g.covariance.shape == (30, 30)
    np.testing.assert_allclose(g.covariance, 0.0, atol=1e-10)


def test_gp_inference_errors():
    fn = nt.gp_inference(K, Y)
    with pytest.raises(ValueError, match="nngp"):  # 'ntk' covariance needs NNGP kernels
        fn("ntk", KTE, KTT)
    with pytest.raises(ValueError, match="ntk"):
        nt.gp_inference(Kernel(nngp=NK, ntk=None), Y)("ntk", Kernel(nngp=NKTE, ntk=None))
    with pytest.raises(ValueError, match="ntk"):
        nt.gp_inference({"nngp": NK}, Y)("ntk")
    with pytest.raises(TypeError):
        nt.gp_inference("kernel", Y)


# -- gradient_descent_mse_ensemble ------------------------------------------------------------

X_TRAIN = np.arange(30.0)[:, None]
X_TEST = 100.0 + np.arange(7.0)[:, None]
KERNELS = {
    ("train", "nngp"): NK,
    ("train", "ntk"): K,
    ("test_train", "nngp"): NKTE,
    ("test_train", "ntk"): KTE,
    ("test_test", "nngp"): NKTT,
    ("test_test", "ntk"): KTT,
}


def make_kernel_fn(kind):
    """A kernel_fn whose results are objects ('object'), dicts ('dict') or bare arrays
    when one kernel is asked for ('array')."""
    calls = []

    def kernel_fn(x1, x2=None, get=None):
        which = "train" if x1 is X_TRAIN else "test_train" if x2 is not None else "test_test"
        calls.append((which, get))
        names = ("nngp", "ntk") if get is None else (get,) if isinstance(get, str) else get
        d = {g: KERNELS[which, g].copy() for g in names}
        if kind == "array" and len(names) == 1:
            return d[names[0]]
        if kind == "dict":
            return d
        return types.SimpleNamespace(**d)

    kernel_fn.calls = calls
    return kernel_fn


@pytest.mark.parametrize("kind", ["object", "dict", "array"])
def test_ensemble_kernel_fn_result_types(kind):
    want = tf.Ensemble(NK, Y, ntk_train_train=K, learning_rate=0.7).at(
        T, ntk_test_train=KTE, nngp_test_train=NKTE, nngp_test_test=NKTT
    )
    kfn = make_kernel_fn(kind)
    fn = nt.gradient_descent_mse_ensemble(kfn, X_TRAIN, Y, learning_rate=0.7)
    if kind == "array":
        # single kernels as bare arrays
        g = fn(T, X_TEST, "nngp", compute_cov=True)
        assert isinstance(g, tf.Gaussian)
        mean = fn(T, X_TEST, "ntk")
        np.testing.assert_allclose(mean, want.mean, rtol=1e-10, atol=1e-13)

        def arrays_only(x1, x2=None, get=None):  # a bare array cannot carry two kernels
            return NK

        broken = nt.gradient_descent_mse_ensemble(arrays_only, X_TRAIN, Y)
        with pytest.raises(TypeError, match="kernel_fn"):
            broken(T, X_TEST, ("nngp", "ntk"), compute_cov=True)
        return
    g = fn(T, X_TEST, ("nngp", "ntk"), compute_cov=True)
    assert g._fields == ("nngp", "ntk")
    np.testing.assert_allclose(g.ntk.mean, want.mean, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.ntk.covariance, want.covariance, rtol=1e-10, atol=1e-13)
    assert g.nngp.covariance.shape == (4, 7, 7)


def test_ensemble_calls_kernel_fn_like_the_reference():
    kfn = make_kernel_fn("object")
    fn = nt.gradient_descent_mse_ensemble(kfn, X_TRAIN, Y)
    fn(1.0, X_TEST, "ntk")
    assert kfn.calls == [("train", "ntk"), ("test_train", ("ntk",))]
    kfn.calls.clear()
    fn(None, X_TEST, None, compute_cov=True)  # nngp train kernel now needed too
    assert kfn.calls == [("train", "nngp"), ("test_train", ("nngp", "ntk")), ("test_test", "nngp")]
    kfn.calls.clear()
    fn(2.0, None, ("ntk", "nngp"))  # train kernels cached; no test kernels
    assert kfn.calls == []


def test_ensemble_get_and_training_set():
    fn = nt.gradient_descent_mse_ensemble(make_kernel_fn("object"), X_TRAIN, Y, diag_reg=1e-3)
    g = fn(T, None, None, compute_cov=True)
    assert g._fields == ("nngp", "ntk") and g.ntk.mean.shape == (4,) + Y.shape
    assert g.ntk.covariance.shape == (4, 30, 30)
    np.testing.assert_allclose(fn(0.0, None, "ntk", True).covariance, NK, atol=1e-13)
    means = fn(None, X_TEST, ["NTK", "nngp"])
    assert means._fields == ("ntk", "nngp") and means.ntk.shape == (7, 3)
    # converged ensemble = gp_inference
    gp = nt.gp_inference(Kernel(nngp=NK, ntk=K), Y, diag_reg=1e-3)(
        "ntk", Kernel(nngp=NKTE, ntk=KTE), NKTT
    )
    conv = fn(None, X_TEST, "ntk", compute_cov=True)
    np.testing.assert_allclose(conv.mean, gp.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(conv.covariance, gp.covariance, rtol=1e-9, atol=1e-12)
    with pytest.raises(NotImplementedError):
        fn(1.0, X_TEST, "ntkgp")
    with pytest.raises(ValueError):
        fn(1.0, X_TEST, ("ntk", "ntk"))


# -- max_learning_rate and the module surface ------------------------------------------------


def test_max_learning_rate():
    mu_max = np.linalg.eigvalsh(K)[-1]
    assert nt.max_learning_rate(K) == pytest.approx(2 * 30 / (mu_max + 1e-12), rel=1e-12)
    got = nt.max_learning_rate(K, y_train_size=Y.size, momentum=0.9, eps=0.0)
    assert got == pytest.approx(2 * 1.9 * Y.size / mu_max, rel=1e-12)
    assert isinstance(got, float)


def test_module_surface():
    for name in (
        "gradient_descent_mse",
        "gradient_descent",
        "gradient_descent_mse_ensemble",
        "gp_inference",
        "max_learning_rate",
        "ODEState",
        "Gaussian",
    ):
        assert hasattr(nt, name)
    assert nt.Gaussian is tf.Gaussian
    assert "jax.pure_callback" in nt.__doc__
    import tangentflow.compat

    assert tangentflow.compat.neural_tangents is nt
    # neural-tangents users write nt.predict.gradient_descent_mse
    assert nt.predict is nt and nt.predict.gradient_descent_mse is nt.gradient_descent_mse


def test_ensemble_kernel_fn_keyword_forwarding_follows_the_reference():
    from tangentflow.compat import neural_tangents as nt_compat

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    calls = []

    def kernel_fn(x1, x2=None, get=None, **kw):
        calls.append((x1.shape[0], None if x2 is None else x2.shape[0], kw))
        a = x1 @ (x1 if x2 is None else x2).T + 1.0 + (np.eye(len(x1)) if x2 is None else 0)
        return a if isinstance(get, str) else collections.namedtuple("K", "nngp ntk")(a, a)

    m_tr, m_te = np.ones(6), np.ones(3)
    m_tt = np.full(3, 2.0)
    fn = nt_compat.gradient_descent_mse_ensemble(
        kernel_fn, x_tr, np.ones((6, 1)), mask=(m_tr, m_tr)
    )
    fn(1.0, x_te, "nngp", compute_cov=True, mask=(m_te, m_tt))
    kw_td = [c[2] for c in calls if c[1] == 6][0]["mask"]
    kw_tt = [c[2] for c in calls if c[0] == 3 and c[1] is None][0]["mask"]
    assert kw_td[0] is m_te and kw_td[1] is m_tr  # recombined pair
    assert kw_tt[0] is m_te and kw_tt[1] is m_tt  # passed unchanged
    calls.clear()
    fn = nt_compat.gradient_descent_mse_ensemble(kernel_fn, x_tr, np.ones((6, 1)), scale=1.0)
    with pytest.raises(ValueError, match="different values"):
        fn(1.0, x_te, "nngp", scale=2.0)


def test_compat_gaussians_keep_their_layout_for_sampling():
    from tangentflow.compat import neural_tangents as nt_compat

    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3))
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1)) + 0.1 * np.eye(9)
    y = rng.normal(size=(6, 2, 2))
    b = np.array([[1.0, 0.4], [0.4, 1.0]])

    def inter(a):  # (M, N) ⊗ b over the kept last axis, pair-interleaved
        return np.einsum("ij,ab->iajb", a, b).transpose(0, 2, 1, 3)

    kdd, ktd, ktt = inter(k[:6, :6]), inter(k[6:, :6]), inter(k[6:, 6:])
    fn = nt_compat.gp_inference(kdd, y, trace_axes=(1,))
    g = fn("nngp", k_test_train=ktd, k_test_test=ktt)
    native = tf.GaussianProcess(kdd, y, trace_axes=(1,)).posterior(ktd, ktt)
    assert g._layout_info() == native._layout_info()
