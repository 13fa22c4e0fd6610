"""tangentflow against neural-tangents 0.6.5 (x64, jax 0.4.30), side by side in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benches/bench_peer.py \
        --sizes 2000,4000 [--repeats 3] [--json out.json]

neural-tangents lives in its own venv (``.peer-venv``, made by
``tests/peer/run_neural_tangents_suite.sh``; git-ignored). When this interpreter cannot
import it, the script re-runs itself under ``.peer-venv/bin/python`` (or ``$PEER_VENV``)
with this checkout's ``python/`` on ``PYTHONPATH`` (the editable build's extension lives
there), so both libraries run in one process on the same arrays. Without that venv, or
without neural_tangents/jax in it, it prints why and exits 0 (skipped).

Measured per N (the problem of ``tangentflow bench``: analytic ReLU NTK, 10 outputs,
1000 test points), each as the median of paired rounds (docs/cli.md: samples of >= 0.2 s,
one sample of each measurement per round, order reversed every other round):

- first call with 100 times + test outputs: ``Predictor(K, y).at(ts, ...)`` against
  ``nt.predict.gradient_descent_mse(K, y)(ts, f0, g0, K_te)`` (both factorize inside);
- the same with 1000 times;
- ``t = ∞``: ``at(None, ...)`` against ``predict_fn(None, ...)`` (both Cholesky).

Every neural-tangents call is made on device arrays put there once, and is finished with
``block_until_ready`` inside the timed sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REEXEC = "TANGENTFLOW_BENCH_PEER_REEXEC"
NT_VERSION = "0.6.5"
#: Targets of the performance issue: tangentflow time / neural-tangents time.
TARGETS = {"first": 0.8, "first_many": 0.3, "inf": 0.5}


def _peer_python() -> Path:
    venv = Path(os.environ.get("PEER_VENV", ROOT / ".peer-venv"))
    return venv / "bin" / "python"


def _import_peer() -> tuple[Any, Any] | str:
    """``(jax, neural_tangents)``, or why they cannot be used here."""
    try:
        import jax
        import neural_tangents as nt
    except ImportError as e:
        return f"{e}"
    return jax, nt


def _reexec_or_skip(why: str) -> None:
    """Runs this script under the peer venv (once), or exits 0 saying why it is skipped."""
    py = _peer_python()
    if os.environ.get(REEXEC) or not py.exists():
        where = py if py.exists() else f"{py} (missing)"
        print(
            f"bench_peer: skipped: neural-tangents is not importable ({why}); peer venv: "
            f"{where}. Make it with tests/peer/run_neural_tangents_suite.sh."
        )
        raise SystemExit(0)
    env = dict(os.environ)
    env[REEXEC] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "python"), env.get("PYTHONPATH", "")) if p
    )
    sys.stdout.flush()
    os.execve(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]], env)


def _machine(jax: Any, nt: Any) -> dict[str, Any]:
    import numpy as np

    from tangentflow.cli._bench_report import machine_info

    info = machine_info()
    info["python_executable"] = sys.executable
    info["jax"] = jax.__version__
    info["neural_tangents"] = getattr(nt, "__version__", "unknown")
    info["jax_x64"] = bool(jax.config.read("jax_enable_x64"))
    info["jax_devices"] = [str(d) for d in jax.devices()]
    info["numpy"] = np.__version__
    return info


def _one_size(n: int, m: int, pairs: int, min_time: float, jax: Any, nt: Any) -> dict[str, Any]:
    import jax.numpy as jnp
    import numpy as np

    from tangentflow import Predictor
    from tangentflow.cli._bench_inputs import N_OUTPUTS, make_inputs, times
    from tangentflow.cli._measure import interleaved, ratio_stats

    inp = make_inputs(n, m)
    k, kte, y, f0, g0 = inp["k"], inp["k_te"], inp["y"], inp["f0"], inp["g0"]
    ts = times(k, 100, N_OUTPUTS)
    ts_many = times(k, 1000, N_OUTPUTS, seed=2)
    jk, jkte, jy, jf0, jg0 = (jax.device_put(jnp.asarray(a)) for a in (k, kte, y, f0, g0))
    jts, jts_many = jnp.asarray(ts), jnp.asarray(ts_many)

    def nt_call(t: Any) -> Any:
        fn = nt.predict.gradient_descent_mse(jk, jy, learning_rate=1.0)
        return jax.block_until_ready(fn(t, jf0, jg0, jkte))

    def tf_call(t: Any) -> Any:
        return Predictor(k, y).at(t, k_test_train=kte, fx_train_0=f0, fx_test_0=g0)

    fns = {
        "nt_first": lambda: nt_call(jts),
        "tf_first": lambda: tf_call(ts),
        "tf_first_many": lambda: tf_call(ts_many),
        "nt_first_many": lambda: nt_call(jts_many),
        "nt_inf": lambda: nt_call(None),
        "tf_inf": lambda: tf_call(None),
    }
    samples, calls, outs = interleaved(fns, pairs, min_time)
    res: dict[str, Any] = {"n": n, "m": m, "r": N_OUTPUTS, "samples_s": samples, "calls": calls}
    for name, sam in samples.items():
        res[f"{name}_s"] = float(np.median(sam))
    res["ratios"] = {
        key: ratio_stats(samples[f"tf_{key}"], samples[f"nt_{key}"]) for key in TARGETS
    }
    # the same answer (outputs relative to their largest entry)
    diffs = {}
    for key in TARGETS:
        a, b = outs[f"tf_{key}"], outs[f"nt_{key}"]
        scale = max(float(np.max(np.abs(np.asarray(b[1])))), 1e-300)
        diffs[key] = (
            max(
                float(np.max(np.abs(a.train - np.asarray(b[0])))),
                float(np.max(np.abs(a.test - np.asarray(b[1])))),
            )
            / scale
        )
    res["max_rel_diff"] = diffs
    return res


def _report(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "bench_peer: tangentflow vs neural-tangents side by side (one process, same arrays)",
        f"date      {info['date']}",
        f"machine   {info['platform']}; {info['cpu']} ({info['cpu_count']} logical CPUs)",
        f"software  python {info['python']}, numpy {info['numpy']}, jax {info['jax']} "
        f"(x64 {info['jax_x64']}, {', '.join(info['jax_devices'])}), neural-tangents "
        f"{info['neural_tangents']}, tangentflow {info['tangentflow']} "
        f"({info['tangentflow_build']} build, {info['tangentflow_threads']} threads)",
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
    labels = {
        "first": "first call, 100 times + test",
        "first_many": "first call, 1000 times + test",
        "inf": "t = inf (Cholesky both)",
    }
    for r in result["sizes"]:
        lines.append("")
        lines.append(f"N = {r['n']}  (M = {r['m']} test points, R = {r['r']} outputs)")
        lines.append(
            f"  {'measurement':32}{'tangentflow':14}{'neural-tangents':17}"
            f"{'tf / nt':22}{'target':10}"
        )
        for key, label in labels.items():
            st = r["ratios"][key]
            verdict = "pass" if st["median"] <= TARGETS[key] else "FAIL"
            lines.append(
                f"  {label:32}{r[f'tf_{key}_s']:<14.4f}{r[f'nt_{key}_s']:<17.4f}"
                f"{st['median']:.2f}x ({st['min']:.2f}–{st['max']:.2f}){'':7}"
                f"<= {TARGETS[key]}x  {verdict}   (max rel diff {r['max_rel_diff'][key]:.1e})"
            )
    t = result["timing"]
    lines.append("")
    lines.append(
        f"timing: samples >= {t['min_sample_s']:g} s; ratios are medians of {t['pairs']} "
        "paired rounds (one sample of each measurement per round, order reversed every "
        "other round), with (min–max) over the rounds; seconds are medians"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_peer.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="2000,4000", help="comma-separated N (default 2000,4000)"
    )
    parser.add_argument("--test-points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--min-time", type=float, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="write every number to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 10 or args.repeats < 1 or args.test_points < 1:
        parser.error("--sizes must be integers >= 10, --repeats and --test-points >= 1")

    peer = _import_peer()
    if isinstance(peer, str):
        _reexec_or_skip(peer)
        return 0
    jax, nt = peer
    jax.config.update("jax_enable_x64", True)
    if getattr(nt, "__version__", NT_VERSION) != NT_VERSION:
        print(f"bench_peer: note: neural-tangents {nt.__version__}, not {NT_VERSION}")

    result: dict[str, Any] = {
        "machine": _machine(jax, nt),
        "targets": TARGETS,
        "timing": {"min_sample_s": args.min_time, "pairs": args.repeats},
        "sizes": [],
    }
    for n in sizes:
        print(f"bench_peer: N = {n} ...", file=sys.stderr, flush=True)
        result["sizes"].append(_one_size(n, args.test_points, args.repeats, args.min_time, jax, nt))
    print(_report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=float)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
