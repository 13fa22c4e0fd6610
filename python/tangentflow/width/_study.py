"""``tangentflow.width.check``: is a network wide enough for its linearization?

For each width and seed (docs/width.md): the empirical NTK at initialization, its distance
to the widest one and to the infinite-width limit, the linearized prediction of
:class:`tangentflow.Predictor` (``dynamics="gd"``, the network's own ``f₀``/``g₀``, one
factorization for all checkpoints), the really trained network, their RMSE, how far
training moved the outputs and how far the kernel drifted.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .._errors import NumericalWarning, TangentflowError, warn
from ._family import Family, as_family
from ._fit import bisect_width, extrapolate_width, loglog_slope
from ._mlp import input_array, unflatten
from ._result import WidthStudy

__all__ = ["check", "LearningRateWarning", "DEFAULT_WIDTHS"]

T = TypeVar("T")
FloatArray = npt.NDArray[np.float64]
#: ``progress(width, seed, step, steps)`` during training.
StudyProgress = Callable[[int, int, int, int], None]
#: Per-seed results of one run: name -> number or per-checkpoint array.
Run = dict[str, Any]

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048)
#: Above this fraction of ``max_learning_rate`` a warning is issued; at 1 GD diverges.
WARN_FRACTION = 0.5


class LearningRateWarning(NumericalWarning):
    """The learning rate is above half the largest stable rate of a width's kernel: the
    network may leave the kernel regime (catapult dynamics) long before it diverges."""


def _positive_int(v: object, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def _positive(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    if not (math.isfinite(v) and float(v) > 0):
        raise ValueError(f"{name} must be > 0 and finite, got {v!r}")
    return float(v)


def _checkpoints(checkpoints: Iterable[int] | None, steps: int) -> list[int]:
    if checkpoints is None:
        grid = np.unique(np.rint(np.geomspace(1, steps, min(6, steps))).astype(int))
        return [int(c) for c in grid if 1 <= c < steps] + [steps]
    try:
        cs = [int(c) for c in checkpoints if not isinstance(c, bool) and c == int(c)]
        ok = len(cs) == len(list(checkpoints))
    except (TypeError, ValueError):
        ok = False
    if not ok or any(c < 0 or c > steps for c in cs):
        raise ValueError(f"checkpoints must be ints in [0, steps={steps}], got {checkpoints!r}")
    return sorted(set(cs) - {steps}) + [steps]


def _flat_norm_to_limit(theta: FloatArray, limit: FloatArray, k: int) -> float:
    """``‖Θ − Θ∞ ⊗ I_K‖_F / ‖Θ∞ ⊗ I_K‖_F`` without forming the Kronecker product."""
    n = limit.shape[0]
    t4 = theta.reshape(n, k, n, k)
    diag = np.einsum("ikjk->ij", t4)
    sq = (
        float(np.sum(theta * theta))
        - 2.0 * float(np.sum(diag * limit))
        + k * float(np.sum(limit * limit))
    )
    return math.sqrt(max(sq, 0.0) / (k * float(np.sum(limit * limit))))


def _rel(a: FloatArray, b: FloatArray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _rms(a: FloatArray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


class _Runner:
    """Runs (width, seed) experiments with shared data, configuration and timers."""

    def __init__(
        self,
        family: Family,
        x: FloatArray,
        y: FloatArray,
        x_test: FloatArray | None,
        cfg: dict[str, Any],
        progress: StudyProgress | None,
    ) -> None:
        self.family = family
        self.x, self.y, self.x_test = x, y, x_test
        self.k = y.shape[1]
        self.cfg = cfg
        self.progress = progress
        self.timings = dict.fromkeys(("kernel", "factorization", "prediction", "training"), 0.0)
        self.timings["limit"] = 0.0
        self.factorizations = 0  # O(D³) eigendecompositions run: one per (width, seed)
        self.limit: FloatArray | None = None
        self._warned: set[int] = set()

    def _timed(self, name: str, fn: Callable[..., T], *a: Any, **kw: Any) -> T:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.timings[name] += time.perf_counter() - t0

    def _kernel_arg(self, flat: FloatArray) -> FloatArray:
        return unflatten(flat, self.k)

    def run(self, width: int, seed: int) -> tuple[Run, FloatArray]:
        from .. import Predictor

        cfg, x, y, xt, k = self.cfg, self.x, self.y, self.x_test, self.k
        net = self.family.build(width, seed, x.shape[1], k)
        f0 = self._timed("training", net.outputs, x)
        g0 = None if xt is None else self._timed("training", net.outputs, xt)
        theta0 = self._timed("kernel", net.ntk, x)
        theta_te = None if xt is None else self._timed("kernel", net.ntk, xt, x)
        trace: tuple[int, ...] | None = None if k == 1 else ()
        p0 = Predictor(self._kernel_arg(theta0), y, dynamics="gd", trace_axes=trace)
        self._timed("factorization", p0.factorize)
        max_lr = p0.diagnostics().max_learning_rate
        eta = cfg["learning_rate"] if cfg["learning_rate"] is not None else cfg["fraction"] * max_lr
        frac = eta / max_lr
        self._check_rate(frac, width, eta, max_lr)
        p = p0.with_params(learning_rate=eta)
        ck = np.asarray(cfg["checkpoints"])
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                if theta_te is None:  # no test set
                    lin = self._timed("prediction", p.at, ck, fx_train_0=f0)
                else:
                    tset = p.test_set(self._kernel_arg(theta_te), fx_test_0=g0)
                    lin = self._timed("prediction", tset.at, ck, fx_train_0=f0)
                lin_tr, lin_te = lin.train, lin.test
            except TangentflowError:  # diverging steps (only with force=True)
                lin_tr = np.full((len(ck),) + f0.shape, np.nan)
                lin_te = None if g0 is None else np.full((len(ck),) + g0.shape, np.nan)

            def step_progress(t: int, steps: int) -> None:
                if self.progress is not None:
                    self.progress(width, seed, t, steps)

            f_tr, f_te = self._timed(
                "training", net.fit, x, y, eta, cfg["steps"], cfg["checkpoints"], xt, step_progress
            )
            self.factorizations += p.factorizations  # all checkpoints: one factorization
            theta_end = self._timed("kernel", net.ntk, x)
            out: Run = {
                "rmse_train_checkpoints": np.sqrt(np.mean((f_tr - lin_tr) ** 2, axis=(1, 2))),
                "movement_train": _rms(f_tr[-1] - f0),
                "kernel_drift": _rel(theta_end, theta0),
                "lr_fraction": frac,
                "learning_rate": eta,
                "max_learning_rate": max_lr,
            }
            if f_te is not None:  # a test set
                out["rmse_test_checkpoints"] = np.sqrt(np.mean((f_te - lin_te) ** 2, axis=(1, 2)))
                out["movement_test"] = _rms(f_te[-1] - g0)
        if self.limit is not None:
            out["kernel_distance_inf"] = _flat_norm_to_limit(theta0, self.limit, k)
        crit = "test" if xt is not None else "train"
        out["relative_gap"] = out[f"rmse_{crit}_checkpoints"][-1] / out[f"movement_{crit}"]
        return out, theta0

    def _check_rate(self, frac: float, width: int, eta: float, max_lr: float) -> None:
        if frac >= 1.0 and not self.cfg["force"]:
            raise ValueError(
                f"learning_rate {eta:.6g} is {frac:.3g} x the largest stable rate {max_lr:.6g} "
                f"of the width-{width} kernel: gradient descent diverges; lower it or pass "
                "force=True"
            )
        if frac > WARN_FRACTION and width not in self._warned:
            self._warned.add(width)
            warn(
                f"learning rate {eta:.6g} is {frac:.3g} x max_learning_rate of the width-{width} "
                "kernel (> 0.5): large rates break the kernel-regime correspondence",
                LearningRateWarning,
            )


def _aggregate(runs: list[Run]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-width means and standard deviations over seeds of every per-seed quantity."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in runs[0]:
        vals = np.array([r[key] for r in runs], dtype=np.float64)
        mean[key] = vals.mean(axis=0)
        std[key] = vals.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(vals[0])
    return mean, std


def check(
    model: object,
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_test: npt.ArrayLike | None = None,
    *,
    widths: Iterable[int] = DEFAULT_WIDTHS,
    seeds: int = 2,
    learning_rate: float | None = None,
    rate_fraction: float = 0.5,
    steps: int = 300,
    tol: float = 0.05,
    checkpoints: Iterable[int] | None = None,
    bisect: int = 3,
    force: bool = False,
    progress: StudyProgress | None = None,
) -> WidthStudy:
    """Trains ``model`` at every width and compares it with its linearized prediction.

    Parameters
    ----------
    model : MLP, JaxModel, TorchModel, or a callable
        A model family. A bare callable ``width -> (apply_fn, params)`` (JAX) or
        ``width -> torch.nn.Module`` is wrapped (a second positional argument receives
        the seed).
    x_train : array (N, d); y_train : array (N,) or (N, K)
    x_test : array (M, d), optional
        When given, the RMSE criterion and the adequate width use the test outputs.
    widths : sequence of int
        Sorted and de-duplicated; the widest is the reference of ``kernel_distance``.
    seeds : int
        Initializations per width (means and ``*_std`` over them).
    learning_rate : float, optional
        One η for every width; default ``rate_fraction × max_learning_rate`` of each
        width's (and seed's) kernel.
    rate_fraction : float, default 0.5
    steps : int
        Full-batch gradient-descent steps on ``‖f − y‖²/(2n)``, ``n = y.size``.
    tol : float
        The adequate width is the smallest with ``rmse/movement <= tol``.
    checkpoints : sequence of int, optional
        Steps at which the RMSE is also recorded (default: a geometric grid; ``steps`` is
        always the last one).
    bisect : int, default 3
        Widths trained between the last failing and first passing grid width (0: none).
    force : bool
        Allow learning rates at or above the largest stable rate.
    progress : callable, optional
        ``progress(width, seed, step, steps)`` during training.

    Raises
    ------
    ValueError, TypeError
        Bad inputs (naming the argument), before any work. ``ValueError`` also when a
        learning rate reaches ``max_learning_rate`` of some width's kernel (unless
        ``force``); a :class:`LearningRateWarning` above half of it.
    """
    x = input_array(x_train, "x_train")
    try:
        y = np.array(y_train, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"y_train must be a real array (N,) or (N, K): {e}") from None
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] == 0:
        raise ValueError(
            f"y_train must have shape (N,) or (N, K) with N = {x.shape[0]} (x_train), got "
            f"{np.shape(y_train)}"
        )
    if not np.all(np.isfinite(y)):
        raise ValueError("y_train contains NaN or infinity")
    xt = None if x_test is None else input_array(x_test, "x_test", x.shape[1])
    try:
        ws = sorted({_positive_int(w, "widths entries") for w in widths})
    except TypeError:
        raise TypeError(f"widths must be a sequence of positive ints, got {widths!r}") from None
    if not ws:
        raise ValueError("widths must not be empty")
    seeds = _positive_int(seeds, "seeds")
    steps = _positive_int(steps, "steps")
    tol = _positive(tol, "tol")
    bisect = _positive_int(bisect, "bisect", minimum=0)
    ck = _checkpoints(checkpoints, steps)
    if learning_rate is not None:
        learning_rate = _positive(learning_rate, "learning_rate")
    fraction = _positive(rate_fraction, "rate_fraction")
    if not isinstance(force, bool):
        raise TypeError(f"force must be a bool, got {force!r}")
    if fraction >= 1.0 and learning_rate is None and not force:
        raise ValueError(
            f"rate_fraction must be < 1 (gradient descent diverges at the largest stable "
            f"rate), got {fraction}; pass force=True to run anyway"
        )
    if progress is not None and not callable(progress):
        raise TypeError("progress must be a callable (width, seed, step, steps)")
    family = as_family(model, ws[0])
    if not family.seeded and seeds > 1:
        raise ValueError(
            "this model takes only a width (every seed gives the same network): pass a "
            "callable (width, seed) to use seeds > 1, or seeds=1"
        )
    if fraction > WARN_FRACTION and learning_rate is None:
        warn(
            f"rate_fraction {fraction} > 0.5: large learning rates break the kernel-regime "
            "correspondence",
            LearningRateWarning,
        )
        warned_all = True
    else:
        warned_all = False

    cfg = {
        "learning_rate": learning_rate,
        "fraction": fraction,
        "steps": steps,
        "checkpoints": ck,
        "force": force,
    }
    runner = _Runner(family, x, y, xt, cfg, progress)
    t_start = time.perf_counter()
    runner.limit = runner._timed("limit", family.limit_ntk, x)
    if warned_all:
        runner._warned.update(ws)

    per_width: dict[int, list[Run]] = {}
    ref: FloatArray | None = None
    for w in reversed(ws):  # widest first: it is the reference of kernel_distance
        results: list[Run] = []
        thetas: list[FloatArray] = []
        for s in range(seeds):
            out, theta0 = runner.run(w, s)
            results.append(out)
            if w == ws[-1]:
                thetas.append(theta0)
            else:
                assert ref is not None  # the widest width ran first
                out["kernel_distance"] = _rel(theta0, ref)
        if w == ws[-1]:
            ref = np.mean(thetas, axis=0) if len(thetas) > 1 else thetas[0]
            for out, th in zip(results, thetas):
                out["kernel_distance"] = _rel(th, ref)
            del thetas
        per_width[w] = results

    def evaluate(width: int) -> float:
        assert ref is not None  # the widest grid width ran first
        results: list[Run] = []
        for s in range(seeds):
            out, theta0 = runner.run(width, s)
            out["kernel_distance"] = _rel(theta0, ref)
            results.append(out)
        per_width[width] = results
        return float(np.mean([r["relative_gap"] for r in results]))

    grid = [_aggregate(per_width[w]) for w in ws]
    gaps = np.array([g[0]["relative_gap"] for g in grid])
    adequate: int | None = None
    bisection: list[tuple[int, float]] = []
    passing = np.nonzero(gaps <= tol)[0]
    if passing.size:
        first = int(passing[0])
        adequate = ws[first]
        if first > 0 and bisect:
            adequate, seen = bisect_width(evaluate, ws[first - 1], ws[first], tol, max_steps=bisect)
            bisection = seen
    timings = dict(runner.timings)
    timings["total"] = time.perf_counter() - t_start
    return WidthStudy.from_runs(
        family=family,
        widths=ws,
        grid=grid,
        per_width=per_width,
        bisection=bisection,
        adequate_width=adequate,
        config={
            "seeds": seeds,
            "steps": steps,
            "checkpoints": ck,
            "tol": tol,
            "learning_rate": learning_rate,
            "rate_fraction": fraction if learning_rate is None else None,
            "n_train": int(x.shape[0]),
            "n_test": None if xt is None else int(xt.shape[0]),
            "outputs": int(y.shape[1]),
            "criterion": "test" if xt is not None else "train",
            "has_limit": runner.limit is not None,
            "factorizations": runner.factorizations,
            "runs": sum(len(r) for r in per_width.values()),
        },
        timings=timings,
        fit=(loglog_slope, extrapolate_width),
    )
