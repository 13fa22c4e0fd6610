"""``tangentflow bench``: the end-to-end benchmark of the Predictor against NumPy/SciPy.

Every ratio is measured in one run on the same matrices (docs/cli.md): each figure is a
sample of at least ``MIN_SAMPLE_S`` = 0.2 s (a shorter call is repeated within the
sample), and the measurements of a size run in ``--repeats`` (default 3) rounds of one
sample each, in ``ROUND_ORDER`` (each baseline next to what it divides) and reversed every
other round; a ratio is the median of its per-round ratios, printed with their min–max, and
the JSON keeps every raw sample. For each N, an analytic ReLU NTK of random unit-norm inputs
(3 hidden layers), R = 10 outputs, M = 1000 test points and T = 100 times on a log grid:

(a) ``numpy.linalg.eigh(K)``, the floor of any finite-time prediction;
(b) the first call ``Predictor(K, y).at(ts, k_test_train=..., fx_train_0=..., fx_test_0=...)``
    (and, for information, ``Predictor(K, y).factorize()`` alone);
(b') the same first call with 1000 times, against (b);
(c) a repeat call with 100 new times through ``p.test_set(k_test_train).at(...)``;
(c') ``train_loss`` at 10,000 times on a factorized Predictor, against (b);
(d) ``at(None)`` vs ``scipy.linalg.cho_factor`` + ``cho_solve`` + the test product;
(e) a sweep over 20 ``diag_reg`` values × 100 times with a test set (``with_params``);
(f) small problems (N = 100, 10 times, 50 test points) vs plain NumPy;
(g) the peak RSS of the first call, measured in a fresh subprocess, beyond the inputs.

Run ``tangentflow bench --sizes 1000,2000`` (or ``python benches/bench_predict.py``).
This machine's ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` slow NumPy's baseline; unset
them for the benchmark only: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE tangentflow bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from ._args import add_threads_option, int_arg
from ._bench_inputs import N_OUTPUTS, make_inputs, times
from ._bench_report import TARGETS, format_report, machine_info
from ._measure import DEFAULT_PAIRS, MIN_SAMPLE_S, interleaved, paired, peak_memory, ratio_stats
from ._outputs import add_output_option, check_outputs
from ._progress import Progress

__all__ = ["add_parser", "run", "run_bench", "main", "TARGETS", "make_inputs"]

FloatArray = npt.NDArray[np.float64]


# -- the subcommand ----------------------------------------------------------------------------
def _sizes_arg(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes, got {text!r}")
    parse = int_arg("a size >= 10", 10, 100_000)
    return [parse(p) for p in parts]


def _min_time_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.0 < v <= 60.0:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 60], got {text!r}")
    return v


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """The options of ``tangentflow bench`` (also of ``benches/bench_predict.py``)."""
    bench.add_argument(
        "--sizes",
        metavar="N1,N2,...",
        type=_sizes_arg,
        default=[1000, 2000, 4000],
        help="comma-separated training-set sizes N, each 10 to 100000 (default 1000,2000,4000)",
    )
    add_output_option(bench, "--json", metavar="FILE", help="write every number to this JSON file")
    add_threads_option(bench)
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument(
        "--repeats",
        type=int_arg("an integer from 1 to 100", 1, 100),
        default=DEFAULT_PAIRS,
        metavar="K",
        help=f"rounds of paired samples per ratio, 1 to 100 (default {DEFAULT_PAIRS}); "
        "each ratio is the median over the rounds",
    )
    # Internal knobs (tests shrink the problem with them); hidden from --help.
    hidden = argparse.SUPPRESS
    pos = int_arg("a positive integer", 1)
    bench.add_argument("--test-points", type=pos, default=1000, help=hidden)
    bench.add_argument("--n-times", type=pos, default=100, help=hidden)
    bench.add_argument("--n-regs", type=pos, default=20, help=hidden)
    bench.add_argument("--min-time", type=_min_time_arg, default=None, help=hidden)
    bench.add_argument("--no-memory", action="store_true", help=hidden)


_DESCRIPTION = (
    "Times tangentflow's first call, repeat call, t=inf, a regularization sweep, small "
    "problems and peak memory against numpy.linalg.eigh / scipy Cholesky, and prints "
    "the ratios with their targets."
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``bench`` on the ``tangentflow`` subcommand parsers."""
    bench = subparsers.add_parser(
        "bench",
        help="end-to-end benchmark against NumPy/SciPy on the same matrices",
        description=_DESCRIPTION,
    )
    add_arguments(bench)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Runs ``tangentflow bench`` for parsed ``args``; returns the exit status."""
    try:
        run_bench(
            args.sizes,
            json_path=args.json,
            threads=args.threads,
            test_points=args.test_points,
            n_times=args.n_times,
            n_regs=args.n_regs,
            repeats=args.repeats,
            memory=not args.no_memory,
            **({} if args.min_time is None else {"min_time": args.min_time}),
            progress=not args.no_progress,
        )
    except (ImportError, RuntimeError, OSError) as e:
        print(f"tangentflow bench: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python benches/bench_predict.py [--sizes ...]``: the same as ``tangentflow bench``."""
    parser = argparse.ArgumentParser(prog="tangentflow bench", description=_DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    check_outputs(parser, args)
    return run(args, parser)


# -- measurements -----------------------------------------------------------------------------
def _small(pairs: int, min_time: float) -> dict[str, Any]:
    """(f): N=100, 10 times, 50 test points, vs eigh + matrix products in NumPy."""
    from tangentflow import Predictor

    inp = make_inputs(100, 50, seed=1)
    k, kte, y, f0, g0 = inp["k"], inp["k_te"], inp["y"], inp["f0"], inp["g0"]
    ts = times(k, 10, N_OUTPUTS)
    n = y.size

    def numpy_impl() -> tuple[FloatArray, FloatArray]:
        w, v = np.linalg.eigh(k)
        z = v.T @ (f0 - y)
        s = ts / n
        e = np.exp(-np.outer(s, w))  # (T, N)
        phi = -np.expm1(-np.outer(s, w)) / w
        train = y + v @ (e[:, :, None] * z)
        test = g0 - (kte @ v) @ (phi[:, :, None] * z)
        return train, test

    def tf() -> Any:
        return Predictor(k, y).at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

    t_tf, t_np, stats, out, ref = paired(tf, numpy_impl, pairs, min_time)
    err = max(float(np.max(np.abs(out.train - ref[0]))), float(np.max(np.abs(out.test - ref[1]))))
    return {
        "tangentflow_s": t_tf,
        "numpy_s": t_np,
        "ratio": stats["median"],
        "ratio_stats": stats,
        "max_abs_diff": err,
    }


#: The measurements of one size, in the order of a round (docs/cli.md): each baseline sits
#: next to the tangentflow measurement it is the denominator of.
ROUND_ORDER = (
    "eigh",
    "first",
    "first_many",
    "factorize",
    "sweep",
    "repeat",
    "repeat_test_only",
    "train_loss",
    "cholesky",
    "inf",
)
#: ratio name -> (numerator, denominator) of ROUND_ORDER
RATIOS: dict[str, tuple[str, str]] = {
    "first_vs_eigh": ("first", "eigh"),
    "first_many_vs_first": ("first_many", "first"),
    "factorize_vs_eigh": ("factorize", "eigh"),
    "repeat_vs_first": ("repeat", "first"),
    "repeat_test_only_vs_first": ("repeat_test_only", "first"),
    "sweep_vs_eigh": ("sweep", "eigh"),
    "train_loss_vs_first": ("train_loss", "first"),
    "inf_vs_cholesky": ("inf", "cholesky"),
}
#: times of the first call with many times, and of the training loss
MANY_TIMES = 1000
LOSS_TIMES = 10_000


def _one_size(
    n: int,
    m: int,
    n_times: int,
    n_regs: int,
    pairs: int,
    min_time: float,
    memory: bool,
    step: Progress,
    many_times: int = MANY_TIMES,
    loss_times: int = LOSS_TIMES,
) -> dict[str, Any]:
    from tangentflow import Predictor

    res: dict[str, Any] = {"n": n, "m": m, "r": N_OUTPUTS, "t": n_times}
    with step(f"N={n}: inputs"):
        inp = make_inputs(n, m)
        k, kte, y, f0, g0 = inp["k"], inp["k_te"], inp["y"], inp["f0"], inp["g0"]
        ts = times(k, n_times, N_OUTPUTS)
        ts2 = times(k, n_times, N_OUTPUTS, seed=1)
        ts_many = times(k, many_times, N_OUTPUTS, seed=2)
        ts_loss = times(k, loss_times, N_OUTPUTS, seed=3)
        w = np.linalg.eigvalsh(k)
        res["cond"] = float(w[-1] / w[0]) if w[0] > 0 else float("inf")
        # t = None well conditioned: the kernel itself when cond <= 1e5, else shifted to
        # cond ~1e5 (on both sides)
        lam = 0.0 if res["cond"] <= 1e5 else float(w[-1]) * 1e-5
        res["inf_diag_reg"] = lam
        regs = np.geomspace(1e-6, 1e-1, n_regs)
        res["n_regs"] = n_regs
        res["t_many"] = many_times
        res["t_loss"] = loss_times

    def first() -> Any:
        return Predictor(k, y).at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

    def first_many() -> Any:
        return Predictor(k, y).at(ts_many, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

    def eigh() -> Any:
        return np.linalg.eigh(k)

    def factorize() -> Any:
        return Predictor(k, y).factorize()

    def sweep() -> int:
        # The sweep pattern of the docs: one test-set handle, with_params per value, so
        # the factorization and K_te·V are shared by all members.
        p = Predictor(k, y)
        tset = p.test_set(kte, fx_test_0=g0)
        for lam_r in regs:
            tset.with_params(diag_reg=float(lam_r)).at(ts, fx_train_0=f0)
        return p.factorizations

    p = Predictor(k, y)
    tset = p.test_set(kte, fx_test_0=g0)

    def repeat() -> Any:
        return tset.at(ts2, fx_train_0=f0)

    def repeat_test_only() -> Any:
        return tset.at(ts2, fx_train_0=None)

    def train_loss() -> Any:
        return p.train_loss(ts_loss, fx_train_0=f0)

    def tf_inf() -> Any:
        q = Predictor(k, y, diag_reg=lam, diag_reg_absolute_scale=True)
        return q.at(None, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

    fns: dict[str, Any] = {
        "eigh": eigh,
        "first": first,
        "first_many": first_many,
        "factorize": factorize,
        "sweep": sweep,
        "repeat": repeat,
        "repeat_test_only": repeat_test_only,
        "train_loss": train_loss,
        "inf": tf_inf,
    }
    try:
        import scipy.linalg as sl
    except ImportError:
        res["cholesky_note"] = "scipy not installed: skipped"
    else:

        def chol() -> Any:
            a = k + lam * np.eye(n) if lam else k
            c = sl.cho_factor(a, lower=True, overwrite_a=bool(lam), check_finite=False)
            x = sl.cho_solve(c, y - f0, check_finite=False)
            return g0 + kte @ x

        fns["cholesky"] = chol
    order = {name: fns[name] for name in ROUND_ORDER if name in fns}
    with step(f"N={n}: {pairs} rounds of {len(order)} measurements"):
        tset.at(ts, fx_train_0=f0)  # the repeat's handle: factorization and K_te·V ready
        samples, calls, outs = interleaved(order, pairs, min_time)
    res["samples_s"] = samples
    res["calls_per_sample"] = calls
    for name, sam in samples.items():
        res[f"{name}_s"] = float(np.median(sam))
    ratios: dict[str, Any] = {}
    res["ratios"] = ratios
    for key, (a, b) in RATIOS.items():
        if a in samples and b in samples:
            ratios[key] = ratio_stats(samples[a], samples[b])
    nfact = outs["sweep"]
    assert nfact == 1, f"the sweep ran {nfact} factorizations, expected 1"
    res["sweep_factorizations"] = nfact
    if "cholesky" in outs:
        res["inf_max_abs_diff"] = float(np.max(np.abs(outs["inf"].test - outs["cholesky"])))
    else:
        res["cholesky_s"] = None

    if memory:
        with step(f"N={n}: peak memory"):
            first_b, eigh_b = peak_memory(inp, ts)
            unit = 8.0 * n * n
            res["memory_first_n2"] = first_b / unit
            res["memory_numpy_eigh_n2"] = eigh_b / unit
            res["memory_outputs_n2"] = 8.0 * n_times * N_OUTPUTS * (n + m) / unit
    return res


def run_bench(
    sizes: Sequence[int] = (1000, 2000, 4000),
    *,
    json_path: str | None = None,
    threads: int | None = None,
    test_points: int = 1000,
    n_times: int = 100,
    n_regs: int = 20,
    repeats: int | None = None,
    memory: bool = True,
    progress: bool = True,
    out: TextIO | None = None,
    min_time: float = MIN_SAMPLE_S,
) -> dict[str, Any]:
    """Runs the benchmark, prints the report to ``out`` (stdout) and returns the numbers."""
    import tangentflow

    out = out if out is not None else sys.stdout
    if threads is not None:
        tangentflow.set_num_threads(threads)
    per_size = 3 if memory else 2
    bar = Progress(1 + per_size * len(sizes), "bench", enabled=progress)
    pairs = DEFAULT_PAIRS if repeats is None else int(repeats)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "targets": dict(TARGETS),
        "timing": {"min_sample_s": float(min_time), "pairs": pairs},
        "sizes": [],
    }
    try:
        with bar("small problems"):
            result["small"] = _small(pairs, min_time)
        for n in sizes:
            result["sizes"].append(
                _one_size(n, test_points, n_times, n_regs, pairs, min_time, memory, bar)
            )
    finally:
        bar.close()
    print(format_report(result), file=out)
    if json_path is not None:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=float)
        print(f"wrote {json_path}", file=out)
    return result
