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
from tangentflow.compat.neural_tangents._ode import native_loss

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
    assert native_loss(Loss("mse"), Y) == "mse"
    assert native_loss(Loss("cross_entropy"), Y) == "cross_entropy"
    for loss in (Loss("mse", scale=Y.size), Loss("cross_entropy", scale=2.0)):
        g = native_loss(loss, Y)
        assert callable(g) and not isinstance(g, str)
    named_wrong = Loss("mse", scale=3.0)
    named_wrong.name = "cross_entropy"  # a name that lies is not trusted
    assert callable(native_loss(named_wrong, Y))
    anonymous = types.SimpleNamespace(grad=Loss("mse").grad)  # no name: a gradient callable
    assert callable(native_loss(anonymous, Y))


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


# -- JAX: arrays in and out, jax.jit / jax.vmap (skipped without JAX) --------------------------


@pytest.fixture
def jax():
    return pytest.importorskip("jax")


def _x64(jax):
    """Context manager enabling JAX's 64-bit mode (current and older spellings)."""
    state = getattr(jax, "enable_x64", None)
    if callable(state):
        try:
            return state(True)
        except TypeError:
            pass
    from jax.experimental import enable_x64

    return enable_x64()


def _gp_reference(k, ktd, ktt, y, reg=0.0):
    """Independent GP posterior by dense solves."""
    a = k + reg * np.eye(len(k))
    mean = ktd @ np.linalg.solve(a, y)
    cov = ktt - ktd @ np.linalg.solve(a, ktd.T)
    return mean, cov


def test_jax_arrays_in_jax_arrays_out_on_their_device(jax):
    jnp = jax.numpy
    fn = nt.gradient_descent_mse(jnp.asarray(K), jnp.asarray(Y), learning_rate=0.7)
    train, test = fn(jnp.asarray(T), jnp.asarray(F0), jnp.asarray(G0), jnp.asarray(KTE))
    want_train, want_test = _flow_reference(K, KTE, Y, F0, G0, T, lr=0.7)
    for got, want in ((train, want_train), (test, want_test)):
        assert isinstance(got, jax.Array)
        # x64 off: neural-tangents computes in float32 (jnp.result_type of the inputs)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert {d.platform for d in got.devices()} == {"cpu"}
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * np.abs(want).max())
    # NumPy in, NumPy out (no JAX array even though JAX is loaded)
    np_train = nt.gradient_descent_mse(K, Y, learning_rate=0.7)(T, F0, G0, KTE)[0]
    assert type(np_train) is np.ndarray and np_train.dtype == np.float64


def test_jax_x64_dtypes_follow_jnp_result_type(jax):
    jnp = jax.numpy
    with _x64(jax):
        k64, y64 = jnp.asarray(K), jnp.asarray(Y)
        out = nt.gradient_descent_mse(k64, y64)(2.0, 0.0, 0.0, jnp.asarray(KTE))
        assert all(o.dtype == np.float64 for o in out)
        want = _flow_reference(K, KTE, Y, 0 * F0, 0 * G0, [2.0])
        np.testing.assert_allclose(np.asarray(out[1]), want[1][0], rtol=0, atol=1e-12)
        k32 = jnp.asarray(K, dtype=jnp.float32)
        y32 = jnp.asarray(Y, dtype=jnp.float32)
        out32 = nt.gradient_descent_mse(k32, y32)(2.0, 0.0, 0.0, jnp.asarray(KTE, jnp.float32))
        assert all(o.dtype == np.float32 for o in out32)
        # a float64 test kernel promotes, as in neural-tangents
        mixed = nt.gradient_descent_mse(k32, y32)(2.0, 0.0, 0.0, jnp.asarray(KTE))
        assert mixed[1].dtype == np.float64


def test_jax_jit_matches_the_independent_reference(jax):
    jnp = jax.numpy
    with _x64(jax):
        fn = jax.jit(nt.gradient_descent_mse(jnp.asarray(K), jnp.asarray(Y), diag_reg=1e-3))
        for t in (0.0, 3.0, np.inf):
            train, test = fn(t, jnp.asarray(F0), jnp.asarray(G0), jnp.asarray(KTE))
            reg = K + 1e-3 * np.trace(K) / len(K) * np.eye(len(K))
            want_train, want_test = _flow_reference(reg, KTE, Y, F0, G0, [t])
            np.testing.assert_allclose(np.asarray(train), want_train[0], atol=1e-10)
            np.testing.assert_allclose(np.asarray(test), want_test[0], atol=1e-10)
        # t=None (a static None under jit) is infinite time too
        inf_test = fn(None, jnp.asarray(F0), jnp.asarray(G0), jnp.asarray(KTE))[1]
        np.testing.assert_allclose(np.asarray(inf_test), np.asarray(test), atol=1e-10)
        # train output only
        only = fn(3.0, jnp.asarray(F0), None, jnp.asarray(KTE))
        assert only.shape == Y.shape


def test_jax_vmap_over_kernels_built_inside(jax):
    """Construction under vmap (tracer kernels): one host call per element."""
    jnp = jax.numpy
    scales = np.array([0.5, 1.0, 2.5])
    with _x64(jax):

        def run(s):
            fn = nt.gradient_descent_mse(s * jnp.asarray(K), jnp.asarray(Y))
            return fn(jnp.asarray(T), jnp.asarray(F0), jnp.asarray(G0), s * jnp.asarray(KTE))

        train, test = jax.jit(jax.vmap(run))(jnp.asarray(scales))
        assert train.shape == (3,) + (len(T),) + Y.shape and test.shape == (3, len(T), 7, 3)
        for i, s in enumerate(scales):
            want_train, want_test = _flow_reference(s * K, s * KTE, Y, F0, G0, T)
            np.testing.assert_allclose(np.asarray(train[i]), want_train, atol=1e-10)
            np.testing.assert_allclose(np.asarray(test[i]), want_test, atol=1e-10)


def test_jax_vmap_over_initial_outputs(jax):
    jnp = jax.numpy
    f0s = np.stack([F0, -F0, 2 * F0])
    with _x64(jax):
        fn = nt.gradient_descent_mse(jnp.asarray(K), jnp.asarray(Y))
        tr, te = jax.vmap(lambda f: fn(1.5, f, jnp.asarray(G0), jnp.asarray(KTE)))(jnp.asarray(f0s))
    for i in range(3):
        want = _flow_reference(K, KTE, Y, f0s[i], G0, [1.5])
        np.testing.assert_allclose(np.asarray(tr[i]), want[0][0], atol=1e-10)
        np.testing.assert_allclose(np.asarray(te[i]), want[1][0], atol=1e-10)


def test_jax_jit_gradient_descent_with_momentum_states(jax):
    jnp = jax.numpy
    with _x64(jax):
        fn = jax.jit(nt.gradient_descent(Loss("mse"), jnp.asarray(K), jnp.asarray(Y), momentum=0.9))
        state = nt.ODEState(jnp.asarray(F0), jnp.asarray(G0))
        half = fn(1.0, state, None, jnp.asarray(KTE))
        assert isinstance(half, nt.ODEState) and half.qx_train.shape == Y.shape
        whole = fn(2.0, state, None, jnp.asarray(KTE))
        resumed = fn(1.0, half, None, jnp.asarray(KTE))
        np.testing.assert_allclose(
            np.asarray(resumed.fx_test), np.asarray(whole.fx_test), atol=1e-6
        )
        # plain gradient descent through jit agrees with the closed form
        gd = jax.jit(nt.gradient_descent(Loss("mse"), jnp.asarray(K), jnp.asarray(Y)))
        got = gd(jnp.asarray(T), jnp.asarray(F0), jnp.asarray(G0), jnp.asarray(KTE))
    want = _flow_reference(K, KTE, Y, F0, G0, T)
    np.testing.assert_allclose(np.asarray(got[1]), want[1], atol=1e-6)


def test_jax_jit_gp_inference_and_ensemble(jax):
    jnp = jax.numpy
    kdd = Kernel(nngp=NK, ntk=K)
    with _x64(jax):
        jk = lambda k: Kernel(nngp=jnp.asarray(k.nngp), ntk=jnp.asarray(k.ntk))  # noqa: E731
        fn = nt.gp_inference(jk(kdd), jnp.asarray(Y), diag_reg=1e-3, diag_reg_absolute_scale=True)
        g = jax.jit(lambda a, b: fn("nngp", a, b))(jnp.asarray(NKTE), jnp.asarray(NKTT))
        assert isinstance(g, tf.Gaussian) and isinstance(g.mean, jax.Array)
        mean, cov = _gp_reference(NK, NKTE, NKTT, Y, reg=1e-3)
        np.testing.assert_allclose(np.asarray(g.mean), mean, atol=1e-10)
        np.testing.assert_allclose(np.asarray(g.covariance), cov, atol=1e-10)

        kernels = {"train": (NK, K), "tt": (NKTT, KTT)}

        def kernel_fn(x1, x2=None, get=None):  # a JAX kernel_fn over stored kernels
            if x2 is not None:
                a = (jnp.asarray(NKTE), jnp.asarray(KTE))
            else:
                a = tuple(jnp.asarray(k) for k in kernels["train" if x1.shape[0] == 30 else "tt"])
            a = tuple(v * (1.0 + 0.0 * x1.sum()) for v in a)  # depends on (traced) x1
            if isinstance(get, str):
                return a[get == "ntk"]
            return Kernel(nngp=a[0], ntk=a[1])

        ens = nt.gradient_descent_mse_ensemble(kernel_fn, jnp.asarray(X_TRAIN), jnp.asarray(Y))
        got = jax.jit(lambda x: ens(2.0, x, "nngp", compute_cov=True))(jnp.asarray(X_TEST))
    # NNGP ensemble at time t: mean K_te K⁻¹(I − e^{−Kt/n}) y (docs/numerics.md), by eigh
    mu, v = np.linalg.eigh(NK)
    e = np.exp(-mu * 2.0 / Y.size)
    want_mean = NKTE @ v @ np.diag((1 - e) / mu) @ v.T @ Y
    want_cov = NKTT - NKTE @ v @ np.diag((1 - e**2) / mu) @ v.T @ NKTE.T
    np.testing.assert_allclose(np.asarray(got.mean), want_mean, atol=1e-9)
    np.testing.assert_allclose(np.asarray(got.covariance), want_cov, atol=1e-9)


class _JaxModule(types.ModuleType):
    """The compat module seen through JAX: NumPy inputs as JAX arrays (kernel_fn results
    too) and, with ``jit``, the predict functions wrapped in ``jax.jit``."""

    def __init__(self, jax, jit):
        super().__init__("nt_through_jax")
        self._jax, self._jit = jax, jit
        self.ODEState, self.Gaussian = nt.ODEState, nt.Gaussian

    def _to_jax(self, v):
        jnp = self._jax.numpy
        if isinstance(v, np.ndarray):
            return jnp.asarray(v)
        if isinstance(v, tuple) and hasattr(v, "_fields"):
            return type(v)(*[self._to_jax(x) for x in v])
        if isinstance(v, (tuple, list)):
            return type(v)(self._to_jax(x) for x in v)
        if hasattr(v, "calls"):  # the checker's kernel_fn (NumPy inside)
            return lambda x1, x2=None, get=None, **kw: self._to_jax(
                v(np.asarray(x1), None if x2 is None else np.asarray(x2), get, **kw)
            )
        return v

    def __getattr__(self, name):
        f = getattr(nt, name)

        def wrapped(*args, **kwargs):
            out = f(*self._to_jax(list(args)), **{k: self._to_jax(v) for k, v in kwargs.items()})
            if not callable(out):
                return out
            if self._jit and name != "gradient_descent_mse_ensemble":  # its kernel_fn is NumPy
                out = self._jax.jit(out, static_argnames=("get",) if name == "gp_inference" else ())
            return lambda *a, **kw: out(
                *self._to_jax(list(a)), **{k: self._to_jax(v) for k, v in kw.items()}
            )

        return wrapped


@pytest.mark.parametrize("jit", [False, True], ids=["jax-arrays", "jax-jit"])
def test_reference_cases_through_jax(jax, jit):
    """The neural-tangents reference cases (tests/data/nt) with JAX inputs, eagerly and
    under jax.jit: same values, shapes and dtypes (x64 on, as the cases were made)."""
    mod = _JaxModule(jax, jit)
    manifest = json.loads((CASES_DIR / "manifest.json").read_text())
    files, failed, n = {}, [], 0
    with _x64(jax):
        for case in manifest["cases"]:
            if "raises" in case:  # errors inside a host callback surface as JAX runtime errors
                continue
            if case["file"] not in files:
                with np.load(CASES_DIR / case["file"]) as z:
                    files[case["file"]] = {k: z[k] for k in z.files}
            actual = check_compat.call_case(case, mod, files[case["file"]])
            ok, msg, _ = check_compat.compare(case, actual, files[case["file"]])
            n += 1
            if not ok:
                failed.append(f"{case['id']}: {msg}")
    assert n == 182
    assert not failed, "\n".join(failed)


def test_asymmetric_kernels_are_symmetrized_with_a_warning():
    rng = np.random.default_rng(7)
    skew = rng.normal(size=K.shape)
    skew = 0.05 * np.abs(K).max() * (skew - skew.T) / np.abs(skew - skew.T).max()
    k_asym = K + skew  # like neural-tangents' batched Monte Carlo kernels
    with pytest.raises(ValueError, match="not symmetric"):
        tf.Predictor(k_asym, Y)  # the native classes keep their check
    share = f"{np.abs(k_asym - k_asym.T).max() / np.abs(k_asym).max():.2%}"
    assert share == "10.00%"
    with pytest.warns(
        tf.NumericalWarning, match=rf"not symmetric.* {share} of max.*\(K \+ K\^T\)/2"
    ):
        got = nt.gradient_descent_mse(k_asym, Y)(T, F0, G0, KTE)
    want = _flow_reference(K, KTE, Y, F0, G0, T)  # (K + K^T)/2 == K
    np.testing.assert_allclose(got[1], want[1], atol=1e-10)
    with pytest.warns(tf.NumericalWarning, match="k_test_test is not symmetric"):
        g = nt.gp_inference(NK, Y)("nngp", NKTE, NKTT + 0.1 * np.triu(NKTT, 1))
    sym_tt = NKTT + 0.05 * (np.triu(NKTT, 1) + np.triu(NKTT, 1).T)
    np.testing.assert_allclose(g.covariance, _gp_reference(NK, NKTE, sym_tt, Y)[1], atol=1e-10)

    def kernel_fn(x1, x2=None, get=None):
        return k_asym if x2 is None else KTE

    with pytest.warns(tf.NumericalWarning, match="not symmetric"):
        mean = nt.gradient_descent_mse_ensemble(kernel_fn, X_TRAIN, Y)(None, X_TEST, "nngp")
    np.testing.assert_allclose(mean, KTE @ np.linalg.solve(K, Y), atol=1e-10)
    with pytest.warns(tf.NumericalWarning, match="not symmetric"):
        lr = nt.max_learning_rate(k_asym)
    assert lr == pytest.approx(2 * 30 / (np.linalg.eigvalsh(K)[-1] + 1e-12), rel=1e-12)


@pytest.mark.parametrize("with_jax", [True, False], ids=["jax-tree-util", "no-jax"])
def test_ensemble_keyword_pytrees_with_empty_leaves(monkeypatch, with_jax):
    """stax-like ``params`` (tuples with ``()`` entries) and ``rng=(key, None)`` are array
    pytrees, forwarded leaf by leaf as neural-tangents does."""
    import sys

    if with_jax:
        pytest.importorskip("jax")
    else:
        monkeypatch.setitem(sys.modules, "jax", None)
    calls = []

    def kernel_fn(x1, x2=None, get=None, params=None, rng=None):
        calls.append((x1.shape[0], None if x2 is None else x2.shape[0], params, rng))
        w = params[0][0]
        a = w * (x1 @ (x1 if x2 is None else x2).T) + 1.0
        if x2 is None:
            a = a + np.eye(len(x1))
        return a if isinstance(get, str) else collections.namedtuple("K", "nngp ntk")(a, a)

    rng = np.random.default_rng(3)
    x_tr, x_te = rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    params = [(np.array(0.5), np.zeros(1)), (), None, ((), (np.ones(2),))]
    key_tr, key_te = np.array([1, 2], dtype=np.uint32), np.array([3, 4], dtype=np.uint32)
    y = np.linspace(-1, 1, 6)[:, None]
    fn = nt.gradient_descent_mse_ensemble(kernel_fn, x_tr, y, params=params, rng=(key_tr, None))
    got = fn(None, x_te, "nngp", compute_cov=True, params=params, rng=(key_te, None))
    td = [c for c in calls if c[1] == 6][0]
    assert td[2] is params and td[3][0] is key_te and td[3][1] is key_tr  # pair recombined
    tt = [c for c in calls if c[0] == 3 and c[1] is None][0]
    assert tt[3][0] is key_te and tt[3][1] is None
    kdd = 0.5 * x_tr @ x_tr.T + 1.0 + np.eye(6)
    ktd, ktt = 0.5 * x_te @ x_tr.T + 1.0, 0.5 * x_te @ x_te.T + 1.0 + np.eye(3)
    mean, cov = _gp_reference(kdd, ktd, ktt, y)
    np.testing.assert_allclose(got.mean, mean, atol=1e-10)
    np.testing.assert_allclose(got.covariance, cov, atol=1e-10)


def test_ensemble_test_keywords_without_x_test_and_unknown_keywords():
    kfn = make_kernel_fn("object")

    def kernel_fn(x1, x2=None, get=None, pattern=None):
        return kfn(x1, x2, get)

    pat = np.ones(3)
    fn = nt.gradient_descent_mse_ensemble(kernel_fn, X_TRAIN, Y, pattern=(pat, pat))
    # neural-tangents accepts test-test keywords without x_test (they are not used)
    got = fn(T, None, "ntk", pattern=(pat, pat))
    np.testing.assert_allclose(got, _flow_reference(K, KTE, Y, 0 * Y, G0, T)[0], atol=1e-10)
    for x_test in (None, X_TEST):
        with pytest.raises(TypeError, match="'patern'.*not given to gradient_descent_mse_ensemble"):
            fn(T, x_test, "ntk", patern=(pat, pat))


def test_numpy_use_does_not_import_jax():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from tangentflow.compat import neural_tangents as nt\n"
        "k = np.eye(3) + 0.5\n"
        "out = nt.gradient_descent_mse(k, np.ones((3, 1)))(1.0, 0.0, 0.0, k[:2])\n"
        "nt.gp_inference(k, np.ones((3, 1)))('nngp', k[:2], k[:2, :2])\n"
        "assert type(out[1]) is np.ndarray\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_asymmetric_pair_interleaved_kernel_is_symmetrized_over_its_pairs():
    b = np.array([[1.0, 0.3], [0.3, 0.8]])
    inter = lambda a: np.einsum("ij,ab->iajb", a, b).transpose(0, 2, 1, 3)  # noqa: E731
    flat = lambda a: a.transpose(0, 2, 1, 3).reshape(a.shape[0] * 2, a.shape[1] * 2)  # noqa: E731
    kdd, ktd = inter(K), inter(KTE)
    rng = np.random.default_rng(11)
    e = rng.normal(size=kdd.shape) * 0.01
    noisy = kdd + e  # asymmetric in the interleaved sense: K[i,j,a,b] != K[j,i,b,a]
    y = np.stack([Y[:, 0], Y[:, 1]], axis=1)
    with pytest.warns(tf.NumericalWarning, match="not symmetric"):
        got = nt.gp_inference(noisy, y, trace_axes=())("nngp", ktd)
    sym = 0.5 * (flat(noisy) + flat(noisy).T)
    want = (flat(ktd) @ np.linalg.solve(sym, y.reshape(-1))).reshape(7, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_gradient_descent_loss_that_cannot_be_jitted(jax):
    jnp = jax.numpy

    def loss(fx, y):  # Python control flow on the targets: jax.grad works, jax.jit does not
        if float(jnp.abs(y).max()) > 1e6:
            return jnp.inf
        return 0.5 * jnp.mean((fx - y) ** 2)

    with _x64(jax):
        got = nt.gradient_descent(loss, K, Y)(T, F0, G0, KTE)
    want = _flow_reference(K, KTE, Y, F0, G0, T)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
