"""Argument types shared by the subcommands: bounded integers and numbers, ``--threads``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_arg", "float_arg", "add_threads_option"]


def int_arg(kind: str, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[minimum, maximum]``; ``kind`` names
    the expected value in the error message."""

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


def float_arg(lo: float, hi: float, *, closed_lo: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting numbers in ``(lo, hi]`` (``[lo, hi]`` when
    ``closed_lo``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((lo <= v if closed_lo else lo < v) and v <= hi):
            bracket = "[" if closed_lo else "("
            raise argparse.ArgumentTypeError(
                f"expected a number in {bracket}{lo}, {hi}], got {text!r}"
            )
        return v

    parse.__name__ = "number"
    return parse


def add_threads_option(sub: argparse.ArgumentParser) -> None:
    """``--threads N``: threads of the Rust core (``tangentflow.set_num_threads``)."""
    from .. import MAX_THREADS

    sub.add_argument(
        "--threads",
        metavar="N",
        type=int_arg("a positive integer", 1, MAX_THREADS),
        default=None,
        help=(
            f"threads of the Rust core (1 to {MAX_THREADS}; default: TANGENTFLOW_NUM_THREADS "
            "or all cores)"
        ),
    )
