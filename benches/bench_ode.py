"""Cross-entropy ODE: tangentflow vs scipy.integrate.solve_ivp(RK45), same run.

N = 1000 train points, M = 1000 test points, 10 classes, 20 output times log-spaced up to
τ = 1e4, default tolerances (rtol = atol = 1.4e-8). The baseline integrates the same
train+test function-space ODE with RK45; accuracy of both is measured against
solve_ivp(DOP853, rtol = atol = 1e-12) on the same system.

    python benches/bench_ode.py [--n 1000] [--m 1000] [--classes 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import numpy as np
from scipy.integrate import solve_ivp

import tangentflow as tf
from tangentflow.kernels import fully_connected


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    n, m, c = args.n, args.m, args.classes
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + m, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = fully_connected(x, hidden_layers=2, get="ntk")
    k_dd, k_td = np.ascontiguousarray(k[:n, :n]), np.ascontiguousarray(k[n:, :n])
    y = np.eye(c)[rng.integers(0, c, size=n)]
    taus = np.logspace(-2, 4, 20)
    size = y.size

    def grad(f):
        z = f - f.max(-1, keepdims=True)
        s = np.exp(z)
        s /= s.sum(-1, keepdims=True)
        return (s * y.sum(-1, keepdims=True) - y) / size

    def rhs(_, state):
        g = grad(state[: n * c].reshape(n, c))
        return np.concatenate([(-k_dd @ g).ravel(), (-k_td @ g).ravel()])

    y0 = np.zeros((n + m) * c)

    def ours():
        return tf.Predictor(k_dd, y, loss="cross_entropy").at(taus, k_test_train=k_td)

    def scipy_rk45(rtol=1.4e-8, atol=1.4e-8, method="RK45"):
        return solve_ivp(rhs, (0, taus[-1]), y0, method=method, t_eval=taus, rtol=rtol, atol=atol)

    ours()  # warm-up (thread pool, caches)
    t = time.perf_counter()
    out = ours()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    base = scipy_rk45()
    t_base = time.perf_counter() - t
    ref = scipy_rk45(1e-12, 1e-12, "DOP853")

    def err(train, test, sol):
        ftr = sol.y[: n * c].T.reshape(len(taus), n, c)
        fte = sol.y[n * c :].T.reshape(len(taus), m, c)
        return max(
            float(np.max(np.abs(train - ftr)) / np.max(np.abs(ftr))),
            float(np.max(np.abs(test - fte)) / np.max(np.abs(fte))),
        )

    e_ours = err(out.train, out.test, ref)
    e_base = err(
        base.y[: n * c].T.reshape(len(taus), n, c), base.y[n * c :].T.reshape(len(taus), m, c), ref
    )
    res = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "threads": tf.get_num_threads(),
        "n": n,
        "m": m,
        "classes": c,
        "tangentflow_s": t_ours,
        "solve_ivp_rk45_s": t_base,
        "speedup": t_base / t_ours,
        "tangentflow_rel_err": e_ours,
        "solve_ivp_rel_err": e_base,
    }
    print(f"cross-entropy ODE, N={n}, M={m}, {c} classes, 20 times up to tau=1e4")
    print(f"  tangentflow       {t_ours:8.3f} s   rel err vs DOP853(1e-12) {e_ours:.2e}")
    print(f"  solve_ivp(RK45)   {t_base:8.3f} s   rel err vs DOP853(1e-12) {e_base:.2e}")
    print(
        f"  speedup {t_base / t_ours:.2f}x (target >= 2x); accuracy target 1e-6: "
        f"{'pass' if e_ours <= 1e-6 else 'FAIL'}"
    )
    print(f"  {res['machine']}, {res['threads']} threads, {res['date']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
