"""Kernels as operators: the Krylov path of ``Predictor`` touches them only through products.

Anything with ``.shape``, ``.dtype`` and ``.matmat(V)`` is a kernel operator (a SciPy
``LinearOperator``, a ``dask.array.Array``); this package provides

* :func:`fully_connected`: the analytic NNGP/NTK of :mod:`tangentflow.kernels` as a lazy
  operator, recomputed tile by tile in the Rust core at every product and never stored,
  the products split into row blocks that run as Dask tasks on the active scheduler;
* :func:`stored`: stored kernels (NumPy, memory-mapped ``.npy``, Dask/Zarr, CuPy arrays);
* :func:`is_operator`, :func:`as_operator` and :class:`Operator`, the protocol the kernel
  model uses.

See docs/scale.md for running on a cluster.
"""

from ._base import Operator, as_operator, is_operator
from ._kernel import FullyConnected, fully_connected
from ._stored import stored

__all__ = ["Operator", "FullyConnected", "as_operator", "fully_connected", "is_operator", "stored"]
