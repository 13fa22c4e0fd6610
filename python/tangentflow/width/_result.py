"""The result of a width study: arrays over widths, fitted exponents, table, JSON, plot."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._family import Family

FloatArray = npt.NDArray[np.float64]

__all__ = ["WidthStudy"]

#: Per-seed quantities kept as ``name`` (mean over seeds) and ``name_std``.
_SCALARS = (
    "movement_train",
    "movement_test",
    "relative_gap",
    "kernel_distance",
    "kernel_distance_inf",
    "kernel_drift",
    "lr_fraction",
    "learning_rate",
    "max_learning_rate",
)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(a) for a in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, (list, tuple)):
        return [_jsonable(a) for a in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(a) for k, a in v.items()}
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


class WidthStudy:
    """What :func:`tangentflow.width.check` measured (docs/width.md).

    Arrays over ``widths`` (means over seeds; ``*_std`` the standard deviation):
    ``rmse_train``, ``rmse_test`` (None without a test set) — the RMSE between the trained
    network and its linearized prediction after the last step; ``movement`` — how far
    training moved the outputs of the criterion set (test when given, else train;
    ``movement_train``/``movement_test`` both); ``relative_gap`` = rmse/movement of the
    criterion set; ``kernel_distance`` — ``‖Θ_n − Θ_widest‖/‖Θ_widest‖`` at
    initialization (reference: the widest kernels averaged over seeds);
    ``kernel_distance_inf`` — to the infinite-width NTK (None without a limit);
    ``kernel_drift`` — ``‖Θ_end − Θ_0‖/‖Θ_0‖``; ``lr_fraction`` — η / max_learning_rate.
    ``rmse_train_checkpoints`` / ``rmse_test_checkpoints``: shape ``(widths, checkpoints)``.
    ``exponent_rmse`` and ``exponent_kernel`` (with ``*_stderr``) are log-log slopes;
    ``adequate_width`` the smallest width with ``relative_gap <= tol`` (bisected), or None
    with ``adequate_width_estimate`` from the fitted power law.
    """

    model: str
    config: dict[str, Any]
    tol: float
    checkpoints: list[int]
    widths: npt.NDArray[np.int64]
    rmse_train: FloatArray
    rmse_train_std: FloatArray
    rmse_train_checkpoints: FloatArray
    rmse_train_checkpoints_std: FloatArray
    rmse_test: FloatArray | None
    rmse_test_std: FloatArray | None
    rmse_test_checkpoints: FloatArray | None
    rmse_test_checkpoints_std: FloatArray | None
    movement: FloatArray
    movement_std: FloatArray
    movement_train: FloatArray
    movement_train_std: FloatArray
    movement_test: FloatArray | None
    movement_test_std: FloatArray | None
    relative_gap: FloatArray
    relative_gap_std: FloatArray
    kernel_distance: FloatArray
    kernel_distance_std: FloatArray
    kernel_distance_inf: FloatArray | None
    kernel_distance_inf_std: FloatArray | None
    kernel_drift: FloatArray
    kernel_drift_std: FloatArray
    lr_fraction: FloatArray
    lr_fraction_std: FloatArray
    learning_rate: FloatArray
    learning_rate_std: FloatArray
    max_learning_rate: FloatArray
    max_learning_rate_std: FloatArray
    exponent_rmse: float | None
    exponent_rmse_stderr: float | None
    exponent_kernel: float | None
    exponent_kernel_stderr: float | None
    exponent_kernel_reference: str
    adequate_width: int | None
    adequate_width_estimate: float | None
    bisection: list[dict[str, Any]]
    per_seed: dict[int, list[dict[str, Any]]]
    timings: dict[str, float]

    @classmethod
    def from_runs(
        cls,
        *,
        family: Family,
        widths: Sequence[int],
        grid: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
        per_width: Mapping[int, list[dict[str, Any]]],
        bisection: Sequence[tuple[int, float]],
        adequate_width: int | None,
        config: Mapping[str, Any],
        timings: Mapping[str, float],
        fit: tuple[
            Callable[[Any, Any], tuple[float | None, float | None, float | None]],
            Callable[[float | None, float | None, float], float | None],
        ],
    ) -> WidthStudy:
        loglog_slope, extrapolate = fit
        self = cls()
        self.model = family.describe()
        self.config = dict(config)
        self.tol = config["tol"]
        self.checkpoints = list(config["checkpoints"])
        self.widths = np.asarray(widths, dtype=np.int64)
        crit = config["criterion"]
        mean = {k: np.array([g[0][k] for g in grid]) for k in grid[0][0]}
        std = {k: np.array([g[1][k] for g in grid]) for k in grid[0][1]}
        for name in _SCALARS:
            setattr(self, name, mean.get(name))
            setattr(self, name + "_std", std.get(name))
        self.rmse_train_checkpoints = mean["rmse_train_checkpoints"]
        self.rmse_train_checkpoints_std = std["rmse_train_checkpoints"]
        self.rmse_train = self.rmse_train_checkpoints[:, -1]
        self.rmse_train_std = self.rmse_train_checkpoints_std[:, -1]
        if "rmse_test_checkpoints" in mean:
            self.rmse_test_checkpoints = mean["rmse_test_checkpoints"]
            self.rmse_test_checkpoints_std = std["rmse_test_checkpoints"]
            self.rmse_test = self.rmse_test_checkpoints[:, -1]
            self.rmse_test_std = self.rmse_test_checkpoints_std[:, -1]
        else:
            self.rmse_test_checkpoints = self.rmse_test_checkpoints_std = None
            self.rmse_test = self.rmse_test_std = None
        self.movement = getattr(self, f"movement_{crit}")
        self.movement_std = getattr(self, f"movement_{crit}_std")
        rmse = getattr(self, f"rmse_{crit}")
        self.exponent_rmse, self.exponent_rmse_stderr, _ = loglog_slope(self.widths, rmse)
        if self.kernel_distance_inf is not None:
            kd, kw, self.exponent_kernel_reference = self.kernel_distance_inf, self.widths, "limit"
        else:
            kd, kw = self.kernel_distance[:-1], self.widths[:-1]
            self.exponent_kernel_reference = "widest"
        self.exponent_kernel, self.exponent_kernel_stderr, _ = loglog_slope(kw, kd)
        self.adequate_width = None if adequate_width is None else int(adequate_width)
        self.adequate_width_estimate = None
        if self.adequate_width is None:
            slope, _, icpt = loglog_slope(self.widths, self.relative_gap)
            est = extrapolate(slope, icpt, self.tol)
            if est is not None and est > self.widths[-1]:
                self.adequate_width_estimate = float(est)
        self.bisection = []
        for w, gap in bisection:
            runs = per_width[w]
            gaps = [r["relative_gap"] for r in runs]
            self.bisection.append(
                {
                    "width": int(w),
                    "relative_gap": float(gap),
                    "relative_gap_std": float(np.std(gaps, ddof=1)) if len(gaps) > 1 else 0.0,
                    "passes": bool(gap <= self.tol),
                }
            )
        self.per_seed = {int(w): runs for w, runs in sorted(per_width.items())}
        self.timings = dict(timings)
        return self

    # -- output ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (lists and floats; NaN/inf become None)."""
        keys = ["model", "config", "tol", "checkpoints", "widths", "exponent_kernel_reference"]
        arrays = [
            "rmse_train",
            "rmse_test",
            "movement",
            "relative_gap",
            "rmse_train_checkpoints",
            "rmse_test_checkpoints",
        ] + list(_SCALARS)
        for a in list(arrays):
            arrays.append(a + "_std")
        out = {k: getattr(self, k) for k in keys + arrays}
        for k in (
            "exponent_rmse",
            "exponent_rmse_stderr",
            "exponent_kernel",
            "exponent_kernel_stderr",
            "adequate_width",
            "adequate_width_estimate",
        ):
            out[k] = getattr(self, k)
        out["bisection"] = self.bisection
        out["per_seed"] = self.per_seed
        out["timings"] = self.timings
        doc: dict[str, Any] = _jsonable(out)
        return doc

    def _crit(self) -> str:
        return str(self.config["criterion"])

    def table(self) -> str:
        """The study as plain text: one row per width, exponents, adequate width, time."""
        c = self.config
        lr = (
            f"{c['rate_fraction']:g} x max_learning_rate of each width"
            if c["learning_rate"] is None
            else f"learning rate {c['learning_rate']:g}"
        )
        test = f" / {c['n_test']} test" if c["n_test"] is not None else ""
        lines = [
            f"model: {self.model}",
            f"data: {c['n_train']} train{test} points, {c['outputs']} output(s); "
            f"{c['steps']} full-batch GD steps at {lr}; {c['seeds']} seed(s) per width",
            "",
        ]
        rmse_test, k_inf = self.rmse_test, self.kernel_distance_inf
        has_test = rmse_test is not None
        has_inf = k_inf is not None
        head = f"{'width':>6} {'rmse train':>11}"
        if has_test:
            head += f" {'rmse test':>10}"
        head += f" {'movement':>9} {'rmse/move':>15} "
        head += f"{'K->inf':>7} " if has_inf else ""
        head += f"{'K->widest':>9} {'drift':>8} {'lr/max':>6}"
        lines += [head, "-" * len(head)]
        for i, w in enumerate(self.widths):
            row = f"{w:>6d} {self.rmse_train[i]:>11.3e}"
            if rmse_test is not None:
                row += f" {rmse_test[i]:>10.3e}"
            gap = f"{self.relative_gap[i]:.4f}±{self.relative_gap_std[i]:.4f}"
            row += f" {self.movement[i]:>9.3e} {gap:>15} "
            row += f"{k_inf[i]:>7.4f} " if k_inf is not None else ""
            row += f"{self.kernel_distance[i]:>9.4f} {self.kernel_drift[i]:>8.2e} "
            row += f"{self.lr_fraction[i]:>6.3f}"
            lines.append(row)
        lines.append("")
        lines.append(
            "fitted exponents (log-log slope ± standard error; theory bounds both by -1/2):"
        )
        lines.append(
            f"  rmse {self._crit():<5}     {_fmt_exp(self.exponent_rmse, self.exponent_rmse_stderr)}"
        )
        ref = (
            "to the infinite-width NTK"
            if self.exponent_kernel_reference == "limit"
            else ("to the widest, widest excluded")
        )
        lines.append(
            f"  kernel distance  {_fmt_exp(self.exponent_kernel, self.exponent_kernel_stderr)}"
            f"  ({ref})"
        )
        crit = f"rmse {self._crit()} / movement <= {self.tol:g}"
        if self.adequate_width is not None:
            msg = f"adequate width ({crit}): {self.adequate_width}"
            if self.adequate_width == self.widths[0]:
                msg += " (the narrowest width tried: a narrower one may do)"
            if self.bisection:
                tried = ", ".join(
                    f"{b['width']} ({b['relative_gap']:.4f} {'pass' if b['passes'] else 'fail'})"
                    for b in self.bisection
                )
                msg += f"; bisected: {tried}"
        else:
            msg = f"adequate width ({crit}): none of the widths"
            if self.adequate_width_estimate is not None:
                msg += f"; the fitted power law reaches it near {self.adequate_width_estimate:.0f}"
        lines.append(msg)
        t = self.timings
        parts = ", ".join(
            f"{k} {t[k]:.1f} s"
            for k in ("training", "kernel", "factorization", "prediction", "limit")
        )
        lines.append(f"time: {t['total']:.1f} s ({parts})")
        if "factorizations" in c:
            lines.append(
                f"{c['runs']} trained networks, {c['factorizations']} factorizations "
                "(one per network serves all its checkpoints)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"WidthStudy(widths={self.widths.tolist()}, exponent_rmse={self.exponent_rmse}, "
            f"exponent_kernel={self.exponent_kernel}, adequate_width={self.adequate_width})"
        )

    def plot(self, path: Any) -> None:
        """Writes a PNG: log-log RMSE (train, test) and kernel distance against width, each
        with an ``n^-1/2`` reference line through its narrowest point, and the relative gap
        with the tolerance."""
        from matplotlib.figure import Figure  # no pyplot: no global backend state

        w = self.widths.astype(np.float64)
        fig = Figure(figsize=(14, 4.2))
        axes = fig.subplots(1, 3)

        def ref(ax: Any, y0: float) -> None:
            if np.isfinite(y0) and y0 > 0:
                ax.plot(w, y0 * np.sqrt(w[0] / w), "k:", lw=1, label="n^-1/2")

        ax = axes[0]
        ax.errorbar(w, self.rmse_train, yerr=self.rmse_train_std, marker="o", label="train")
        if self.rmse_test is not None:
            ax.errorbar(w, self.rmse_test, yerr=self.rmse_test_std, marker="s", label="test")
        ref(ax, (self.rmse_test if self.rmse_test is not None else self.rmse_train)[0])
        ax.set_title("RMSE: trained network vs linearized")
        ax = axes[1]
        if self.kernel_distance_inf is not None:
            ax.errorbar(
                w,
                self.kernel_distance_inf,
                yerr=self.kernel_distance_inf_std,
                marker="o",
                label="to infinite width",
            )
            ref(ax, self.kernel_distance_inf[0])
        else:
            ref(ax, self.kernel_distance[0])
        ax.errorbar(
            w[:-1],
            self.kernel_distance[:-1],
            yerr=self.kernel_distance_std[:-1],
            marker="s",
            label="to widest",
        )
        ax.errorbar(
            w, self.kernel_drift, yerr=self.kernel_drift_std, marker="^", label="drift in training"
        )
        ax.set_title("kernel: relative Frobenius distance")
        ax = axes[2]
        ax.errorbar(
            w,
            self.relative_gap,
            yerr=self.relative_gap_std,
            marker="o",
            label=f"rmse {self._crit()} / movement",
        )
        ax.axhline(self.tol, color="r", ls="--", lw=1, label=f"tol {self.tol:g}")
        if self.adequate_width is not None:
            ax.axvline(
                self.adequate_width,
                color="g",
                ls="--",
                lw=1,
                label=f"adequate {self.adequate_width}",
            )
        ref(ax, self.relative_gap[0])
        ax.set_title("relative gap")
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("width n")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(self.model, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)


def _fmt_exp(v: float | None, se: float | None) -> str:
    if v is None:
        return "n/a (fewer than two usable widths)"
    return f"{v:+.3f} ± {se:.3f}" if se is not None else f"{v:+.3f}"
