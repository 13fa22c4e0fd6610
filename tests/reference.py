"""Independent float64 references for the closed forms (docs/numerics.md §3–§4), in plain
NumPy/SciPy: the matrix exponential and dense solves, no eigenbasis tricks."""

import numpy as np
import scipy.linalg as sl


def mse_expm(k, y, f0, t, lr=1.0, reg=0.0, kte=None, g0=None):
    """Train/test outputs at scalar time t by scipy.linalg.expm (2-D kernel, y (N, R))."""
    n = y.size
    a = (k + k.T) / 2 + reg * np.eye(k.shape[0])
    if np.isinf(t):
        train = y.copy()
        test = None if kte is None else g0 + kte @ np.linalg.solve(a, y - f0)
        return train, test
    e = sl.expm(-lr * t / n * a)
    train = y + e @ (f0 - y)
    test = None
    if kte is not None:
        test = g0 + kte @ np.linalg.solve(a, (np.eye(len(a)) - e) @ (y - f0))
    return train, test
