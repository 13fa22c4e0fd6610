"""How ``tangentflow bench`` measures (docs/cli.md): timed samples of at least
``MIN_SAMPLE_S`` each, baseline and tangentflow samples alternating in pairs, and the peak
memory of a call in a fresh subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_SAMPLE_S", "DEFAULT_PAIRS", "calibrate", "sample", "best", "paired", "peak_memory"]

T = TypeVar("T")
U = TypeVar("U")
FloatArray = npt.NDArray[np.float64]


# -- timed samples ----------------------------------------------------------------------------
#: Every timed sample lasts at least this long (a call shorter than that is repeated within
#: the sample and the mean per call is taken), so timer resolution and scheduler noise
#: stay small against it.
MIN_SAMPLE_S = 0.2
#: Paired samples per ratio (baseline and tangentflow alternating); the median is reported.
DEFAULT_PAIRS = 3


def calibrate(fn: Callable[[], T], min_time: float) -> tuple[int, T]:
    """``(calls per sample, output)``: enough calls that one sample takes ``>= min_time``
    (the first call also warms caches and imports)."""
    t0 = time.perf_counter()
    out = fn()
    once = time.perf_counter() - t0
    if once >= min_time:
        return 1, out
    t0 = time.perf_counter()
    fn()
    once = max(min(once, time.perf_counter() - t0), 1e-7)
    return max(1, math.ceil(1.2 * min_time / once)), out


def sample(fn: Callable[[], T], calls: int) -> tuple[float, T]:
    """Mean seconds per call over ``calls`` calls, and the last output."""
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn()
    return (time.perf_counter() - t0) / calls, out


def best(fn: Callable[[], T], repeats: int, min_time: float = MIN_SAMPLE_S) -> tuple[float, T]:
    """Median seconds per call over ``repeats`` samples of ``>= min_time`` each."""
    calls, out = calibrate(fn, min_time)
    samples: list[float] = []
    for _ in range(max(1, repeats)):
        t, out = sample(fn, calls)
        samples.append(t)
    return float(np.median(samples)), out


def paired(
    fn: Callable[[], T], base: Callable[[], U], pairs: int, min_time: float = MIN_SAMPLE_S
) -> tuple[float, float, dict[str, Any], T, U]:
    """Times ``fn`` against ``base`` in alternating samples (base, fn, fn, base, ...), each
    sample ``>= min_time``, and returns ``(fn seconds, base seconds, ratio stats, fn output,
    base output)``: seconds are medians per call, the ratio is the median of the paired
    ratios, with their min and max (the spread between runs)."""
    n_fn, out = calibrate(fn, min_time)
    n_base, ref = calibrate(base, min_time)
    t_fn: list[float] = []
    t_base: list[float] = []
    ratios: list[float] = []
    for i in range(max(1, pairs)):
        if i % 2 == 0:  # base first in even pairs, fn first in odd ones
            tb, ref = sample(base, n_base)
            tf, out = sample(fn, n_fn)
        else:
            tf, out = sample(fn, n_fn)
            tb, ref = sample(base, n_base)
        t_base.append(tb)
        t_fn.append(tf)
        ratios.append(tf / tb)
    stats: dict[str, Any] = {
        "median": float(np.median(ratios)),
        "min": float(np.min(ratios)),
        "max": float(np.max(ratios)),
        "pairs": len(ratios),
        "calls_per_sample": [n_fn, n_base],
    }
    return float(np.median(t_fn)), float(np.median(t_base)), stats, out, ref


# -- peak memory -------------------------------------------------------------------------------
_CHILD = r"""
import json, resource, sys
import numpy as np
mode, folder = sys.argv[1], sys.argv[2]
import tangentflow
from tangentflow import Predictor
a = {n: np.load(f"{folder}/{n}.npy") for n in ("k", "k_te", "y", "f0", "g0", "ts")}
if mode == "first":
    out = Predictor(a["k"], a["y"]).at(
        a["ts"], k_test_train=a["k_te"], fx_train_0=a["f0"], fx_test_0=a["g0"]
    )
elif mode == "eigh":
    w, v = np.linalg.eigh(a["k"])
# VmHWM is the peak of this process image only. ru_maxrss is not: Linux carries the
# peak of the (v)forked parent's memory over the exec, so a child of a big process
# would report the parent's size.
peak = None
try:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
except OSError:
    pass
if peak is None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"maxrss_kb": peak}))
"""


def _child_rss(mode: str, folder: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, folder],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child ({mode}) failed: {proc.stderr.strip()[-500:]}")
    kb: int = json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_kb"]
    return kb * 1024


def peak_memory(inp: dict[str, FloatArray], ts: FloatArray) -> tuple[int, int]:
    """Peak RSS beyond the inputs, in bytes: first call and numpy eigh (fresh children)."""
    with tempfile.TemporaryDirectory(prefix="tangentflow-bench-") as folder:
        for name in ("k", "k_te", "y", "f0", "g0"):
            np.save(os.path.join(folder, f"{name}.npy"), inp[name])
        np.save(os.path.join(folder, "ts.npy"), ts)
        base = _child_rss("baseline", folder)
        first = _child_rss("first", folder)
        eigh = _child_rss("eigh", folder)
    return first - base, eigh - base
