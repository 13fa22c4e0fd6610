"""tangentflow.kernels.fully_connected against neural-tangents references and NumPy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tangentflow.kernels import fully_connected

DATA = Path(__file__).parent / "data" / "kernels"
MANIFEST = json.loads((DATA / "manifest.json").read_text())


# --- independent NumPy implementation of the recursion ---------------------------------


def numpy_fc(x1, x2, hidden_layers, activation, w_std, b_std):
    """(nngp, ntk) of shape (N1, N2), written directly from the formulas."""
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = x1 if x2 is None else np.asarray(x2, dtype=np.float64)
    w2, b2 = w_std**2, b_std**2
    d = x1.shape[1]
    k = w2 * (x1 @ x2.T) / d + b2
    q1 = w2 * np.sum(x1 * x1, axis=1) / d + b2
    q2 = w2 * np.sum(x2 * x2, axis=1) / d + b2
    theta = k.copy()
    for _ in range(hidden_layers):
        if activation == "relu":
            s = np.sqrt(np.outer(q1, q2))
            c = np.clip(k / s, -1.0, 1.0)
            t = np.arccos(c)
            e = s * (np.sin(t) + (np.pi - t) * c) / (2 * np.pi)
            ed = (np.pi - t) / (2 * np.pi)
            q1n, q2n = q1 / 2, q2 / 2
        else:
            a = np.outer(1 + 2 * q1, 1 + 2 * q2)
            e = 2 / np.pi * np.arcsin(2 * k / np.sqrt(a))
            ed = 4 / np.pi / np.sqrt(a - 4 * k * k)
            q1n = 2 / np.pi * np.arcsin(2 * q1 / (1 + 2 * q1))
            q2n = 2 / np.pi * np.arcsin(2 * q2 / (1 + 2 * q2))
        k = w2 * e + b2
        theta = k + w2 * ed * theta
        q1, q2 = w2 * q1n + b2, w2 * q2n + b2
    return k, theta


def assert_close(got, want, rtol, *, diag_rtol=None, what=""):
    """Entrywise relative check; ``diag_rtol`` loosens the diagonal of a square block."""
    assert got.shape == want.shape, what
    assert got.dtype == np.float64, what
    rel = np.abs(got - want) / np.abs(want)
    if diag_rtol is not None:
        d = np.diag(rel).copy()
        assert d.max() <= diag_rtol, f"{what}: diagonal rel err {d.max():.2e}"
        rel = rel.copy()
        np.fill_diagonal(rel, 0.0)
    assert rel.max() <= rtol, f"{what}: rel err {rel.max():.2e}"


# --- neural-tangents fixtures -----------------------------------------------------------


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"][:-4] for e in MANIFEST])
def test_matches_neural_tangents(entry):
    z = np.load(DATA / entry["file"])
    x1, x2 = z["x1"], z["x2"]
    assert x1.shape[1] == entry["input_dim"]
    kw = dict(
        hidden_layers=entry["hidden_layers"],
        activation=entry["activation"],
        w_std=entry["W_std"],
        b_std=entry["b_std"],
    )
    # Same-input ReLU diagonals: the reference carries ~1e-8 round-off (fixtures README).
    diag = 1e-7 if entry["activation"] == "relu" else 1e-10
    k11 = fully_connected(x1, **kw)
    k21 = fully_connected(x2, x1, **kw)
    k22 = fully_connected(x2, None, **kw)
    for name in ("nngp", "ntk"):
        assert_close(getattr(k11, name), z[f"{name}_11"], 1e-10, diag_rtol=diag, what=name)
        assert_close(getattr(k21, name), z[f"{name}_21"], 1e-10, what=name)
        assert_close(getattr(k22, name), z[f"{name}_22"], 1e-10, diag_rtol=diag, what=name)


# --- against the NumPy implementation ---------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize(
    ("hidden_layers", "w_std", "b_std"), [(0, 1.0, 0.0), (1, 1.0, 0.0), (4, 1.3, 0.2)]
)
def test_matches_numpy(activation, hidden_layers, w_std, b_std):
    rng = np.random.default_rng(hidden_layers)
    x1 = rng.standard_normal((150, 7))
    x2 = rng.standard_normal((83, 7)) * 2.0
    kw = dict(hidden_layers=hidden_layers, activation=activation, w_std=w_std, b_std=b_std)
    got = fully_connected(x1, x2, **kw)
    want = numpy_fc(x1, x2, **kw)
    assert got._fields == ("nngp", "ntk")
    assert_close(got.nngp, want[0], 1e-11, what="nngp")
    assert_close(got.ntk, want[1], 1e-11, what="ntk")
    # Symmetric case; the NumPy diagonal goes through arccos(1 - eps) (README), so looser.
    got = fully_connected(x1, **kw)
    want = numpy_fc(x1, None, **kw)
    assert_close(got.nngp, want[0], 1e-11, diag_rtol=1e-7, what="nngp sym")
    assert_close(got.ntk, want[1], 1e-11, diag_rtol=1e-7, what="ntk sym")


def test_symmetric_and_x2_equal_to_x1():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 5))
    k = fully_connected(x, hidden_layers=3)
    for m in k:
        np.testing.assert_array_equal(m, m.T)
    # Passing the same inputs again (same object or an equal copy) gives the same result.
    for x2 in (x, x.copy()):
        k2 = fully_connected(x, x2, hidden_layers=3)
        np.testing.assert_array_equal(k2.nngp, k.nngp)
        np.testing.assert_array_equal(k2.ntk, k.ntk)
    # ReLU, b = 0: the same-input diagonal is exact: K_L = K_0 / 2^L * w^(2L).
    np.testing.assert_allclose(np.diag(k.nngp), np.sum(x * x, axis=1) / 5 / 8, rtol=1e-14)


def test_get_variants_and_dtypes():
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((20, 3))
    x2 = rng.standard_normal((9, 3))
    both = fully_connected(x1, x2, activation="erf", b_std=0.1)
    nngp = fully_connected(x1, x2, activation="erf", b_std=0.1, get="nngp")
    ntk = fully_connected(x1, x2, activation="erf", b_std=0.1, get="ntk")
    assert isinstance(nngp, np.ndarray) and nngp.shape == (20, 9)
    np.testing.assert_array_equal(nngp, both.nngp)
    np.testing.assert_array_equal(ntk, both.ntk)
    rev = fully_connected(x1, x2, activation="erf", b_std=0.1, get=("ntk", "nngp"))
    assert rev._fields == ("ntk", "nngp")
    np.testing.assert_array_equal(rev[0], both.ntk)
    one = fully_connected(x1, x2, activation="erf", b_std=0.1, get=("ntk",))
    assert one._fields == ("ntk",)
    assert nngp.flags.c_contiguous and nngp.dtype == np.float64
    # float32, ints and lists are accepted; the output is float64.
    k32 = fully_connected(x1.astype(np.float32), get="ntk")
    assert k32.dtype == np.float64
    np.testing.assert_allclose(
        k32, fully_connected(x1.astype(np.float32).astype(np.float64), get="ntk"), rtol=1e-13
    )
    xi = [[1, 2], [3, -4], [0, 1]]
    np.testing.assert_allclose(
        fully_connected(xi, get="nngp"), fully_connected(np.array(xi, float), get="nngp")
    )
    # Non-contiguous views work and give the same result.
    big = rng.standard_normal((40, 6))
    np.testing.assert_array_equal(
        fully_connected(big[::2, ::2], get="ntk"),
        fully_connected(np.ascontiguousarray(big[::2, ::2]), get="ntk"),
    )
    # Empty sets of examples.
    assert fully_connected(np.zeros((0, 3)), x2, get="ntk").shape == (0, 9)


def test_inputs_not_mutated():
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((30, 4))
    x2 = rng.standard_normal((12, 4)).astype(np.float32)
    c1, c2 = x1.copy(), x2.copy()
    fully_connected(x1, x2, hidden_layers=2, b_std=0.5)
    fully_connected(x1, hidden_layers=2, activation="erf")
    np.testing.assert_array_equal(x1, c1)
    np.testing.assert_array_equal(x2, c2)
    assert x2.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(x1=np.ones(3)), ValueError, "x1 must be 2-D"),
        (dict(x2=np.ones((2, 2, 2))), ValueError, "x2 must be 2-D"),
        (dict(x2=np.ones((4, 2))), ValueError, "feature dimension"),
        (dict(x1=np.ones((4, 0))), ValueError, "x1 must have at least one feature"),
        (dict(x1=np.array([[1.0, np.nan]])), ValueError, "x1 contains NaN"),
        (dict(x2=np.array([[1.0, 2.0, np.inf]])), ValueError, "x2 contains NaN or infinity"),
        (dict(x1=[["a", "b"]]), TypeError, "x1 must be numeric"),
        (dict(x2=np.ones((2, 3), dtype=complex)), TypeError, "x2 must be real"),
        (dict(x1=None), TypeError, "x1 must be an array"),
        (dict(hidden_layers=-1), ValueError, "hidden_layers"),
        (dict(hidden_layers=2.5), ValueError, "hidden_layers"),
        (dict(hidden_layers=True), ValueError, "hidden_layers"),
        (dict(w_std=0.0), ValueError, "w_std"),
        (dict(w_std=-1.0), ValueError, "w_std"),
        (dict(w_std=float("nan")), ValueError, "w_std"),
        (dict(w_std="1"), TypeError, "w_std"),
        (dict(b_std=-0.1), ValueError, "b_std"),
        (dict(b_std=float("inf")), ValueError, "b_std"),
        (dict(activation="tanh"), ValueError, "activation"),
        (dict(activation=None), ValueError, "activation"),
        (dict(get="kernel"), ValueError, "get"),
        (dict(get=("nngp", "cov")), ValueError, "get"),
        (dict(get=()), ValueError, "get"),
        (dict(get=("ntk", "ntk")), ValueError, "get"),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    args = dict(x1=np.ones((4, 3)), x2=None)
    args.update(kwargs)
    x1, x2 = args.pop("x1"), args.pop("x2")
    with pytest.raises(exc, match=match):
        fully_connected(x1, x2, **args)


def test_gpu_inputs_get_a_clear_error():
    class FakeCuda:
        __cuda_array_interface__ = {}

    with pytest.raises(TypeError, match="GPU array"):
        fully_connected(FakeCuda())


def test_depth_is_bounded_without_a_crash():
    with pytest.raises(ValueError, match="hidden_layers"):
        fully_connected(np.ones((3, 2)), hidden_layers=10**15)
    with pytest.raises(ValueError, match="hidden_layers"):
        _core_call_deep()


def _core_call_deep():
    from tangentflow import _core

    return _core.fully_connected_f64(np.ones((3, 2)), None, 2**40, "relu", 1.0, 0.0, True, True)
