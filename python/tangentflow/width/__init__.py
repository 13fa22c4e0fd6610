"""Is my network wide enough? A width-adequacy study (docs/width.md).

:func:`check` trains a model family at several widths and seeds, compares each really
trained network with tangentflow's linearized prediction from the same initialization,
and measures how its empirical NTK approaches the widest and the infinite-width kernel.

Model families: :class:`MLP` (NumPy, closed-form empirical NTK, matches
:func:`tangentflow.kernels.fully_connected` at infinite width), :class:`JaxModel`
(``width -> (apply_fn, params)``) and :class:`TorchModel` (``width -> torch.nn.Module``).
"""

from ._family import Family, Network
from ._fit import bisect_width, loglog_slope
from ._jax import JaxModel
from ._mlp import MLP
from ._result import WidthStudy
from ._study import DEFAULT_WIDTHS, LearningRateWarning, check
from ._torch import TorchModel

__all__ = [
    "check",
    "WidthStudy",
    "MLP",
    "JaxModel",
    "TorchModel",
    "Family",
    "Network",
    "LearningRateWarning",
    "DEFAULT_WIDTHS",
    "loglog_slope",
    "bisect_width",
]
