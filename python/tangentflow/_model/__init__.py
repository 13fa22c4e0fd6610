"""The kernel model: one object per train kernel (``KernelModel``) with its validated
``Options``, factorization and spectrum, and the engines that act on it:

- ``predict``: a Predictor call (inputs → engine → shaped, cast outputs);
- ``closed_form``: the MSE closed forms, the Cholesky limit, the training loss;
- ``ode``: any other loss, integrated in the Rust core;
- ``covariance``: Ensemble means/covariances and GP posteriors;
- ``test_inputs``: a validated test kernel and its ``K_te·V`` cache.

The facades (``Predictor``, ``TestSet``, ``Ensemble``, ``GaussianProcess``) hold models;
only this package talks to ``tangentflow._backends`` (docs/architecture.md).
"""

from .kernel import CHOLESKY_MAX_COND, KernelModel, max_stable_rate
from .options import Dynamics, Loss, Options, Precision
from .spectrum import Factorization, Spectrum, default_rcond
from .test_inputs import TestInputs

__all__ = [
    "CHOLESKY_MAX_COND",
    "Dynamics",
    "Factorization",
    "KernelModel",
    "Loss",
    "Options",
    "Precision",
    "Spectrum",
    "TestInputs",
    "default_rcond",
    "max_stable_rate",
]
