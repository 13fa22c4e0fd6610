"""The largest stable learning rate (docs/numerics.md §11)."""

from __future__ import annotations

import numbers

from . import _backends, _validate
from ._shapes import flatten_kernel, kernel_dims
from ._spectrum import ldexp_float


def max_learning_rate(k_train_train, y_train_size=None, momentum=0.0, eps=1e-12) -> float:
    """Largest learning rate for which full-batch gradient descent on the MSE loss
    ``‖f − y‖²/(2n)`` converges: ``2(1 + m)·n / (μ_max + eps)``.

    Parameters
    ----------
    k_train_train : array, (N, N) or pair-interleaved
        The NTK of the training set (flattened to ``(D, D)`` as in docs/numerics.md §2).
    y_train_size : int, optional
        ``n``, the number of loss terms; defaults to ``D`` (right for ``trace_axes=()``).
        With traced output axes pass ``y_train.size``.
    momentum : float in [0, 1)
        Heavy-ball momentum (0: plain gradient descent).
    eps : float
        Added to ``μ_max`` (avoids division by zero for a zero kernel). It is absolute, as
        in the reference: pass ``eps=0`` for a result that scales exactly with the kernel.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a float in [0, 1), got {momentum!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    eps = _validate.positive_float(eps, "eps", allow_zero=True)
    be = _backends.select(k_train_train)
    k = _validate.as_float_array(k_train_train, "k_train_train", be)
    kernel_dims(tuple(k.shape), "k_train_train")
    k2 = flatten_kernel(k, be.xp)
    if be.name == "cpu":
        import numpy as np

        k2 = np.ascontiguousarray(k2)
    max_abs, max_asym, _, finite = be.kernel_stats(k2)
    if not finite:
        raise ValueError("k_train_train contains NaN or infinity")
    if max_asym > 1e-5 * max_abs:
        raise ValueError(
            f"k_train_train is not symmetric: max|K - K^T| = {max_asym:.3e} exceeds "
            f"1e-5 * max|K| = {1e-5 * max_abs:.3e}"
        )
    d = k2.shape[0]
    if y_train_size is None:
        n = d
    else:
        if isinstance(y_train_size, bool) or not isinstance(y_train_size, numbers.Integral):
            raise TypeError(f"y_train_size must be a positive int, got {y_train_size!r}")
        n = int(y_train_size)
        if n <= 0:
            raise ValueError(f"y_train_size must be a positive int, got {y_train_size!r}")
    if d == 0:
        raise ValueError("k_train_train is empty")
    # eigenvalues of 2^-e·sym(K) (docs/numerics.md §12, "Scale invariance"); eps is absolute
    w, _, e = be.eigh(k2, "float64")
    mu_max = ldexp_float(float(w[-1]), e)
    if not (float(w[-1]) > 0.0 if eps == 0.0 else mu_max + eps > 0.0):
        raise ValueError(
            f"k_train_train has no positive eigenvalue (largest {mu_max:.3e}): gradient "
            "descent on it does not train, so no learning rate is the largest stable one"
        )
    if eps == 0.0:
        # exact at every scale, also where mu_max itself is subnormal or huge
        return ldexp_float(2.0 * (1.0 + float(momentum)) * n / float(w[-1]), -e)
    return 2.0 * (1.0 + float(momentum)) * n / (mu_max + eps)
