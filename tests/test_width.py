"""tangentflow.width: empirical NTKs against finite differences and the analytic limit,
the linearized prediction against real gradient descent, the study's bookkeeping."""

import json
import math

import numpy as np
import pytest

from tangentflow import Predictor
from tangentflow.kernels import fully_connected
from tangentflow.width import MLP, Family, LearningRateWarning, Network, check
from tangentflow.width._fit import bisect_width, loglog_slope


def _data(n=12, d=4, m=6, k=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, d))
    x *= np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)  # ‖x‖² = d
    y = np.sin(x[:n, :k] + x[:n, 1:2])
    return x[:n], y, x[n:]


def _fd_jacobian(mlp, params, x, h=1e-6):
    """Central differences of every output with respect to every parameter."""
    cols = []
    for w, b in params:
        for a in (w, b):
            for idx in np.ndindex(a.shape):
                old = a[idx]
                a[idx] = old + h
                fp = mlp.apply(params, x)
                a[idx] = old - h
                fm = mlp.apply(params, x)
                a[idx] = old
                cols.append(((fp - fm) / (2 * h)).ravel())
    return np.array(cols).T  # (N·K, P), row i·K + k


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("k", [1, 3])
def test_empirical_ntk_matches_finite_differences(activation, k):
    x, _, xt = _data(n=5, d=3, m=3)
    mlp = MLP(2, activation, w_std=1.3, b_std=0.4, dtype="float64")
    params = mlp.init(10, d_in=3, d_out=k, seed=3)
    j = _fd_jacobian(mlp, params, x)
    jt = _fd_jacobian(mlp, params, xt)
    theta = mlp.ntk_flat(params, x)
    assert np.allclose(theta, j @ j.T, rtol=1e-7, atol=1e-8 * np.abs(theta).max())
    cross = mlp.ntk_flat(params, xt, x)
    assert np.allclose(cross, jt @ j.T, rtol=1e-7, atol=1e-8 * np.abs(theta).max())
    # the public layout: (N, N) for one output, pair-interleaved (N, N, K, K) otherwise
    pub = mlp.ntk(params, x)
    if k == 1:
        assert pub.shape == (5, 5)
    else:
        assert pub.shape == (5, 5, k, k)
        assert np.allclose(pub[1, 2, 0, 2], theta[1 * k + 0, 2 * k + 2])


def test_gradient_step_is_the_gradient_of_the_mean_loss():
    """One GD step moves each parameter by −η ∂L/∂θ with L = ‖f − y‖²/(2n), n = y.size."""
    x, y, _ = _data(n=8, d=3, k=2)
    mlp = MLP(2, "erf", b_std=0.5, dtype="float64")
    params = mlp.init(7, 3, 2, seed=1)
    before = [(w.copy(), b.copy()) for w, b in params]
    eta = 1e-3
    mlp.train(params, x, y, eta, 1, [1])
    step = np.concatenate(
        [((p0 - p1) / eta).ravel() for wb0, wb1 in zip(before, params) for p0, p1 in zip(wb0, wb1)]
    )
    j = _fd_jacobian(mlp, before, x)
    r = (mlp.apply(before, x) - y).ravel() / y.size
    assert np.allclose(step, j.T @ r, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_empirical_ntk_approaches_the_analytic_kernel(activation):
    x, _, _ = _data(n=16, d=5)
    mlp = MLP(2, activation, w_std=1.2, b_std=0.3)
    lim = fully_connected(
        x, hidden_layers=2, activation=activation, w_std=1.2, b_std=0.3, get="ntk"
    )
    assert np.allclose(mlp.limit_ntk(x), lim)
    widths = [32, 128, 512, 2048]
    dist = []
    for w in widths:
        d = [
            np.linalg.norm(mlp.ntk(mlp.init(w, 5, 1, seed=s), x) - lim) / np.linalg.norm(lim)
            for s in range(6)
        ]
        dist.append(np.mean(d))
    assert all(a > b for a, b in zip(dist, dist[1:]))
    slope, se, _ = loglog_slope(widths, dist)
    assert -0.7 < slope < -0.35, (slope, dist)  # theory: n^-1/2
    assert dist[-1] < 0.08


def test_linearized_prediction_matches_real_training_at_large_width():
    """Small learning rate, very wide network: the trained network follows Predictor's
    linearized trajectory; the gap shrinks with width."""
    x, y, xt = _data(n=16, d=4, m=8)
    mlp = MLP(1, "erf", b_std=0.2)
    gaps = []
    for width in (64, 1024, 8192):
        net = mlp.build(width, 0, 4, 1)
        f0, g0 = net.outputs(x), net.outputs(xt)
        theta, theta_te = net.ntk(x), net.ntk(xt, x)
        p = Predictor(theta, y, dynamics="gd")
        eta = 0.1 * p.diagnostics().max_learning_rate
        ck = [5, 20, 60]
        lin = (
            p.with_params(learning_rate=eta)
            .test_set(theta_te, fx_test_0=g0)
            .at(np.array(ck), fx_train_0=f0)
        )
        f_tr, f_te = net.fit(x, y, eta, 60, ck, xt)
        move = np.sqrt(np.mean((f_te[-1] - g0) ** 2))
        gaps.append(np.sqrt(np.mean((f_te - lin.test) ** 2)) / move)
        assert np.sqrt(np.mean((f_tr[-1] - y) ** 2)) < np.sqrt(np.mean((f0 - y) ** 2))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.01, gaps


def test_multi_output_kernel_layout_matches_explicit_linear_steps():
    """With K outputs the study hands Predictor the full (N, N, K, K) kernel: its
    prediction equals explicit steps f <- f - (eta/n) Θ_flat (f - y) on the flat kernel."""
    from tangentflow.width._mlp import unflatten

    x, y, xt = _data(n=9, d=3, m=4, k=3)
    mlp = MLP(1, "erf", b_std=0.2)
    net = mlp.build(16, 2, 3, 3)  # narrow: large output-mixing blocks
    th, th_te = net.ntk(x), net.ntk(xt, x)
    f0, g0 = net.outputs(x), net.outputs(xt)
    off = th.reshape(9, 3, 9, 3)[:, 0, :, 1]
    assert np.abs(off).max() > 0.05 * np.abs(th).max()  # the blocks are not Θ ⊗ I
    p = Predictor(unflatten(th, 3), y, dynamics="gd", trace_axes=())
    eta = 0.3 * p.diagnostics().max_learning_rate
    out = (
        p.with_params(learning_rate=eta)
        .test_set(unflatten(th_te, 3), fx_test_0=g0)
        .at(np.array([7]), fx_train_0=f0)
    )
    f, g = f0.ravel(), g0.ravel()
    for _ in range(7):
        r = f - y.ravel()
        f, g = f - eta / y.size * th @ r, g - eta / y.size * th_te @ r
    assert np.allclose(out.train[0].ravel(), f, atol=1e-10)
    assert np.allclose(out.test[0].ravel(), g, atol=1e-10)


class _KnownGap(Family):
    """Exactly linear networks (fixed random features, so Predictor is exact) whose
    reported outputs carry a known relative error c/width: rmse/movement = (c/n)/(1+c/n)."""

    def __init__(self, c):
        self.c = c

    def build(self, width, seed, d_in, d_out):
        return _KnownGapNet(self.c / width, seed, d_in, d_out)


class _KnownGapNet(Network):
    def __init__(self, eps, seed, d_in, d_out):
        rng = np.random.default_rng(seed)
        self.eps = eps
        self.a = rng.standard_normal((d_in, 20)) / np.sqrt(d_in)
        self.w = rng.standard_normal((20, d_out)) / np.sqrt(20)

    def _phi(self, x):
        return np.tanh(x @ self.a)

    def outputs(self, x):
        return self._phi(x) @ self.w

    def ntk(self, x1, x2=None):
        p2 = self._phi(x1 if x2 is None else x2)
        return self._phi(x1) @ p2.T

    def fit(self, x, y, learning_rate, steps, checkpoints, x_test=None, progress=None):
        ph, pt = self._phi(x), None if x_test is None else self._phi(x_test)
        w0, w = self.w.copy(), self.w.copy()
        tr, te = [], []
        for t in range(steps + 1):
            if t in checkpoints:
                tr.append(ph @ (w + self.eps * (w - w0)))
                if pt is not None:
                    te.append(pt @ (w + self.eps * (w - w0)))
            w = w - learning_rate * ph.T @ (ph @ w - y) / y.size
        return np.array(tr), (np.array(te) if pt is not None else None)


def test_bisection_finds_the_known_adequate_width():
    x, y, xt = _data(n=10, d=3, m=5)
    c, tol = 50.0, 0.05
    exact = c * (1 - tol) / tol  # 950
    st = check(
        _KnownGap(c), x, y, xt, widths=(64, 256, 1024, 4096), seeds=2, steps=40, tol=tol, bisect=8
    )
    want = (c / st.widths) / (1 + c / st.widths)
    assert np.allclose(st.relative_gap, want, rtol=1e-6)
    assert exact <= st.adequate_width <= exact * 1.05 + 1
    assert st.bisection and all((b["relative_gap"] <= tol) == b["passes"] for b in st.bisection)
    assert st.kernel_distance_inf is None and st.exponent_kernel_reference == "widest"
    # none passes: None, with the power-law estimate beyond the widest width
    none = check(_KnownGap(c), x, y, xt, widths=(128, 256, 512), seeds=1, steps=10, tol=tol)
    assert none.adequate_width is None
    assert 0.7 * exact < none.adequate_width_estimate < 1.5 * exact


def test_bisect_width_on_a_monotone_function():
    calls = []

    def ev(w):
        calls.append(w)
        return 100.0 / w

    best, seen = bisect_width(ev, 512, 2048, 0.1, max_steps=20, rtol=0.01)
    assert 1000 <= best <= 1010 and 100.0 / best <= 0.1
    assert [w for w, _ in seen] == calls
    lower = max(w for w, v in seen if v > 0.1)
    assert lower < 1000


def test_loglog_slope_and_its_standard_error():
    w = np.array([64, 128, 256, 512, 1024])
    slope, se, icpt = loglog_slope(w, 3.0 * w**-0.5)
    assert math.isclose(slope, -0.5, abs_tol=1e-12) and se < 1e-10
    assert math.isclose(icpt, math.log(3.0))
    rng = np.random.default_rng(0)
    noisy = 3.0 * w**-0.5 * np.exp(0.1 * rng.standard_normal(w.size))
    s, se, _ = loglog_slope(w, noisy)
    x = np.log(w)
    resid = np.log(noisy) - np.polyval(np.polyfit(x, np.log(noisy), 1), x)
    assert math.isclose(se, math.sqrt(resid @ resid / 3 / ((x - x.mean()) ** 2).sum()))
    assert loglog_slope([64], [0.1]) == (None, None, None)


@pytest.fixture(scope="module")
def small_study():
    x, y, xt = _data(n=20, d=4, m=10, k=2)
    return check(
        MLP(2, "relu", b_std=0.1),
        x,
        y,
        xt,
        widths=(16, 64, 256),
        seeds=2,
        steps=30,
        tol=0.2,
        bisect=1,
    )


def test_study_fields(small_study):
    st = small_study
    w = len(st.widths)
    for name in (
        "rmse_train",
        "rmse_test",
        "movement",
        "kernel_distance",
        "kernel_distance_inf",
        "kernel_drift",
        "lr_fraction",
        "relative_gap",
    ):
        for arr in (getattr(st, name), getattr(st, name + "_std")):
            assert arr.shape == (w,) and np.all(np.isfinite(arr))
    assert np.allclose(st.lr_fraction, 0.5)
    # one factorization per (width, seed) serves every checkpoint, train and test
    assert st.config["factorizations"] == st.config["runs"] == 2 * (3 + len(st.bisection))
    assert st.rmse_test_checkpoints.shape == (w, len(st.checkpoints)) and st.checkpoints[-1] == 30
    assert np.allclose(st.rmse_test, st.rmse_test_checkpoints[:, -1])
    assert np.allclose(st.movement, st.movement_test)
    assert st.kernel_distance_inf[0] > st.kernel_distance_inf[-1]
    assert st.exponent_kernel is not None and st.exponent_kernel < 0
    assert st.exponent_kernel_reference == "limit"
    text = st.table()
    assert "adequate width" in text and "fitted exponents" in text
    assert all(str(v) in text for v in st.widths)


def test_to_dict_round_trips_through_json(small_study):
    d = small_study.to_dict()
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back == d
    assert back["widths"] == [16, 64, 256]
    assert np.allclose(back["rmse_test"], small_study.rmse_test)
    assert back["adequate_width"] == small_study.adequate_width
    assert set(back["timings"]) >= {"kernel", "training", "factorization", "prediction", "total"}


def test_plot_writes_a_png(small_study, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "study.png"
    small_study.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_rate_checks():
    x, y, _ = _data(n=8, d=3)
    kw = dict(widths=(16,), seeds=1, steps=3)
    with pytest.warns(LearningRateWarning, match="0.8"):
        st = check(MLP(1), x, y, rate_fraction=0.8, **kw)
    assert np.allclose(st.lr_fraction, 0.8)
    with pytest.raises(ValueError, match="rate_fraction"):
        check(MLP(1), x, y, rate_fraction=1.0, **kw)
    with pytest.warns(LearningRateWarning):
        st = check(MLP(1), x, y, rate_fraction=1.0, force=True, **kw)
    assert np.allclose(st.lr_fraction, 1.0)
    # one fixed rate for every width: lr_fraction is where it falls for each
    net = MLP(1).build(16, 0, 3, 1)
    max_lr = Predictor(net.ntk(x), y, dynamics="gd").diagnostics().max_learning_rate
    with pytest.warns(LearningRateWarning, match="width-16"):
        st = check(MLP(1), x, y, learning_rate=0.7 * max_lr, **kw)
    assert np.allclose(st.lr_fraction, 0.7) and np.allclose(st.learning_rate, 0.7 * max_lr)
    with pytest.raises(ValueError, match="learning_rate .* largest stable rate"):
        check(MLP(1), x, y, learning_rate=1e6, **kw)
    with pytest.raises(ValueError, match="learning_rate"):
        check(MLP(1), x, y, learning_rate=-1.0, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(widths=()), "widths"),
        (dict(widths=(0, 4)), "widths"),
        (dict(seeds=0), "seeds"),
        (dict(steps=0), "steps"),
        (dict(tol=0.0), "tol"),
        (dict(checkpoints=[5, 50]), "checkpoints"),
        (dict(bisect=-1), "bisect"),
    ],
)
def test_bad_arguments_are_named(kw, match):
    x, y, xt = _data(n=6, d=3)
    with pytest.raises(ValueError, match=match):
        check(MLP(1), x, y, xt, **{"steps": 10, **kw})


def test_bad_data_is_named():
    x, y, xt = _data(n=6, d=3)
    with pytest.raises(ValueError, match="y_train"):
        check(MLP(1), x, y[:4])
    with pytest.raises(ValueError, match="x_test"):
        check(MLP(1), x, y, xt[:, :2])
    with pytest.raises(ValueError, match="x_train"):
        check(MLP(1), np.full((6, 3), np.nan), y)
    with pytest.raises(TypeError, match="model"):
        check("mlp", x, y)
    with pytest.raises(ValueError, match="activation"):
        MLP(2, "tanh")


def _jax_mlp(mlp, d, k):
    """A JAX twin of ``mlp`` (same parameterization), seeded through MLP.init."""
    import jax.numpy as jnp
    from jax.scipy.special import erf

    act = (lambda h: jnp.maximum(h, 0)) if mlp.activation == "relu" else erf

    def factory(width, seed):
        params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in mlp.init(width, d, k, seed)]

        def apply_fn(ps, x):
            z = x
            for i, (w, b) in enumerate(ps):
                h = mlp.w_std / math.sqrt(w.shape[0]) * (z @ w) + mlp.b_std * b
                z = h if i == len(ps) - 1 else act(h)
            return z

        return apply_fn, params

    return factory


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_jax_family_agrees_with_the_numpy_mlp(activation):
    pytest.importorskip("jax")
    from tangentflow.width import JaxModel

    x, y, xt = _data(n=10, d=4, m=5, k=2)
    mlp = MLP(2, activation, b_std=0.3, dtype="float32")
    fam = JaxModel(_jax_mlp(mlp, 4, 2))
    jnet, nnet = fam.build(24, 1, 4, 2), mlp.build(24, 1, 4, 2)
    scale = np.abs(nnet.ntk(x)).max()
    assert np.allclose(jnet.ntk(x), nnet.ntk(x), atol=2e-5 * scale)
    assert np.allclose(jnet.ntk(xt, x), nnet.ntk(xt, x), atol=2e-5 * scale)
    assert np.allclose(jnet.outputs(xt), nnet.outputs(xt), atol=1e-5)
    ja, jb = jnet.fit(x, y, 0.5, 20, [5, 20], xt)
    na, nb = nnet.fit(x, y, 0.5, 20, [5, 20], xt)
    assert np.allclose(ja, na, atol=1e-4) and np.allclose(jb, nb, atol=1e-4)
    if activation == "relu":  # the study itself, once (every network compiles anew)
        # a bare factory is recognized as a JAX family
        st = check(_jax_mlp(mlp, 4, 2), x, y, xt, widths=(8, 16), seeds=1, steps=5, bisect=0)
        assert st.model.startswith("JAX model")
        assert st.rmse_test.shape == (2,) and st.kernel_distance_inf is None


def test_torch_family_agrees_with_the_numpy_mlp():
    torch = pytest.importorskip("torch")
    from tangentflow.width import TorchModel

    x, y, xt = _data(n=10, d=4, m=5, k=2)
    mlp = MLP(2, "relu", b_std=0.3, dtype="float64")

    class Net(torch.nn.Module):
        def __init__(self, width, seed):
            super().__init__()
            ps = mlp.init(width, 4, 2, seed)
            self.ws = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(w)) for w, _ in ps])
            self.bs = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(b)) for _, b in ps])

        def forward(self, z):
            for i, (w, b) in enumerate(zip(self.ws, self.bs)):
                z = mlp.w_std / math.sqrt(w.shape[0]) * (z @ w) + mlp.b_std * b
                if i < len(self.ws) - 1:
                    z = torch.relu(z)
            return z

    fam = TorchModel(lambda width, seed: Net(width, seed))
    tnet, nnet = fam.build(24, 1, 4, 2), mlp.build(24, 1, 4, 2)
    assert np.allclose(tnet.ntk(x), nnet.ntk(x), rtol=1e-10, atol=1e-12)
    assert np.allclose(tnet.ntk(xt, x), nnet.ntk(xt, x), rtol=1e-10, atol=1e-12)
    ta, tb = tnet.fit(x, y, 0.5, 20, [5, 20], xt)
    na, nb = nnet.fit(x, y, 0.5, 20, [5, 20], xt)
    assert np.allclose(ta, na, atol=1e-10) and np.allclose(tb, nb, atol=1e-10)


def test_cli_width_small_run(tmp_path, capsys):
    pytest.importorskip("sklearn")
    import importlib.util

    from tangentflow.cli import main

    js, png = tmp_path / "w.json", tmp_path / "w.png"
    argv = ["width", "--widths", "16,32", "--seeds", "1", "--steps", "5", "--n-train", "30"]
    argv += ["--n-test", "20", "--json", str(js)]
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    argv += ["--plot", str(png)] if has_mpl else ["--no-plot"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "fitted exponents" in captured.out and "adequate width" in captured.out
    assert "width     32  seed 1/1  step      5/5" in captured.err  # progress on stderr
    data = json.loads(js.read_text())
    assert data["widths"] == [16, 32] and data["config"]["n_train"] == 30
    assert data["config"]["n_test"] == 20 and len(data["rmse_test"]) == 2
    if has_mpl:
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_checks_output_paths_before_any_work(tmp_path, capsys, monkeypatch):
    from tangentflow import width
    from tangentflow.cli import main

    monkeypatch.setattr(width, "check", lambda *a, **k: pytest.fail("ran the study"))
    with pytest.raises(SystemExit) as e:
        main(["width", "--json", str(tmp_path / "missing" / "w.json")])
    assert e.value.code == 2 and "--json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["width", "--plot", str(tmp_path / "w.txt")])
    assert e.value.code == 2 and ".png" in capsys.readouterr().err
