"""``tangentflow demo``: learning curves of an infinitely wide ReLU network on digits.

The whole job of the package, end to end, on a data set that ships with scikit-learn
(8×8 handwritten digits, 1797 images, no download):

1. standardize the inputs (center each pixel with the training mean, scale every image
   to unit norm) and split them into a training and a test set (fixed seed);
2. build the infinite-width NTK and NNGP of ``hidden_layers`` × [Dense, ReLU] + Dense
   with :func:`tangentflow.kernels.fully_connected`;
3. predict train/test MSE and accuracy over training time and at convergence with
   :class:`tangentflow.Predictor` (one ``at`` call for all times, one for t = ∞);
4. the predictive variance of the infinite ensemble at convergence with
   :class:`tangentflow.Ensemble`;
5. check the converged test outputs against scikit-learn's ``KernelRidge`` on the same
   kernel (kernel regression is the t = ∞ limit of gradient flow from zero outputs):
   ``max|Δoutput| / max|output| <= 1e-9`` (docs/numerics.md §13), else the demo fails
   with exit status 1 after printing its report.

No diagonal regularization is used: the digits NTK is well conditioned (condition number
about 3e3 at the default size; the demo prints it), so the converged predictor is exact
kernel interpolation and ``KernelRidge(alpha=0)`` solves the same system.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from ._args import add_threads_option, int_arg
from ._digits import N_CLASSES, N_DIGITS, load_digits_split, one_hot
from ._outputs import add_output_option
from ._progress import Progress

__all__ = [
    "add_parser",
    "run",
    "run_demo",
    "N_DIGITS",
    "MIN_TRAIN",
    "MIN_TEST",
    "MAX_HIDDEN_LAYERS",
    "KERNEL_RIDGE_RTOL",
    "DemoCheckFailed",
]

#: The smallest training and test sets the demo accepts.
MIN_TRAIN = 10
MIN_TEST = 10
#: The deepest network the demo builds.
MAX_HIDDEN_LAYERS = 100
#: Largest accepted ``max|Δoutput| / max|output|`` between the converged test outputs and
#: scikit-learn's KernelRidge on the same kernel.
KERNEL_RIDGE_RTOL = 1e-9


FloatArray = npt.NDArray[np.float64]


class DemoCheckFailed(RuntimeError):
    """The demo's converged outputs disagree with scikit-learn's KernelRidge."""


# -- the subcommand ------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``demo`` on the ``tangentflow`` subcommand parsers."""
    demo = subparsers.add_parser(
        "demo",
        help="learning curves of an infinitely wide ReLU network on the digits data set",
        description=(
            "Builds the infinite-width NTK/NNGP of a ReLU network on scikit-learn's digits "
            "data set (no download) and predicts train/test loss and accuracy over training "
            "time and at convergence."
        ),
    )
    demo.add_argument(
        "--n-train",
        metavar="N",
        type=int_arg("a positive integer", 1),
        default=1000,
        help=f"training examples (the rest of the {N_DIGITS} images are the test set; "
        f"{MIN_TRAIN} to {N_DIGITS - MIN_TEST}; default 1000)",
    )
    demo.add_argument(
        "--hidden-layers",
        metavar="L",
        type=int_arg("a positive integer", 1, MAX_HIDDEN_LAYERS),
        default=3,
        help=f"hidden [Dense, ReLU] layers (1 to {MAX_HIDDEN_LAYERS}; default 3)",
    )
    add_output_option(
        demo,
        "--plot",
        metavar="PNG",
        suffix=".png",
        help="write the learning curves to this PNG file (a new or regular file ending in .png)",
    )
    add_output_option(demo, "--json", metavar="FILE", help="write every number to this JSON file")
    add_threads_option(demo)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``tangentflow demo`` for parsed ``args``; returns the exit status."""
    if not MIN_TRAIN <= args.n_train <= N_DIGITS - MIN_TEST:
        parser.error(
            f"argument --n-train: expected {MIN_TRAIN} to {N_DIGITS - MIN_TEST} (the digits "
            f"data set has {N_DIGITS} images and at least {MIN_TEST} are kept for testing), "
            f"got {args.n_train}"
        )
    try:
        run_demo(
            args.n_train,
            args.hidden_layers,
            plot=args.plot,
            json_path=args.json,
            threads=args.threads,
            progress=not args.no_progress,
        )
    except (ImportError, RuntimeError, OSError) as e:
        print(f"tangentflow demo: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return 0


# -- numbers -------------------------------------------------------------------------------


def _mse(f: FloatArray, y: FloatArray) -> Any:
    return ((f - y) ** 2).mean(axis=(-2, -1))


def _acc(f: FloatArray, labels: npt.NDArray[Any]) -> Any:
    return (f.argmax(axis=-1) == labels).mean(axis=-1)


def fmt_acc(a: float) -> str:
    """Accuracy as printed by the demo (percent, two decimals)."""
    return f"{100.0 * a:6.2f}%"


# -- the demo -----------------------------------------------------------------------------
def run_demo(
    n_train: int = 1000,
    hidden_layers: int = 3,
    *,
    plot: str | None = None,
    json_path: str | None = None,
    threads: int | None = None,
    n_times: int = 30,
    seed: int = 0,
    out: TextIO | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the demo, prints its table and summary to ``out`` (stdout), returns the numbers."""
    import tangentflow
    from tangentflow import Ensemble, Predictor
    from tangentflow.kernels import fully_connected

    out = out if out is not None else sys.stdout
    if not MIN_TRAIN <= n_train <= N_DIGITS - MIN_TEST:
        raise ValueError(f"n_train must be in [{MIN_TRAIN}, {N_DIGITS - MIN_TEST}], got {n_train}")
    if threads is not None:
        tangentflow.set_num_threads(threads)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    bar = Progress(6, "demo", enabled=progress)

    def timed(name: str) -> contextlib.AbstractContextManager[None]:
        @contextmanager
        def cm() -> Iterator[None]:
            t0 = time.perf_counter()
            with bar(name):
                yield
            timings[name] = time.perf_counter() - t0

        return cm()

    try:
        with timed("data"):
            x_tr, x_te, lab_tr, lab_te = load_digits_split(n_train, seed)
            y = one_hot(lab_tr)
            y_te = one_hot(lab_te)
        with timed("kernels"):
            k = fully_connected(x_tr, hidden_layers=hidden_layers)
            k_te = fully_connected(x_te, x_tr, hidden_layers=hidden_layers)
            nngp_tt = fully_connected(x_te, hidden_layers=hidden_layers, get="nngp")
        with timed("factorization"):
            # Time unit: full-batch gradient-descent steps at half the largest stable
            # learning rate (η_max = 2n/μ_max, docs/numerics.md §11); with_params shares the
            # eigendecomposition, so this costs no second factorization.
            p0 = Predictor(k.ntk, y).factorize()
            diag0 = p0.diagnostics()
            eta = 0.5 * diag0.max_learning_rate
            p = p0.with_params(learning_rate=eta)
            diag = p.diagnostics()
        with timed("predictions"):
            t1 = diag.time_to_1pct if math.isfinite(diag.time_to_1pct) else 1e4
            t_end = _nice_ceil(max(t1, 10.0))  # every mode has relaxed
            ts = np.geomspace(1.0, t_end, n_times)
            curve = p.at(ts, k_test_train=k_te.ntk)
            final = p.at(None, k_test_train=k_te.ntk)
        with timed("ensemble"):
            ens = Ensemble(k.nngp, y, ntk_train_train=k.ntk, learning_rate=eta)
            g = ens.at(
                None,
                ntk_test_train=k_te.ntk,
                nngp_test_train=k_te.nngp,
                nngp_test_test=nngp_tt,
                compute_cov=True,
            )
            var_post = float(np.mean(np.diag(g.covariance)))
            var_prior = float(np.mean(np.diag(nngp_tt)))
            ens_dev = float(np.max(np.abs(g.mean - final.test)))
        with timed("kernel ridge check"):
            krr = _kernel_ridge(k.ntk, y, k_te.ntk, alpha=p.shift)
    finally:
        bar.close()
    timings["total"] = time.perf_counter() - t_start

    res = {
        "config": {
            "n_train": int(n_train),
            "n_test": int(x_te.shape[0]),
            "hidden_layers": int(hidden_layers),
            "activation": "relu",
            "seed": int(seed),
            "diag_reg": float(p.diag_reg),
            "threads": int(tangentflow.get_num_threads()),
            "tangentflow_version": tangentflow.__version__,
        },
        "learning_rate": float(eta),
        "time_unit": "gradient-descent steps at learning_rate (continuous-time flow)",
        "times": ts.tolist(),
        "train_mse": _mse(curve.train, y).tolist(),
        "test_mse": _mse(curve.test, y_te).tolist(),
        "train_acc": _acc(curve.train, lab_tr).tolist(),
        "test_acc": _acc(curve.test, lab_te).tolist(),
        "infinite": {
            "train_mse": float(_mse(final.train, y)),
            "test_mse": float(_mse(final.test, y_te)),
            "train_acc": float(_acc(final.train, lab_tr)),
            "test_acc": float(_acc(final.test, lab_te)),
        },
        "kernel_ridge": krr,
        "ensemble": {
            "mean_test_variance": var_post,
            "mean_prior_variance": var_prior,
            "max_abs_mean_minus_predictor": ens_dev,
        },
        "diagnostics": {
            "min_eigenvalue": float(diag.min_eigenvalue),
            "max_eigenvalue": float(diag.max_eigenvalue),
            "condition_number": float(diag.condition_number),
            "n_cut": int(diag.n_cut),
            "psd_correction": float(diag.psd_correction),
            "max_learning_rate": float(diag0.max_learning_rate),
            "time_to_1pct": float(diag.time_to_1pct),
        },
        "factorizations": int(p.factorizations),
        "timings_s": timings,
    }
    if krr is not None:
        krr_te = krr.pop("_predictions")
        krr["test_acc"] = float(_acc(krr_te, lab_te))
        krr["test_mse"] = float(_mse(krr_te, y_te))
        diff = float(np.max(np.abs(krr_te - final.test)))
        scale = float(np.max(np.abs(krr_te)))
        krr["max_abs_diff_vs_t_inf"] = diff
        krr["max_abs_output"] = scale
        krr["rel_diff_vs_t_inf"] = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
        krr["rtol"] = KERNEL_RIDGE_RTOL
        krr["ok"] = bool(krr["rel_diff_vs_t_inf"] <= KERNEL_RIDGE_RTOL)
    _print_report(res, out)
    if json_path is not None:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, allow_nan=False)
        print(f"wrote {json_path}", file=out)
    if plot is not None:
        if _plot(res, plot):
            print(f"wrote {plot}", file=out)
        else:
            print(
                "matplotlib is not installed: skipped the plot (pip install matplotlib)", file=out
            )
    if krr is not None and not krr["ok"]:
        raise DemoCheckFailed(
            "the converged test outputs differ from scikit-learn's KernelRidge on the same "
            f"kernel by max|Δoutput|/max|output| = {krr['rel_diff_vs_t_inf']:.2e} > "
            f"{KERNEL_RIDGE_RTOL:g}"
        )
    return res


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is >= x."""
    k = math.floor(math.log10(x))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10.0**k >= x * (1 - 1e-12):
            return m * 10.0**k
    return 10.0 ** (k + 1)  # pragma: no cover


def _kernel_ridge(
    k: FloatArray, y: FloatArray, k_te: FloatArray, alpha: float
) -> dict[str, Any] | None:
    """scikit-learn's KernelRidge on the precomputed kernel (None without scikit-learn)."""
    try:
        from sklearn.kernel_ridge import KernelRidge
    except ImportError:  # pragma: no cover
        return None
    model = KernelRidge(kernel="precomputed", alpha=alpha).fit(k, y)
    pred = model.predict(k_te)
    return {"alpha": float(alpha), "_predictions": pred}


def _print_report(res: dict[str, Any], out: TextIO) -> None:
    c = res["config"]
    w = print
    w(
        f"tangentflow demo: digits (8x8, {N_CLASSES} classes), {c['n_train']} train / "
        f"{c['n_test']} test, infinitely wide ReLU network with {c['hidden_layers']} hidden "
        "layer(s), MSE loss, centered one-hot targets",
        file=out,
    )
    w(
        f"time t = gradient-descent steps at learning rate {res['learning_rate']:.6g} "
        "(half the largest stable rate), continuous-time flow",
        file=out,
    )
    w("", file=out)
    header = (
        f"{'t [steps]':>12}  {'train MSE':>10}  {'test MSE':>10}  {'train acc':>9}  {'test acc':>9}"
    )
    w(header, file=out)
    w("-" * len(header), file=out)
    cols = ("times", "train_mse", "test_mse", "train_acc", "test_acc")
    rows = zip(*(res[c] for c in cols), strict=True)
    for t, a, b, ca, cb in rows:
        w(f"{t:12.4g}  {a:10.5f}  {b:10.5f}  {fmt_acc(ca):>9}  {fmt_acc(cb):>9}", file=out)
    inf = res["infinite"]
    w(
        f"{'inf':>12}  {inf['train_mse']:10.5f}  {inf['test_mse']:10.5f}  "
        f"{fmt_acc(inf['train_acc']):>9}  {fmt_acc(inf['test_acc']):>9}",
        file=out,
    )
    w("", file=out)
    d = res["diagnostics"]
    tm = res["timings_s"]
    w("summary", file=out)
    w(
        f"  converged test accuracy     {fmt_acc(inf['test_acc']).strip()}  "
        f"(test MSE {inf['test_mse']:.5f})",
        file=out,
    )
    krr = res["kernel_ridge"]
    if krr is not None:
        w(
            f"  sklearn KernelRidge         {fmt_acc(krr['test_acc']).strip()}  "
            f"(alpha={krr['alpha']:g}, same kernel)",
            file=out,
        )
        verdict = "ok" if krr["ok"] else "FAIL"
        w(
            f"  outputs vs KernelRidge      max|Δoutput|/max|output| "
            f"{krr['rel_diff_vs_t_inf']:.1e} (<= {krr['rtol']:g}: {verdict}; "
            f"max|Δoutput| {krr['max_abs_diff_vs_t_inf']:.1e})",
            file=out,
        )
    e = res["ensemble"]
    w(
        f"  ensemble variance (t=inf)   {e['mean_test_variance']:.4g} mean over test points "
        f"(prior {e['mean_prior_variance']:.4g})",
        file=out,
    )
    w(
        f"  NTK spectrum                [{d['min_eigenvalue']:.3g}, {d['max_eigenvalue']:.3g}], "
        f"condition {d['condition_number']:.3g}, {d['n_cut']} mode(s) cut, "
        f"diag_reg {res['config']['diag_reg']:g}",
        file=out,
    )
    w(
        f"  time to converge (1%)       {d['time_to_1pct']:.4g} steps; "
        f"factorizations {res['factorizations']}",
        file=out,
    )
    w(
        f"  runtime                     {tm['total']:.2f} s (kernels {tm['kernels']:.2f} s, "
        f"factorization {tm['factorization']:.2f} s, predictions {tm['predictions']:.2f} s, "
        f"ensemble {tm['ensemble']:.2f} s), {res['config']['threads']} thread(s)",
        file=out,
    )


def _plot(res: dict[str, Any], path: str | os.PathLike[str]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ts = np.asarray(res["times"])
    inf = res["infinite"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax1.loglog(ts, res["train_mse"], label="train")
    ax1.loglog(ts, res["test_mse"], label="test")
    ax1.axhline(inf["test_mse"], ls="--", c="C1", lw=0.8, label="test, t = ∞")
    floor = 1e-2 * min(res["test_mse"] + [inf["test_mse"]])
    if floor > 0:
        ax1.set_ylim(bottom=floor)  # the train MSE falls to round-off; keep the test visible
    ax1.set_xlabel(f"steps (learning rate {res['learning_rate']:.3g})")
    ax1.set_ylabel("MSE")
    ax1.legend()
    ax2.semilogx(ts, 100 * np.asarray(res["train_acc"]), label="train")
    ax2.semilogx(ts, 100 * np.asarray(res["test_acc"]), label="test")
    ax2.axhline(100 * inf["test_acc"], ls="--", c="C1", lw=0.8, label="test, t = ∞")
    ax2.set_xlabel("steps")
    ax2.set_ylabel("accuracy [%]")
    ax2.legend()
    c = res["config"]
    fig.suptitle(
        f"Infinitely wide ReLU net ({c['hidden_layers']} hidden layers) on digits, "
        f"{c['n_train']} train / {c['n_test']} test"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
