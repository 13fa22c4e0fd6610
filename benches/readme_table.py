"""The README's benchmark tables from the JSON of one run (medians with their min–max).

    python benches/readme_table.py benches/results/<bench>.json [benches/results/<peer>.json]

The first file is written by ``tangentflow bench --json``, the second by
``benches/bench_peer.py --json``; the Markdown goes to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tangentflow.cli._bench_report import target


def _ratio(st: dict[str, Any], percent: bool = False) -> str:
    if percent:
        return f"{100 * st['median']:.1f}% ({100 * st['min']:.1f}–{100 * st['max']:.1f})"
    return f"{st['median']:.2f}x ({st['min']:.2f}–{st['max']:.2f})"


def _target(key: str, sizes: list[int], percent: bool = False) -> str:
    bounds: list[tuple[int, str]] = []
    for n in sizes:
        b = target(key, n)
        text = "—" if b is None else (f"≤ {100 * b:.0f}%" if percent else f"≤ {b:g}x")
        if not bounds or bounds[-1][1] != text:
            bounds.append((n, text))
    if len(bounds) == 1:
        return bounds[0][1]
    return "; ".join(f"{t} (N = {n})" for n, t in bounds if t != "—")


#: (ratio key, label, as a percentage, has a target)
ROWS = [
    ("first_vs_eigh", "first call (100 times + test) / numpy eigh", False, True),
    ("factorize_vs_eigh", "… of which `factorize()` / numpy eigh", False, False),
    ("first_many_vs_first", "first call with 1000 times / with 100 times", False, True),
    ("repeat_vs_first", "repeat call through `test_set` / first call", True, True),
    ("repeat_test_only_vs_first", "… the same without train outputs", True, False),
    ("train_loss_vs_first", "`train_loss` at 10,000 times / first call", True, True),
    ("inf_vs_cholesky", "`at(None)` / SciPy Cholesky + solve + test product", False, True),
    (
        "sweep_vs_eigh",
        "20 `diag_reg` × 100 times via `test_set(...).with_params` / eigh",
        False,
        True,
    ),
]


def bench_table(res: dict[str, Any]) -> str:
    sizes = [r["n"] for r in res["sizes"]]
    head = "| measurement | " + " | ".join(f"N = {n}" for n in sizes) + " | target |"
    lines = [head, "|---|" + "---|" * len(sizes) + "---|"]
    for key, label, percent, has_target in ROWS:
        cells = []
        for r in res["sizes"]:
            st = r["ratios"].get(key)
            cells.append("—" if st is None else _ratio(st, percent))
        tgt = _target(key, sizes, percent) if has_target else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tgt} |")
    mem = [
        f"{r['memory_first_n2']:.2f} (eigh {r['memory_numpy_eigh_n2']:.2f})"
        if "memory_first_n2" in r
        else "—"
        for r in res["sizes"]
    ]
    lines.append(
        "| peak RSS of the first call, N²·8 B | " + " | ".join(mem) + " | ≤ 4.5 (N = 4000) |"
    )
    s = res["small"]
    st = s["ratio_stats"]
    lines.append(
        f"\nSmall problems (N = 100, 10 times, 50 test points) / plain NumPy: "
        f"{_ratio(st)} ({1e3 * s['tangentflow_s']:.2f} ms vs {1e3 * s['numpy_s']:.2f} ms; "
        "target ≤ 1.0x)."
    )
    secs = ", ".join(
        f"N = {r['n']}: eigh {r['eigh_s']:.2f} s, first call {r['first_s']:.2f} s, "
        f"factorize {r['factorize_s']:.2f} s"
        for r in res["sizes"]
    )
    lines.append(f"Medians in seconds: {secs}.")
    return "\n".join(lines)


def peer_table(res: dict[str, Any]) -> str:
    sizes = [r["n"] for r in res["sizes"]]
    labels = {
        "first": "first call, 100 times + test",
        "first_many": "first call, 1000 times + test",
        "inf": "t = ∞ (Cholesky in both)",
    }
    lines = [
        "| tangentflow / neural-tangents | "
        + " | ".join(f"N = {n}" for n in sizes)
        + " | target |",
        "|---|" + "---|" * len(sizes) + "---|",
    ]
    for key, label in labels.items():
        cells = []
        for r in res["sizes"]:
            st = r["ratios"][key]
            cells.append(f"{_ratio(st)}: {r[f'tf_{key}_s']:.2f} s vs {r[f'nt_{key}_s']:.2f} s")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | ≤ {res['targets'][key]}x |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        print(bench_table(json.load(fh)))
    if len(argv) > 1:
        with open(argv[1], encoding="utf-8") as fh:
            print()
            print(peer_table(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
