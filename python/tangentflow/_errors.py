"""The package's exception and warning classes."""

import os
import sys
import warnings
from types import FrameType

import numpy as np

__all__ = ["TangentflowError", "LinAlgError", "IntegrationError", "NumericalWarning", "warn"]


class TangentflowError(Exception):
    """Base class of the errors tangentflow raises for numerical or solver failures."""


class LinAlgError(TangentflowError, np.linalg.LinAlgError):
    """A factorization failed (the eigendecomposition did not converge)."""


class IntegrationError(TangentflowError):
    """The ODE integrator could not finish (the time is out of reach within the step budget,
    the rate stagnated above ``converge_tol``, the step size underflowed)."""


class NumericalWarning(RuntimeWarning):
    """Numerical trouble that remains after the spectral cut (e.g. a materially non-PSD kernel)."""


_PKG = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[Warning] | None = None) -> None:
    """``warnings.warn`` attributed to the first frame outside the package (the user's
    call), so that module-based warning filters match user code."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PKG):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category or NumericalWarning, stacklevel=level)
