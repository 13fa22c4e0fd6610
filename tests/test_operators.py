"""Kernels as operators (tangentflow.operators, docs/scale.md).

References: the dense kernels of ``tangentflow.kernels`` (themselves checked against
neural-tangents in test_kernels.py) times the block, NumPy products of the stored arrays,
and the same products on Dask's synchronous scheduler and on a two-process
``LocalCluster`` (real serialization).
"""

import sys

import numpy as np
import pytest

from tangentflow import kernels
from tangentflow import operators as ops
from tangentflow.operators import _schedule, _stored

RNG = np.random.default_rng(20261201)
X = RNG.standard_normal((333, 7))
XT = RNG.standard_normal((41, 7))
V = RNG.standard_normal((333, 3))
ARCH = dict(hidden_layers=3, w_std=1.4, b_std=0.1)
TOL = 1e-13


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("chunk_size", [None, 64, 100, 1000])
def test_fused_product_equals_the_dense_kernel_times_v(activation, get, chunk_size):
    k = kernels.fully_connected(X, activation=activation, get=get, **ARCH)
    op = ops.fully_connected(X, activation=activation, get=get, chunk_size=chunk_size, **ARCH)
    assert op.shape == (333, 333) and op.dtype == np.float64 and op.symmetric
    assert rel(op.matmat(V), k @ V) < TOL
    assert rel(op.matvec(V[:, 0]), k @ V[:, 0]) < TOL
    assert op.matvecs == 4
    np.testing.assert_array_equal(op.diagonal(), np.diag(k))
    kt = kernels.fully_connected(XT, X, activation=activation, get=get, **ARCH)
    opt = ops.fully_connected(XT, X, activation=activation, get=get, chunk_size=chunk_size, **ARCH)
    assert opt.shape == (41, 333) and not opt.symmetric and opt.diagonal() is None
    assert rel(opt.matmat(V), kt @ V) < TOL


def test_row_blocks_partition_the_rows():
    for n, chunk in [(333, 64), (333, 100), (5000, 700), (64, 64), (1, 4096)]:
        op = ops.fully_connected(RNG.standard_normal((n, 2)), chunk_size=chunk)
        blocks = op.blocks()
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(blocks, blocks[1:]))
        # Equal work: the lower-triangle entries of each block are within a tile's rows.
        work = [r1 * (r1 + 1) / 2 - r0 * (r0 + 1) / 2 for r0, r1 in blocks]
        assert max(work) - min(work) <= 64 * n + 1
    rect = ops.fully_connected(XT, X, chunk_size=10)
    assert rect.blocks() == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 41)]


def test_same_inputs_are_the_symmetric_operator_and_inputs_are_not_modified():
    x = X.copy()
    op = ops.fully_connected(x, x.copy())
    assert op.symmetric
    v = V.copy()
    op.matmat(v)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(v, V)
    # Fortran-ordered and integer blocks are accepted (as float64).
    k = kernels.fully_connected(X, get="ntk")
    assert rel(op.matmat(np.asfortranarray(V)), k @ V) < TOL
    assert rel(op.matmat(np.ones((333, 2), dtype=np.int64)), k @ np.ones((333, 2))) < TOL


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="get"):
        ops.fully_connected(X, get=("ntk",))
    with pytest.raises(ValueError, match="hidden_layers"):
        ops.fully_connected(X, hidden_layers=-1)
    with pytest.raises(ValueError, match="activation"):
        ops.fully_connected(X, activation="tanh")
    with pytest.raises(ValueError, match="w_std"):
        ops.fully_connected(X, w_std=0.0)
    with pytest.raises(ValueError, match="x2"):
        ops.fully_connected(X, XT[:, :3])
    with pytest.raises(ValueError, match="x1"):
        ops.fully_connected(np.full((3, 2), np.nan))
    with pytest.raises(TypeError, match="chunk_size"):
        ops.fully_connected(X, chunk_size=2.5)
    with pytest.raises(ValueError, match="chunk_size"):
        ops.stored(np.eye(3), chunk_size=0)
    op = ops.fully_connected(X)
    with pytest.raises(ValueError, match=r"v must have shape \(333, p\)"):
        op.matmat(V[:10])
    with pytest.raises(TypeError, match="v must be a real"):
        op.matmat(V.astype(complex))
    assert op.matvecs == 0
    with pytest.raises(ValueError, match="overflows"):
        ops.fully_connected(X * 1e200, hidden_layers=1).matmat(V)


class Duck:
    """An operator by duck typing (what a user's own class looks like)."""

    def __init__(self, k, dtype=np.float64, shape=None):
        self.k, self.dtype = k, dtype
        self.shape = k.shape if shape is None else shape

    def matmat(self, v):
        return self.k @ v


def test_is_operator():
    import scipy.sparse.linalg as sla

    k = np.eye(4)
    assert ops.is_operator(sla.aslinearoperator(k))
    assert ops.is_operator(ops.stored(k)) and ops.is_operator(ops.fully_connected(X))
    assert ops.is_operator(Duck(k))
    for obj in (k, np.memmap, [[1.0]], 1.0, None, "k", np.float64(1.0)):
        assert not ops.is_operator(obj)
    jnp = pytest.importorskip("jax.numpy")
    assert not ops.is_operator(jnp.eye(3))


def test_is_operator_does_not_import_dask(monkeypatch):
    monkeypatch.delitem(sys.modules, "dask.array", raising=False)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    assert not ops.is_operator(np.eye(2))
    assert ops.is_operator(Duck(np.eye(2)))


def test_as_operator_validates_and_wraps():
    import scipy.sparse.linalg as sla

    k = RNG.standard_normal((5, 5))
    k = k @ k.T
    v = RNG.standard_normal((5, 2))
    for obj in (sla.aslinearoperator(k), Duck(k), k, ops.stored(k)):
        op = ops.as_operator(obj, "k_train_train")
        assert isinstance(op, ops.Operator) and op.shape == (5, 5)
        np.testing.assert_allclose(op.matmat(v), k @ v, rtol=1e-15)
        assert op.matvecs == 2
    op = ops.fully_connected(X)
    assert ops.as_operator(op, "k") is op
    assert ops.as_operator(Duck(k), "k").diagonal() is None
    np.testing.assert_array_equal(ops.as_operator(k, "k").diagonal(), np.diag(k))
    assert ops.as_operator(Duck(k.astype(np.float32), np.float32), "k").dtype == np.float32
    with pytest.raises(TypeError, match="k_train_train must be a kernel operator"):
        ops.as_operator([[1.0]], "k_train_train")
    with pytest.raises(ValueError, match="k_op must be 2-D"):
        ops.as_operator(Duck(k, shape=(5,)), "k_op")
    with pytest.raises(ValueError, match="known, non-negative sizes"):
        ops.as_operator(Duck(k, shape=(5, float("nan"))), "k_op")
    with pytest.raises(TypeError, match="k_op must have dtype float32 or float64"):
        ops.as_operator(Duck(k, np.complex128), "k_op")
    with pytest.raises(TypeError, match="k_op must have dtype float32 or float64"):
        ops.as_operator(np.eye(3, dtype=np.int64), "k_op")
    with pytest.raises(ValueError, match="returned a product of shape"):
        ops.as_operator(Duck(k, shape=(4, 5)), "k_op").matmat(v)


def test_stored_numpy_and_memmap(tmp_path):
    k = RNG.standard_normal((300, 300))
    k = k @ k.T
    v = RNG.standard_normal((300, 4))
    np.save(tmp_path / "k.npy", k)
    mm = np.load(tmp_path / "k.npy", mmap_mode="r")
    for op in (ops.stored(k), ops.stored(k, chunk_size=7), ops.stored(mm), ops.stored(mm, 64)):
        assert rel(op.matmat(v), k @ v) < TOL
        np.testing.assert_array_equal(op.diagonal(), np.diag(k))
    f32 = ops.stored(k.astype(np.float32))
    assert f32.dtype == np.float32 and f32.matmat(v).dtype == np.float64
    assert ops.stored(k[:, :10]).diagonal() is None


def test_device_logic_with_numpy_as_the_array_module():
    # The CuPy path of stored(): products by blocks on the array's device (xp), results
    # to the host. Here xp is NumPy, the same code that runs with CuPy on a GPU.
    k = RNG.standard_normal((50, 30))
    v = RNG.standard_normal((30, 3))
    op = _stored._Array(k, 8, np, "k")
    assert rel(op.matmat(v), k @ v) < TOL and op.diagonal() is None
    sq = _stored._Array(k[:30], None, np, "k")
    np.testing.assert_array_equal(sq.diagonal(), np.diag(k[:30]))


def test_without_dask_products_run_in_process(monkeypatch):
    op = ops.fully_connected(X, chunk_size=50, **ARCH)
    want = op.matmat(V)
    monkeypatch.setitem(sys.modules, "dask", None)
    assert _schedule._dask() is None
    np.testing.assert_array_equal(op.matmat(V), want)


dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")


def test_stored_dask_and_zarr(tmp_path):
    zarr = pytest.importorskip("zarr")
    k = RNG.standard_normal((200, 200))
    k = k @ k.T
    v = RNG.standard_normal((200, 3))
    z = zarr.open_array(tmp_path / "k.zarr", mode="w", shape=k.shape, chunks=(64, 64), dtype="f8")
    z[:] = k
    for arr in (da.from_array(k, chunks=(50, 70)), da.from_zarr(str(tmp_path / "k.zarr"))):
        assert ops.is_operator(arr)
        for op in (ops.stored(arr), ops.stored(arr, chunk_size=90), ops.as_operator(arr, "k")):
            assert rel(op.matmat(v), k @ v) < TOL
            np.testing.assert_array_equal(op.diagonal(), np.diag(k))
    unknown = da.from_array(k, chunks=50)[da.from_array(np.arange(200) % 2 == 0, chunks=50)]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        ops.as_operator(unknown, "k_train_train")


def test_dask_schedulers_agree():
    op = ops.fully_connected(X, chunk_size=80, **ARCH)
    threaded = op.matmat(V)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(op.matmat(V), threaded)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as c,
        distributed.Client(c) as client,
    ):
        yield client


def test_local_cluster_equals_threads(cluster):
    # The client is the active scheduler inside the fixture: products are tasks on two
    # worker processes (inputs scattered, results gathered).
    sym = ops.fully_connected(X, chunk_size=80, **ARCH)
    rect = ops.fully_connected(XT, X, chunk_size=10, **ARCH)
    k = kernels.fully_connected(X, get="ntk", **ARCH)
    kt = kernels.fully_connected(XT, X, get="ntk", **ARCH)
    on_cluster = sym.matmat(V), rect.matmat(V), sym.matmat(V[:, :1])
    assert sum(cluster.nthreads().values()) == 2
    with dask.config.set(scheduler="threads"):
        threaded = sym.matmat(V), rect.matmat(V), sym.matmat(V[:, :1])
    for a, b in zip(on_cluster, threaded):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14 * np.max(np.abs(b)))
    assert rel(on_cluster[0], k @ V) < TOL and rel(on_cluster[1], kt @ V) < TOL
    dk = da.from_array(k, chunks=100)
    assert rel(ops.stored(dk).matmat(V), k @ V) < TOL


def test_predictor_over_the_lazy_kernel_on_a_cluster_equals_the_dense_predictor(cluster):
    import tangentflow as tf

    x, xt = X[:200], XT
    y = np.tanh(x @ RNG.standard_normal((7, 2)))
    ts = np.array([0.0, 0.3, 3.0, 30.0, 300.0, np.inf])
    k = kernels.fully_connected(x, get="ntk", **ARCH)
    kt = kernels.fully_connected(xt, x, get="ntk", **ARCH)
    dense = tf.Predictor(k, y).at(ts, k_test_train=kt)
    op = ops.fully_connected(x, chunk_size=64, **ARCH)
    p = tf.Predictor(op, y, rtol=1e-10)
    lazy = p.at(ts, k_test_train=ops.fully_connected(xt, x, chunk_size=16, **ARCH))
    assert p.solver_info.converged and op.matvecs > 0
    scale = np.max(np.abs(y))
    assert np.max(np.abs(lazy.train - dense.train)) <= 1e-8 * scale
    assert np.max(np.abs(lazy.test - dense.test)) <= 1e-8 * scale


def test_bench_krylov_smoke(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benches" / "bench_krylov.py"
    spec = importlib.util.spec_from_file_location("bench_krylov", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "operator N=600" in out and "SciPy cg" in out and "converged True" in out


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_device_kernel_logic_with_numpy_as_the_array_module(activation, get):
    # The CuPy operator of fully_connected, run with NumPy as xp, against the core.
    from tangentflow.operators._device import DeviceFullyConnected

    spec = (ARCH["hidden_layers"], activation, ARCH["w_std"], ARCH["b_std"])
    x0 = np.vstack([X[:50], np.zeros((1, 7))])  # a zero input: the zero-variance convention
    for x2, want in (
        (None, ops.fully_connected(x0, activation=activation, get=get, **ARCH)),
        (XT, ops.fully_connected(x0, XT, activation=activation, get=get, **ARCH)),
    ):
        dev = DeviceFullyConnected(x0, x2, spec, get, 16, np)
        v = V[: want.shape[1]]
        assert dev.shape == want.shape
        assert rel(dev.matmat(v), want.matmat(v)) < TOL
        if x2 is None:
            np.testing.assert_allclose(dev.diagonal(), want.diagonal(), rtol=1e-15)
        else:
            assert dev.diagonal() is None
