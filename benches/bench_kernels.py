"""Benchmark: tangentflow.kernels.fully_connected vs a vectorized NumPy implementation.

Times NTK + NNGP together for the same inputs in the same run, checks agreement, and
prints the times, the ratio, the thread settings and the machine.

    python benches/bench_kernels.py --n 4000 --d 64 --hidden-layers 3 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np

import tangentflow
from tangentflow import _core
from tangentflow.kernels import fully_connected


def numpy_fc(x1, x2, hidden_layers, activation, w_std, b_std):
    """(nngp, ntk): the same recursion, vectorized over all pairs with NumPy."""
    w2, b2 = w_std**2, b_std**2
    d = x1.shape[1]
    k = w2 * (x1 @ x2.T) / d + b2
    q1 = w2 * np.einsum("ij,ij->i", x1, x1) / d + b2
    q2 = w2 * np.einsum("ij,ij->i", x2, x2) / d + b2
    theta = k.copy()
    for _ in range(hidden_layers):
        if activation == "relu":
            s = np.sqrt(np.outer(q1, q2))
            c = np.clip(k / s, -1.0, 1.0)
            t = np.arccos(c)
            pm = np.pi - t
            e = s * (np.sqrt(1.0 - c * c) + pm * c) / (2 * np.pi)
            ed = pm / (2 * np.pi)
            q1n, q2n = q1 / 2, q2 / 2
        else:
            a = np.outer(1 + 2 * q1, 1 + 2 * q2)
            e = 2 / np.pi * np.arcsin(np.clip(2 * k / np.sqrt(a), -1.0, 1.0))
            ed = 4 / np.pi / np.sqrt(a - 4 * k * k)
            q1n = 2 / np.pi * np.arcsin(2 * q1 / (1 + 2 * q1))
            q2n = 2 / np.pi * np.arcsin(2 * q2 / (1 + 2 * q2))
        k = w2 * e + b2
        theta = k + w2 * ed * theta
        q1, q2 = w2 * q1n + b2, w2 * q2n + b2
    return k, theta


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="examples (x1 = x2 = N × d)")
    p.add_argument("--d", type=int, default=64, help="input dimension")
    p.add_argument("--hidden-layers", type=int, default=3)
    p.add_argument("--activation", choices=["relu", "erf"], default="relu")
    p.add_argument("--w-std", type=float, default=1.4)
    p.add_argument("--b-std", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    p.add_argument("--cross", action="store_true", help="x2 = other inputs (not symmetric)")
    p.add_argument("--threads", type=int, default=0, help="tangentflow threads (0: default)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()

    tangentflow.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((args.n, args.d))
    x2 = rng.standard_normal((args.n, args.d)) if args.cross else None
    kw = dict(
        hidden_layers=args.hidden_layers,
        activation=args.activation,
        w_std=args.w_std,
        b_std=args.b_std,
    )

    t_tf, k_tf = best_of(lambda: fully_connected(x1, x2, **kw), args.repeats)
    t_np, k_np = best_of(lambda: numpy_fc(x1, x1 if x2 is None else x2, **kw), args.repeats)

    # Errors relative to max|K| (entries that cross zero, e.g. erf NNGPs, are only known to
    # absolute precision). The symmetric diagonal is checked entrywise and looser: NumPy's
    # goes through arccos(1 - eps) (ill-conditioned), tangentflow uses c = 1 exactly.
    errs = {}
    for name, a, b in (("nngp", k_tf.nngp, k_np[0]), ("ntk", k_tf.ntk, k_np[1])):
        err = np.abs(a - b) / np.abs(b).max()
        if x2 is None:
            da, db = np.diag(a), np.diag(b)
            errs[f"{name}_diag_max_rel"] = float((np.abs(da - db) / db).max())
            np.fill_diagonal(err, 0.0)
        errs[f"{name}_max_err_over_max"] = float(err.max())
    ok = all(v < (1e-6 if "diag" in key else 1e-12) for key, v in errs.items())

    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: i.get(k) for k in ("internal_api", "num_threads", "version")}
            for i in threadpool_info()
        ]
    except ImportError:
        blas = "threadpoolctl not installed"

    res = {
        "benchmark": "fully_connected NNGP+NTK",
        "n": args.n,
        "d": args.d,
        "hidden_layers": args.hidden_layers,
        "activation": args.activation,
        "w_std": args.w_std,
        "b_std": args.b_std,
        "symmetric": x2 is None,
        "tangentflow_s": t_tf,
        "numpy_s": t_np,
        "speedup": t_np / t_tf,
        "agree": ok,
        **errs,
        "tangentflow_version": tangentflow.__version__,
        "core_build_profile": _core.build_profile,
        "tangentflow_threads": _core.get_num_threads(),
        "numpy_version": np.__version__,
        "threadpoolctl": blas,
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.platform()} {platform.machine()} {platform.processor()}".strip(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(
        f"fully_connected NNGP+NTK  N={args.n} d={args.d} L={args.hidden_layers} "
        f"{args.activation} {'symmetric' if x2 is None else 'cross'}"
    )
    print(f"  tangentflow: {t_tf:8.3f} s  ({_core.get_num_threads()} threads)")
    print(f"  numpy:       {t_np:8.3f} s")
    print(f"  speedup:     {t_np / t_tf:8.2f} x")
    print(f"  agree: {ok}  " + "  ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    print(f"  blas: {blas}")
    print(f"  machine: {res['machine']}, {res['cpu_count']} CPUs; {res['date']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if not ok:
        raise SystemExit("tangentflow and NumPy disagree")


if __name__ == "__main__":
    main()
