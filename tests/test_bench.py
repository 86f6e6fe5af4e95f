"""kpjax bench: the figures it reports, its JSON, and --peers' reporting. No test asserts a speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from kpjax.bench import PEERS_DIR_VARIABLE, format_peers

FIGURES = ("train_images_per_s", "train_compile_s", "infer_b1_p50_ms", "infer_b1_p90_ms", "infer_b256_images_per_s",
           "infer_compile_s", "peak_rss_mb")
TINY = ("--batch", "4", "--steps", "1", "--repeats", "1", "--json")
STUB_FIGURES = {"framework": "torch", "train_images_per_s": 10.0, "infer_b1_p50_ms": 100.0,
                "infer_b1_p90_ms": 120.0, "infer_b256_images_per_s": 50.0}


def kpjax(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kpjax", *args], capture_output=True, text=True, check=False,
                          timeout=300, env={**os.environ, **(env or {})})


def check_figures(result: dict) -> None:
    for key in FIGURES:
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["infer_b1_p50_ms"] <= result["infer_b1_p90_ms"]


def test_cli_bench_json_has_every_figure():
    done = kpjax("bench", *TINY)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    check_figures(result)
    assert result["model"] == "seed" and result["batch"] == 4 and result["params"] > 0
    if result["backend"] == "cpu":
        assert 0 < result["train_share_of_matmul_peak"] and result["matmul_gflops"] > 0


def test_cli_bench_peers_reports_missing_framework_and_ratios(tmp_path):
    (tmp_path / "keras_seed.py").write_text("import kpjax_no_such_framework\n")
    (tmp_path / "torch_seed.py").write_text(
        "import json, sys\n"
        "assert '--batch=4' in sys.argv and '--steps=1' in sys.argv, sys.argv\n"
        f"print('warming up')\nprint(json.dumps({STUB_FIGURES!r}))\n"
    )
    done = kpjax("bench", "--peers", "--rounds", "1", *TINY, env={PEERS_DIR_VARIABLE: str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rounds"] == 1
    check_figures(result["kpjax"])
    assert result["peers"]["keras"]["status"] == "not installed"
    assert "kpjax_no_such_framework" in result["peers"]["keras"]["error"]
    torch = result["peers"]["torch"]
    assert torch["train_images_per_s"] == STUB_FIGURES["train_images_per_s"]
    assert math.isclose(torch["ratio_train"], result["kpjax"]["train_images_per_s"] / 10.0)
    assert math.isclose(torch["ratio_infer_b256"], result["kpjax"]["infer_b256_images_per_s"] / 50.0)
    assert math.isclose(torch["ratio_infer_b1_p50"], 100.0 / result["kpjax"]["infer_b1_p50_ms"])  # > 1: kpjax faster
    text = format_peers(result)
    assert "keras: not installed" in text and "kpjax vs torch: training" in text


def test_cli_bench_peers_without_peer_scripts_is_one_line(tmp_path):
    done = kpjax("bench", "--peers", *TINY, env={PEERS_DIR_VARIABLE: str(tmp_path / "absent")})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no peer scripts" in done.stderr

