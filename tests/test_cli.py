"""The ``tangentflow`` command line: demo, bench, and refusal of bad options."""

from __future__ import annotations

import io
import json
import math
import runpy
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

import tangentflow  # noqa: E402
from tangentflow import _demo  # noqa: E402
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
    inf_row = next(line for line in text.splitlines() if line.strip().startswith("inf"))
    assert inf_row.split()[-1] == printed.strip()
    assert "match" in text and "MISMATCH" not in text


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
    argv += ["--n-times", "8", "--n-regs", "3", "--repeats", "1", "--no-progress"]
    assert main(argv) == 0
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


def test_bench_script_calls_the_same_code(monkeypatch):
    from tangentflow import _bench

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
