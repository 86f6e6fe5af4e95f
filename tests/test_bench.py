"""kpjax bench and benchmarks/peers_bench.py: the figures, the machine's load around them, the busy warning,
the JSON, and the peers' reporting. No test asserts a speed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kpjax import bench
from kpjax.cli import app

FIGURES = ("train_images_per_s", "train_compile_s", "infer_b1_p50_ms", "infer_b1_p90_ms", "infer_b256_images_per_s",
           "infer_build_s", "xla_infer_b1_p50_ms", "xla_infer_b256_images_per_s", "xla_infer_compile_s", "peak_rss_mb")
TINY = ("--batch", "4", "--steps", "1", "--repeats", "1", "--json")
STUB_FIGURES = {"framework": "torch", "train_images_per_s": 10.0, "infer_b1_p50_ms": 100.0,
                "infer_b1_p90_ms": 120.0, "infer_b256_images_per_s": 50.0}
PEERS_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers_bench.py"


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, check=False, timeout=300)


def check_figures(result: dict) -> None:
    for key in FIGURES:
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["infer_b1_p50_ms"] <= result["infer_b1_p90_ms"]
    assert result["infer_engine"] == "onnxruntime"  # the engine photos run on; XLA's figures beside it


def check_machine(result: dict) -> None:
    assert result["cpu_model"] and result["cpu_cores"] == os.cpu_count()
    for key in ("load_before", "load_after"):
        assert len(result[key]) == 3 and all(load >= 0 for load in result[key]), key


def test_cli_bench_json_has_every_figure_and_the_machine_it_ran_on():
    done = run("-m", "kpjax", "bench", *TINY)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    check_figures(result)
    check_machine(result)
    assert result["model"] == "seed" and result["batch"] == 4 and result["params"] > 0
    if result["backend"] == "cpu":
        assert 0 < result["train_share_of_matmul_peak"] and result["matmul_gflops"] > 0
    busy = max(result["load_before"][0], result["load_after"][0]) > bench.BUSY_LOAD_PER_CORE * os.cpu_count()
    assert ("warning: the machine was busy" in done.stderr) == busy


def test_load_average_and_cpu_are_recorded_around_a_measurement(monkeypatch):
    loads = iter([(0.4, 0.31, 0.2), (1.234, 0.9, 0.5)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    result = bench.measured_under_load(lambda: {"train_images_per_s": 1.0})
    assert result["train_images_per_s"] == 1.0
    assert result["load_before"] == [0.4, 0.31, 0.2] and result["load_after"] == [1.23, 0.9, 0.5]
    assert result["cpu_cores"] == os.cpu_count() and result["cpu_model"] == bench.cpu_model() != ""
    assert bench.format_conditions(result) == (f"cpu {result['cpu_model']}, {os.cpu_count()} cores; load average "
                                               "(1/5/15 min) 0.40 / 0.31 / 0.20 before, 1.23 / 0.90 / 0.50 after")


def test_busy_warning_names_the_load_over_half_a_core_each_before_or_after():
    def measured(before: float, after: float) -> dict:
        return {"cpu_cores": 2, "load_before": [before, 0.0, 0.0], "load_after": [after, 0.0, 0.0]}

    assert bench.busy_warning([measured(0.2, 1.0)]) is None  # 0.5 per core is still quiet
    for loads in ((1.5, 0.2), (0.2, 1.5)):
        warning = bench.busy_warning([measured(*loads)])
        assert warning.startswith("warning: the machine was busy") and "up to 1.50 on 2 cores" in warning
        assert "\n" not in warning
    assert "up to 3.00" in bench.busy_warning([measured(0.1, 0.1), measured(3.0, 0.1)])  # any row of a scaling run


def test_cli_bench_prints_the_machine_and_warns_on_stderr_when_busy(monkeypatch):
    canned = {"backend": "cpu", "device": "cpu", "train_images_per_s": 100.0, "cpu_model": "Test CPU",
              "cpu_cores": 2, "load_before": [3.0, 2.0, 1.0], "load_after": [0.5, 1.0, 1.0]}
    monkeypatch.setattr(bench, "run_bench", lambda *args, **kwargs: canned)
    done = CliRunner().invoke(app, ["bench"])
    assert done.exit_code == 0, done.output
    assert "cpu Test CPU, 2 cores; load average (1/5/15 min) 3.00 / 2.00 / 1.00 before" in done.stdout
    assert done.stderr.startswith("warning: the machine was busy (1-minute load average up to 3.00 on 2 cores")
    as_json = CliRunner().invoke(app, ["bench", "--json"])
    assert json.loads(as_json.stdout) == canned and "warning" in as_json.stderr  # stdout stays one JSON object
    quiet = {**canned, "load_before": [0.2, 0.2, 0.2]}
    monkeypatch.setattr(bench, "run_bench", lambda *args, **kwargs: quiet)
    assert CliRunner().invoke(app, ["bench"]).stderr == ""


def test_cli_bench_has_no_peers_option():
    done = CliRunner().invoke(app, ["bench", "--peers"])
    assert done.exit_code == 2 and "No such option" in done.output


def test_peers_bench_reports_missing_framework_ratios_and_the_machine(tmp_path):
    (tmp_path / "keras_seed.py").write_text("import kpjax_no_such_framework\n")
    (tmp_path / "torch_seed.py").write_text(
        "import json, sys\n"
        "assert '--batch=4' in sys.argv and '--steps=1' in sys.argv, sys.argv\n"
        f"print('warming up')\nprint(json.dumps({STUB_FIGURES!r}))\n"
    )
    done = run(str(PEERS_BENCH), "--rounds", "1", "--peers-dir", str(tmp_path), *TINY)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rounds"] == 1
    check_figures(result["kpjax"])
    check_machine(result)
    check_machine(result["kpjax"])  # each kpjax run records its own, as kpjax bench does
    assert "glibc.malloc.hugetlb=1" in result["glibc_tunables"] or sys.platform != "linux"
    assert result["peers"]["keras"]["status"] == "not installed"
    assert "kpjax_no_such_framework" in result["peers"]["keras"]["error"]
    torch = result["peers"]["torch"]
    assert torch["train_images_per_s"] == STUB_FIGURES["train_images_per_s"]
    assert math.isclose(torch["ratio_train"], result["kpjax"]["train_images_per_s"] / 10.0)
    assert math.isclose(torch["ratio_infer_b256"], result["kpjax"]["infer_b256_images_per_s"] / 50.0)
    assert math.isclose(torch["ratio_infer_b1_p50"], 100.0 / result["kpjax"]["infer_b1_p50_ms"])  # > 1: kpjax faster

    spec = importlib.util.spec_from_file_location(PEERS_BENCH.stem, PEERS_BENCH)
    peers_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers_bench)
    text = peers_bench.format_peers(result)
    assert "keras: not installed" in text and "kpjax vs torch: training" in text
    assert text.splitlines()[-1] == bench.format_conditions(result)


def test_peers_bench_mistakes_are_one_line(tmp_path):
    for args, message in [(("--peers-dir", str(tmp_path / "absent")), f"error: --peers-dir {tmp_path / 'absent'}: "
                                                                       "no such folder"),
                          (("--rounds", "0"), "error: --rounds 0: expected at least 1")]:
        done = run(str(PEERS_BENCH), *args)
        assert done.returncode == 2 and done.stderr.strip() == message and done.stdout == ""


def test_photo_latency_names_a_missing_model_in_one_line(tmp_path):
    done = run(str(PEERS_BENCH.with_name("photo_latency.py")), "--compare", str(tmp_path / "missing"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"photo_latency.py: error: {tmp_path / 'missing'}: not a kpjax run directory (no config.json)")
