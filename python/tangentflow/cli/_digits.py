"""scikit-learn's digits data set (8×8 images, 1797 of them, no download), standardized
and split as ``tangentflow demo`` and ``tangentflow width`` use it."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["N_DIGITS", "N_CLASSES", "load_digits_split", "one_hot"]

#: Number of images in scikit-learn's digits data set.
N_DIGITS = 1797
N_CLASSES = 10

FloatArray = npt.NDArray[np.float64]


def load_digits_split(
    n_train: int, seed: int = 0
) -> tuple[FloatArray, FloatArray, npt.NDArray[Any], npt.NDArray[Any]]:
    """(x_train, x_test, labels_train, labels_test): standardized digits, fixed split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - exercised only without scikit-learn
        raise RuntimeError(
            "the demo needs scikit-learn for its data set: pip install scikit-learn "
            "(or install the tangentflow wheel with its [demo] extra)"
        ) from e
    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64)
    labels = np.asarray(data.target)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    tr, te = perm[:n_train], perm[n_train:]
    mean = x[tr].mean(axis=0)  # statistics of the training set only

    def standardize(a: FloatArray) -> FloatArray:
        a = a - mean
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        out: FloatArray = a / np.maximum(norms, 1e-12)
        return out

    return standardize(x[tr]), standardize(x[te]), labels[tr], labels[te]


def one_hot(labels: npt.ArrayLike) -> FloatArray:
    """Centered one-hot targets: 0.9 for the class, -0.1 elsewhere (rows sum to 0)."""
    out: FloatArray = np.eye(N_CLASSES)[np.asarray(labels)] - 1.0 / N_CLASSES
    return out
