"""Runs end to end: checkpoints, best selection, resume (also after SIGINT) and the CLI's error paths."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from kpjax.checkpoint import load_model
from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.inference import predict_model
from kpjax.sources.synthetic import make_faces
from kpjax.train import train


def kpjax(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kpjax", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_run_directory_records_config_split_metrics_and_curve(trained_run):
    history = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_mse", "train_mae", "val_mse", "val_mae", "val_rmse_px"} <= set(history[0])
    split = json.loads((trained_run / "split.json").read_text())
    assert split["num_train"] + split["num_val"] == 300 and split["seed"] == 0
    assert (trained_run / "learning_curve.png").stat().st_size > 1000
    assert TrainConfig.load(trained_run).epochs == 2


def test_best_checkpoint_is_the_lowest_validation_loss(trained_run):
    history = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    best = min(history, key=lambda h: h["val_mse"])
    model, config = load_model(trained_run, "best")
    faces = make_faces(300, seed=config.seed)
    from kpjax.dataset import group_split
    from kpjax.evaluate import evaluate_model

    val = faces.subset(group_split(faces.groups, config.val_fraction, config.seed)[1])
    assert evaluate_model(model, val)["mse"] == pytest.approx(best["val_mse"], rel=1e-5)


def test_restoring_in_a_fresh_process_gives_bit_identical_predictions(trained_run, tmp_path):
    images = make_faces(8, seed=5).images
    np.save(tmp_path / "images.npy", images)
    script = (
        "import numpy as np, sys; from kpjax.checkpoint import load_model; from kpjax.inference import predict_model;"
        f"m, _ = load_model(r'{trained_run}'); np.save(r'{tmp_path / 'out.npy'}',"
        f" predict_model(m, np.load(r'{tmp_path / 'images.npy'}')))"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    model, _ = load_model(trained_run)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), predict_model(model, images))


def _params(run_dir, which):
    model, _ = load_model(run_dir, which)
    from flax import nnx

    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_resume_continues_exactly(tmp_path):
    data = make_faces(96, seed=2)
    config = TrainConfig(data=["synthetic"], epochs=2, batch_size=32, seed=3)
    quiet = dict(log=lambda _: None, dataset=data)
    train(config, tmp_path / "straight", **quiet)
    train(TrainConfig(**{**config.__dict__, "epochs": 1}), tmp_path / "split", **quiet)
    with pytest.raises(KpjaxError, match="already holds a run"):
        train(config, tmp_path / "split", **quiet)
    train(config, tmp_path / "split", resume=True, **quiet)
    for a, b in zip(_params(tmp_path / "straight", "latest"), _params(tmp_path / "split", "latest")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 2


def test_sigint_saves_latest_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--data", "synthetic:200", "--epochs", "40", "--batch", "32", "--run-dir", run_dir]
    process = subprocess.Popen([sys.executable, "-m", "kpjax", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)
    time.sleep(1.0)  # land mid-epoch
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "latest checkpoint saved" in stderr and "Traceback" not in stderr
    done = len(metrics.read_text().splitlines())
    resumed = kpjax("train", "--resume", "--epochs", done + 1, "--run-dir", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch" in resumed.stdout
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, done + 2))


def test_cli_train_evaluate_predict(tmp_path):
    run_dir = tmp_path / "run"
    trained = kpjax("train", "--epochs", 2, "--batch", 32, "--data", "synthetic:200", "--run-dir", run_dir)
    assert trained.returncode == 0, trained.stderr
    assert "best epoch" in trained.stdout
    evaluated = kpjax("evaluate", "--model", run_dir, "--data", "synthetic:50", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["n"] == 50 and {"rmse_px", "mse", "mae", "nme", "per_keypoint_rmse_px"} <= set(metrics)
    import cv2

    face = make_faces(1, seed=9).images[0]
    cv2.imwrite(str(tmp_path / "face.png"), cv2.resize(face, (192, 192)))  # any size is converted
    predicted = kpjax("predict", tmp_path / "face.png", "--model", run_dir, "--out", tmp_path / "out", "--no-detect")
    assert predicted.returncode == 0, predicted.stderr
    assert (tmp_path / "out" / "face.png").exists()
    [result] = json.loads((tmp_path / "out" / "predictions.json").read_text())
    [face] = result["faces"]
    assert len(face["keypoints"]) == 15
    assert all(0 <= v <= 192 for xy in face["keypoints"].values() for v in xy)


def test_init_starts_from_the_trained_weights_and_keeps_its_recipe(trained_run, tmp_path):
    """Fine-tuning: ``--init RUN`` with a learning rate of 0 leaves RUN's weights as they were, takes RUN's recipe
    (here its batch size) where no option changes it, and records where it started."""
    run_dir = tmp_path / "tuned"
    tuned = kpjax("train", "--init", trained_run, "--data", "synthetic:120", "--epochs", 1, "--lr", 0,
                  "--run-dir", run_dir)
    assert tuned.returncode == 0, tuned.stderr
    config = TrainConfig.load(run_dir)
    assert (config.init, config.batch_size, config.epochs) == (str(trained_run), 32, 1)
    (source, _), (started, _) = load_model(trained_run), load_model(run_dir)
    images = make_faces(4, seed=5).images
    np.testing.assert_allclose(predict_model(started, images), predict_model(source, images), atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "resnet9000", "--data", "synthetic:10"], "--model resnet9000: unknown model"),
        (["train", "--init", "{run}", "--model", "heatmap", "--data", "synthetic:100", "--run-dir", "{tmp}/r"],
         "its --model is 'seed', this run's 'heatmap'; a run starts only from weights of the same network"),
        (["train", "--init", "nowhere", "--data", "synthetic:100"], "nowhere: not a kpjax run directory"),
        (["train", "--data", "missing.csv"], "missing.csv: no such file"),
        (["train", "--data", "synthetic:100", "--batch", "500"], "--batch 500: larger than the"),
        (["evaluate", "--model", ".", "--data", "synthetic:10"], "not a kpjax run directory"),
        (["calibrate", "--model", "{run}"], "calibrate needs --data: annotated faces in the convention"),
        (["calibrate", "--data", "synthetic:50"], "calibrate writes into the run it calibrates: give --model RUN_DIR"),
        (["calibrate", "--model", "{run}", "--data", "synthetic:50", "--persons", "val"],
         "--persons val: expected train or all"),
        (["train", "--data", "synthetic:100", "--batch", "16", "--epochs", "2", "--lr", "1e12", "--run-dir", "{tmp}/r"],
         "training diverged at epoch"),
    ],
)
def test_user_mistakes_are_one_line_and_status_2(tmp_path, trained_run, args, message):
    result = kpjax(*[a.format(tmp=tmp_path, run=trained_run) for a in args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
