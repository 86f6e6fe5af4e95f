"""The default model shipped inside the package: it loads, predicts, and says where it came from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kpjax.checkpoint
from kpjax import calibration
from kpjax.checkpoint import DEFAULT_MODEL, best_progress, load_model
from kpjax.errors import KpjaxError
from kpjax.inference import predict_model
from kpjax.keypoints import KAGGLE
from kpjax.sources.synthetic import make_faces

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from ship_default import ship_model  # noqa: E402


def test_default_model_loads_predicts_and_records_its_provenance():
    model, config = load_model()
    faces = make_faces(3, seed=1)
    predicted = predict_model(model, faces.images)
    assert predicted.shape == (3, 30) and np.isfinite(predicted).all()
    assert np.abs(predicted).max() < 1.5  # in the seed's units: near the 96x96 frame
    provenance = json.loads((DEFAULT_MODEL / "provenance.json").read_text())
    assert provenance["command"].startswith("python experiments/") and provenance["data"]
    assert provenance["evaluations"]["68-point sources, complete"]["rmse_px"] > 0
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
    assert size < 5e6, f"the shipped model is {size / 1e6:.1f} MB"


def test_evaluate_and_predict_need_no_run_directory(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kpjax", "evaluate", "--data", "synthetic:20", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 20


def test_ship_model_keeps_the_best_model_without_optimizer_state(trained_run, tmp_path):
    result = {"command": "python experiments/best_recipe.py", "config": {"data": ["/somewhere/synthetic:300"]},
              "evaluations": {"68-point sources, complete": {"n": 9, "rmse_px": 2.0, "nme": 0.1, "mse": 1e-3,
                                                              "mae": 0.02}},
              "flip_tta": True, "params": 1, "best_epoch": 2}
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    offset = np.full((15, 2), 0.25, np.float32)
    calibration.save(run, offset, KAGGLE.names, best_progress(run)[0], {"data": ["/somewhere/helen-68-train"],
                                                                         "faces": 9})
    ship_model(run, result, tmp_path / "default")
    assert not list((tmp_path / "default").rglob("opt_state"))
    shipped, _ = load_model(tmp_path / "default")
    original, _ = load_model(run)
    images = make_faces(4, seed=2).images
    np.testing.assert_array_equal(predict_model(shipped, images), predict_model(original, images))
    np.testing.assert_array_equal(calibration.offset_of(shipped), offset)  # the calibration travels with it
    provenance = json.loads((tmp_path / "default" / "provenance.json").read_text())
    assert provenance["data"] == ["synthetic:300"]
    assert provenance["calibration"] == {"checkpoint_step": best_progress(run)[0], "data": ["helen-68-train"],
                                         "faces": 9}


def test_no_default_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(kpjax.checkpoint, "DEFAULT_MODEL", tmp_path / "absent")
    with pytest.raises(KpjaxError, match="no run directory given and no default model is installed"):
        load_model()
