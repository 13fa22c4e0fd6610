"""Ensemble and GaussianProcess against their dense-LAPACK floors, timed in one run.

* ``Ensemble.at`` (mean + covariance on M test points at 10 times, one fresh Ensemble per
  repetition, so the factorization is included) in "nngp" and "ntk" modes, against one
  ``numpy.linalg.eigh`` of the N × N train kernel.
* ``GaussianProcess.posterior`` with covariance, against ``scipy.linalg.cho_factor`` plus
  the solves and product the posterior needs (``cho_solve`` for ``[Y | K_dt]`` and
  ``K_tt − K_td X``).

Usage: ``python benches/bench_ensemble.py [--n 4000] [--m 500] [--repeat 3]``.
Targets: ensemble ≤ 1.5x eigh (nngp), ≤ 2x (ntk); GP posterior ≤ 2x Cholesky + solves.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
import scipy.linalg

import tangentflow as tf
from tangentflow.kernels import fully_connected


def _kernels(n, m, d=16, seed=0):
    """ReLU-network NNGP and NTK (3 hidden layers) of Gaussian inputs: realistic spectra."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, d)) / np.sqrt(d)
    k = fully_connected(x, hidden_layers=3, activation="relu", w_std=1.4, b_std=0.1)
    return k.nngp, k.ntk


def _best(fns, repeat):
    """Best time of each function; the functions take turns in every round, so a load
    spike from other processes hits every row rather than one."""
    best = [np.inf] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="training points")
    ap.add_argument("--m", type=int, default=500, help="test points")
    ap.add_argument("--times", type=int, default=10, help="number of training times")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (best is reported)")
    ap.add_argument("--reg", type=float, default=1e-3, help="diag_reg of the GP (noise)")
    args = ap.parse_args(argv)
    n, m = args.n, args.m

    nngp, ntk = _kernels(n, m)
    k_dd = np.ascontiguousarray(nngp[:n, :n])
    k_td = np.ascontiguousarray(nngp[n:, :n])
    k_tt = np.ascontiguousarray(nngp[n:, n:])
    th_dd = np.ascontiguousarray(ntk[:n, :n])
    th_td = np.ascontiguousarray(ntk[n:, :n])
    y = np.random.default_rng(1).standard_normal((n, 1))
    ts = np.geomspace(1.0, 1e5, args.times)

    print(f"tangentflow {tf.__version__}  N={n} M={m} T={args.times}  repeat={args.repeat}")
    print(
        f"machine: {platform.machine()} {platform.processor() or platform.platform()}, "
        f"{os.cpu_count()} CPUs; tangentflow threads: {tf.get_num_threads()}; "
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}"
    )

    def eigh():
        return np.linalg.eigh(th_dd)

    def nngp_mode():
        e = tf.Ensemble(k_dd, y)
        return e.at(ts, nngp_test_train=k_td, nngp_test_test=k_tt)

    def ntk_mode():
        e = tf.Ensemble(k_dd, y, ntk_train_train=th_dd)
        return e.at(ts, ntk_test_train=th_td, nngp_test_train=k_td, nngp_test_test=k_tt)

    lam = args.reg * np.trace(k_dd) / n

    def cholesky_floor():
        a = k_dd + lam * np.eye(n)
        cf = scipy.linalg.cho_factor(a, lower=True, check_finite=False)
        x = scipy.linalg.cho_solve(cf, np.concatenate([y, k_td.T], axis=1), check_finite=False)
        return k_td @ x[:, :1], k_tt - k_td @ x[:, 1:]

    def gp_posterior():
        gp = tf.GaussianProcess(k_dd, y, diag_reg=args.reg)
        return gp.posterior(k_td, k_tt)

    fns = (eigh, nngp_mode, ntk_mode, cholesky_floor, gp_posterior)
    t_eigh, t_nngp, t_ntk, t_chol, t_gp = _best(fns, args.repeat)

    ref_mean, ref_cov = cholesky_floor()
    g = gp_posterior()
    err = max(
        float(np.max(np.abs(g.mean - ref_mean))) / max(1.0, float(np.max(np.abs(ref_mean)))),
        float(np.max(np.abs(g.covariance - ref_cov))) / max(1.0, float(np.max(np.abs(ref_cov)))),
    )

    rows = [
        ("numpy.linalg.eigh (N x N)", t_eigh, None, None),
        ("Ensemble nngp: mean+cov, T times", t_nngp, t_nngp / t_eigh, 1.5),
        ("Ensemble ntk:  mean+cov, T times", t_ntk, t_ntk / t_eigh, 2.0),
        ("scipy cho_factor + solves + product", t_chol, None, None),
        ("GaussianProcess.posterior (cov)", t_gp, t_gp / t_chol, 2.0),
    ]
    print(f"{'':40s} {'seconds':>9s} {'ratio':>7s} {'target':>7s}")
    for name, t, ratio, target in rows:
        r = f"{ratio:7.2f}" if ratio is not None else " " * 7
        tg = f"{target:7.1f}" if target is not None else " " * 7
        print(f"{name:40s} {t:9.3f} {r} {tg}")
    print(f"GP posterior vs Cholesky floor: max relative difference {err:.2e}")


if __name__ == "__main__":
    main()
