"""The ``tangentflow`` command line: ``tangentflow demo``, ``bench`` and ``width``.

    tangentflow demo [--n-train 1000] [--hidden-layers 3] [--plot learning_curve.png]
                     [--json out.json] [--threads N]
    tangentflow bench [--sizes 1000,2000,4000] [--json out.json]
    tangentflow width [--widths 64,128,...] [--plot width_study.png] [--json out.json]
    tangentflow --version

Also ``python -m tangentflow ...``. Bad options exit with status 2 and a message on
stderr (argparse's convention), before any work: this includes every output path
(``--json``, ``--plot``), which must name a new or existing regular file in a writable
folder, and no two outputs may be the same file (``_outputs``). Errors while running exit
with status 1.

Layout: one module per subcommand (``demo``, ``bench``, ``width``), each with
``add_parser(subparsers)`` and ``run(args, parser)``; the shared pieces below them
(``_args``: argument types, ``_outputs``: output-path checks, ``_progress``, ``_digits``:
the data set of demo and width; bench's ``_measure``, ``_bench_inputs``,
``_bench_report``). The command line uses the public API of the package; nothing in the
package imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import bench, demo, width
from ._outputs import check_outputs

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``tangentflow`` parser with its subcommands."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="tangentflow",
        description="Training dynamics of wide networks in the kernel regime.",
    )
    parser.add_argument("--version", action="version", version=f"tangentflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,bench,width}")
    sub.required = True
    demo.add_parser(sub)
    bench.add_parser(sub)
    width.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tangentflow`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_outputs(parser, args)
    if args.command == "width":
        return width.run(args, parser)
    if args.command == "demo":
        return demo.run(args, parser)
    return bench.run(args, parser)
