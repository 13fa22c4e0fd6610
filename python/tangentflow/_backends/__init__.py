"""Array backends: the Rust core for NumPy-compatible input, an array-namespace backend
(CuPy on the GPU; NumPy for testing the same code on the CPU)."""

from __future__ import annotations

from .._devices import cupy_or_none, is_gpu_array
from ._base import Backend
from .cpu import CpuBackend
from .xp import XpBackend

__all__ = [
    "Backend",
    "CpuBackend",
    "XpBackend",
    "select",
    "by_name",
    "host",
    "is_gpu_array",
    "cupy_or_none",
]

_CPU = CpuBackend()


def select(kernel: object, override: str | None = None) -> Backend:
    """Backend for a kernel: GPU arrays → CuPy, everything else → the Rust core.

    ``override`` is for tests: ``"cpu"``, ``"numpy"`` (the array-namespace code run with
    NumPy) or ``"cupy"``.
    """
    if override == "numpy":
        import numpy

        return XpBackend(numpy)
    if override == "cupy" or (override is None and is_gpu_array(kernel)):
        cp = cupy_or_none()
        if cp is None:
            raise TypeError(
                "k_train_train is a GPU array but CuPy is not installed: "
                "pip install cupy-cuda12x (or cupy-cuda13x; the same as the wheel's "
                "[cuda12]/[cuda13] extras)"
            )
        return XpBackend(cp)
    if override not in (None, "cpu"):
        raise ValueError(f"unknown backend {override!r}")
    return _CPU


def by_name(name: str) -> Backend:
    """The backend called ``name`` (how backends unpickle: by name, not by module)."""
    return select(None, name)


def host() -> Backend:
    """The backend of host (NumPy) arrays: the Rust core."""
    return _CPU
