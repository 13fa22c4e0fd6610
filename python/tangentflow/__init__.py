"""tangentflow: how a model trained by gradient descent evolves in the kernel regime.

Give it a kernel matrix over the training inputs (NTK or NNGP, from any source) and
targets; it returns outputs at any training time, at convergence, ensemble means and
covariances, GP posteriors and the largest stable learning rate. The CPU hot loop is a
Rust core (faer); CuPy arrays run on the GPU through the same classes.
"""

import numpy as _np

from . import _core
from ._ensemble import Ensemble
from ._errors import LinAlgError, NumericalWarning, TangentflowError
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
    "__version__",
]


def set_num_threads(n: int) -> None:
    """Sets the number of threads of the Rust core (0: the default, which is
    ``TANGENTFLOW_NUM_THREADS`` or the number of cores)."""
    if isinstance(n, bool) or not isinstance(n, (int, _np.integer)):
        raise TypeError(f"n must be a non-negative int, got {n!r}")
    if n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The number of threads the Rust core uses."""
    return _core.get_num_threads()
