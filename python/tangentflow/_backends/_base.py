"""The operations the kernel model needs from a backend, on flattened 2-D arrays.

Only the kernel model (``tangentflow._model``) calls these; no caller looks at a backend's
``name`` (it is for messages and for pickling by name). What differs between backends is
expressed here, as attributes (``on_gpu``, ``runs_ode``) or methods. docs/architecture.md says how to add a backend.
"""

from __future__ import annotations

from typing import Any, Protocol


class Backend(Protocol):
    """Numerical primitives. ``k`` is a ``(D, D)`` kernel in its input dtype; all other
    arrays are in the compute dtype. ``mu`` are retained eigenvalues (float64).

    ``eigh`` and ``cholesky_solve`` factorize ``Ã = 2^-e·(sym(K) + shift·I)`` and return
    ``e`` last: eigenvalues of ``Ã`` (float64), and ``Ã⁻¹·rhs`` with ``‖Ã‖_∞`` and the
    estimates for ``Ã`` (docs/numerics.md §12, "Scale invariance"; §3.2 for the gate).

    ``mode_factors(kind, params, mu, times)`` returns ``(e^{−μs} − 1, φ)`` per retained mode
    and time for the dynamics ``kind`` ("flow", "gd", "momentum"); ``times`` are validated
    (``>= 0`` or inf) before they get here."""

    @property
    def name(self) -> str:
        """ "cpu", "numpy", "cupy": for messages and pickling (by name), never for branching."""
        ...

    @property
    def xp(self) -> Any:
        """The array module of the backend's arrays (numpy or cupy)."""
        ...

    @property
    def on_gpu(self) -> bool:
        """Whether the backend's arrays live on a GPU (host arrays are then rejected, and
        host-side shortcuts such as hashing an array's bytes are not taken)."""
        ...

    @property
    def runs_ode(self) -> bool:
        """Whether ``ode_solve`` integrates (the ODE engine checks it before any work)."""
        ...

    def asarray(self, a: Any, dtype: Any = None) -> Any: ...
    def to_numpy(self, a: Any) -> Any: ...
    def kernel_stats(self, k: Any) -> tuple[float, float, float, bool]: ...
    def eigh(self, k: Any, dtype: Any) -> tuple[Any, Any, int]: ...
    def eigh_factored(self, k: Any, dtype: Any) -> tuple[Any, Any, int, Any] | None:
        """``(w, Z, e, Q)`` as ``eigh`` but with ``V = Q Z`` not formed (``Q`` the
        reduction's reflectors, docs/numerics.md §17), or None where the backend has no
        such form."""
        ...

    def form_eigenvectors(self, q: Any, z: Any) -> Any:
        """``Q x``; with ``eigh_factored``'s ``Z`` and ``Q``, ``V``."""
        ...

    def apply_transpose(self, q: Any, x: Any) -> Any:
        """``Qᵀ x`` for ``eigh_factored``'s reflectors ``Q``."""
        ...

    def cholesky_solve(
        self, k: Any, shift: float, rhs: Any, max_abs: float | None = None
    ) -> tuple[Any, float, float, float, int] | None: ...
    def mode_factors(
        self, kind: str, params: list[float], mu: Any, times: Any
    ) -> tuple[Any, Any]: ...
    def project(self, v: Any, r: Any, cache: Any = None, q: Any = None) -> Any:
        """``z = Vᵀ r``; ``cache`` (``time_basis_cache()`` on this ``V``) keeps the last
        projection by the content of ``r`` (docs/numerics.md §16, "Reuse"); with ``q``
        (``eigh_factored``'s reflectors) ``v`` holds ``Z_R`` and ``V_R = Q Z_R``."""
        ...

    def test_basis(self, kte: Any, v: Any) -> Any: ...
    def train_outputs(self, v: Any, z: Any, em1: Any, f0: Any) -> Any: ...
    def test_outputs(self, kte: Any, v: Any, z: Any, phi: Any, g0: Any) -> Any: ...
    def test_outputs_cached(self, kv: Any, z: Any, phi: Any, g0: Any) -> Any: ...
    def closed_form(
        self,
        kind: str,
        params: list[float],
        mu: Any,
        times: Any,
        v: Any,
        r: Any,
        f0: Any | None,
        test: Any | None,
        g0: Any | None,
        cached: bool,
        train_cache: Any = None,
        test_cache: Any = None,
        q: Any = None,
    ) -> tuple[Any, Any | None, Any | None]:
        """The MSE closed form of one call: ``(z, train, test)`` with ``z = Vᵀ r``, ``train``
        when ``f0`` is given and ``test`` when ``test`` (``2^-e·K_te``, or ``K_te·V`` with
        ``cached``) and ``g0`` are: bitwise ``mode_factors`` → ``project`` →
        ``train_outputs`` / ``test_outputs[_cached]`` (one boundary crossing on the CPU),
        except that many finite nonzero times may be compressed (docs/numerics.md §16:
        within its bound of those outputs; ``t = 0`` and ``t = ∞`` stay bitwise).
        ``train_cache`` (on ``v``) and ``test_cache`` (on a cached ``K_te·V``) come from
        ``time_basis_cache`` and keep compression bases across calls (§16, "Reuse").
        With ``q`` (``eigh_factored``'s reflectors) ``v`` holds ``Z_R`` and the products
        go through ``Q`` (§17)."""
        ...

    def time_basis_cache(self) -> Any:
        """A new holder of a time basis kept across ``closed_form`` calls on one output
        basis, or None where the backend keeps none (docs/numerics.md §16, "Reuse")."""
        ...

    def loss_sums(self, kind: str, params: list[float], mu: Any, times: Any, zz: Any) -> Any:
        """``Σ_j zz_j·e_j(t)²`` per time (float64, ``(T,)``): the retained part of ``2n·`` the
        MSE training loss from the squared projected residual (docs/numerics.md §16)."""
        ...

    def ode_solve(self, k: Any, f0: Any, taus: Any, loss: Any, **kw: Any) -> dict[str, Any]:
        """The function-space ODE (docs/numerics.md §9) with ``_core.ode_solve``'s keywords;
        a TypeError where ``runs_ode`` is False."""
        ...
