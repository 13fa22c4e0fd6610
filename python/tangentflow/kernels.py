"""Closed-form infinite-width kernels of fully connected networks (no JAX needed)."""

from __future__ import annotations

import numbers
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt

from tangentflow import _core, _devices, _validate

__all__ = ["fully_connected"]

_ACTIVATIONS = ("relu", "erf")
_KINDS = ("nngp", "ntk")
_KERNEL_TYPES: dict[tuple[str, ...], type[tuple[Any, ...]]] = {}
#: ``collections.namedtuple`` with fields known only at run time.
_make_namedtuple: Callable[[str, Sequence[str]], type[tuple[Any, ...]]] = namedtuple

Kind = Literal["nngp", "ntk"]
FloatArray = npt.NDArray[np.float64]


def _kernel_type(fields: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """The ``Kernel`` namedtuple with exactly ``fields``, in that order (cached)."""
    cls = _KERNEL_TYPES.get(fields)
    if cls is None:
        cls = _make_namedtuple("Kernel", fields)
        cls.__module__ = __name__
        cls.__doc__ = f"Infinite-width kernels of a fully connected network: {', '.join(fields)}."
        _KERNEL_TYPES[fields] = cls
    return cls


def _inputs(x: npt.ArrayLike, name: str) -> FloatArray:
    """``x`` as a float64 C-contiguous (N, d) array (a copy when a conversion is needed)."""
    if x is None:
        raise TypeError(f"{name} must be an array of shape (N, d), got None")
    if _devices.is_gpu_array(x):
        raise TypeError(
            f"{name} is a GPU array: tangentflow.kernels runs in the Rust core on the CPU; "
            "pass a NumPy array (and move the kernels to the GPU with cupy.asarray)"
        )
    arr = _validate.host_float_array(x, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D of shape (N, d) (rows are examples), got shape {arr.shape}"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    _validate.check_finite(arr, name, np)
    return arr


def _get(get: object) -> tuple[tuple[str, ...], bool]:
    """The requested kernels and whether a single array (``get`` a string) is returned."""
    if isinstance(get, str):
        if get not in _KINDS:
            raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
        return (get,), True
    if not isinstance(get, (tuple, list)) or not get:
        raise ValueError(f"get must be 'nngp', 'ntk' or a non-empty tuple of them, got {get!r}")
    for g in get:
        if not isinstance(g, str) or g not in _KINDS:
            raise ValueError(f"get must contain only 'nngp' and 'ntk', got {g!r} in {get!r}")
    if len(set(get)) != len(get):
        raise ValueError(f"get must not repeat a kernel, got {get!r}")
    return tuple(get), False


#: Deepest network accepted (as in the Rust core).
MAX_HIDDEN_LAYERS = 10_000


class Arguments(NamedTuple):
    """Validated arguments of a fully connected kernel (shared with tangentflow.operators)."""

    #: float64 C-contiguous (N1, d) inputs.
    x1: FloatArray
    #: float64 C-contiguous (N2, d) inputs, or None when they are ``x1`` (symmetric kernel).
    x2: FloatArray | None
    #: ``(hidden_layers, activation, w_std, b_std)`` in the order the core takes them.
    spec: tuple[int, str, float, float]


def check_arguments(
    x1: npt.ArrayLike,
    x2: npt.ArrayLike | None,
    *,
    hidden_layers: object,
    activation: object,
    w_std: object,
    b_std: object,
) -> Arguments:
    """Every check of :func:`fully_connected`'s inputs and architecture, before any work.

    ``x2`` equal to ``x1`` (the same object or the same values) becomes None, so the kernel
    is computed as exactly symmetric with the exact diagonal.
    """
    a1 = _inputs(x1, "x1")
    a2 = None
    if x2 is not None and x2 is not x1:
        a2 = _inputs(x2, "x2")
        if a2.shape[1] != a1.shape[1]:
            raise ValueError(
                f"x1 and x2 must have the same feature dimension d, got x1 shape {a1.shape} "
                f"and x2 shape {a2.shape}"
            )
        if a2.shape == a1.shape and np.array_equal(a1, a2):
            a2 = None  # same inputs: exactly symmetric, exact diagonal
    if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, numbers.Integral):
        raise ValueError(
            f"hidden_layers must be a non-negative int, got {type(hidden_layers).__name__} "
            f"{hidden_layers!r}"
        )
    if not 0 <= int(hidden_layers) <= MAX_HIDDEN_LAYERS:
        raise ValueError(
            f"hidden_layers must be an int in [0, {MAX_HIDDEN_LAYERS}], got {hidden_layers}"
        )
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be 'relu' or 'erf', got {activation!r}")
    w = _validate.positive_float(w_std, "w_std")
    b = _validate.positive_float(b_std, "b_std", allow_zero=True)
    return Arguments(a1, a2, (int(hidden_layers), activation, w, b))


def check_overflow(k: Any, name: str) -> None:
    """A ValueError when a computed ``name`` kernel (block) has non-finite entries."""
    if not bool(np.all(np.isfinite(k))):
        raise ValueError(
            f"the {name} kernel overflows float64 for these inputs and w_std/b_std: "
            "rescale the inputs (the recursion multiplies variances layer by layer)"
        )


@overload
def fully_connected(
    x1: npt.ArrayLike,
    x2: npt.ArrayLike | None = None,
    *,
    hidden_layers: int = 3,
    activation: Literal["relu", "erf"] = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    get: Kind,
) -> FloatArray: ...


@overload
def fully_connected(
    x1: npt.ArrayLike,
    x2: npt.ArrayLike | None = None,
    *,
    hidden_layers: int = 3,
    activation: Literal["relu", "erf"] = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    get: tuple[Kind, ...] | list[Kind] = ("nngp", "ntk"),
) -> Any: ...  # a ``Kernel`` namedtuple whose fields are the requested kinds


def fully_connected(
    x1: npt.ArrayLike,
    x2: npt.ArrayLike | None = None,
    *,
    hidden_layers: int = 3,
    activation: Literal["relu", "erf"] = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    get: Kind | tuple[Kind, ...] | list[Kind] = ("nngp", "ntk"),
) -> Any:
    r"""Infinite-width NNGP and NTK kernels of a fully connected network.

    The network is ``hidden_layers`` × [Dense, activation] followed by a Dense readout, in
    the standard NTK parameterization (weights :math:`\sigma_w/\sqrt{\text{fan-in}}`,
    biases :math:`\sigma_b`). The kernels match neural-tangents' ``stax`` for the same
    architecture (``kernel_fn(x1, x2, get)``).

    For inputs :math:`x, x'` of dimension :math:`d`, with :math:`\sigma_w` = ``w_std`` and
    :math:`\sigma_b` = ``b_std``:

    .. math::

        K^{(0)} = \sigma_w^2 \, \frac{x \cdot x'}{d} + \sigma_b^2, \qquad
        \Theta^{(0)} = K^{(0)},

    then ``hidden_layers`` times, with
    :math:`(u, v) \sim \mathcal N(0, [[K_{xx}, K], [K, K_{x'x'}]])` (the variances
    :math:`K_{xx}, K_{x'x'}` follow the same recursion):

    .. math::

        K \leftarrow \sigma_w^2 \, E[\phi(u)\phi(v)] + \sigma_b^2, \qquad
        \Theta \leftarrow K + \sigma_w^2 \, E[\phi'(u)\phi'(v)] \, \Theta.

    ReLU uses the arc-cosine closed forms (:math:`c = K/\sqrt{K_{xx}K_{x'x'}}`,
    :math:`\theta = \arccos c`): :math:`E[\phi\phi] = \sqrt{K_{xx}K_{x'x'}}
    (\sin\theta + (\pi - \theta)\cos\theta)/(2\pi)`, :math:`E[\phi'\phi'] =
    (\pi - \theta)/(2\pi)`. Erf uses the arcsine forms: :math:`E[\phi\phi] = \frac{2}{\pi}
    \arcsin\frac{2K}{\sqrt{(1 + 2K_{xx})(1 + 2K_{x'x'})}}`, :math:`E[\phi'\phi'] =
    \frac{4}{\pi} \big((1 + 2K_{xx})(1 + 2K_{x'x'}) - 4K^2\big)^{-1/2}`.

    Parameters
    ----------
    x1 : array_like, shape (N1, d)
        Inputs, rows are examples. Any real numeric dtype (lists, ints, float32 accepted);
        computed in float64. Never modified.
    x2 : array_like, shape (N2, d), optional
        Second inputs; ``None`` (default) means ``x1``. When ``x2`` is ``x1`` (or equal to
        it) the kernels are exactly symmetric and their diagonal uses correlation 1
        exactly.
    hidden_layers : int, default 3
        Number of [Dense, activation] blocks before the readout (>= 0; 0 is the linear
        kernel).
    activation : {"relu", "erf"}, default "relu"
    w_std : float, default 1.0
        Weight standard deviation, > 0.
    b_std : float, default 0.0
        Bias standard deviation, >= 0.
    get : {"nngp", "ntk"} or tuple of them, default ("nngp", "ntk")
        A string returns that kernel as a single array; a tuple returns a namedtuple
        ``Kernel`` whose fields are exactly the requested kernels, in the requested order.

    Returns
    -------
    numpy.ndarray or Kernel
        float64 array(s) of shape (N1, N2) (also for float32 inputs): entry ``[i, j]``
        is the kernel between ``x1[i]`` and ``x2[j]``.

    Raises
    ------
    TypeError
        Non-numeric (or complex) inputs, or a non-real ``w_std``/``b_std``.
    ValueError
        Inputs not 2-D, with no features, with different feature dimensions, or with NaN
        or infinity; ``hidden_layers`` not a non-negative int; ``w_std <= 0``,
        ``b_std < 0``; an unknown ``activation`` or ``get``.

    Notes
    -----
    The work is O(N1·N2·(d + hidden_layers)), fused per entry in the Rust core and run in
    parallel on the library's threads (:func:`tangentflow.set_num_threads`), with the GIL
    released.

    Examples
    --------
    >>> import numpy as np
    >>> from tangentflow.kernels import fully_connected
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> k = fully_connected(x, hidden_layers=1, activation="relu")
    >>> k.nngp.shape, k.ntk.shape
    ((3, 3), (3, 3))
    >>> float(k.nngp[0, 0])  # w² · E[relu(u)²] = K₀/2 with K₀ = |x|²/d = 0.5
    0.25
    >>> fully_connected(x, x[:2], get="ntk").shape
    (3, 2)
    """
    fields, single = _get(get)
    args = check_arguments(
        x1, x2, hidden_layers=hidden_layers, activation=activation, w_std=w_std, b_std=b_std
    )
    nngp, ntk = _core.fully_connected_f64(
        args.x1, args.x2, *args.spec, "nngp" in fields, "ntk" in fields
    )
    for name, k in (("nngp", nngp), ("ntk", ntk)):
        if k is not None:
            check_overflow(k, name)
    out: dict[str, Any] = {"nngp": nngp, "ntk": ntk}
    if single:
        return out[fields[0]]
    return _kernel_type(fields)(*(out[f] for f in fields))
