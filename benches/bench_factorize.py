"""Where the time of ``Predictor.factorize()`` goes, against ``numpy.linalg.eigh`` of the
same matrix (docs/performance.md).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benches/bench_factorize.py \
        --sizes 2000,4000 [--repeats 3] [--json out.json]

Per N (the kernel of ``tangentflow bench``), in paired rounds (docs/cli.md):

- ``numpy.linalg.eigh(K)`` (LAPACK ``dsyevd``);
- ``Predictor(K, y).factorize()`` end to end;
- the core's stages, timed inside one factorization (the private binding
  ``_core._eigh_timings_f64``): the scaling pass, the fused scale + symmetrize copy,
  the core's blocked tridiagonalization (faer's unblocked one for float32 or CPUs without
  AVX2+FMA), faer's tridiagonal divide and conquer, faer's back-transformation,
  and the rest (allocation, conversion);
- faer's own ``self_adjoint_evd`` (``staged=False``: the symmetrized copy handed to it; it
  copies it again and reduces it with its unblocked tridiagonalization), the composition
  the library used before;
- thread contention: ``factorize()`` right after a NumPy ``eigh`` (OpenBLAS's threads may
  still spin) against the same after a 0.5 s pause, and with NumPy's BLAS limited to one
  thread (threadpoolctl, when installed);
- the peak RSS of each path in a fresh child (in N²·8 bytes, beyond the inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from tangentflow import Predictor, _core, set_num_threads
from tangentflow.cli._bench_inputs import make_inputs
from tangentflow.cli._bench_report import machine_info
from tangentflow.cli._measure import interleaved, ratio_stats

_CHILD = r"""
import sys
import numpy as np
mode, path = sys.argv[1], sys.argv[2]
from tangentflow import Predictor, _core, set_num_threads
k = np.load(path)
y = np.zeros((k.shape[0], 1))
if mode == "eigh":
    np.linalg.eigh(k)
elif mode == "factorize":
    Predictor(k, y).factorize()
elif mode == "staged":
    _core._eigh_timings_f64(k, 0.0, True)
elif mode == "before":
    _core._eigh_timings_f64(k, 0.0, False)
peak = 0
with open("/proc/self/status") as fh:
    for line in fh:
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
print(peak)
"""


def _peak(mode: str, path: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, path], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1]) * 1024


def _memory(k: np.ndarray) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tangentflow-fact-") as d:
        path = os.path.join(d, "k.npy")
        np.save(path, k)
        base = _peak("baseline", path)
        unit = 8.0 * k.shape[0] ** 2
        return {
            m: (_peak(m, path) - base) / unit for m in ("eigh", "factorize", "staged", "before")
        }


def _one_size(
    n: int, pairs: int, min_time: float, memory: bool, cpu: bool = False, with_lapack: bool = False
) -> dict[str, Any]:
    k = make_inputs(n, 10)["k"]
    y = np.zeros((n, 1))
    stages: dict[str, list[dict[str, float]]] = {"after": [], "before": []}

    def after() -> None:
        stages["after"].append(dict(_core._eigh_timings_f64(k, 0.0, True, (0, 0, 0, 0), cpu)))

    def before() -> None:
        stages["before"].append(dict(_core._eigh_timings_f64(k, 0.0, False)))

    small = np.ascontiguousarray(k[:300, :300])

    def after_blas(pause: float) -> float:
        """factorize() timed alone, right after a NumPy eigh (OpenBLAS's threads spin for
        a while after a call) or after a pause."""
        np.linalg.eigh(small)
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        Predictor(k, y).factorize()
        return time.perf_counter() - t0

    lapack: dict[str, Any] = {}
    try:
        import scipy.linalg.lapack as sl
    except ImportError:
        sl = None
    if not with_lapack:
        sl = None
    if sl is not None:
        # LAPACK's stages of the same eigendecomposition, through SciPy (whose OpenBLAS is
        # not NumPy's): dsyevd, and its dsytrd (tridiagonalize) and dstedc (through
        # dstevd: divide and conquer from the identity, as dsyevd calls it); the rest of
        # dsyevd is dormtr (back-transform) and copies
        c, d, e, _, info = sl.dsytrd(k, lower=1)
        assert info == 0

        def dsytrd() -> Any:
            return sl.dsytrd(k, lower=1)

        def dstevd() -> Any:
            return sl.dstevd(d, e, compute_v=1)

        def dsyevd() -> Any:
            return sl.dsyevd(k, compute_v=1, lower=1)

        lapack = {"lapack_dsyevd": dsyevd, "lapack_dsytrd": dsytrd, "lapack_dstedc": dstevd}
    fns = {
        **lapack,
        "eigh": lambda: np.linalg.eigh(k),
        "factorize": lambda: Predictor(k, y).factorize(),
        "staged": after,
        "before": before,
    }
    samples, _, _ = interleaved(fns, pairs, min_time, time.process_time if cpu else None)
    res: dict[str, Any] = {"n": n, "samples_s": samples, "clock": "cpu" if cpu else "wall"}
    res["medians_s"] = {name: float(np.median(s)) for name, s in samples.items()}
    res["ratios"] = {
        "factorize_vs_eigh": ratio_stats(samples["factorize"], samples["eigh"]),
        "staged_vs_eigh": ratio_stats(samples["staged"], samples["eigh"]),
        "before_vs_eigh": ratio_stats(samples["before"], samples["eigh"]),
        "staged_vs_before": ratio_stats(samples["staged"], samples["before"]),
    }
    # the stage medians (over every factorization timed, calibration included)
    res["stages_s"] = {
        which: {key: float(np.median([s[key] for s in lst])) for key in lst[0]}
        for which, lst in stages.items()
    }
    if memory:
        res["memory_n2"] = _memory(k)
    if cpu:  # one thread everywhere: no contention to measure
        return res
    # contention: the factorization right after a BLAS call, vs after a pause (alternating)
    right_after, paused = [], []
    for _ in range(pairs):
        right_after.append(after_blas(0.0))
        paused.append(after_blas(0.5))
    res["contention"] = {
        "after_blas_call_s": float(np.median(right_after)),
        "after_pause_s": float(np.median(paused)),
        "samples_s": [right_after, paused],
    }
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        res["contention"]["blas_one_thread_s"] = None
    else:
        t = []
        with threadpool_limits(limits=1, user_api="blas"):
            for _ in range(pairs):
                t0 = time.perf_counter()
                Predictor(k, y).factorize()
                t.append(time.perf_counter() - t0)
        res["contention"]["blas_one_thread_s"] = float(np.median(t))
    return res


#: parameter sets compared by --tune: (block size of the back-transformation, recursion
#: threshold of the divide and conquer, parallel threshold and panel width of the
#: tridiagonalization), 0 = the default
TUNINGS = {
    "default": (0, 0, 0, 0),
    "block 64": (64, 0, 0, 0),
    "block 256": (256, 0, 0, 0),
    "recursion 64": (0, 64, 0, 0),
    "recursion 256": (0, 256, 0, 0),
    "par threshold 16·256": (0, 0, 16 * 256, 0),
    "par threshold 1024·256": (0, 0, 1024 * 256, 0),
    "panel 16": (0, 0, 0, 16),
    "panel 64": (0, 0, 0, 64),
}


def _tune(n: int, pairs: int, min_time: float, cpu: bool = False) -> dict[str, Any]:
    """The staged factorization under each of TUNINGS, in paired rounds."""
    k = make_inputs(n, 10)["k"]
    stages: dict[str, list[dict[str, float]]] = {name: [] for name in TUNINGS}

    def make(name: str) -> Any:
        def f() -> None:
            stages[name].append(dict(_core._eigh_timings_f64(k, 0.0, True, TUNINGS[name], cpu)))

        return f

    clock = time.process_time if cpu else None
    samples, _, _ = interleaved({name: make(name) for name in TUNINGS}, pairs, min_time, clock)
    base = samples["default"]
    return {
        "n": n,
        "samples_s": samples,
        "vs_default": {name: ratio_stats(s, base) for name, s in samples.items()},
        "stages_s": {
            name: {key: float(np.median([s[key] for s in lst])) for key in lst[0]}
            for name, lst in stages.items()
        },
    }


def _report(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "bench_factorize: where factorize() spends its time, vs numpy.linalg.eigh",
        f"date {info['date']}; {info['cpu']} ({info['cpu_count']} CPUs); numpy {info['numpy']}; "
        f"tangentflow {info['tangentflow']} ({info['tangentflow_build']}, "
        f"{info['tangentflow_threads']} threads); BLAS {info['blas']}; "
        f"env {info['openblas_env'] or 'OPENBLAS_* unset'}",
    ]
    for r in result["sizes"]:
        med = r["medians_s"]
        clock = "process CPU seconds, one thread" if r["clock"] == "cpu" else "wall seconds"
        lines += ["", f"N = {r['n']}  (medians of {result['pairs']} paired rounds; {clock})"]
        for key, st in r["ratios"].items():
            lines.append(f"  {key:22} {st['median']:.3f}x ({st['min']:.3f}–{st['max']:.3f})")
        lines.append(f"  numpy eigh {med['eigh']:.3f} s, factorize() {med['factorize']:.3f} s")
        if "lapack_dsytrd" in med:
            rest = med["lapack_dsyevd"] - med["lapack_dsytrd"] - med["lapack_dstedc"]
            lines.append(
                f"  LAPACK through SciPy's BLAS: dsyevd {med['lapack_dsyevd']:.3f} s = dsytrd "
                f"{med['lapack_dsytrd']:.3f} s + dstedc {med['lapack_dstedc']:.3f} s + rest "
                f"(dormtr, copies) {rest:.3f} s"
            )
        if "memory_n2" in r:
            lines.append(
                "  peak RSS beyond the input (N²·8 B): "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["memory_n2"].items())
            )
        for which in ("before", "after"):
            st = r["stages_s"][which]
            total = sum(st.values())
            parts = ", ".join(f"{k} {v:.3f}" for k, v in st.items())
            lines.append(f"  stages {which:6} (sum {total:.3f} s): {parts}")
        c = r.get("contention")
        if c is None:
            continue
        one = c["blas_one_thread_s"]
        lines.append(
            f"  contention: factorize right after a BLAS call {c['after_blas_call_s']:.3f} s "
            f"(a 300x300 eigh), after it and a 0.5 s pause {c['after_pause_s']:.3f} s, "
            f"BLAS limited to 1 thread {'-' if one is None else f'{one:.3f} s'}"
        )
    for r in result.get("tune", []):
        lines += ["", f"N = {r['n']}: stage parameters, time / the default (paired rounds)"]
        for name, st in r["vs_default"].items():
            stg = r["stages_s"][name]
            lines.append(
                f"  {name:24} {st['median']:.3f} ({st['min']:.3f}–{st['max']:.3f})  "
                f"tridiag {stg['tridiagonalize']:.3f} s, D&C {stg['tridiagonal_solve']:.3f} s, "
                f"back {stg['back_transform']:.3f} s"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_factorize.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,4000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--tune", action="store_true", help="only compare the stages' parameters")
    parser.add_argument(
        "--lapack", action="store_true", help="also time LAPACK's stages through SciPy"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="one thread for tangentflow and NumPy's BLAS, timed in process CPU seconds "
        "(robust to other processes' load)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result: dict[str, Any] = {"machine": machine_info(), "pairs": args.repeats, "sizes": []}
    if args.cpu:
        from threadpoolctl import threadpool_limits

        try:
            import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, so the limit covers it)
        except ImportError:
            pass
        set_num_threads(1)
        threadpool_limits(limits=1, user_api="blas")
        result["machine"] = machine_info()
    for n in sizes:
        print(f"bench_factorize: N = {n} ...", file=sys.stderr, flush=True)
        if args.tune:
            result.setdefault("tune", []).append(_tune(n, args.repeats, args.min_time, args.cpu))
        else:
            result["sizes"].append(
                _one_size(n, args.repeats, args.min_time, not args.no_memory, args.cpu, args.lapack)
            )
    print(_report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=float)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
