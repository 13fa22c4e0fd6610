"""The MSE closed forms on a kernel model (docs/numerics.md §3–§7): outputs at any time by
the eigenbasis, ``t = ∞`` by Cholesky when the gate allows it, the ``diag_reg`` sweep memo,
and the training loss. Arrays are flat: targets ``(D, R)``, outputs ``(T, D, R)``."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._numerics import ldexp, max_exponent
from .._shapes import Layout

if TYPE_CHECKING:
    from .kernel import KernelModel
    from .spectrum import Spectrum
    from .test_inputs import TestInputs

__all__ = ["outputs", "train_loss"]


def outputs(
    m: KernelModel,
    ts: Any,
    layout: Layout,
    yf: Any,
    f0: Any,
    test: TestInputs | None,
    want_train: bool,
    big: float,
) -> tuple[Any, Any]:
    """Train and test outputs. They are linear in ``(Y, f₀, g₀)``: these are scaled by
    ``2^-ey`` (``ey`` the exponent of their largest entry, ``big`` from their validation)
    and the outputs by ``2^ey``, so that no intermediate such as ``A⁻¹Y`` overflows while
    the answer is representable (docs/numerics.md §12, "Scale invariance")."""
    xp = m.xp
    g0 = None if test is None else test.g0
    ey = max_exponent(big, m.dtype)
    if ey:
        yf, f0 = ldexp(yf, -ey, xp), ldexp(f0, -ey, xp)
        g0 = None if g0 is None else ldexp(g0, -ey, xp)
    train, tst = _scaled(m, ts, layout, yf, f0, test, g0, want_train)
    if ey:
        # in place: the outputs are fresh arrays of this call (exact scaling, no copy of
        # a (T, D, R) array); a product with 2^ey rounds as ldexp does (both are correctly
        # rounded) and is vectorized
        with np.errstate(over="ignore", under="ignore"):
            for a in (train, tst):
                if a is not None:
                    if -1022 <= ey <= 1023:
                        xp.multiply(a, float(2.0**ey), out=a)
                    else:
                        xp.ldexp(a, int(ey), out=a)
    return train, tst


def _scaled(
    m: KernelModel,
    ts: Any,
    layout: Layout,
    yf: Any,
    f0: Any,
    test: TestInputs | None,
    g0: Any,
    want_train: bool,
) -> tuple[Any, Any]:
    be = m.backend
    n = layout.size
    all_inf = ts.size > 0 and float(ts.min()) == math.inf  # (times are >= 0)
    if all_inf and m.options.dynamics == "flow":
        fast = _cholesky_limit(m, yf, f0, test, g0, ts.size)
        if fast is not None:
            return fast
    spec = m.spectrum()
    m.check_steps_converge(ts, n)
    kind, params = m.dynamics(n)
    memo = _TrainMemo.of(m, ts, spec, yf, f0) if want_train and kind == "flow" else None
    reuse = memo is not None and memo.hit()
    kt = None
    test_tb = None
    if test is not None:
        if test.cached:
            kt = test.retained_basis(spec.first)
            test_tb = test.time_basis()
        else:
            kt = test.scaled_k(m.fact.exp)
    vr, q = m.modes(spec.first)
    # one boundary crossing: factors, projection and reconstruction (docs/architecture.md)
    z, train, tst = be.closed_form(
        kind,
        params,
        spec.retained,
        ts,
        vr,
        f0 - yf,
        f0 if want_train and not reuse else None,
        kt,
        None if test is None else g0,
        test is not None and test.cached,
        m.fact.time_basis(),
        test_tb,
        q,
    )
    if memo is not None:
        train = memo.reuse(z) if reuse else memo.store(train, z)
    return train, tst


class _TrainMemo:
    """Under gradient flow a ``diag_reg`` sweep reuses the previous member's residual:
    ``e^{−(A+λI)s} = e^{−λs} e^{−As}`` on the same retained modes, so for λ > λ_b the
    residual ``V diag(e) z`` is ``e^{−(λ−λ_b)s}`` times the stored one (docs/numerics.md §3,
    in O(N·R·T) instead of a GEMM). The memo is keyed by the values of the times, targets,
    initial outputs and learning rate, never by object identity; it hashes array bytes, so
    it serves host arrays only (``Backend.on_gpu`` False), and only a factorization shared
    by ``with_params`` members keeps one (``Factorization.shared``)."""

    def __init__(self, m: KernelModel, ts: Any, spec: Spectrum, yf: Any, f0: Any) -> None:
        self.m, self.ts, self.spec, self.yf, self.f0 = m, ts, spec, yf, f0
        h = hashlib.blake2b(digest_size=16)
        for a in (ts, yf, f0):
            h.update(np.ascontiguousarray(a).tobytes())
        lr = m.options.learning_rate
        h.update(repr((lr, spec.first, yf.shape, str(yf.dtype))).encode())
        self.key = h.digest()

    @classmethod
    def of(cls, m: KernelModel, ts: Any, spec: Spectrum, yf: Any, f0: Any) -> _TrainMemo | None:
        """The memo of this call, or None where none is kept (see the class docstring)."""
        if m.backend.on_gpu or not m.fact.shared:
            return None
        return cls(m, ts, spec, yf, f0)

    def hit(self) -> bool:
        memo = self.m.fact.train_memo
        return memo is not None and memo[0] == self.key and self.m.shift > memo[1]

    def _pperp(self, z: Any) -> Any:
        """The part of ``f₀ − Y`` outside the retained modes (it does not evolve)."""
        if not self.spec.first:
            return None
        be = self.m.backend
        vr, q = self.m.modes(self.spec.first)
        vz = be.test_basis(vr, z)  # V_R·z, in the core: Q·(Z_R·z) where V is not formed
        if q is not None:
            vz = be.form_eigenvectors(q, vz)
        return (self.f0 - self.yf) - vz

    def reuse(self, z: Any) -> Any:
        memo = self.m.fact.train_memo
        assert memo is not None
        _, lam_b, resid = memo
        yf, ts = self.yf, self.ts
        lam = self.m.shift
        s = (self.m.options.learning_rate / yf.size) * ts
        fin = np.isfinite(ts)
        scale = np.where(fin, np.exp(-(lam - lam_b) * np.where(fin, s, 0.0)), 0.0)
        train = self.m.xp.asarray(scale, dtype=yf.dtype)[:, None, None] * resid
        train += yf[None]
        pperp = self._pperp(z)
        if pperp is not None:
            train += pperp[None]
        zero = ts == 0
        if zero.any():
            train[zero] = self.f0
        return train

    def store(self, train: Any, z: Any) -> Any:
        resid = train - self.yf[None]
        pperp = self._pperp(z)
        if pperp is not None:
            resid -= pperp[None]
        memo = self.m.fact.train_memo
        lam = self.m.shift
        if memo is None or memo[0] != self.key or lam < memo[1]:
            self.m.fact.train_memo = (self.key, lam, resid)
        return train


def _cholesky_limit(
    m: KernelModel, yf: Any, f0: Any, test: TestInputs | None, g0: Any, nt: int
) -> tuple[Any, Any] | None:
    """t = ∞ by Cholesky when well conditioned (docs/numerics.md §3.2); None → spectral path.

    The core solves ``Ã x = Y − f₀`` with ``Ã = 2^-e·A``, so ``K_te A⁻¹ (Y − f₀)`` is
    ``(2^-e·K_te) x``: the same bits at every kernel scale."""
    xp = m.xp
    sol = m.cholesky_solve(xp.ascontiguousarray(yf - f0))
    if sol is None:
        return None
    x, e = sol
    train = xp.broadcast_to(yf, (nt,) + yf.shape).copy()
    tst = None
    if test is not None:
        g = g0 + test.scaled_times(e, x)  # in the core (set_num_threads)
        tst = xp.broadcast_to(g, (nt,) + g.shape).copy()
    return train, tst


def train_loss(
    m: KernelModel, ts: Any, layout: Layout, yf: Any, f0: Any, big: float
) -> tuple[Any, int]:
    """``(loss scaled by 2^(-2·ey), ey)`` of the MSE loss ``‖f(t) − y‖²/(2n)`` from the
    projected residual ``z = Vᵀ(f₀ − Y)`` alone: ``Σ_j e_j(t)²·|z_j|²`` plus the frozen cut
    part, O(k·R + k·T) with no ``N`` per time (docs/numerics.md §16); the loss is quadratic
    in the residual. ``big``: ``max(|Y|, |f₀|)`` from their validation."""
    be = m.backend
    xp = be.xp
    spec = m.spectrum()
    m.check_steps_converge(ts, layout.size)
    vr, q = m.modes(spec.first)
    ey = max_exponent(big, m.dtype)
    yf, f0 = ldexp(yf, -ey, xp), ldexp(f0, -ey, xp)
    r0 = (f0 - yf).astype(xp.float64)
    z = be.project(vr, f0 - yf, m.fact.time_basis(), q).astype(xp.float64)
    zz = xp.sum(z * z, axis=1)
    rest = max(float(xp.sum(r0 * r0)) - float(xp.sum(zz)), 0.0) if spec.first else 0.0
    kind, params = m.dynamics(layout.size)
    sums = be.loss_sums(kind, params, spec.retained, ts, zz)
    loss = (sums + rest) / (2.0 * layout.size)
    return loss, ey
