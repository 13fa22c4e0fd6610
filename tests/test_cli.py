"""The ``tangentflow`` command line: demo, bench, and refusal of bad options."""

from __future__ import annotations

import io
import json
import math
import os
import runpy
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

import tangentflow  # noqa: E402
from tangentflow.cli import demo as _demo  # noqa: E402
from tangentflow.cli import main  # noqa: E402


def _numbers(obj):
    """Every number in a JSON document."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    threads = tangentflow.get_num_threads()
    argv = ["demo", "--n-train", "200", "--hidden-layers", "2", "--plot", str(tmp / "c.png")]
    argv += ["--json", str(tmp / "o.json"), "--threads", "1"]
    saved = sys.stdout
    sys.stdout = out
    try:
        rc = main(argv)
    finally:
        sys.stdout = saved
        tangentflow.set_num_threads(threads)
    return rc, tmp, out.getvalue()


def test_demo_writes_plot_and_finite_json(demo_run):
    rc, tmp, text = demo_run
    assert rc == 0
    png = tmp / "c.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((tmp / "o.json").read_text())
    nums = list(_numbers(res))
    assert len(nums) > 100 and all(math.isfinite(v) for v in nums)
    assert res["config"]["n_train"] == 200 and res["config"]["n_test"] == _demo.N_DIGITS - 200
    assert res["config"]["hidden_layers"] == 2 and res["config"]["threads"] == 1
    assert len(res["times"]) == len(res["test_acc"]) == 30
    assert res["factorizations"] == 1
    # the flow fits the training set and the losses decrease over time
    assert res["infinite"]["train_acc"] == 1.0 and res["infinite"]["train_mse"] < 1e-12
    assert np.all(np.diff(res["train_mse"]) <= 1e-15)
    assert res["test_acc"][-1] == pytest.approx(res["infinite"]["test_acc"])
    e = res["ensemble"]
    assert 0 < e["mean_test_variance"] < e["mean_prior_variance"]
    assert e["max_abs_mean_minus_predictor"] < 1e-8
    assert "t [steps]" in text and "inf" in text and "summary" in text


def test_demo_t_inf_matches_kernel_ridge(demo_run):
    """Independently: the same split and kernel through scikit-learn's KernelRidge."""
    from sklearn.kernel_ridge import KernelRidge

    from tangentflow.kernels import fully_connected

    _, tmp, text = demo_run
    res = json.loads((tmp / "o.json").read_text())
    x_tr, x_te, lab_tr, lab_te = _demo.load_digits_split(200, seed=0)
    k = fully_connected(x_tr, hidden_layers=2, get="ntk")
    k_te = fully_connected(x_te, x_tr, hidden_layers=2, get="ntk")
    alpha = res["kernel_ridge"]["alpha"]
    assert alpha == 0.0  # no regularization: the digits NTK is well conditioned
    krr = KernelRidge(kernel="precomputed", alpha=alpha).fit(k, _demo.one_hot(lab_tr))
    acc = float((krr.predict(k_te).argmax(axis=1) == lab_te).mean())
    printed = _demo.fmt_acc(res["infinite"]["test_acc"])
    assert _demo.fmt_acc(acc) == printed
    assert res["kernel_ridge"]["max_abs_diff_vs_t_inf"] < 1e-8
    # the outputs themselves, not only the accuracies (docs/numerics.md §13)
    ref = krr.predict(k_te)
    rel = res["kernel_ridge"]["rel_diff_vs_t_inf"]
    assert rel <= _demo.KERNEL_RIDGE_RTOL and res["kernel_ridge"]["ok"] is True
    assert res["kernel_ridge"]["max_abs_output"] == pytest.approx(np.abs(ref).max(), rel=1e-12)
    inf_row = next(line for line in text.splitlines() if line.strip().startswith("inf"))
    assert inf_row.split()[-1] == printed.strip()
    line = next(x for x in text.splitlines() if "outputs vs KernelRidge" in x)
    assert f"{rel:.1e}" in line and "ok" in line and "FAIL" not in line


def test_demo_fails_when_outputs_disagree_with_kernel_ridge(monkeypatch, tmp_path, capsys):
    """A perturbation of 1e-6 relative in the reference outputs must fail the demo (exit 1)
    after its report and JSON are written."""
    real = _demo._kernel_ridge

    def shifted(k, y, k_te, alpha):
        res = real(k, y, k_te, alpha)
        pred = res["_predictions"]
        res["_predictions"] = pred + 1e-6 * np.abs(pred).max()
        return res

    monkeypatch.setattr(_demo, "_kernel_ridge", shifted)
    path = tmp_path / "o.json"
    argv = ["demo", "--n-train", "100", "--hidden-layers", "1", "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--json", str(path)])
    assert e.value.code == 1
    cap = capsys.readouterr()
    assert "KernelRidge" in cap.err and "> 1e-09" in cap.err
    assert "FAIL" in cap.out
    res = json.loads(path.read_text())
    assert res["kernel_ridge"]["ok"] is False
    assert res["kernel_ridge"]["rel_diff_vs_t_inf"] == pytest.approx(1e-6, rel=1e-3)


def test_demo_deep_network_outputs_match_kernel_ridge():
    """``--hidden-layers 100``: the ReLU NTK shrinks like 2^-L (max entry ~1e-28 here), which
    must not cost accuracy: the converged outputs equal KernelRidge's to 1e-9 relative."""
    res = _demo.run_demo(200, 100, progress=False, out=io.StringIO())
    krr = res["kernel_ridge"]
    assert res["diagnostics"]["max_eigenvalue"] < 1e-20  # really the tiny-scale regime
    assert krr["rel_diff_vs_t_inf"] <= 1e-9, krr
    assert krr["ok"] is True


def test_plot_skipped_without_matplotlib(demo_run, monkeypatch, tmp_path):
    _, tmp, _ = demo_run
    res = json.loads((tmp / "o.json").read_text())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert _demo._plot(res, tmp_path / "x.png") is False
    assert not (tmp_path / "x.png").exists()


def test_progress_text_bar_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    buf = io.StringIO()
    bar = _demo.Progress(2, "job", file=buf)
    with bar("one"):
        pass
    with bar("two"):
        pass
    bar.close()
    text = buf.getvalue()
    assert "job [" in text and "2/2 two" in text and "1/2 one" in text
    quiet = io.StringIO()
    bar = _demo.Progress(1, "job", enabled=False, file=quiet)
    with bar("x"):
        pass
    bar.close()
    assert quiet.getvalue() == ""


def test_bench_runs_tiny(tmp_path, capsys):
    path = tmp_path / "b.json"
    argv = ["bench", "--sizes", "200", "--json", str(path), "--test-points", "30"]
    argv += ["--n-times", "8", "--n-regs", "3", "--repeats", "3", "--min-time", "0.01"]
    assert main([*argv, "--no-progress"]) == 0
    text = capsys.readouterr().out
    for label in ("first call", "repeat", "t=None", "sweep", "peak RSS", "small problems"):
        assert label in text
    assert "N = 200" in text and "BLAS" in text and "date" in text
    res = json.loads(path.read_text())
    (size,) = res["sizes"]
    assert size["n"] == 200 and size["sweep_factorizations"] == 1
    for key in ("eigh_s", "first_s", "repeat_s", "inf_s", "sweep_s"):
        assert size[key] > 0
    assert size["inf_max_abs_diff"] < 1e-8
    assert res["small"]["max_abs_diff"] < 1e-8
    assert math.isfinite(size["memory_first_n2"])
    # every ratio is the median of 3 paired samples, with its spread
    assert res["timing"] == {"min_sample_s": 0.01, "pairs": 3}
    for key in ("first_vs_eigh", "repeat_vs_first", "inf_vs_cholesky", "sweep_vs_eigh"):
        st = size["ratios"][key]
        assert st["pairs"] == 3 and st["min"] <= st["median"] <= st["max"]
        assert size[key] == st["median"]
    st = size["ratios"]["first_vs_eigh"]
    assert f"{st['median']:.2f}x ({st['min']:.2f}–{st['max']:.2f})" in text
    assert "median of 3 paired samples" in text
    # the raw samples are kept, and each ratio is the median of the per-round ratios
    for key in ("first_many_vs_first", "train_loss_vs_first", "factorize_vs_eigh"):
        assert size["ratios"][key]["pairs"] == 3
    raw = size["samples_s"]
    per_round = [a / b for a, b in zip(raw["first"], raw["eigh"], strict=True)]
    assert st["median"] == pytest.approx(float(np.median(per_round)), rel=1e-12)
    assert "1000 times" in text and "train_loss, 10000 times" in text


def test_paired_timing_alternates_and_takes_the_median(monkeypatch):
    """_paired: calibrated samples of >= min_time, alternating order, median of the paired
    ratios. A fake clock makes the check exact."""
    from tangentflow.cli import _measure

    clock = [0.0]
    monkeypatch.setattr(_measure.time, "perf_counter", lambda: clock[0])
    calls = []
    cost = {"fn": iter([0.05] * 2 + [0.05, 0.06, 0.04] * 40), "base": iter([0.1] * 200)}

    def make(name):
        def f():
            calls.append(name)
            clock[0] += next(cost[name])
            return name

        return f

    t_fn, t_base, st, out, ref = _measure.paired(make("fn"), make("base"), 3, min_time=0.2)
    assert (out, ref) == ("fn", "base")
    # calibration: fn 0.05 s per call -> ceil(1.2 * 0.2 / 0.05) = 5 calls; base 0.1 s -> 3
    assert st["calls_per_sample"] == [5, 3] and st["pairs"] == 3
    timed = [c for c in calls[4:]]  # after 2 + 2 calibration calls
    assert timed[:3] == ["base"] * 3 and timed[3:8] == ["fn"] * 5  # pair 1: base first
    assert timed[8:13] == ["fn"] * 5 and timed[13:16] == ["base"] * 3  # pair 2: fn first
    assert t_base == pytest.approx(0.1)
    assert st["min"] <= st["median"] <= st["max"]
    assert st["median"] == pytest.approx(t_fn / t_base, rel=0.2)


class FakeClock:
    """A clock that only moves when a timed function says how long it took."""

    def __init__(self):
        self.now = 0.0
        self.log = []

    def __call__(self):
        return self.now

    def fn(self, name, costs):
        it = iter(costs)

        def f():
            self.log.append(name)
            self.now += next(it)
            return name

        return f


def test_interleaved_rounds_alternate_and_pair_per_round():
    """_measure.interleaved: one calibrated sample of each function per round, the order
    reversed every other round; ratio_stats pairs the samples of the same round."""
    from tangentflow.cli import _measure

    clock = FakeClock()
    # base: 0.3 s per call (>= min_time: 1 call per sample); fn: 0.1 s calibration, then
    # 0.1 s per call in round 0, 0.2 in round 1, 0.15 in round 2 (3 calls per sample)
    fns = {
        "base": clock.fn("base", [0.3] * 4),
        "fn": clock.fn("fn", [0.1, 0.1] + [0.1] * 3 + [0.2] * 3 + [0.15] * 3),
    }
    samples, calls, outs = _measure.interleaved(fns, 3, min_time=0.2, clock=clock)
    assert calls == {"base": 1, "fn": 3}  # ceil(1.2 * 0.2 / 0.1) = 3
    assert outs == {"base": "base", "fn": "fn"}
    timed = clock.log[3:]  # after 1 + 2 calibration calls
    assert timed == ["base"] + ["fn"] * 3 + ["fn"] * 3 + ["base"] + ["base"] + ["fn"] * 3
    assert samples["base"] == pytest.approx([0.3, 0.3, 0.3])
    assert samples["fn"] == pytest.approx([0.1, 0.2, 0.15])
    st = _measure.ratio_stats(samples["fn"], samples["base"])
    assert st["median"] == pytest.approx(0.5) and st["pairs"] == 3
    assert st["min"] == pytest.approx(1 / 3) and st["max"] == pytest.approx(2 / 3)
    assert st["q1"] == pytest.approx(5 / 12) and st["q3"] == pytest.approx(7 / 12)
    assert st["samples_s"] == [samples["fn"], samples["base"]]


def test_ratio_stats_pairs_by_round_not_by_sorted_times():
    """A slow round slows both members of its pair: the per-round ratios stay steady
    although the ratio of the median times does not."""
    from tangentflow.cli import _measure

    num = [1.0, 4.0, 1.1]  # round 1 ran on a busy machine
    den = [1.0, 4.0, 0.9]
    st = _measure.ratio_stats(num, den)
    assert st["ratios"] == pytest.approx([1.0, 1.0, 1.1 / 0.9])
    assert st["median"] == pytest.approx(1.0)
    assert float(np.median(num)) / float(np.median(den)) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="differ in length"):
        _measure.ratio_stats([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="differ in length"):
        _measure.ratio_stats([], [])


def test_bench_ratios_come_from_the_same_rounds():
    """The bench's ratios are ratio_stats of the interleaved samples named in RATIOS."""
    from tangentflow.cli import bench as _bench

    assert set(_bench.ROUND_ORDER) >= {x for pair in _bench.RATIOS.values() for x in pair}
    for key, (num, den) in _bench.RATIOS.items():
        # every baseline precedes its numerator in a round (alternation within a pair)
        assert _bench.ROUND_ORDER.index(den) < _bench.ROUND_ORDER.index(num), key


def test_short_calls_are_repeated_within_a_sample(monkeypatch):
    from tangentflow.cli import _measure

    clock = [0.0]
    monkeypatch.setattr(_measure.time, "perf_counter", lambda: clock[0])

    def f():
        clock[0] += 1e-3

    t, _ = _measure.best(f, 3, min_time=0.2)
    assert t == pytest.approx(1e-3)
    calls, _ = _measure.calibrate(f, 0.2)
    assert calls * 1e-3 >= 0.2


def test_peer_bench_skips_cleanly_without_its_venv(tmp_path):
    """benches/bench_peer.py without neural-tangents and without the peer venv: exit 0 and
    a message saying why (it must never fail a plain checkout)."""
    import subprocess

    env = {**os.environ, "PEER_VENV": str(tmp_path / "no-venv")}
    env.pop("TANGENTFLOW_BENCH_PEER_REEXEC", None)
    script = os.path.join(os.path.dirname(__file__), "..", "benches", "bench_peer.py")
    proc = subprocess.run(
        [sys.executable, script, "--sizes", "100"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    if "skipped" not in proc.stdout:
        pytest.skip("neural-tangents is importable here: the peer bench would run")
    assert proc.returncode == 0, proc.stderr
    assert "neural-tangents is not importable" in proc.stdout and "no-venv" in proc.stdout


def test_bench_script_calls_the_same_code(monkeypatch):
    from tangentflow.cli import bench as _bench

    seen = {}
    monkeypatch.setattr(_bench, "run_bench", lambda sizes, **kw: seen.update(sizes=sizes, **kw))
    assert _bench.main(["--sizes", "300,400", "--no-memory"]) == 0
    assert seen["sizes"] == [300, 400] and seen["memory"] is False


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["demo", "--n-train", "-5"], "--n-train"),
        (["demo", "--n-train", "abc"], "--n-train"),
        (["demo", "--n-train", "0"], "--n-train"),
        (["demo", "--n-train", "5000"], "--n-train"),
        (["demo", "--n-train", "3"], "--n-train"),
        (["demo", "--hidden-layers", "-1"], "--hidden-layers"),
        (["demo", "--hidden-layers", "1.5"], "--hidden-layers"),
        (["demo", "--threads", "0"], "--threads"),
        (["demo", "--threads", "1025"], "--threads"),
        (["bench", "--threads", "2000"], "--threads"),
        (["demo", "--hidden-layers", "101"], "--hidden-layers"),
        (["demo", "--bogus"], "unrecognized arguments"),
        (["bench", "--sizes", "abc"], "--sizes"),
        (["bench", "--sizes", "1000,-2"], "--sizes"),
        (["bench", "--sizes", ","], "--sizes"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_options_exit_nonzero_with_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    assert needle in err and "usage:" in err


def test_python_m_tangentflow_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tangentflow", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("tangentflow", run_name="__main__")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--hidden-layers", "1000000000000"],
        ["demo", "--threads", "100000000000000000000000"],
        ["demo", "--plot", "curve.xyz"],
        ["demo", "--json", "/nonexistent-folder/out.json"],
        ["bench", "--sizes", "100000000000000000000"],
    ],
)
def test_out_of_range_options_exit_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code != 0
    assert "argument" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"tangentflow {tangentflow.__version__}"


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_states_the_range_of_every_bounded_option(capsys):
    demo = _help(["demo"], capsys)
    lo, hi = _demo.MIN_TRAIN, _demo.N_DIGITS - _demo.MIN_TEST
    assert f"{lo} to {hi}" in demo  # --n-train
    assert f"1 to {_demo.MAX_HIDDEN_LAYERS}" in demo  # --hidden-layers
    assert f"1 to {tangentflow.MAX_THREADS}" in demo  # --threads
    bench = _help(["bench"], capsys)
    assert "10 to 100000" in bench and f"1 to {tangentflow.MAX_THREADS}" in bench
    # the stated bounds are the enforced ones
    for argv in (["demo", "--n-train", str(hi + 1)], ["demo", "--n-train", str(lo - 1)]):
        with pytest.raises(SystemExit):
            main(argv)
    capsys.readouterr()


def _bad_path(kind, tmp_path, suffix):
    if kind == "dangling-symlink":
        dangling = tmp_path / f"dangling{suffix}"
        dangling.symlink_to(tmp_path / "missing-folder" / f"x{suffix}")
        return str(dangling)
    return {
        "directory": str(tmp_path),
        "empty": "",
        "dev-full": "/dev/full",
        "proc": f"/proc/x{suffix}",
        "over-long": str(tmp_path / ("a" * 300 + suffix)),
        "missing-folder": str(tmp_path / "nope" / f"x{suffix}"),
    }[kind]


@pytest.mark.parametrize("command", ["demo", "bench"])
@pytest.mark.parametrize(
    "kind",
    ["directory", "empty", "dev-full", "proc", "dangling-symlink", "over-long", "missing-folder"],
)
def test_bad_output_path_exits_2_before_any_work(command, kind, tmp_path, monkeypatch, capsys):
    from tangentflow.cli import bench as _bench

    def no_work(*a, **k):
        raise AssertionError("the job ran although an output path is bad")

    monkeypatch.setattr(_demo, "run_demo", no_work)
    monkeypatch.setattr(_bench, "run_bench", no_work)
    with pytest.raises(SystemExit) as e:
        main([command, "--json", _bad_path(kind, tmp_path, ".json"), "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--json" in err and "cannot write" in err
    if command == "demo":
        good = str(tmp_path / "ok.json")
        plot = _bad_path(kind, tmp_path, ".png")
        with pytest.raises(SystemExit) as e:
            main([command, "--json", good, "--plot", plot, "--no-progress"])
        assert e.value.code == 2
        assert "--plot" in capsys.readouterr().err
        assert not os.path.exists(good)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "missing-folder").exists()


def test_same_file_for_two_outputs_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_demo, "run_demo", lambda *a, **k: pytest.fail("ran"))
    p = tmp_path / "out.png"
    (tmp_path / "sub").mkdir()
    for other in (p, tmp_path / "sub" / ".." / "out.png"):
        with pytest.raises(SystemExit) as e:
            main(["demo", "--json", str(other), "--plot", str(p), "--no-progress"])
        assert e.value.code == 2
        assert "same file" in capsys.readouterr().err
    assert not p.exists()


def test_good_output_paths_are_left_untouched(tmp_path, monkeypatch):
    """The check creates nothing that stays and does not truncate an existing file."""
    seen = {}
    monkeypatch.setattr(_demo, "run_demo", lambda *a, **k: seen.update(k))
    old = tmp_path / "old.json"
    old.write_text("keep")
    assert main(["demo", "--json", str(old), "--plot", str(tmp_path / "new.png")]) == 0
    assert old.read_text() == "keep" and not (tmp_path / "new.png").exists()
    assert seen["json_path"] == str(old) and seen["plot"] == str(tmp_path / "new.png")


def test_every_file_option_of_every_subcommand_is_checked():
    """Any subcommand's option that names an output file goes through check_outputs."""
    import argparse

    from tangentflow.cli import build_parser
    from tangentflow.cli._outputs import OUTPUTS_KEY as _OUTPUTS

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        checked = {dest for _, dest, _ in sub.get_default(_OUTPUTS) or []}
        for action in sub._actions:
            if action.metavar in ("FILE", "PNG", "PATH") or action.dest in ("json", "plot"):
                assert action.dest in checked, f"{name} {action.option_strings} is not checked"
