"""A fully connected network in the NTK parameterization, in NumPy (docs/width.md).

Layers ``l = 0 … L`` (``L = hidden_layers``), widths ``n_0 = d``, ``n_1 … n_L = width``,
``n_{L+1} = K`` outputs:

    h_{l+1} = a_l · z_l W_l + σ_b · b_l,    a_l = σ_w / √n_l,    z_0 = x,  z_{l+1} = φ(h_{l+1})

with standard normal ``W_l``, ``b_l``; the output is ``h_{L+1}``. At infinite width its
NTK is :func:`tangentflow.kernels.fully_connected` with the same ``hidden_layers``,
``activation``, ``w_std``, ``b_std``.

The empirical NTK uses the layer-wise closed form, never a Jacobian: with
``G_l = a_l² z_l z_lᵀ + σ_b²`` (an ``N1 × N2`` Gram matrix) and ``Δ_{l+1}^k = ∂f_k/∂h_{l+1}``,

    Θ^{kk'} = Σ_l  G_l ⊙ (Δ_{l+1}^k Δ_{l+1}^{k'ᵀ}),      Δ_{L+1}^k Δ_{L+1}^{k'ᵀ} = δ_{kk'},

one GEMM per layer over ``(N·K, n)`` blocks. Training is full-batch gradient descent on
``‖f − y‖²/(2n)``, ``n = y.size`` (docs/concepts.md), three GEMMs per hidden layer per step.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ._family import Family, Network, ProgressFn

#: Arrays of the network's ``dtype`` (float32 or float64).
Array = npt.NDArray[Any]
#: ``[(W_0, b_0), …, (W_L, b_L)]``.
Params = list[tuple[Array, Array]]

__all__ = ["MLP", "input_array", "unflatten"]

_ACTIVATIONS = ("relu", "erf")
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
#: Bytes of the per-layer Δ blocks one kernel chunk may hold.
_CHUNK_BYTES = 1 << 27


#: Below this many multiply-adds per GEMM, training runs BLAS on one thread: small GEMMs
#: gain nothing from threads and lose much when the cores are shared.
_SMALL_GEMM = 1e8


def _blas_threads(macs: float) -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread for small GEMMs (through threadpoolctl, when installed)."""
    if macs >= _SMALL_GEMM:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    limits: contextlib.AbstractContextManager[Any] = threadpool_limits(1, user_api="blas")
    return limits


def _erf_fn() -> Callable[[Array], Array]:
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn and the tests
        erf = np.vectorize(math.erf, otypes=[np.float64])
    fn: Callable[[Array], Array] = erf
    return fn


class MLP(Family):
    """``hidden_layers`` × [Dense(width), activation] + Dense(K) in the NTK parameterization.

    Parameters
    ----------
    hidden_layers : int, default 2
        Number of hidden layers (>= 1).
    activation : {"relu", "erf"}, default "relu"
    w_std : float, default 1.0
        σ_w (> 0): weights are ``σ_w/√fan-in`` times standard normals.
    b_std : float, default 0.0
        σ_b (>= 0): biases are ``σ_b`` times standard normals.
    dtype : {"float32", "float64"}, default "float64"
        Precision of the forward pass, the training and the Δ blocks of the kernel (the
        kernel is summed in float64). float32 trains about twice as fast; its rounding
        (~1e-6 relative) is far below the finite-width effects the study measures.

    Examples
    --------
    >>> import numpy as np
    >>> from tangentflow.width import MLP
    >>> mlp = MLP(hidden_layers=1)
    >>> params = mlp.init(512, d_in=3, d_out=1, seed=0)
    >>> x = np.eye(3)
    >>> mlp.ntk(params, x).shape, mlp.apply(params, x).shape
    ((3, 3), (3, 1))
    """

    hidden_layers: int
    activation: Literal["relu", "erf"]
    w_std: float
    b_std: float
    dtype: np.dtype[Any]
    _erf: Callable[[Array], Array] | None

    def __init__(
        self,
        hidden_layers: int = 2,
        activation: Literal["relu", "erf"] = "relu",
        *,
        w_std: float = 1.0,
        b_std: float = 0.0,
        dtype: npt.DTypeLike = "float64",
    ) -> None:
        if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, numbers.Integral):
            raise TypeError(f"hidden_layers must be a positive int, got {hidden_layers!r}")
        if not 1 <= int(hidden_layers) <= 1000:
            raise ValueError(f"hidden_layers must be in [1, 1000], got {hidden_layers}")
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu' or 'erf', got {activation!r}")
        for name, v, zero in (("w_std", w_std, False), ("b_std", b_std, True)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
            if not (math.isfinite(v) and (float(v) >= 0 if zero else float(v) > 0)):
                raise ValueError(
                    f"{name} must be {'>= 0' if zero else '> 0'} and finite, got {v!r}"
                )
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.hidden_layers = int(hidden_layers)
        self.activation = activation
        self.w_std = float(w_std)
        self.b_std = float(b_std)
        self.dtype = dt
        self._erf = _erf_fn() if activation == "erf" else None

    def __repr__(self) -> str:
        return (
            f"MLP(hidden_layers={self.hidden_layers}, activation={self.activation!r}, "
            f"w_std={self.w_std}, b_std={self.b_std}, dtype={self.dtype.name!r})"
        )

    def describe(self) -> str:
        return (
            f"{self.hidden_layers}-hidden-layer {self.activation} MLP, NTK parameterization "
            f"(w_std={self.w_std:g}, b_std={self.b_std:g}, {self.dtype.name})"
        )

    # -- parameters and forward pass -------------------------------------------------------
    def init(self, width: int, d_in: int, d_out: int = 1, seed: int = 0) -> Params:
        """Standard normal parameters ``[(W_0, b_0), …, (W_L, b_L)]`` (drawn in float64
        from ``numpy.random.default_rng((seed, width))``, then cast to ``dtype``)."""
        for name, v in (("width", width), ("d_in", d_in), ("d_out", d_out)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        rng = np.random.default_rng((int(seed), int(width)))
        sizes = [int(d_in)] + [int(width)] * self.hidden_layers + [int(d_out)]
        params: Params = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w = rng.standard_normal((n_in, n_out)).astype(self.dtype)
            b = rng.standard_normal(n_out).astype(self.dtype)
            params.append((w, b))
        return params

    def _act(self, h: Array) -> tuple[Array, Array]:
        """``(φ(h), φ'(h))``."""
        if self.activation == "relu":
            return np.maximum(h, 0), (h > 0).astype(h.dtype)
        assert self._erf is not None  # set for activation 'erf'
        return self._erf(h).astype(h.dtype, copy=False), _TWO_OVER_SQRT_PI * np.exp(-h * h)

    def _forward(self, params: Params, x: npt.ArrayLike) -> tuple[Array, list[Array], list[Array]]:
        """Outputs and the per-layer ``z_l`` (l = 0 … L) and ``φ'(h_l)`` (l = 1 … L)."""
        z = np.ascontiguousarray(x, dtype=self.dtype)
        zs: list[Array] = [z]
        ds: list[Array] = []
        for i, (w, b) in enumerate(params):
            h = z @ w
            h *= self.w_std / math.sqrt(w.shape[0])
            if self.b_std:
                h += self.b_std * b
            if i == len(params) - 1:
                return h, zs, ds
            z, d = self._act(h)
            zs.append(z)
            ds.append(d)
        raise AssertionError("unreachable")

    def apply(self, params: Params, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Outputs ``(N, K)`` (float64) for inputs ``(N, d)``."""
        return self._forward(params, input_array(x, "x"))[0].astype(np.float64)

    # -- kernels ---------------------------------------------------------------------------
    def _deltas(self, params: Params, zs: list[Array], ds: list[Array]) -> list[Array]:
        """``Δ_l = ∂f/∂h_l`` for l = 1 … L, each ``(N, K, n_l)``."""
        out: list[Array] = [np.empty(0)] * len(ds)
        w_out = params[-1][0]
        a = self.w_std / math.sqrt(w_out.shape[0])
        delta = ds[-1][:, None, :] * (a * w_out.T)[None, :, :]
        out[-1] = delta
        for l in range(len(ds) - 1, 0, -1):  # Δ_l from Δ_{l+1} through W_l
            w = params[l][0]
            a = self.w_std / math.sqrt(w.shape[0])
            n, k = delta.shape[0], delta.shape[1]
            back = (delta.reshape(n * k, -1) @ w.T).reshape(n, k, -1)  # one 2-D GEMM
            delta = back * (a * ds[l - 1])[:, None, :]
            out[l - 1] = delta
        return out

    def _gram(self, z1: Array, z2: Array, n_in: int) -> npt.NDArray[np.float64]:
        g: npt.NDArray[np.float64] = (z1 @ z2.T).astype(np.float64)
        g *= self.w_std**2 / n_in
        if self.b_std:
            g += self.b_std**2
        return g

    def ntk_flat(
        self, params: Params, x1: Array, x2: Array | None = None
    ) -> npt.NDArray[np.float64]:
        """The empirical NTK flat ``(N1·K, N2·K)``, float64 (row ``i·K + k``)."""
        k_out = params[-1][0].shape[1]
        n2 = len(x1) if x2 is None else len(x2)
        width = max(w.shape[1] for w, _ in params[:-1])
        with _blas_threads(len(x1) * n2 * k_out * k_out * width):
            return self._ntk_flat(params, x1, x2)

    def _ntk_flat(self, params: Params, x1: Array, x2: Array | None) -> npt.NDArray[np.float64]:
        k_out = params[-1][0].shape[1]
        width = max(w.shape[1] for w, _ in params[:-1])
        same = x2 is None
        f2, zs2, ds2 = self._forward(params, x1 if x2 is None else x2)
        del f2
        dl2 = self._deltas(params, zs2, ds2)
        n2 = zs2[0].shape[0]
        n1 = x1.shape[0]
        chunk = max(1, _CHUNK_BYTES // (k_out * width * self.dtype.itemsize * len(dl2)))
        if same and chunk >= n1:
            return self._ntk_block(params, zs2, dl2, zs2, dl2, k_out, symmetric=True)
        out = np.empty((n1 * k_out, n2 * k_out))
        for s in range(0, n1, chunk):
            _, zs1, ds1 = self._forward(params, x1[s : s + chunk])
            dl1 = self._deltas(params, zs1, ds1)
            out[s * k_out : (s + len(zs1[0])) * k_out] = self._ntk_block(
                params, zs1, dl1, zs2, dl2, k_out
            )
        return out

    def _ntk_block(
        self,
        params: Params,
        zs1: list[Array],
        dl1: list[Array],
        zs2: list[Array],
        dl2: list[Array],
        k_out: int,
        symmetric: bool = False,
    ) -> npt.NDArray[np.float64]:
        n1, n2 = zs1[0].shape[0], zs2[0].shape[0]
        last = len(params) - 1
        g = self._gram(zs1[last], zs2[last], params[last][0].shape[0])
        theta = np.zeros((n1, k_out, n2, k_out))
        for k in range(k_out):  # readout layer: G_L ⊗ I
            theta[:, k, :, k] = g
        for l in range(last):
            g = self._gram(zs1[l], zs2[l], params[l][0].shape[0])
            a = dl1[l].reshape(n1 * k_out, -1)
            b = a if symmetric else dl2[l].reshape(n2 * k_out, -1)
            blk = (a @ b.T).astype(np.float64, copy=False).reshape(n1, k_out, n2, k_out)
            blk *= g[:, None, :, None]
            theta += blk
        return theta.reshape(n1 * k_out, n2 * k_out)

    def ntk(
        self, params: Params, x1: npt.ArrayLike, x2: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.float64]:
        """The empirical NTK of the network with ``params``: ``(N1, N2)`` for one output,
        ``(N1, N2, K, K)`` (pair-interleaved) for ``K > 1``; float64."""
        a1 = input_array(x1, "x1")
        a2 = None if x2 is None else input_array(x2, "x2", a1.shape[1])
        flat = self.ntk_flat(params, a1, a2)
        k = params[-1][0].shape[1]
        return unflatten(flat, k)

    def limit_ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        from tangentflow.kernels import fully_connected

        return fully_connected(
            x1,
            x2,
            hidden_layers=self.hidden_layers,
            activation=self.activation,
            w_std=self.w_std,
            b_std=self.b_std,
            get="ntk",
        )

    # -- training --------------------------------------------------------------------------
    def train(
        self,
        params: Params,
        x: Array,
        y: npt.ArrayLike,
        learning_rate: float,
        steps: int,
        checkpoints: Sequence[int] = (),
        x_test: Array | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Full-batch gradient descent on ``‖f − y‖²/(2n)`` in place; returns the train
        and test outputs after each checkpoint's number of steps (``(C, N, K)``, float64)."""
        y = np.asarray(y, dtype=self.dtype).reshape(len(x), -1)
        ck = {int(c): i for i, c in enumerate(checkpoints)}
        f_tr = np.empty((len(ck), len(x), y.shape[1]))
        f_te = None if x_test is None else np.empty((len(ck), len(x_test), y.shape[1]))
        eta = float(learning_rate)
        widest = max(w.shape[1] for w, _ in params[:-1])
        with _blas_threads(len(x) * widest * widest):
            self._steps(params, x, y, eta, steps, ck, x_test, f_tr, f_te, progress)
        return f_tr, f_te

    def _steps(
        self,
        params: Params,
        x: Array,
        y: Array,
        eta: float,
        steps: int,
        ck: Mapping[int, int],
        x_test: Array | None,
        f_tr: npt.NDArray[np.float64],
        f_te: npt.NDArray[np.float64] | None,
        progress: ProgressFn | None,
    ) -> None:
        scale = 1.0 / y.size
        last = len(params) - 1
        for t in range(steps + 1):
            f, zs, ds = self._forward(params, x)
            if t in ck:
                f_tr[ck[t]] = f
                if x_test is not None and f_te is not None:
                    f_te[ck[t]] = self._forward(params, x_test)[0]
            if progress is not None:
                progress(t, steps)
            if t == steps:
                break
            delta = (f - y) * self.dtype.type(scale)  # ∂L/∂h_{L+1}
            for l in range(last, -1, -1):
                w, b = params[l]
                a = self.w_std / math.sqrt(w.shape[0])
                step = delta * self.dtype.type(eta * a)
                if self.b_std:
                    b -= self.dtype.type(eta * self.b_std) * delta.sum(axis=0)
                if l > 0:
                    nxt = delta @ w.T
                    nxt *= self.dtype.type(a) * ds[l - 1]
                w -= zs[l].T @ step
                if l > 0:
                    delta = nxt

    def build(self, width: int, seed: int, d_in: int, d_out: int) -> Network:
        return _MLPNet(self, self.init(width, d_in, d_out, seed))


class _MLPNet(Network):
    def __init__(self, mlp: MLP, params: Params) -> None:
        self.mlp = mlp
        self.params = params

    def outputs(self, x: np.ndarray) -> np.ndarray:
        return self.mlp._forward(self.params, x)[0].astype(np.float64)

    def ntk(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        return self.mlp.ntk_flat(self.params, x1, x2)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        learning_rate: float,
        steps: int,
        checkpoints: Sequence[int],
        x_test: np.ndarray | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.mlp.train(
            self.params, x, y, learning_rate, steps, checkpoints, x_test, progress
        )


def unflatten(flat: np.ndarray, k: int) -> np.ndarray:
    """A flat ``(N1·K, N2·K)`` kernel as ``(N1, N2)`` (K = 1) or ``(N1, N2, K, K)`` (a view)."""
    if k == 1:
        return flat
    n1, n2 = flat.shape[0] // k, flat.shape[1] // k
    view: np.ndarray = flat.reshape(n1, k, n2, k).transpose(0, 2, 1, 3)
    return view


def input_array(x: npt.ArrayLike, name: str, d: int | None = None) -> npt.NDArray[np.float64]:
    """``x`` as a finite, non-empty float64 ``(N, d)`` array (``d`` features when given); the
    errors name the argument."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a real array of shape (N, d): {e}") from None
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, d), got shape {a.shape}")
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{name} must have {d} features like x1, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a
