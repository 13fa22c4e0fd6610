"""The ``tangentflow`` command line: ``tangentflow demo`` and ``tangentflow bench``.

    tangentflow demo [--n-train 1000] [--hidden-layers 3] [--plot learning_curve.png]
                     [--json out.json] [--threads N]
    tangentflow bench [--sizes 1000,2000,4000] [--json out.json]
    tangentflow --version

Also ``python -m tangentflow ...``. Bad options exit with status 2 and a message on
stderr (argparse's convention), before any work: this includes every output path
(``--json``, ``--plot``), which must name a new or existing regular file in a writable
folder, and no two outputs may be the same file. Errors while running exit with status 1.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys

__all__ = ["main", "build_parser", "add_output_option", "check_outputs"]

#: Options that name output files, by destination: registered by add_output_option and
#: checked by check_outputs for whatever subcommand was chosen.
_OUTPUTS = "_output_options"


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


def add_output_option(sub, option: str, *, metavar: str, help: str, suffix: str | None = None):
    """Adds an output-file option to a subparser; :func:`check_outputs` then checks it
    (and every other registered output of that subcommand) before any work."""
    dest = option.lstrip("-").replace("-", "_")
    sub.add_argument(option, metavar=metavar, dest=dest, help=help)
    outputs = list(sub.get_default(_OUTPUTS) or [])
    outputs.append((option, dest, suffix))
    sub.set_defaults(**{_OUTPUTS: outputs})


def build_parser() -> argparse.ArgumentParser:
    from . import MAX_THREADS, __version__
    from ._demo import MAX_HIDDEN_LAYERS, MIN_TEST, MIN_TRAIN, N_DIGITS

    parser = argparse.ArgumentParser(
        prog="tangentflow",
        description="Training dynamics of wide networks in the kernel regime.",
    )
    parser.add_argument("--version", action="version", version=f"tangentflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,bench,width}")
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
        type=_int_arg("a positive integer", 1, MAX_HIDDEN_LAYERS),
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
    threads_help = (
        f"threads of the Rust core (1 to {MAX_THREADS}; default: TANGENTFLOW_NUM_THREADS "
        "or all cores)"
    )
    demo.add_argument(
        "--threads",
        metavar="N",
        type=_int_arg("a positive integer", 1, MAX_THREADS),
        default=None,
        help=threads_help,
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
        help="comma-separated training-set sizes N, each 10 to 100000 (default 1000,2000,4000)",
    )
    add_output_option(bench, "--json", metavar="FILE", help="write every number to this JSON file")
    bench.add_argument(
        "--threads",
        metavar="N",
        type=_int_arg("a positive integer", 1, MAX_THREADS),
        default=None,
        help=threads_help,
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Internal knobs (tests shrink the problem with them); hidden from --help.
    hidden = argparse.SUPPRESS
    pos = _int_arg("a positive integer", 1)
    bench.add_argument("--test-points", type=pos, default=1000, help=hidden)
    bench.add_argument("--n-times", type=pos, default=100, help=hidden)
    bench.add_argument("--n-regs", type=pos, default=20, help=hidden)
    bench.add_argument("--repeats", type=pos, default=None, help=hidden)  # paired samples

    def _min_time(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if not 0.0 < v <= 60.0:
            raise argparse.ArgumentTypeError(f"expected seconds in (0, 60], got {text!r}")
        return v

    bench.add_argument("--min-time", type=_min_time, default=None, help=hidden)
    bench.add_argument("--no-memory", action="store_true", help=hidden)
    from .width._cli import add_parser as add_width_parser

    add_width_parser(sub)
    return parser


def output_problem(path: str, suffix: str | None = None) -> str | None:
    """Why ``path`` cannot be written as an output file, or None when it can.

    Checked without changing anything that exists: the name (empty, too long, wrong
    suffix), what it points at (a directory, a device such as /dev/full, a dangling
    symbolic link, anything but a regular file) and the folder (missing, not a folder,
    not writable: a new file is created there and removed again, which also catches
    read-only and virtual file systems such as /proc).
    """
    if path == "":
        return "the file name is empty"
    if "\0" in path:
        return "the file name contains a NUL character"
    if suffix is not None and not path.lower().endswith(suffix):
        return f"expected a file name ending in {suffix}"
    base = os.path.basename(path)
    if base in ("", ".", ".."):
        return "names a directory, not a file"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        name_max = os.pathconf(folder if os.path.isdir(folder) else "/", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(base)) > name_max:
        return f"the file name is longer than {name_max} bytes"
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return "is a directory"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file (a device, pipe or socket)"
        if not os.access(path, os.W_OK):
            return "the file is not writable"
        try:
            with open(path, "ab"):
                pass  # opens for writing without truncating or changing the contents
        except OSError as e:
            return os.strerror(e.errno) if e.errno else str(e)
        return None
    if not os.path.isdir(folder):
        return f"the folder {folder!r} does not exist"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return "the path is too long"
        return f"cannot create a file in {folder!r}: {os.strerror(e.errno) if e.errno else e}"
    os.close(fd)
    os.unlink(path)
    return None


def check_outputs(parser, args) -> None:
    """Exits with status 2 (argparse's convention) when an output option of the chosen
    subcommand names a file that cannot be written, or two of them name the same file."""
    seen: dict[str, str] = {}
    for option, dest, suffix in getattr(args, _OUTPUTS, None) or []:
        path = getattr(args, dest, None)
        if path is None:
            continue
        problem = output_problem(path, suffix)
        if problem is not None:
            parser.error(f"argument {option}: cannot write {path!r}: {problem}")
        real = os.path.realpath(path)
        if real in seen:
            parser.error(
                f"arguments {seen[real]} and {option} name the same file {path!r}: "
                "give each output its own file"
            )
        seen[real] = option


def main(argv=None) -> int:
    """Entry point of the ``tangentflow`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_outputs(parser, args)
    if args.command == "width":
        from .width._cli import run as run_width

        return run_width(args, parser)
    if args.command == "demo":
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
            **({} if args.min_time is None else {"min_time": args.min_time}),
            progress=not args.no_progress,
        )
    except (ImportError, RuntimeError, OSError) as e:
        print(f"tangentflow bench: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
