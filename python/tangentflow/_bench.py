"""``tangentflow bench``: the end-to-end benchmark of the Predictor against NumPy/SciPy.

Every ratio is measured in one run on the same matrices (docs/numerics.md §14): each
figure is a sample of at least ``MIN_SAMPLE_S`` = 0.2 s (a shorter call is repeated within
the sample), baseline and tangentflow samples alternate, and the ratio reported is the
median of ``DEFAULT_PAIRS`` = 3 paired ratios with their min–max spread, so a verdict does
not flip between runs. For each N,
an analytic ReLU NTK of random unit-norm inputs (3 hidden layers), R = 10 outputs,
M = 1000 test points and T = 100 times on a log grid:

(a) ``numpy.linalg.eigh(K)``, the floor of any finite-time prediction;
(b) the first call ``Predictor(K, y).at(ts, k_test_train=..., fx_train_0=..., fx_test_0=...)``;
(c) a repeat call with 100 new times through ``p.test_set(k_test_train).at(...)``;
(d) ``at(None)`` vs ``scipy.linalg.cho_factor`` + ``cho_solve`` + the test product;
(e) a sweep over 20 ``diag_reg`` values × 100 times with a test set (``with_params``);
(f) small problems (N = 100, 10 times, 50 test points) vs plain NumPy;
(g) the peak RSS of the first call, measured in a fresh subprocess, beyond the inputs.

Run ``tangentflow bench --sizes 1000,2000`` (or ``python benches/bench_predict.py``).
This machine's ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` slow NumPy's baseline; unset
them for the benchmark only: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE tangentflow bench``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from ._demo import Progress

__all__ = ["run_bench", "main", "TARGETS", "make_inputs"]

#: Targets of the performance issue: (kind, bound). "ratio": time / baseline <= bound.
TARGETS = {
    "first_vs_eigh": 1.3,
    "repeat_vs_first": 0.08,
    "inf_vs_cholesky": 1.5,
    "sweep_vs_eigh": 2.0,
    "memory_n2": 6.0,
    "small_vs_numpy": 1.5,
}
N_OUTPUTS = 10
D_INPUT = 64
HIDDEN_LAYERS = 3


# -- inputs ------------------------------------------------------------------------------------
def _relu_ntk_numpy(x1, x2, hidden_layers):
    """Analytic ReLU NTK (arc-cosine recursion), NumPy fallback of tangentflow.kernels."""
    d = x1.shape[1]
    k = x1 @ x2.T / d
    q1 = np.einsum("ij,ij->i", x1, x1) / d
    q2 = np.einsum("ij,ij->i", x2, x2) / d
    theta = k.copy()
    for _ in range(hidden_layers):
        s = np.sqrt(np.outer(q1, q2))
        c = np.clip(k / s, -1.0, 1.0)
        a = np.arccos(c)
        k = s * (np.sqrt(1.0 - c * c) + (np.pi - a) * c) / (2 * np.pi)
        theta = k + (np.pi - a) / (2 * np.pi) * theta
        q1, q2 = q1 / 2, q2 / 2
    return theta


def _ntk(x1, x2=None):
    try:
        from .kernels import fully_connected
    except ImportError:
        return _relu_ntk_numpy(x1, x1 if x2 is None else x2, HIDDEN_LAYERS)
    return fully_connected(x1, x2, hidden_layers=HIDDEN_LAYERS, get="ntk")


def make_inputs(n: int, m: int, r: int = N_OUTPUTS, seed: int = 0) -> dict:
    """A realistic NTK-like problem: kernel, test kernel, targets, initial outputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, D_INPUT))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return {
        "k": np.ascontiguousarray(_ntk(x[:n])),
        "k_te": np.ascontiguousarray(_ntk(x[n:], x[:n])),
        "y": rng.standard_normal((n, r)),
        "f0": 0.1 * rng.standard_normal((n, r)),
        "g0": 0.1 * rng.standard_normal((m, r)),
    }


def _times(k, n_times, n_outputs, seed=0):
    """A log grid spanning the dynamics: from before the fastest mode moves to after the
    slowest has relaxed (times in steps at learning rate 1, n = N·R)."""
    w_max = float(np.trace(k))  # >= μ_max, cheap
    n = k.shape[0] * n_outputs
    ts = np.geomspace(1e-2 * n / w_max, 1e6 * n / w_max, n_times)
    jitter = np.random.default_rng(seed).uniform(0.9, 1.1, n_times)
    return ts * jitter


# -- timing helpers ----------------------------------------------------------------------------
#: Every timed sample lasts at least this long (a call shorter than that is repeated within
#: the sample and the mean per call is taken), so timer resolution and scheduler noise
#: stay small against it.
MIN_SAMPLE_S = 0.2
#: Paired samples per ratio (baseline and tangentflow alternating); the median is reported.
DEFAULT_PAIRS = 3


def _calibrate(fn, min_time):
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


def _sample(fn, calls):
    """Mean seconds per call over ``calls`` calls, and the last output."""
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn()
    return (time.perf_counter() - t0) / calls, out


def _best(fn, repeats, min_time=MIN_SAMPLE_S):
    """Median seconds per call over ``repeats`` samples of ``>= min_time`` each."""
    calls, out = _calibrate(fn, min_time)
    samples = []
    for _ in range(max(1, repeats)):
        t, out = _sample(fn, calls)
        samples.append(t)
    return float(np.median(samples)), out


def _paired(fn, base, pairs, min_time=MIN_SAMPLE_S):
    """Times ``fn`` against ``base`` in alternating samples (base, fn, fn, base, ...), each
    sample ``>= min_time``, and returns ``(fn seconds, base seconds, ratio stats, fn output,
    base output)``: seconds are medians per call, the ratio is the median of the paired
    ratios, with their min and max (the spread between runs)."""
    n_fn, out = _calibrate(fn, min_time)
    n_base, ref = _calibrate(base, min_time)
    t_fn, t_base, ratios = [], [], []
    for i in range(max(1, pairs)):
        order = ((base, n_base, t_base), (fn, n_fn, t_fn))
        for f, calls, acc in order if i % 2 == 0 else order[::-1]:
            t, o = _sample(f, calls)
            acc.append(t)
            if f is fn:
                out = o
            else:
                ref = o
        ratios.append(t_fn[-1] / t_base[-1])
    stats = {
        "median": float(np.median(ratios)),
        "min": float(np.min(ratios)),
        "max": float(np.max(ratios)),
        "pairs": len(ratios),
        "calls_per_sample": [n_fn, n_base],
    }
    return float(np.median(t_fn)), float(np.median(t_base)), stats, out, ref


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


def _child_rss(mode, folder):
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, folder],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child ({mode}) failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_kb"] * 1024


def _memory(inp, ts):
    """Peak RSS beyond the inputs, in bytes: first call and numpy eigh (fresh children)."""
    with tempfile.TemporaryDirectory(prefix="tangentflow-bench-") as folder:
        for name in ("k", "k_te", "y", "f0", "g0"):
            np.save(os.path.join(folder, f"{name}.npy"), inp[name])
        np.save(os.path.join(folder, "ts.npy"), ts)
        base = _child_rss("baseline", folder)
        first = _child_rss("first", folder)
        eigh = _child_rss("eigh", folder)
    return first - base, eigh - base


# -- measurements -----------------------------------------------------------------------------
def _small(pairs, min_time):
    """(f): N=100, 10 times, 50 test points, vs eigh + matrix products in NumPy."""
    from tangentflow import Predictor

    inp = make_inputs(100, 50, seed=1)
    k, kte, y, f0, g0 = inp["k"], inp["k_te"], inp["y"], inp["f0"], inp["g0"]
    ts = _times(k, 10, N_OUTPUTS)
    n = y.size

    def numpy_impl():
        w, v = np.linalg.eigh(k)
        z = v.T @ (f0 - y)
        s = ts / n
        e = np.exp(-np.outer(s, w))  # (T, N)
        phi = -np.expm1(-np.outer(s, w)) / w
        train = y + v @ (e[:, :, None] * z)
        test = g0 - (kte @ v) @ (phi[:, :, None] * z)
        return train, test

    def tf():
        return Predictor(k, y).at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

    t_tf, t_np, stats, out, ref = _paired(tf, numpy_impl, pairs, min_time)
    err = max(float(np.max(np.abs(out.train - ref[0]))), float(np.max(np.abs(out.test - ref[1]))))
    return {
        "tangentflow_s": t_tf,
        "numpy_s": t_np,
        "ratio": stats["median"],
        "ratio_stats": stats,
        "max_abs_diff": err,
    }


def _one_size(n, m, n_times, n_regs, pairs, min_time, memory, step):
    from tangentflow import Predictor

    res = {"n": n, "m": m, "r": N_OUTPUTS, "t": n_times}
    with step(f"N={n}: inputs"):
        inp = make_inputs(n, m)
        k, kte, y, f0, g0 = inp["k"], inp["k_te"], inp["y"], inp["f0"], inp["g0"]
        ts = _times(k, n_times, N_OUTPUTS)
        ts2 = _times(k, n_times, N_OUTPUTS, seed=1)

    ratios = res["ratios"] = {}
    with step(f"N={n}: first call vs numpy eigh"):
        w = np.linalg.eigvalsh(k)
        res["cond"] = float(w[-1] / w[0]) if w[0] > 0 else float("inf")

        def first():
            return Predictor(k, y).at(ts, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

        def eigh():
            return np.linalg.eigh(k)

        res["first_s"], res["eigh_s"], ratios["first_vs_eigh"], out, _ = _paired(
            first, eigh, pairs, min_time
        )
        # breakdown (information): the factorization alone
        res["factorize_s"], _ = _best(lambda: Predictor(k, y).factorize(), pairs, min_time)

    with step(f"N={n}: repeat call"):
        p = Predictor(k, y)
        tset = p.test_set(kte, fx_test_0=g0)
        tset.at(ts, fx_train_0=f0)  # warm: factorization and K_te·V
        res["repeat_s"], _, ratios["repeat_vs_first"], rep, _ = _paired(
            lambda: tset.at(ts2, fx_train_0=f0), first, pairs, min_time
        )
        # information: the same call without asking for train outputs
        res["repeat_test_only_s"], _ = _best(lambda: tset.at(ts2, fx_train_0=None), pairs, min_time)

    with step(f"N={n}: t=None vs Cholesky"):
        # Well conditioned: the kernel itself when cond <= 1e5, else shifted to cond ~1e5.
        lam = 0.0 if res["cond"] <= 1e5 else float(w[-1]) * 1e-5
        res["inf_diag_reg"] = lam

        def tf_inf():
            p = Predictor(k, y, diag_reg=lam, diag_reg_absolute_scale=True)
            return p.at(None, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

        try:
            import scipy.linalg as sl
        except ImportError:
            sl = None
        if sl is None:
            res["inf_s"], _ = _best(tf_inf, pairs, min_time)
            res["cholesky_s"] = None
            res["cholesky_note"] = "scipy not installed: skipped"
        else:

            def chol():
                a = k + lam * np.eye(n) if lam else k
                c = sl.cho_factor(a, lower=True, overwrite_a=bool(lam), check_finite=False)
                x = sl.cho_solve(c, y - f0, check_finite=False)
                return g0 + kte @ x

            res["inf_s"], res["cholesky_s"], ratios["inf_vs_cholesky"], out_inf, ref = _paired(
                tf_inf, chol, pairs, min_time
            )
            res["inf_max_abs_diff"] = float(np.max(np.abs(out_inf.test - ref)))

    with step(f"N={n}: diag_reg sweep"):
        regs = np.geomspace(1e-6, 1e-1, n_regs)

        def sweep():
            # The sweep pattern of the docs: one test-set handle, with_params per value,
            # so the factorization and K_te·V are shared by all 20 members.
            p = Predictor(k, y)
            tset = p.test_set(kte, fx_test_0=g0)
            for lam_r in regs:
                tset.with_params(diag_reg=float(lam_r)).at(ts, fx_train_0=f0)
            return p.factorizations

        res["sweep_s"], _, ratios["sweep_vs_eigh"], nfact, _ = _paired(sweep, eigh, pairs, min_time)
        assert nfact == 1, f"the sweep ran {nfact} factorizations, expected 1"
        res["sweep_factorizations"] = nfact
        res["n_regs"] = n_regs

    if memory:
        with step(f"N={n}: peak memory"):
            first_b, eigh_b = _memory(inp, ts)
            unit = 8.0 * n * n
            res["memory_first_n2"] = first_b / unit
            res["memory_numpy_eigh_n2"] = eigh_b / unit
            res["memory_outputs_n2"] = 8.0 * n_times * N_OUTPUTS * (n + m) / unit
    return res


# -- report ----------------------------------------------------------------------------------
def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    import tangentflow

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tangentflow": tangentflow.__version__,
        "tangentflow_threads": tangentflow.get_num_threads(),
        "openblas_env": {
            v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ
        },
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {key: d.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:
        info["scipy"] = None
    return info


def _ratio_text(r, key, percent=False):
    st = r["ratios"][key]
    if percent:
        return f"{100 * st['median']:.1f}% ({100 * st['min']:.1f}–{100 * st['max']:.1f})"
    return f"{st['median']:.2f}x ({st['min']:.2f}–{st['max']:.2f})"


def _verdict(value, bound):
    if value is None:
        return "skip"
    return "pass" if value <= bound else "FAIL"


def _rows(r):
    """(label, tangentflow, baseline, ratio text, target text, verdict) for one size."""
    rows = []
    ratio = r["first_vs_eigh"] = r["ratios"]["first_vs_eigh"]["median"]
    rows.append(
        (
            "(b) first call vs (a) numpy eigh",
            f"{r['first_s']:.4f} s",
            f"eigh {r['eigh_s']:.4f} s",
            _ratio_text(r, "first_vs_eigh"),
            f"<= {TARGETS['first_vs_eigh']}x",
            _verdict(ratio, TARGETS["first_vs_eigh"]),
        )
    )
    rows.append(
        (
            "    of which Predictor.factorize()",
            f"{r['factorize_s']:.4f} s",
            f"eigh {r['eigh_s']:.4f} s",
            f"{r['factorize_s'] / r['eigh_s']:.2f}x",
            "(info)",
            "",
        )
    )
    ratio = r["repeat_vs_first"] = r["ratios"]["repeat_vs_first"]["median"]
    rows.append(
        (
            f"(c) repeat, {r['t']} new times",
            f"{r['repeat_s']:.4f} s",
            f"first {r['first_s']:.4f} s",
            _ratio_text(r, "repeat_vs_first", percent=True),
            f"<= {100 * TARGETS['repeat_vs_first']:.0f}%",
            _verdict(ratio, TARGETS["repeat_vs_first"]),
        )
    )
    rows.append(
        (
            "    same with fx_train_0=None",
            f"{r['repeat_test_only_s']:.4f} s",
            f"first {r['first_s']:.4f} s",
            f"{100 * r['repeat_test_only_s'] / r['first_s']:.1f}%",
            "(info)",
            "",
        )
    )
    if r.get("cholesky_s"):
        ratio = r["ratios"]["inf_vs_cholesky"]["median"]
        base = f"cholesky {r['cholesky_s']:.4f} s"
    else:
        ratio, base = None, r.get("cholesky_note", "skipped")
    r["inf_vs_cholesky"] = ratio
    rows.append(
        (
            "(d) t=None vs scipy cho_solve",
            f"{r['inf_s']:.4f} s",
            base,
            "-" if ratio is None else _ratio_text(r, "inf_vs_cholesky"),
            f"<= {TARGETS['inf_vs_cholesky']}x",
            _verdict(ratio, TARGETS["inf_vs_cholesky"]),
        )
    )
    ratio = r["sweep_vs_eigh"] = r["ratios"]["sweep_vs_eigh"]["median"]
    rows.append(
        (
            f"(e) sweep {r['n_regs']} diag_reg x {r['t']} t",
            f"{r['sweep_s']:.4f} s",
            f"eigh {r['eigh_s']:.4f} s",
            _ratio_text(r, "sweep_vs_eigh"),
            f"<= {TARGETS['sweep_vs_eigh']}x",
            _verdict(ratio, TARGETS["sweep_vs_eigh"]),
        )
    )
    if "memory_first_n2" in r:
        rows.append(
            (
                "(g) peak RSS of first call",
                f"{r['memory_first_n2']:.2f} N²·8B",
                f"eigh {r['memory_numpy_eigh_n2']:.2f} N²·8B",
                "-",
                f"<= {TARGETS['memory_n2']:.0f} N²·8B",
                _verdict(r["memory_first_n2"], TARGETS["memory_n2"]),
            )
        )
    return rows


def format_report(result) -> str:
    info = result["machine"]
    lines = [
        "tangentflow bench: Predictor end to end vs NumPy/SciPy on the same matrices",
        f"date      {info['date']}",
        f"machine   {info['platform']}; {info['cpu']} ({info['cpu_count']} logical CPUs)",
        f"software  python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, "
        f"tangentflow {info['tangentflow']} ({info['tangentflow_threads']} threads)",
    ]
    blas = info["blas"]
    if isinstance(blas, list):
        blas = "; ".join(
            f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} threads)"
            for b in blas
        )
    lines.append(f"BLAS      {blas or 'none found'}")
    env = info["openblas_env"]
    lines.append(
        "env       "
        + (", ".join(f"{k}={v}" for k, v in env.items()) if env else "OPENBLAS_* unset")
    )
    lines.append(
        f"kernel    analytic ReLU NTK ({HIDDEN_LAYERS} hidden layers) of random unit-norm "
        f"inputs in {D_INPUT} dimensions; {N_OUTPUTS} outputs; times on a log grid"
    )
    widths = (34, 17, 24, 22, 14, 5)
    head = ("measurement", "tangentflow", "baseline", "ratio", "target", "")
    for r in result["sizes"]:
        lines.append("")
        lines.append(
            f"N = {r['n']}  (M = {r['m']} test points, R = {r['r']} outputs, T = {r['t']} "
            f"times; cond(K) = {r['cond']:.3g})"
        )
        lines.append(
            "  " + "  ".join(h.ljust(wd) for h, wd in zip(head, widths, strict=True)).rstrip()
        )
        for row in _rows(r):
            lines.append(
                "  " + "  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)).rstrip()
            )
        if "memory_first_n2" in r:
            lines.append(
                f"  (memory: the first call's outputs themselves are "
                f"{r['memory_outputs_n2']:.2f} N²·8B of that)"
            )
        if r.get("inf_diag_reg"):
            lines.append(f"  (t=None used diag_reg {r['inf_diag_reg']:.3g} absolute on both sides)")
    s = result["small"]
    s["small_vs_numpy"] = s["ratio"]
    st = s["ratio_stats"]
    lines.append("")
    lines.append(
        f"(f) small problems (N=100, T=10, M=50): tangentflow {1e3 * s['tangentflow_s']:.3f} ms, "
        f"numpy {1e3 * s['numpy_s']:.3f} ms, ratio {s['ratio']:.2f}x "
        f"({st['min']:.2f}–{st['max']:.2f}) "
        f"(target <= {TARGETS['small_vs_numpy']}x: "
        f"{_verdict(s['ratio'], TARGETS['small_vs_numpy'])})"
    )
    t = result.get("timing", {})
    lines.append("")
    lines.append(
        f"timing: every sample >= {t.get('min_sample_s', MIN_SAMPLE_S):g} s (short calls "
        f"repeated within it); ratios are the median of {t.get('pairs', DEFAULT_PAIRS)} paired "
        "samples, baseline and tangentflow alternating, with (min–max) over the pairs"
    )
    return "\n".join(lines)


def run_bench(
    sizes=(1000, 2000, 4000),
    *,
    json_path=None,
    threads=None,
    test_points=1000,
    n_times=100,
    n_regs=20,
    repeats=None,
    memory=True,
    progress=True,
    out=None,
    min_time=MIN_SAMPLE_S,
) -> dict:
    """Runs the benchmark, prints the report to ``out`` (stdout) and returns the numbers."""
    import tangentflow

    out = out if out is not None else sys.stdout
    if threads is not None:
        tangentflow.set_num_threads(threads)
    per_size = 7 if memory else 6
    bar = Progress(1 + per_size * len(sizes), "bench", enabled=progress)
    pairs = DEFAULT_PAIRS if repeats is None else int(repeats)
    result = {
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


def main(argv=None) -> int:
    """``python benches/bench_predict.py [--sizes ...]``: the same as ``tangentflow bench``."""
    from .cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["bench", *argv])
