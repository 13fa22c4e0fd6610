"""The report of ``tangentflow bench``: the targets, the machine and one table per size
(measurement, tangentflow, baseline, ratio with its spread, target, verdict)."""

from __future__ import annotations

import datetime
import os
import platform
from typing import Any

import numpy as np

from ._bench_inputs import D_INPUT, HIDDEN_LAYERS, N_OUTPUTS
from ._measure import DEFAULT_PAIRS, MIN_SAMPLE_S

__all__ = ["TARGETS", "machine_info", "format_report"]

#: Targets of the performance issue: (kind, bound). "ratio": time / baseline <= bound.
TARGETS: dict[str, float] = {
    "first_vs_eigh": 1.3,
    "repeat_vs_first": 0.08,
    "inf_vs_cholesky": 1.5,
    "sweep_vs_eigh": 2.0,
    "memory_n2": 6.0,
    "small_vs_numpy": 1.5,
}


# -- machine -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Date, platform, CPU, versions, threads, BLAS and OPENBLAS_* settings of this run."""
    import tangentflow

    info: dict[str, Any] = {
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


# -- table ---------------------------------------------------------------------------------
def _ratio_text(r: dict[str, Any], key: str, percent: bool = False) -> str:
    st = r["ratios"][key]
    if percent:
        return f"{100 * st['median']:.1f}% ({100 * st['min']:.1f}–{100 * st['max']:.1f})"
    return f"{st['median']:.2f}x ({st['min']:.2f}–{st['max']:.2f})"


def _verdict(value: float | None, bound: float) -> str:
    if value is None:
        return "skip"
    return "pass" if value <= bound else "FAIL"


def _rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(label, tangentflow, baseline, ratio text, target text, verdict) for one size."""
    rows: list[tuple[str, str, str, str, str, str]] = []
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


def format_report(result: dict[str, Any]) -> str:
    """The printed report of a run: machine, one table per size, small problems, timing."""
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
