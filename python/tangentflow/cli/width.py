"""``tangentflow width``: the width study on scikit-learn's digits (docs/width.md).

Inputs: the demo's standardized digits (centered pixels, unit-norm images) rescaled to
``‖x‖² = d``, the input scale the NTK parameterization assumes (docs/width.md, "input
scale"). Targets: ``parity`` (+1 even, −1 odd; one output) or ``onehot`` (centered
one-hot, ten outputs and a ``(N, N, 10, 10)`` kernel, about ten times the kernel work).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from ._args import float_arg, int_arg
from ._digits import N_DIGITS, load_digits_split, one_hot
from ._outputs import add_output_option

__all__ = ["add_parser", "run"]

DEFAULT_PLOT = "width_study.png"

FloatArray = npt.NDArray[np.float64]


def _widths_arg(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        ws = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths, got {text!r}") from None
    if not ws or any(not 1 <= w <= 65536 for w in ws):
        raise argparse.ArgumentTypeError(f"expected widths in [1, 65536], got {text!r}")
    return ws


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``width`` on the ``tangentflow`` subcommand parsers."""
    p = subparsers.add_parser(
        "width",
        help="is a finite network wide enough for its linearization? (digits data set)",
        description=(
            "Trains an MLP in the NTK parameterization at several widths and seeds on "
            "scikit-learn's digits, compares it with tangentflow's linearized prediction "
            "from the same initialization, and reports the RMSE, the kernel's distance to "
            "the infinite-width NTK, the fitted exponents and the adequate width."
        ),
    )
    p.add_argument(
        "--n-train",
        metavar="N",
        type=int_arg("an integer", 10, 1700),
        default=300,
        help="training images (10 to 1700; default 300)",
    )
    p.add_argument(
        "--n-test",
        metavar="M",
        type=int_arg("an integer", 1, 1787),
        default=None,
        help="test images (default: all the others)",
    )
    p.add_argument(
        "--hidden-layers",
        metavar="L",
        type=int_arg("an integer", 1, 20),
        default=2,
        help="hidden layers (1 to 20; default 2)",
    )
    p.add_argument(
        "--activation", choices=("relu", "erf"), default="relu", help="activation (default relu)"
    )
    p.add_argument(
        "--widths",
        metavar="W1,W2,...",
        type=_widths_arg,
        default=[64, 128, 256, 512, 1024, 2048],
        help="comma-separated widths (default 64,128,256,512,1024,2048)",
    )
    p.add_argument(
        "--seeds",
        metavar="S",
        type=int_arg("an integer", 1, 100),
        default=2,
        help="initializations per width (default 2)",
    )
    p.add_argument(
        "--steps",
        metavar="T",
        type=int_arg("an integer", 1, 100_000),
        default=300,
        help="full-batch gradient-descent steps (default 300)",
    )
    p.add_argument(
        "--tol",
        type=float_arg(0.0, 1.0),
        default=0.05,
        help="adequate width: rmse/movement <= tol (default 0.05)",
    )
    p.add_argument(
        "--lr-fraction",
        metavar="F",
        type=float_arg(0.0, 10.0),
        default=0.5,
        help="learning rate as a fraction of max_learning_rate (default 0.5; "
        "a warning above 0.5, an error at >= 1 unless --force)",
    )
    p.add_argument("--force", action="store_true", help="allow --lr-fraction >= 1")
    p.add_argument(
        "--bisect",
        metavar="B",
        type=int_arg("an integer", 0, 20),
        default=3,
        help="extra widths trained to bisect the adequate width (default 3)",
    )
    p.add_argument(
        "--target",
        choices=("parity", "onehot"),
        default="parity",
        help="parity: one output, +1 even / -1 odd (default); onehot: ten outputs",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="precision of the networks (default float32; kernels are summed and "
        "factorized in float64)",
    )
    p.add_argument(
        "--b-std",
        type=float_arg(0.0, 100.0, closed_lo=True),
        default=0.0,
        help="bias standard deviation (default 0)",
    )
    add_output_option(
        p,
        "--plot",
        metavar="PNG",
        suffix=".png",
        help=f"write the figure to this PNG file (default {DEFAULT_PLOT})",
    )
    p.add_argument(
        "--no-plot", dest="plot", action="store_const", const=None, help="do not write the figure"
    )
    add_output_option(p, "--json", metavar="FILE", help="write every number to this JSON file")
    p.add_argument(
        "--threads",
        metavar="N",
        type=int_arg("an integer", 1, 1024),
        default=None,
        help="threads of the Rust core (factorizations) and of BLAS (training, kernels)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(plot=DEFAULT_PLOT)


class _Progress:
    """``width W  seed s/S  step t/T`` on one stderr line, redrawn every few steps."""

    def __init__(self, seeds: int, enabled: bool, file: TextIO | None = None) -> None:
        self.seeds = seeds
        self.enabled = enabled
        self.file: TextIO = file if file is not None else sys.stderr
        self._last = 0.0

    def __call__(self, width: int, seed: int, step: int, steps: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if step not in (0, steps) and now - self._last < 0.25:
            return
        self._last = now
        line = f"\rwidth {width:>6}  seed {seed + 1}/{self.seeds}  step {step:>6}/{steps}"
        self.file.write(f"{line:<60}")
        self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.write("\r" + " " * 60 + "\r")
            self.file.flush()


def digits_data(
    n_train: int, n_test: int | None, target: str, seed: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Standardized digits at ``‖x‖² = d`` and their targets (train, test)."""
    x_tr, x_te, lab_tr, lab_te = load_digits_split(n_train, seed)
    if n_test is not None:
        x_te, lab_te = x_te[:n_test], lab_te[:n_test]
    scale = np.sqrt(x_tr.shape[1])
    x_tr, x_te = x_tr * scale, x_te * scale
    if target == "onehot":
        return x_tr, one_hot(lab_tr), x_te
    return x_tr, np.where(lab_tr % 2 == 0, 1.0, -1.0), x_te


def run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser | None = None,
    out: TextIO | None = None,
) -> int:
    """Runs the study for parsed ``args``; prints the table to ``out`` (stdout)."""
    import tangentflow

    from ..width import MLP, check

    out = out if out is not None else sys.stdout
    if args.n_test is not None and args.n_train + args.n_test > N_DIGITS:
        msg = f"argument --n-test: at most {N_DIGITS - args.n_train} with --n-train {args.n_train}"
        if parser is not None:
            parser.error(msg)
        raise ValueError(msg)
    if args.lr_fraction >= 1.0 and not args.force:
        msg = "argument --lr-fraction: must be < 1 (gradient descent diverges); pass --force"
        if parser is not None:
            parser.error(msg)
        raise ValueError(msg)
    limits: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if args.threads is not None:
        tangentflow.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            limits = threadpool_limits(args.threads, user_api="blas")
    progress = _Progress(args.seeds, not args.no_progress)
    try:
        x_tr, y_tr, x_te = digits_data(args.n_train, args.n_test, args.target)
        model = MLP(args.hidden_layers, args.activation, b_std=args.b_std, dtype=args.dtype)
        print(
            f"tangentflow width: digits, {len(x_tr)} train / {len(x_te)} test, target "
            f"{args.target}, widths {','.join(map(str, args.widths))}, {args.seeds} seed(s), "
            f"{args.steps} steps",
            file=out,
        )
        with limits:
            study = check(
                model,
                x_tr,
                y_tr,
                x_te,
                widths=args.widths,
                seeds=args.seeds,
                rate_fraction=args.lr_fraction,
                steps=args.steps,
                tol=args.tol,
                bisect=args.bisect,
                force=args.force,
                progress=progress,
            )
    except ImportError as e:
        progress.close()
        print(f"tangentflow width: error: {e}", file=sys.stderr)
        return 1
    progress.close()
    print(study.table(), file=out)
    if args.json is not None:
        with open(args.json, "w") as fh:
            json.dump(study.to_dict(), fh, indent=1)
        print(f"wrote {args.json}", file=out)
    if args.plot is not None:
        try:
            study.plot(args.plot)
        except ImportError:
            print("matplotlib is not installed: no figure (pip install matplotlib)", file=out)
        else:
            print(f"wrote {args.plot}", file=out)
    return 0
