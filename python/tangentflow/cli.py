"""The ``tangentflow`` command line: ``tangentflow demo`` and ``tangentflow bench``.

    tangentflow demo [--n-train 1000] [--hidden-layers 3] [--plot learning_curve.png]
                     [--json out.json] [--threads N]
    tangentflow bench [--sizes 1000,2000,4000] [--json out.json]

Also ``python -m tangentflow ...``. Bad options exit with status 2 and a message on
stderr (argparse's convention); errors while running exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "build_parser"]


def _int_arg(kind: str, minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {kind} (>= {minimum}), got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected {kind} (<= {maximum}), got {value}")
        return value

    parse.__name__ = kind  # argparse names the type in some messages
    return parse


def _sizes_arg(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes, got {text!r}")
    parse = _int_arg("a size >= 10", 10, 100_000)
    return [parse(p) for p in parts]


def build_parser() -> argparse.ArgumentParser:
    from ._demo import MIN_TEST, MIN_TRAIN, N_DIGITS

    parser = argparse.ArgumentParser(
        prog="tangentflow",
        description="Training dynamics of wide networks in the kernel regime.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{demo,bench}")
    sub.required = True

    demo = sub.add_parser(
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
        type=_int_arg("a positive integer", 1),
        default=1000,
        help=f"training examples (the rest of the {N_DIGITS} images are the test set; "
        f"{MIN_TRAIN} to {N_DIGITS - MIN_TEST}; default 1000)",
    )
    demo.add_argument(
        "--hidden-layers",
        metavar="L",
        type=_int_arg("a positive integer", 1, 100),
        default=3,
        help="hidden [Dense, ReLU] layers (default 3)",
    )
    demo.add_argument("--plot", metavar="PNG", help="write the learning curves to this PNG")
    demo.add_argument("--json", metavar="FILE", help="write every number to this JSON file")
    demo.add_argument(
        "--threads",
        metavar="N",
        type=_int_arg("a positive integer", 1, 1024),
        default=None,
        help="threads of the Rust core (default: TANGENTFLOW_NUM_THREADS or all cores)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")

    bench = sub.add_parser(
        "bench",
        help="end-to-end benchmark against NumPy/SciPy on the same matrices",
        description=(
            "Times tangentflow's first call, repeat call, t=inf, a regularization sweep, small "
            "problems and peak memory against numpy.linalg.eigh / scipy Cholesky, and prints "
            "the ratios with their targets."
        ),
    )
    bench.add_argument(
        "--sizes",
        metavar="N1,N2,...",
        type=_sizes_arg,
        default=[1000, 2000, 4000],
        help="comma-separated training-set sizes N (default 1000,2000,4000)",
    )
    bench.add_argument("--json", metavar="FILE", help="write every number to this JSON file")
    bench.add_argument(
        "--threads",
        metavar="N",
        type=_int_arg("a positive integer", 1, 1024),
        default=None,
        help="threads of the Rust core (default: TANGENTFLOW_NUM_THREADS or all cores)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Internal knobs (tests shrink the problem with them); hidden from --help.
    hidden = argparse.SUPPRESS
    pos = _int_arg("a positive integer", 1)
    bench.add_argument("--test-points", type=pos, default=1000, help=hidden)
    bench.add_argument("--n-times", type=pos, default=100, help=hidden)
    bench.add_argument("--n-regs", type=pos, default=20, help=hidden)
    bench.add_argument("--repeats", type=pos, default=None, help=hidden)
    bench.add_argument("--no-memory", action="store_true", help=hidden)
    return parser


def _check_output(parser, option: str, path, suffix: str | None = None) -> None:
    """Refuses an output path before any work: wrong extension or an unwritable folder."""
    if path is None:
        return
    if suffix is not None and not str(path).lower().endswith(suffix):
        parser.error(f"argument {option}: expected a {suffix} file name, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        parser.error(f"argument {option}: cannot write to folder {folder!r}")


def main(argv=None) -> int:
    """Entry point of the ``tangentflow`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_output(parser, "--json", args.json)
    if args.command == "demo":
        _check_output(parser, "--plot", args.plot, ".png")
        from ._demo import MIN_TEST, MIN_TRAIN, N_DIGITS, run_demo

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
    from ._bench import run_bench

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
            progress=not args.no_progress,
        )
    except (ImportError, RuntimeError, OSError) as e:
        print(f"tangentflow bench: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
