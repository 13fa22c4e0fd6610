"""tangentflow: how a model trained by gradient descent evolves in the kernel regime.

Give it a kernel matrix over the training inputs (NTK or NNGP, from any source) and
targets; it returns outputs at any training time, at convergence, ensemble means and
covariances, GP posteriors and the largest stable learning rate. The CPU hot loop is a
Rust core (faer); CuPy arrays run on the GPU through the same classes.
"""

import os as _os

import numpy as _np

from . import _core
from ._ensemble import Ensemble
from ._errors import IntegrationError, LinAlgError, NumericalWarning, TangentflowError
from ._gaussian import Gaussian
from ._gp import GaussianProcess
from ._lr import max_learning_rate
from ._predictor import Diagnostics, Prediction, Predictor, TestSet

__version__ = _core.__version__

__all__ = [
    "Predictor",
    "Prediction",
    "TestSet",
    "Diagnostics",
    "Ensemble",
    "GaussianProcess",
    "Gaussian",
    "max_learning_rate",
    "set_num_threads",
    "get_num_threads",
    "NumericalWarning",
    "TangentflowError",
    "LinAlgError",
    "IntegrationError",
    "MAX_THREADS",
    "__version__",
]

#: The largest thread count :func:`set_num_threads` and ``TANGENTFLOW_NUM_THREADS`` accept.
MAX_THREADS = 1024


def _check_env_threads() -> None:
    raw = _os.environ.get("TANGENTFLOW_NUM_THREADS")
    if raw is None or not raw.strip():
        return
    try:
        n = int(raw.strip())
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(
            f"TANGENTFLOW_NUM_THREADS must be an integer from 1 to {MAX_THREADS}, got {raw!r}"
        )


_check_env_threads()


def set_num_threads(n: int) -> None:
    """Sets the number of threads of the Rust core: an int from 1 to :data:`MAX_THREADS`
    (1024), or 0 for the default (``TANGENTFLOW_NUM_THREADS`` or the number of cores)."""
    if isinstance(n, (bool, _np.bool_)) or not isinstance(n, (int, _np.integer)):
        raise TypeError(f"n must be an int from 0 to {MAX_THREADS}, got {n!r}")
    if not 0 <= int(n) <= MAX_THREADS:
        raise ValueError(
            f"n must be an int from 0 (the default) to {MAX_THREADS} (MAX_THREADS), got {n!r}"
        )
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The number of threads the Rust core uses."""
    return _core.get_num_threads()
