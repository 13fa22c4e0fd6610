"""Kernel operators at scale: the Krylov path with the kernel never stored (docs/scale.md).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benches/bench_krylov.py \
        [--n 50000] [--compare-n 8000] [--json benches/results/krylov.json]

The problem of issue 10: inputs ``x ~ N(0, I_d)`` (``d = 64``), the 3-layer ReLU NTK of
``tangentflow.operators.fully_connected``, ``R = 10`` targets ``tanh(x W)``, ``M = 1000``
test points, 100 log-spaced times plus ``t = ∞`` (learning rate 1).

Each case runs in a fresh child process (its own peak RSS):

- ``operator`` at ``--n``: ``Predictor(op, y).at(times, k_test_train=op_te)`` then
  ``.at(inf, ...)``; wall time, products ("sweeps": one pass over the kernel's lower
  triangle serving all columns of the block), matvecs (columns), peak RSS, the solver's
  error estimate, and the breakdown: train products (kernel evaluation and the products
  with the block, split by a calibration at 1 and R columns), test products, Krylov
  algebra (the rest of ``at``), scheduler overhead (a product through Dask against the
  same product in one core call);
- the largest single time alone (``--single-time``), against which the 100 times are
  compared;
- at ``--compare-n``: the same operator case, the dense ``Predictor`` on the stored
  kernel (agreement of the outputs), and SciPy's unpreconditioned ``cg`` and
  ``expm_multiply`` on the same matrix (stored, so that their thousands of single-column
  products are affordable: their time on the lazy operator is their matvecs times the
  measured cost of a one-column product).

``--smoke`` runs tiny sizes in seconds (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

import tangentflow as tf
from tangentflow import _core, kernels, operators

ARCH = {"hidden_layers": 3, "activation": "relu", "w_std": 1.0, "b_std": 0.0}


def problem(n: int, m: int, d: int, r: int, seed: int = 0) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    xt = rng.standard_normal((m, d))
    w = rng.standard_normal((d, r)) / np.sqrt(d)
    return x, xt, np.tanh(x @ w)


def times(num: int, t_max: float) -> Any:
    return np.logspace(np.log10(t_max) - 6, np.log10(t_max), num)


def peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Timed(operators.Operator):
    """An operator that times and counts the products it forwards."""

    def __init__(self, op: Any) -> None:
        super().__init__(op.shape, op.dtype)
        self.op = op
        self.seconds = 0.0
        self.products = 0

    def _matmat(self, v: Any) -> Any:
        t = time.perf_counter()
        out = self.op.matmat(v)
        self.seconds += time.perf_counter() - t
        self.products += 1
        return out

    def diagonal(self) -> Any:
        return self.op.diagonal()


def calibrate(x: Any, r: int, chunk: int | None) -> dict[str, float]:
    """Per-entry costs of the fused product on ``min(N, 2048)`` rows against all ``N``
    columns (at 1 and ``4r`` columns), and the scheduler's overhead on one symmetric
    product of ``min(N, 8000)`` examples."""
    n = x.shape[0]
    rows = min(n, 2048)
    spec = (ARCH["hidden_layers"], ARCH["activation"], ARCH["w_std"], ARCH["b_std"])
    out: dict[str, float] = {}
    wide = 4 * r
    for p in (1, wide):
        v = np.ones((n, p))
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            _core.fc_matmat_f64(x[:rows], x, 0, rows, *spec, True, v)
            best = min(best, time.perf_counter() - t)
        out[f"s_per_entry_p{p}"] = best / (rows * n)
    # t(p) = a + b·p (best of 3 at p = 1 and 4R): kernel evaluation a, products b·p.
    b = (out[f"s_per_entry_p{wide}"] - out["s_per_entry_p1"]) / (wide - 1)
    out["kernel_s_per_entry"] = out["s_per_entry_p1"] - b
    out["product_s_per_entry_column"] = b
    ns = min(n, 8000)
    xs = x[:ns]
    v = np.ones((ns, r))
    op = operators.fully_connected(xs, chunk_size=chunk, **ARCH)  # type: ignore[arg-type]
    direct = through = np.inf
    for _ in range(2):
        t = time.perf_counter()
        _core.fc_matmat_f64(xs, None, 0, ns, *spec, True, v)
        direct = min(direct, time.perf_counter() - t)
        t = time.perf_counter()
        op.matmat(v)
        through = min(through, time.perf_counter() - t)
    out["scheduler_overhead_s_per_product"] = max(0.0, through - direct)
    out["scheduler_overhead_relative"] = max(0.0, through - direct) / direct
    out["calibration_n"] = ns
    return out


def operator_case(cfg: dict[str, Any]) -> dict[str, Any]:
    n, m, d, r = cfg["n"], cfg["m"], cfg["d"], cfg["r"]
    x, xt, y = problem(n, m, d, r)
    ts = times(cfg["times"], cfg["t_max"])
    res: dict[str, Any] = {"case": "operator", "n": n}
    t0 = time.perf_counter()
    op = Timed(operators.fully_connected(x, chunk_size=cfg["chunk"], **ARCH))
    op_te = Timed(operators.fully_connected(xt, x, chunk_size=cfg["chunk"], **ARCH))
    p = tf.Predictor(op, y, learning_rate=1.0, rtol=cfg["rtol"], progress=cfg["progress"])
    fin = p.at(ts, k_test_train=op_te)
    t1 = time.perf_counter()
    info_fin = p.solver_info
    sweeps_fin, cols_fin = op.products, op.matvecs
    inf = p.at(np.inf, k_test_train=op_te)
    t2 = time.perf_counter()
    info_inf = p.solver_info
    res.update(
        wall_s=t2 - t0,
        wall_finite_s=t1 - t0,
        wall_inf_s=t2 - t1,
        sweeps=op.products,
        sweeps_finite=sweeps_fin,
        sweeps_inf=op.products - sweeps_fin,
        matvecs=op.matvecs,
        matvecs_finite=cols_fin,
        matvecs_inf=op.matvecs - cols_fin,
        kernel_entries_over_n2=op.op.entries / n**2,
        test_products=op_te.products,
        test_matvecs=op_te.matvecs,
        train_product_s=op.seconds,
        test_product_s=op_te.seconds,
        krylov_algebra_s=(t2 - t0) - op.seconds - op_te.seconds,
        info_finite=_info(info_fin),
        info_inf=_info(info_inf),
        peak_rss_bytes=peak_rss(),
    )
    if cfg["single_time"]:
        single = Timed(operators.fully_connected(x, chunk_size=cfg["chunk"], **ARCH))
        ps = tf.Predictor(single, y, learning_rate=1.0, rtol=cfg["rtol"], progress=False)
        t = time.perf_counter()
        ps.at(ts[-1])
        res.update(
            single_time_s=time.perf_counter() - t,
            single_time_matvecs=single.matvecs,
            single_time_sweeps=single.products,
            info_single=_info(ps.solver_info),
        )
    if cfg["calibrate"]:
        res["calibration"] = calibrate(x, r, cfg["chunk"])
    if cfg.get("save"):
        np.savez(
            cfg["save"], train=fin.train, test=fin.test, train_inf=inf.train, test_inf=inf.test
        )
    return res


def _info(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        k: getattr(info, k)
        for k in ("method", "iterations", "matvecs", "error_estimate", "converged")
    }


class _Done(Exception):
    """Stops SciPy's cg once its iterate meets the tolerance."""


class Counted:
    """A SciPy ``LinearOperator`` over a stored symmetric matrix that counts columns."""

    def __init__(self, k: Any) -> None:
        from scipy.sparse.linalg import LinearOperator

        self.k = k
        self.columns = 0

        def mv(v: Any) -> Any:
            v2 = v.reshape(k.shape[0], -1)
            self.columns += v2.shape[1]
            return (k @ v2).reshape(v.shape)

        self.op = LinearOperator(k.shape, matvec=mv, rmatvec=mv, matmat=mv, dtype=k.dtype)


def dense_case(cfg: dict[str, Any]) -> dict[str, Any]:
    """The dense path on the stored kernel, and SciPy's solvers on the same matrix."""
    from scipy.sparse.linalg import cg, expm_multiply

    n, m, d, r = cfg["n"], cfg["m"], cfg["d"], cfg["r"]
    x, xt, y = problem(n, m, d, r)
    ts = times(cfg["times"], cfg["t_max"])
    res: dict[str, Any] = {"case": "dense", "n": n}
    t0 = time.perf_counter()
    k = kernels.fully_connected(x, get="ntk", **ARCH)  # type: ignore[arg-type]
    kt = kernels.fully_connected(xt, x, get="ntk", **ARCH)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    p = tf.Predictor(k, y, learning_rate=1.0)
    fin = p.at(ts, k_test_train=kt)
    inf = p.at(np.inf, k_test_train=kt)
    t2 = time.perf_counter()
    res.update(kernel_s=t1 - t0, predict_s=t2 - t1, wall_s=t2 - t0, peak_rss_bytes=peak_rss())
    ops_out = np.load(cfg["compare"])
    scale = float(np.max(np.abs(y)))  # max|f0 - Y| with f0 = 0
    for key, ref in (
        ("train", fin.train),
        ("test", fin.test),
        ("train_inf", inf.train),
        ("test_inf", inf.test),
    ):
        res[f"max_err_{key}"] = float(np.max(np.abs(ops_out[key] - ref)) / scale)
    diag = p.diagnostics()
    res.update(
        lambda_min=float(diag.min_eigenvalue),
        lambda_max=float(diag.max_eigenvalue),
        condition=float(diag.condition_number),
    )

    # SciPy cg (unpreconditioned) on K x = b for b = f0 - Y = -Y, column by column. The
    # tolerance is ours for t = ∞: the train output error at t = ∞ is the residual
    # b - K x, so cg's matvecs are counted up to the first iterate with
    # max|b - K x| <= rtol · max|b| (checked on the side, uncounted).
    rtol = cfg["rtol"]
    cols = list(range(min(r, cfg["cg_columns"])))
    cg_matvecs = []
    t = time.perf_counter()
    for c in cols:
        b = -y[:, c]
        lin = Counted(k)
        hit: list[int] = []

        def check(xk: Any, b: Any = b, lin: Any = lin, hit: list[int] = hit) -> None:
            # Every 5th iterate (the count is within 5 matvecs above the first hit).
            if hit or lin.columns % 5:
                return
            if np.max(np.abs(b - k @ xk)) <= rtol * np.max(np.abs(y)):
                hit.append(lin.columns)
                raise _Done

        try:
            cg(lin.op, b, rtol=1e-14, atol=0.0, maxiter=cfg["cg_maxiter"], callback=check)
        except _Done:
            pass
        cg_matvecs.append(hit[0] if hit else None)
    res.update(
        cg_columns=len(cols),
        cg_matvecs_per_column=cg_matvecs,
        cg_s=time.perf_counter() - t,
        cg_converged=all(c is not None for c in cg_matvecs),
    )
    # expm_multiply: exp(-s K) r0 (s = eta t / n, n = y.size), all R columns per call;
    # its tolerance is fixed (unit round-off). SciPy's own choice of (m*, steps)
    # (Al-Mohy and Higham's fragment 3.1) predicts its block products at the largest time
    # without running them; it is run at the largest time predicted to need at most
    # --expm-max-products (where the prediction is checked against the count).
    sizes = ts / y.size
    largest = expm_products(k, float(sizes[-1]), r)
    # The cost grows like s·‖K‖₁: the 100 calls together cost about Σ t_i / t_max times the
    # largest one.
    res.update(
        expm_predicted_products_largest_time=largest,
        expm_predicted_matvecs_largest_time=largest * r,
        expm_estimated_matvecs_all_times=int(largest * r * float(np.sum(ts) / ts[-1])),
    )
    # Run it at the largest time predicted to fit the budget (one more prediction).
    i = int(np.searchsorted(ts, ts[-1] * cfg["expm_max_products"] / max(largest, 1), "right")) - 1
    if i >= 0:
        predicted = expm_products(k, float(sizes[i]), r)
        lin = Counted(k)
        t = time.perf_counter()
        u = expm_multiply(-sizes[i] * lin.op, -y, traceA=-sizes[i] * float(np.trace(k)))
        res.update(
            expm_run_time=float(ts[i]),
            expm_run_predicted_matvecs=predicted * r,
            expm_run_matvecs=lin.columns,
            expm_run_s=time.perf_counter() - t,
            expm_run_err=float(np.max(np.abs((y + u) - fin.train[i])) / scale),
        )
    return res


def expm_products(k: Any, s: float, r: int) -> int:
    """Block products ``expm_multiply(-s K, B)`` does for ``B`` with ``r`` columns: SciPy's
    ``m* · steps`` from its own parameter selection (an upper bound: a step may stop its
    series early), on the shifted ``-s K - μI`` it uses."""
    from scipy.sparse.linalg import _expm_multiply as em

    n = k.shape[0]
    a = -s * k
    a[np.diag_indices(n)] -= np.trace(a) / n
    info = em.LazyOperatorNormInfo(a, A_1_norm=float(np.max(np.sum(np.abs(a), axis=0))), ell=2)
    m_star, steps = em._fragment_3_1(info, r, 2.0**-53, ell=2)
    return int(m_star * steps)


def child(case: str, cfg: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", case, "--config", json.dumps(cfg)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{case} case failed (exit {out.returncode})")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = []
    gb = 1 << 30
    for r in results:
        if r["case"] == "operator":
            cal = r.get("calibration", {})
            lines.append(
                f"operator N={r['n']}: wall {r['wall_s']:.1f} s (finite times {r['wall_finite_s']:.1f} s, "
                f"t=inf {r['wall_inf_s']:.1f} s); sweeps {r['sweeps']} ({r['sweeps_finite']} + "
                f"{r['sweeps_inf']}), kernel entries evaluated {r['kernel_entries_over_n2']:.1f} N^2; "
                f"matvecs {r['matvecs']} ({r['matvecs_finite']} + {r['matvecs_inf']}); "
                f"peak RSS {r['peak_rss_bytes'] / gb:.2f} GiB"
            )
            lines.append(
                f"  error estimate: finite {r['info_finite']['error_estimate']:.2e} "
                f"(converged {r['info_finite']['converged']}), t=inf "
                f"{r['info_inf']['error_estimate']:.2e} (converged {r['info_inf']['converged']})"
            )
            lines.append(
                f"  breakdown: train products {r['train_product_s']:.1f} s, test products "
                f"{r['test_product_s']:.1f} s ({r['test_products']} products), Krylov algebra "
                f"{r['krylov_algebra_s']:.1f} s"
            )
            if cal:
                per_sweep = r["n"] ** 2 / 2
                lines.append(
                    f"  per sweep (N^2/2 entries): kernel evaluation "
                    f"{cal['kernel_s_per_entry'] * per_sweep:.2f} s, products with the block "
                    f"{cal['product_s_per_entry_column'] * per_sweep * args.r:.2f} s at R={args.r}; "
                    f"{cal['kernel_s_per_entry']:.2e} s per entry, scheduler overhead "
                    f"{100 * cal['scheduler_overhead_relative']:.1f}% of a product "
                    f"({cal['scheduler_overhead_s_per_product']:.3f} s at N={cal['calibration_n']})"
                )
            if "single_time_matvecs" in r:
                lines.append(
                    f"  largest time alone: {r['single_time_matvecs']} matvecs "
                    f"({r['single_time_s']:.1f} s); 100 times / largest = "
                    f"{r['matvecs_finite'] / max(r['single_time_matvecs'], 1):.2f}x"
                )
        else:
            lines.append(
                f"dense N={r['n']}: wall {r['wall_s']:.1f} s (kernel {r['kernel_s']:.1f} s, "
                f"predict {r['predict_s']:.1f} s), peak RSS {r['peak_rss_bytes'] / gb:.2f} GiB; "
                f"condition {r['condition']:.2e}"
            )
            lines.append(
                "  operator vs dense, max error / max|f0 - Y|: "
                + ", ".join(f"{k[8:]} {r[k]:.1e}" for k in r if k.startswith("max_err_"))
            )
            cgm = [c for c in r["cg_matvecs_per_column"] if c is not None]
            if cgm:
                lines.append(
                    f"  SciPy cg: {np.mean(cgm):.0f} matvecs per column on {r['cg_columns']} "
                    f"column(s) -> {np.mean(cgm) * args.r:.0f} for R={args.r} "
                    f"(converged {r['cg_converged']}; {r['cg_s']:.1f} s on the stored kernel)"
                )
            lines.append(
                f"  SciPy expm_multiply, series products predicted by its parameter choice (its norm estimates come on top): largest time "
                f"{r['expm_predicted_matvecs_largest_time']} matvecs; all {args.times} times "
                f"(one call each, cost ~ t) about {r['expm_estimated_matvecs_all_times']} matvecs"
            )
            if "expm_run_matvecs" in r:
                lines.append(
                    f"  SciPy expm_multiply run at t={r['expm_run_time']:.3g}: "
                    f"{r['expm_run_matvecs']} matvecs (predicted {r['expm_run_predicted_matvecs']}), "
                    f"{r['expm_run_s']:.1f} s on the stored kernel, error vs dense "
                    f"{r['expm_run_err']:.1e}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--n", type=int, default=50_000, help="training set size of the big run (0: skip)"
    )
    ap.add_argument(
        "--compare-n",
        type=int,
        default=8000,
        help="size compared against dense and SciPy (0: skip)",
    )
    ap.add_argument("--m", type=int, default=1000, help="test points")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--r", type=int, default=10, help="outputs (right-hand sides)")
    ap.add_argument("--times", type=int, default=100)
    ap.add_argument("--t-max", type=float, default=1e5, help="largest time (learning rate 1)")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument(
        "--single-time",
        choices=("auto", "yes", "no"),
        default="auto",
        help="also solve the largest time alone (auto: at the compare size only)",
    )
    ap.add_argument(
        "--cg-columns", type=int, default=1, help="columns SciPy cg solves (each alone)"
    )
    ap.add_argument("--cg-maxiter", type=int, default=20_000)
    ap.add_argument(
        "--expm-max-products",
        type=int,
        default=2000,
        help="run expm_multiply at the largest time predicted to need at most this many block products",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--progress", action="store_true", help="the solver's progress bar")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        cfg = json.loads(args.config)
        fn = operator_case if args.child == "operator" else dense_case
        print(json.dumps(fn(cfg)))
        return 0
    if args.smoke:
        args.n, args.compare_n, args.m, args.d, args.times = 600, 300, 50, 8, 10
        args.cg_columns, args.t_max = 1, 1e3
    base = {
        "m": args.m,
        "d": args.d,
        "r": args.r,
        "times": args.times,
        "t_max": args.t_max,
        "rtol": args.rtol,
        "chunk": args.chunk_size,
        "progress": args.progress,
        "cg_columns": args.cg_columns,
        "cg_maxiter": args.cg_maxiter,
        "expm_max_products": args.expm_max_products,
    }
    header = (
        f"bench_krylov: d={args.d}, 3-layer ReLU NTK, R={args.r}, {args.times} times up to "
        f"{args.t_max:g} + inf, M={args.m}, rtol={args.rtol:g}; {platform.node()}, "
        f"{os.cpu_count()} CPUs, tangentflow threads {tf.get_num_threads()}, core build "
        f"{_core.build_profile}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare_n:
            save = os.path.join(tmp, "ops.npz")
            cfg = dict(
                base,
                n=args.compare_n,
                single_time=args.single_time != "no",
                calibrate=True,
                save=save,
            )
            results.append(child("operator", cfg))
            print(report(results[-1:], args), flush=True)
            results.append(child("dense", dict(base, n=args.compare_n, compare=save)))
            print(report(results[-1:], args), flush=True)
        if args.n:
            cfg = dict(base, n=args.n, single_time=args.single_time == "yes", calibrate=True)
            results.append(child("operator", cfg))
            print(report(results[-1:], args), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
