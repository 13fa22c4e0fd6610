"""How ``tangentflow bench`` measures (docs/cli.md): timed samples of at least
``MIN_SAMPLE_S`` each, measurements interleaved in rounds (baseline and tangentflow
alternating, the order reversed every other round), ratios as medians of the per-round
ratios with their spread, and the peak memory of a call in a fresh subprocess.

Every timing function takes a ``clock`` (``time.perf_counter`` by default) so that tests
can drive it with a fake one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_SAMPLE_S",
    "DEFAULT_PAIRS",
    "Clock",
    "calibrate",
    "sample",
    "best",
    "interleaved",
    "ratio_stats",
    "paired",
    "peak_memory",
]

T = TypeVar("T")
U = TypeVar("U")
FloatArray = npt.NDArray[np.float64]
Clock = Callable[[], float]


# -- timed samples ----------------------------------------------------------------------------
#: Every timed sample lasts at least this long (a call shorter than that is repeated within
#: the sample and the mean per call is taken), so timer resolution and scheduler noise
#: stay small against it.
MIN_SAMPLE_S = 0.2
#: Paired samples per ratio (baseline and tangentflow alternating); the median is reported.
DEFAULT_PAIRS = 3


def _now() -> float:
    return time.perf_counter()


def calibrate(fn: Callable[[], T], min_time: float, clock: Clock | None = None) -> tuple[int, T]:
    """``(calls per sample, output)``: enough calls that one sample takes ``>= min_time``
    (the first call also warms caches and imports)."""
    clock = clock or _now
    t0 = clock()
    out = fn()
    once = clock() - t0
    if once >= min_time:
        return 1, out
    t0 = clock()
    fn()
    once = max(min(once, clock() - t0), 1e-7)
    return max(1, math.ceil(1.2 * min_time / once)), out


def sample(fn: Callable[[], T], calls: int, clock: Clock | None = None) -> tuple[float, T]:
    """Mean seconds per call over ``calls`` calls, and the last output."""
    clock = clock or _now
    t0 = clock()
    for _ in range(calls):
        out = fn()
    return (clock() - t0) / calls, out


def best(
    fn: Callable[[], T],
    repeats: int,
    min_time: float = MIN_SAMPLE_S,
    clock: Clock | None = None,
) -> tuple[float, T]:
    """Median seconds per call over ``repeats`` samples of ``>= min_time`` each."""
    calls, out = calibrate(fn, min_time, clock)
    samples: list[float] = []
    for _ in range(max(1, repeats)):
        t, out = sample(fn, calls, clock)
        samples.append(t)
    return float(np.median(samples)), out


def interleaved(
    fns: Mapping[str, Callable[[], Any]],
    rounds: int,
    min_time: float = MIN_SAMPLE_S,
    clock: Clock | None = None,
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, Any]]:
    """Times every function of ``fns`` in ``rounds`` rounds: each is calibrated once (its
    calls per sample, a warm-up), then every round takes one sample of each, in the order
    of ``fns`` in even rounds and reversed in odd ones, so a baseline listed next to its
    tangentflow measurement alternates with it and slow drifts of the machine cancel in the
    per-round ratios. Returns ``(seconds per call of each round, calls per sample, last
    outputs)``, keyed by name."""
    names = list(fns)
    calls: dict[str, int] = {}
    outs: dict[str, Any] = {}
    for name in names:
        calls[name], outs[name] = calibrate(fns[name], min_time, clock)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, rounds)):
        for name in names if r % 2 == 0 else names[::-1]:
            t, outs[name] = sample(fns[name], calls[name], clock)
            samples[name].append(t)
    return samples, calls, outs


def ratio_stats(num: Sequence[float], den: Sequence[float]) -> dict[str, Any]:
    """The paired ratios ``num[i] / den[i]`` (samples of the same round): their median,
    min, max and quartiles, with the raw samples."""
    if len(num) != len(den) or not num:
        raise ValueError(f"paired samples differ in length: {len(num)} and {len(den)}")
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    q1, med, q3 = (float(q) for q in np.percentile(ratios, [25, 50, 75]))
    return {
        "median": med,
        "min": float(min(ratios)),
        "max": float(max(ratios)),
        "q1": q1,
        "q3": q3,
        "pairs": len(ratios),
        "ratios": ratios,
        "samples_s": [list(map(float, num)), list(map(float, den))],
    }


def paired(
    fn: Callable[[], T],
    base: Callable[[], U],
    pairs: int,
    min_time: float = MIN_SAMPLE_S,
    clock: Clock | None = None,
) -> tuple[float, float, dict[str, Any], T, U]:
    """Times ``fn`` against ``base`` in alternating samples (base, fn, fn, base, ...), each
    sample ``>= min_time``, and returns ``(fn seconds, base seconds, ratio stats, fn output,
    base output)``: seconds are medians per call, the ratio is the median of the paired
    ratios, with their min and max (the spread between runs)."""
    n_fn, out = calibrate(fn, min_time, clock)
    n_base, ref = calibrate(base, min_time, clock)
    fns: dict[str, Callable[[], Any]] = {"base": base, "fn": fn}
    samples: dict[str, list[float]] = {"base": [], "fn": []}
    for r in range(max(1, pairs)):
        for name in ("base", "fn") if r % 2 == 0 else ("fn", "base"):
            t, o = sample(fns[name], n_base if name == "base" else n_fn, clock)
            samples[name].append(t)
            if name == "fn":
                out = o
            else:
                ref = o
    stats = ratio_stats(samples["fn"], samples["base"])
    stats["calls_per_sample"] = [n_fn, n_base]
    return float(np.median(samples["fn"])), float(np.median(samples["base"])), stats, out, ref


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
