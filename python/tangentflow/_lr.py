"""The largest stable learning rate (docs/numerics.md §11)."""

from __future__ import annotations

import numbers

from . import _validate
from ._model import KernelModel, Options, max_stable_rate
from ._numerics import ldexp_float


def max_learning_rate(
    k_train_train: object,
    y_train_size: int | None = None,
    momentum: float = 0.0,
    eps: float = 1e-12,
) -> float:
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
    m = _validate.momentum(momentum, optional=False)
    assert m is not None
    eps = _validate.positive_float(eps, "eps", allow_zero=True)
    model = KernelModel.create(k_train_train, Options(), check_trace_axes=False)
    d = model.size
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
    w = model.fact.modes()[0]
    e = model.fact.exp
    s_max = float(w[-1])
    mu_max = ldexp_float(s_max, e)
    if not (s_max > 0.0 if eps == 0.0 else mu_max + eps > 0.0):
        raise ValueError(
            f"k_train_train has no positive eigenvalue (largest {mu_max:.3e}): gradient "
            "descent on it does not train, so no learning rate is the largest stable one"
        )
    if eps == 0.0:
        # exact at every scale, also where mu_max itself is subnormal or huge
        return max_stable_rate(n, m, s_max, e)
    return 2.0 * (1.0 + m) * n / (mu_max + eps)
