"""The CPU backend: every O(N²) and O(N³) step runs in the Rust core (faer, rayon)."""

from __future__ import annotations

import numpy as np

from .. import _core


def _c(a, dtype):
    """C-contiguous and aligned (the Rust views assume natural alignment; a NumPy array
    made with ``frombuffer`` at an odd offset may not be)."""
    return np.require(a, dtype=dtype, requirements=["C", "A"])


def _sfx(dtype) -> str:
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


class CpuBackend:
    name = "cpu"
    xp = np
    on_gpu = False
    runs_ode = True

    def __reduce__(self):
        from . import by_name

        return (by_name, (self.name,))

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def kernel_stats(self, k):
        k = self._kernel(k)
        return getattr(_core, f"kernel_stats_{_sfx(k.dtype)}")(k)

    @staticmethod
    def _kernel(k):
        # float32 and float64 kernels go to Rust as they are (converted inside the
        # symmetrizing copy); anything else becomes float64 once.
        if k.dtype not in (np.float32, np.float64):
            k = k.astype(np.float64)
        if not (k.flags.c_contiguous or k.flags.f_contiguous) or not k.flags.aligned:
            k = np.require(k, requirements=["C", "A"])
        return k

    def eigh(self, k, dtype):
        k = self._kernel(k)
        return getattr(_core, f"sym_eigh_{_sfx(k.dtype)}_{_sfx(dtype)}")(k, 0.0)

    def cholesky_solve(self, k, shift, rhs):
        k = self._kernel(k)
        fn = getattr(_core, f"cholesky_solve_{_sfx(k.dtype)}_{_sfx(rhs.dtype)}")
        return fn(k, float(shift), rhs)

    def mode_factors(self, kind, params, mu, times):
        return _core.mode_factors(
            kind, [float(p) for p in params], _c(mu, np.float64), _c(times, np.float64)
        )

    def project(self, v, r):
        return getattr(_core, f"project_{_sfx(v.dtype)}")(v, _c(r, v.dtype))

    def test_basis(self, kte, v):
        return getattr(_core, f"test_basis_{_sfx(v.dtype)}")(_c(kte, v.dtype), v)

    def train_outputs(self, v, z, em1, f0):
        return getattr(_core, f"train_outputs_{_sfx(v.dtype)}")(v, z, em1, _c(f0, v.dtype))

    def test_outputs(self, kte, v, z, phi, g0):
        fn = getattr(_core, f"test_outputs_{_sfx(v.dtype)}")
        return fn(_c(kte, v.dtype), v, z, phi, _c(g0, v.dtype))

    def test_outputs_cached(self, kv, z, phi, g0):
        fn = getattr(_core, f"test_outputs_cached_{_sfx(kv.dtype)}")
        return fn(kv, z, phi, _c(g0, kv.dtype))

    def ode_solve(self, k, f0, taus, loss, **kw):
        return _core.ode_solve(k, f0, taus, loss, **kw)
