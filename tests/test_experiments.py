"""The experiment scripts run end to end (one epoch on drawn faces) and the report is built from their results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("script, name, extra", [("reproduce_seed.py", "seed", []), ("best_recipe.py", "best", []),
                                                 ("sweep.py", "sweep-heatmap", ["--variants", "heatmap"])])
def test_experiment_runs_one_epoch_and_records_results(tmp_path, script, name, extra):
    args = ["--synthetic", "160", "--epochs", "1", "--run-root", tmp_path / "runs", "--results", tmp_path / "results",
            *extra]
    done = subprocess.run([sys.executable, EXPERIMENTS / script, *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert result["best_epoch"] == 1 and result["params"] > 0
    headline = result["evaluations"]["68-point sources, complete"]
    assert headline["n"] > 0 and headline["rmse_px"] > 0
    report = subprocess.run([sys.executable, EXPERIMENTS / "report.py", "--results", tmp_path / "results",
                             "--runs", tmp_path / "runs", "--grid-run", name, "--out", tmp_path / "EXPERIMENTS.md"],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "EXPERIMENTS.md").read_text()
    assert f"| {name} |" in text and "9.37e-04" in text
    assert (tmp_path / "experiments" / "figures" / "validation_grid.png").exists()


def test_label_noise_pairs_each_face_with_its_nearest_of_the_same_person():
    sys.path.insert(0, str(EXPERIMENTS))
    from label_noise import nearest_pairs

    images = np.zeros((4, 2, 2, 1), np.uint8)
    images[1] += 10  # person a: faces 0 and 1 nearly alike; person b: faces 2 and 3 identical
    keypoints = np.zeros((4, 15, 2), np.float32)
    keypoints[1] += 3.0
    pairs = nearest_pairs(images, keypoints, np.array(["a", "a", "b", "b"]))
    np.testing.assert_allclose(pairs[:, 1], [3.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(pairs[:, 0], [10 / 255, 10 / 255, 0, 0], atol=1e-6)
