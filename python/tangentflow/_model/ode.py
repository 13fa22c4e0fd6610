"""Any differentiable loss: the function-space ODE integrated in the Rust core.

Gradient flow in absolute time ``τ = η t``: ``dF/dτ = −Θ·∇L(F)`` on the training set; the
test outputs are not integrated but reconstructed at the requested times from the
accumulated gradient ``S(τ) = ∫∇L``: ``f_test = g₀ − Θ_td·S``. With momentum ``m``
(``τ = √η t``, damping ``c = (1 − m)/√η``) the state also carries the velocity, and
``f_test = g₀ + q_test₀(1 − e^{−cτ})/c − Θ_td·S``, ``q_test = e^{−cτ} q_test₀ − Θ_td·P``.
Integration is adaptive Dormand–Prince 5(4) with dense output (docs/numerics.md §9, §7).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import IntegrationError
from .._numerics import exponent, ldexp_float, symmetrize
from .._shapes import Layout

if TYPE_CHECKING:
    from .kernel import KernelModel
    from .test_inputs import TestInputs

__all__ = ["solve"]


def _loss_args(m: KernelModel, layout: Layout, yf: Any) -> tuple[Any, float, int | None]:
    """Built-in loss name (with its class grouping) or a flattened callable gradient."""
    loss = m.options.loss
    y_shape = layout.y_shape
    n = float(layout.size)
    order = layout.kept + layout.traced
    if loss == "mse":
        return "mse", n, None
    last_contiguous = order[-1] == len(y_shape) - 1
    if loss == "cross_entropy" and last_contiguous:
        return "cross_entropy", n, int(y_shape[-1])
    if loss == "cross_entropy":
        y_full = layout.unflatten(yf, y_shape)

        def grad_ce(fx: Any, yy: Any) -> Any:
            z = fx - fx.max(axis=-1, keepdims=True)
            s = np.exp(z)
            s /= s.sum(axis=-1, keepdims=True)
            return (s * yy.sum(axis=-1, keepdims=True) - yy) / fx.size

        user = grad_ce
    else:
        y_full = layout.unflatten(yf, y_shape)
        user = loss

    def grad(f2d: Any) -> Any:
        ret = user(layout.unflatten(np.asarray(f2d), y_shape), y_full)
        try:
            g = np.asarray(ret, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"loss must return the gradient dL/df as an array of numbers of shape {y_shape}, "
                f"got {type(ret).__name__} {_short_repr(ret)} ({e})"
            ) from None
        if g.shape != y_shape:
            raise ValueError(
                f"loss returned a gradient of shape {g.shape}, expected the shape of y_train "
                f"{y_shape}"
            )
        return np.ascontiguousarray(layout.flatten(g))

    return grad, n, None


def _short_repr(ob: object, limit: int = 60) -> str:
    text = repr(ob)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def solve(
    m: KernelModel,
    ts: Any,
    layout: Layout,
    yf: Any,
    f0: Any,
    test: TestInputs | None,
    q_train_0: Any = None,
    q_test_0: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """Integrates and returns ``(train, test, q_train, q_test)`` at times ``ts`` (flat, any
    order, inf allowed only with ``converge_tol``), each ``(T, rows, R)``; the velocities
    are None without momentum."""
    if not m.backend.runs_ode:
        raise TypeError(
            "ODE losses run in the Rust core on the CPU: pass a NumPy k_train_train "
            '(the GPU backend covers loss="mse")'
        )
    cfg = m.options
    inf = np.isinf(ts)
    if inf.any() and cfg.converge_tol is None:
        raise ValueError(
            "t=None (or inf) with an ODE loss needs converge_tol: integration stops when "
            "max|df/dτ| <= converge_tol"
        )
    k = symmetrize(np.ascontiguousarray(m.k, dtype=np.float64))
    # Integrate the exactly equivalent problem with the kernel scaled by 2^-e and η by 2^e
    # (only η·Θ enters), so the integrator sees the same bits at every kernel scale
    # (docs/numerics.md §12, "Scale invariance"). With momentum e is even, so that the
    # time τ = √η·t scales exactly, by 2^et; velocities (dF/dτ) scale by 2^-et.
    e = exponent(float(np.max(np.abs(k)))) if k.size else 0
    if cfg.momentum is not None:
        e -= e % 2
    et = e if cfg.momentum is None else e // 2
    k = np.ldexp(k, -e)
    f0 = np.ascontiguousarray(f0, dtype=np.float64)
    yf = np.ascontiguousarray(yf, dtype=np.float64)
    eta = ldexp_float(cfg.learning_rate, e)
    if cfg.momentum is None:
        scale, damping = eta, None
    else:
        scale, damping = math.sqrt(eta), (1.0 - cfg.momentum) / math.sqrt(eta)
    finite = np.unique(ts[~inf])
    with np.errstate(over="ignore"):
        taus = np.ascontiguousarray(finite * scale)
    if not np.all(np.isfinite(taus)):
        raise ValueError(
            f"t times the time scale of the dynamics ({scale:.3g}) overflows float64: "
            "t is too large for an ODE loss"
        )
    loss, n, classes = _loss_args(m, layout, yf)
    q0 = None if q_train_0 is None else np.ldexp(np.asarray(q_train_0, dtype=np.float64), -et)
    q0 = None if q0 is None else np.ascontiguousarray(q0)
    try:
        sol = m.backend.ode_solve(
            k,
            f0,
            taus,
            loss,
            y=yf,
            n=n,
            classes=classes,
            q0=q0,
            damping=damping,
            rtol=cfg.ode_rtol,
            atol=cfg.atol,
            converge_tol=(
                ldexp_float(cfg.converge_tol, -et)
                if inf.any() and cfg.converge_tol is not None
                else None
            ),
        )
    except IntegrationError as err:
        if "is out of reach" not in str(err) or not finite.size:
            raise
        # the core counts time in the integrator's (scaled) units: name the caller's t too
        raise IntegrationError(
            f"t = {float(finite[-1]):g} is out of reach of the ODE integrator within its step "
            f"budget (integrator time tau = t·{scale:g}): {err}"
        ) from None
    idx = np.where(inf, len(finite), np.searchsorted(finite, np.where(inf, 0.0, ts)))
    tau_all = np.append(taus, sol["tau_end"])[idx]
    train = sol["f"][idx]
    q_train = np.ldexp(sol["q"][idx], et) if damping is not None else None
    tst = q_test = None
    if test is not None:
        kte = np.ldexp(np.asarray(test.k, dtype=np.float64), -e)
        g0 = np.asarray(test.g0, dtype=np.float64)
        s = sol["s"][idx]
        tst = g0[None] - _products(m, kte, s)
        if damping is not None:
            p_int = sol["p"][idx]
            q_test = -_products(m, kte, p_int)
            if q_test_0 is not None:
                qt0 = np.ldexp(np.asarray(q_test_0, dtype=np.float64), -et)
                decay = np.exp(-damping * tau_all)[:, None, None]
                tst = tst + qt0[None] * (-np.expm1(-damping * tau_all) / damping)[:, None, None]
                q_test = q_test + decay * qt0[None]
            q_test = np.ldexp(q_test, et)
    return train, tst, q_train, q_test


def _products(m: KernelModel, kte: Any, s: Any) -> Any:
    """``K_te·S(τ)`` for each time, ``(T, M, R)``, in the core (under ``set_num_threads``)."""
    out = np.empty((s.shape[0], kte.shape[0], s.shape[2]), dtype=np.float64)
    for j in range(s.shape[0]):
        out[j] = m.backend.test_basis(kte, np.ascontiguousarray(s[j]))
    return out
