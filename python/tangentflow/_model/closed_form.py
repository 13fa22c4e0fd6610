"""The MSE closed forms on a kernel model (docs/numerics.md §3–§7): outputs at any time by
the eigenbasis, ``t = ∞`` by Cholesky when the gate allows it, the ``diag_reg`` sweep memo,
and the training loss. Arrays are flat: targets ``(D, R)``, outputs ``(T, D, R)``."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from .._numerics import array_exponent, ldexp
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
    want_train: bool = True,
) -> tuple[Any, Any]:
    """Train and test outputs. They are linear in ``(Y, f₀, g₀)``: these are scaled by
    ``2^-ey`` (``ey`` the exponent of their largest entry) and the outputs by ``2^ey``, so
    that no intermediate such as ``A⁻¹Y`` overflows while the answer is representable
    (docs/numerics.md §12, "Scale invariance")."""
    xp = m.xp
    g0 = None if test is None else test.g0
    ey = array_exponent(xp, yf, f0, g0)
    if ey:
        yf, f0 = ldexp(yf, -ey, xp), ldexp(f0, -ey, xp)
        g0 = None if g0 is None else ldexp(g0, -ey, xp)
    train, tst = _scaled(m, ts, layout, yf, f0, test, g0, want_train)
    if ey:
        with np.errstate(over="ignore"):
            train = None if train is None else ldexp(train, ey, xp)
            tst = None if tst is None else ldexp(tst, ey, xp)
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
    xp = be.xp
    n = layout.size
    all_inf = ts.size > 0 and bool(np.all(np.isinf(ts)))
    if all_inf and m.options.dynamics == "flow":
        fast = _cholesky_limit(m, yf, f0, test, g0, ts.size)
        if fast is not None:
            return fast
    spec = m.spectrum()
    m.check_steps_converge(ts, n)
    vr = m.eigenvectors()[:, spec.first :]
    kind, params = m.dynamics(n)
    em1, phi = be.mode_factors(kind, params, spec.retained, ts)
    z = be.project(vr, f0 - yf)
    train = None
    if want_train:
        train = train_outputs(m, ts, spec, vr, z, em1, yf, f0, kind)
    tst = None
    if test is not None:
        if test.cached:
            kv = test.basis()[:, spec.first :]
            tst = be.test_outputs_cached(xp.ascontiguousarray(kv), z, phi, g0)
        else:
            tst = be.test_outputs(test.scaled_k(m.fact.exp), vr, z, phi, g0)
    return train, tst


def train_outputs(
    m: KernelModel,
    ts: Any,
    spec: Spectrum,
    vr: Any,
    z: Any,
    em1: Any,
    yf: Any,
    f0: Any,
    kind: str,
) -> Any:
    """Train outputs; under gradient flow, a ``diag_reg`` sweep reuses the previous
    member's residual: ``e^{−(A+λI)s} = e^{−λs} e^{−As}`` on the same retained modes, so
    for λ > λ_b the residual ``V diag(e) z`` is ``e^{−(λ−λ_b)s}`` times the stored one
    (docs/numerics.md §3 in O(N·R·T) instead of a GEMM). The memo is keyed by the values of the
    times, targets, initial outputs and learning rate, never by object identity; it hashes
    array bytes, so it is used only for host arrays."""
    be = m.backend
    if kind != "flow" or be.on_gpu:
        return be.train_outputs(vr, z, em1, f0)
    xp = be.xp
    lam = m.shift
    lr = m.options.learning_rate
    h = hashlib.blake2b(digest_size=16)
    for a in (ts, yf, f0):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((lr, spec.first, yf.shape, str(yf.dtype))).encode())
    key = h.digest()
    memo = m.fact.train_memo
    if spec.first:
        r0 = f0 - yf
        pperp = r0 - vr @ z
    else:
        pperp = None
    if memo is not None and memo[0] == key and lam > memo[1]:
        _, lam_b, resid = memo
        s = (lr / yf.size) * ts
        fin = np.isfinite(ts)
        scale = np.where(fin, np.exp(-(lam - lam_b) * np.where(fin, s, 0.0)), 0.0)
        train = yf[None] + xp.asarray(scale, dtype=yf.dtype)[:, None, None] * resid
        if pperp is not None:
            train += pperp[None]
        zero = ts == 0
        if zero.any():
            train[zero] = f0
        return train
    train = be.train_outputs(vr, z, em1, f0)
    resid = train - yf[None]
    if pperp is not None:
        resid -= pperp[None]
    if memo is None or memo[0] != key or lam < memo[1]:
        m.fact.train_memo = (key, lam, resid)
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
        g = g0 + test.scaled_k(e) @ x
        tst = xp.broadcast_to(g, (nt,) + g.shape).copy()
    return train, tst


def train_loss(m: KernelModel, ts: Any, layout: Layout, yf: Any, f0: Any) -> tuple[Any, int]:
    """``(loss scaled by 2^(-2·ey), ey)`` of the MSE loss ``‖f(t) − y‖²/(2n)`` from the
    eigenbasis (O(N·R·T), no outputs formed); the loss is quadratic in the residual."""
    be = m.backend
    xp = be.xp
    spec = m.spectrum()
    m.check_steps_converge(ts, layout.size)
    v = m.eigenvectors()
    ey = array_exponent(xp, yf, f0)
    yf, f0 = ldexp(yf, -ey, xp), ldexp(f0, -ey, xp)
    r0 = (f0 - yf).astype(xp.float64)
    z = be.project(v[:, spec.first :], f0 - yf).astype(xp.float64)
    zz = xp.sum(z * z, axis=1)
    rest = max(float(xp.sum(r0 * r0)) - float(xp.sum(zz)), 0.0) if spec.first else 0.0
    em1, _ = m.mode_factors(ts, layout.size)
    loss = (xp.sum((1.0 + em1) ** 2 * zz[:, None], axis=0) + rest) / (2.0 * layout.size)
    return loss, ey
