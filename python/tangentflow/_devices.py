"""Where an array lives: GPU arrays (CuPy, or torch/JAX arrays on a CUDA device) and the
optional CuPy module. Used by every layer to route inputs (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["cupy_or_none", "is_gpu_array"]


def cupy_or_none() -> Any:
    try:
        import cupy
    except Exception:  # noqa: BLE001 - no CuPy, or CuPy without a working CUDA runtime
        return None
    return cupy


def is_gpu_array(a: object) -> bool:
    """CuPy arrays, and GPU arrays that CuPy can take through DLPack (torch, JAX)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "numpy":  # NumPy arrays and scalars: the common case, on the host
        return False
    if mod == "cupy":
        return True
    if hasattr(a, "__cuda_array_interface__"):
        return True
    dev = getattr(a, "__dlpack_device__", None)
    if dev is not None and mod in ("torch", "jax", "jaxlib"):
        try:
            return int(dev()[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
        except Exception:  # noqa: BLE001
            return False
    return False
