"""GPU check for tangentflow's CuPy backend (one prepared run on an H100/H200).

(a) runs the test suite's GPU tests (tests/test_gpu.py);
(b) checks CuPy results against the CPU core at N = 2000 in float64 and float32;
(c) times end-to-end `Predictor(K, y).at(ts, ...)` (100 times, 10 outputs, 1000 test
    points) and `at(None)` against bare `cupy.linalg.eigh(K)` and `cupy.linalg.cholesky`
    (+ two triangular solves) at N = 4096, 8192, 16384 in float64 and float32, cold (first
    call at that size) and warm, with peak device memory beyond the inputs in N²·itemsize;
then prints a summary table. Designed to finish in under 8 minutes on an H100.

    python benches/gpu_check.py [--sizes 4096,8192,16384] [--json out.json] [--skip-tests]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np


def _sync(cp):
    cp.cuda.Stream.null.synchronize()


def _timed(cp, fn):
    _sync(cp)
    t = time.perf_counter()
    out = fn()
    _sync(cp)
    return time.perf_counter() - t, out


def _kernel(cp, n, m, dtype, seed=0):
    """Arc-cosine (ReLU NNGP) kernel of random unit vectors: NTK-like, well conditioned
    after a small nugget; built on the device."""
    rs = cp.random.RandomState(seed)
    x = rs.standard_normal((n + m, 64), dtype=cp.float64)
    x /= cp.linalg.norm(x, axis=1, keepdims=True)
    c = cp.clip(x @ x.T, -1.0, 1.0)
    th = cp.arccos(c)
    k = (cp.sqrt(1 - c * c) + (np.pi - th) * c) / np.pi
    k[cp.arange(n + m), cp.arange(n + m)] += 1e-3
    kk = cp.ascontiguousarray(k[:n, :n]).astype(dtype)
    kte = cp.ascontiguousarray(k[n:, :n]).astype(dtype)
    del x, c, th, k
    cp.get_default_memory_pool().free_all_blocks()
    return kk, kte


def check_against_cpu(cp, tf):
    """GPU vs the Rust core on the same inputs. float64 precision: to 1e-9. float32
    precision: both against the float64 result, to 1e-3, on a kernel whose whole spectrum
    lies above the float32 spectral cut D·ε₃₂·μ_max (cond ~ 1e3). With a smaller nugget
    the float32 cut (≈ 2.4e-4·μ_max at D = 2000) removes part of an NTK's spectrum and the
    float32 result legitimately differs from the float64 one."""
    rows = []
    for dt in (np.float64, np.float32):
        k, kte = _kernel(cp, 2000, 300, dt, seed=1)
        k = k + cp.asarray(0.5 * np.eye(2000), dtype=dt)  # spectrum above the f32 cut
        y = cp.asarray(np.random.default_rng(0).normal(size=(2000, 10)), dtype=dt)
        ts = np.logspace(-1, 5, 20)
        k_h, kte_h, y_h = cp.asnumpy(k), cp.asnumpy(kte), cp.asnumpy(y)
        ref = tf.Predictor(k_h, y_h).at(ts, k_test_train=kte_h)
        for prec in ("float64", "float32"):
            g = tf.Predictor(k, y, precision=prec).at(ts, k_test_train=kte)
            c = tf.Predictor(k_h, y_h, precision=prec).at(ts, k_test_train=kte_h)
            other = c if prec == "float64" else ref

            def rel(a, b):
                return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

            err = max(rel(cp.asnumpy(g.train), other.train), rel(cp.asnumpy(g.test), other.test))
            if prec == "float32":
                err = max(err, rel(c.test, ref.test))
            tol = 1e-9 if prec == "float64" else 1e-3
            rows.append((np.dtype(dt).name, prec, err, tol, err <= tol))
    return rows


def eigh_peak(cp, n, dt):
    """Pool growth of a bare cupy.linalg.eigh, in N²·itemsize (the reference)."""
    k, _ = _kernel(cp, n, 1, dt)
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    base = pool.used_bytes()
    w, v = cp.linalg.eigh(k)
    _sync(cp)
    peak = (pool.total_bytes() - base) / (n * n * np.dtype(dt).itemsize)
    del w, v
    pool.free_all_blocks()
    return peak


def time_size(cp, tf, n, dt, m=1000, r=10, n_times=100):
    pool = cp.get_default_memory_pool()
    k, kte = _kernel(cp, n, m, dt)
    y = cp.asarray(np.random.default_rng(0).normal(size=(n, r)), dtype=dt)
    ts = np.logspace(-2, 6, n_times)
    isz = np.dtype(dt).itemsize
    res = {"n": n, "dtype": np.dtype(dt).name}
    prec = "float64" if dt == np.float64 else "float32"
    for label in ("cold", "warm"):
        pool.free_all_blocks()
        base = pool.used_bytes()
        pool_peak = [base]

        t_e2e, _ = _timed(cp, lambda: tf.Predictor(k, y, precision=prec).at(ts, k_test_train=kte))
        pool_peak.append(pool.total_bytes())
        res[f"e2e_{label}_s"] = t_e2e
        res[f"peak_{label}_n2"] = (max(pool_peak) - base) / (n * n * isz)
        pool.free_all_blocks()
        t_eigh, _ = _timed(cp, lambda: cp.linalg.eigh(k))
        res[f"eigh_{label}_s"] = t_eigh
        pool.free_all_blocks()
        t_inf, _ = _timed(cp, lambda: tf.Predictor(k, y, precision=prec).at(None, k_test_train=kte))
        res[f"inf_{label}_s"] = t_inf
        pool.free_all_blocks()
        from cupyx.scipy.linalg import solve_triangular

        def chol():
            lo = cp.linalg.cholesky(k)
            z = solve_triangular(lo, y, lower=True)
            x = solve_triangular(lo, z, lower=True, trans=1)
            return kte @ x

        t_chol, _ = _timed(cp, chol)
        res[f"chol_{label}_s"] = t_chol
        pool.free_all_blocks()
    res["eigh_peak_n2"] = eigh_peak(cp, n, dt)
    res["e2e_over_eigh"] = res["e2e_warm_s"] / res["eigh_warm_s"]
    res["inf_over_chol"] = res["inf_warm_s"] / res["chol_warm_s"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096,8192,16384")
    ap.add_argument("--json", default="")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args(argv)
    import cupy as cp

    import tangentflow as tf

    t0 = time.perf_counter()
    dev = cp.cuda.runtime.getDeviceProperties(0)
    info = {
        "gpu": dev["name"].decode() if isinstance(dev["name"], bytes) else str(dev["name"]),
        "cupy": cp.__version__,
        "tangentflow": tf.__version__,
        "date": datetime.date.today().isoformat(),
        "host": platform.platform(),
    }
    print(f"== tangentflow GPU check: {info}", flush=True)
    if not args.skip_tests:
        here = os.path.dirname(os.path.abspath(__file__))
        tests = os.path.join(here, "..", "tests", "test_gpu.py")
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests]
        )
        info["gpu_tests_rc"] = rc
        print(f"(a) GPU tests: {'PASS' if rc == 0 else f'FAIL (rc {rc})'}", flush=True)
    rows = check_against_cpu(cp, tf)
    print("(b) CuPy vs CPU core, N=2000:")
    for dt, prec, err, tol, ok in rows:
        print(
            f"    input {dt:8s} precision {prec:8s} max rel err {err:.2e} (tol {tol:.0e}) {'PASS' if ok else 'FAIL'}"
        )
    timings = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        for dt in (np.float64, np.float32):
            r = time_size(cp, tf, n, dt)
            timings.append(r)
            print(
                f"(c) N={n} {r['dtype']}: e2e {r['e2e_warm_s']:.2f}s (cold {r['e2e_cold_s']:.2f}s), "
                f"eigh {r['eigh_warm_s']:.2f}s, at(None) {r['inf_warm_s']:.3f}s, "
                f"chol+solves {r['chol_warm_s']:.3f}s, peak {r['peak_warm_n2']:.2f} N²·itemsize "
                f"(bare eigh {r['eigh_peak_n2']:.2f})",
                flush=True,
            )
    print(
        "\n== summary (warm; targets: e2e ≤ 1.15x eigh at N=16384 f64, at(None) ≤ 2x Cholesky, "
        "peak ≤ 5 N²·itemsize)"
    )
    print(
        f"{'N':>6} {'dtype':>8} {'e2e/eigh':>9} {'inf/chol':>9} {'peak N²':>8} {'e2e s':>7} {'eigh s':>7}"
    )
    for r in timings:
        print(
            f"{r['n']:>6} {r['dtype']:>8} {r['e2e_over_eigh']:>9.2f} {r['inf_over_chol']:>9.2f} "
            f"{r['peak_warm_n2']:>8.2f} {r['e2e_warm_s']:>7.2f} {r['eigh_warm_s']:>7.2f}"
        )
    print(f"total {time.perf_counter() - t0:.0f}s on {info['gpu']}, {info['date']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"info": info, "check": rows, "timings": timings}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
