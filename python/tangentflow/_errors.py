"""The package's exception and warning classes."""

import numpy as np

__all__ = ["TangentflowError", "LinAlgError", "NumericalWarning"]


class TangentflowError(Exception):
    """Base class of the errors tangentflow raises for numerical or solver failures."""


class LinAlgError(TangentflowError, np.linalg.LinAlgError):
    """A factorization failed (the eigendecomposition did not converge)."""


class NumericalWarning(RuntimeWarning):
    """Numerical trouble that remains after the spectral cut (e.g. a materially non-PSD kernel)."""
