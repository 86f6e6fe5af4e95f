"""Calibration: one offset per keypoint, fitted on a convention's faces, carried by every prediction of the run."""

from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import onnxruntime
import pytest
from typer.testing import CliRunner

from kpjax import calibration
from kpjax.checkpoint import best_progress, load_model
from kpjax.cli import app
from kpjax.config import TrainConfig
from kpjax.dataset import group_split
from kpjax.errors import KpjaxError
from kpjax.export import to_onnx, verify
from kpjax.forward import predict_step, split_model
from kpjax.image import invert_affine, resize_matrix
from kpjax.inference import Predictor, predict_model
from kpjax.keypoints import KAGGLE, normalise
from kpjax.models import create_model
from kpjax.sources.cache import save_faces
from kpjax.sources.synthetic import make_faces

OFFSET = np.linspace(-1.5, 2.0, 30, dtype=np.float32).reshape(15, 2)  # frame pixels, no two alike


@pytest.fixture
def calibrated_run(trained_run, tmp_path):
    """A copy of the session's trained run (never the original: other tests read it uncalibrated)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def test_fit_offset_is_the_mean_residual_of_the_faces_that_mark_each_keypoint():
    faces = make_faces(6, seed=1)
    predicted = normalise(faces.keypoints.reshape(6, -1), faces.size)
    shifted = faces.keypoints + OFFSET
    shifted[:3, 4] = shifted[:3, 4] + 10.0  # half the faces put keypoint 4 elsewhere still
    shifted[:, 7] = np.nan  # a keypoint no face marks
    offset = calibration.fit_offset(predicted, type(faces)(faces.images, shifted, faces.layout, faces.groups,
                                                           faces.sources))
    expected = OFFSET.copy()
    expected[4] += 5.0
    expected[7] = 0.0
    np.testing.assert_allclose(offset, expected, atol=1e-4)


def test_calibrate_cli_fits_stores_and_every_prediction_of_the_run_carries_it(calibrated_run):
    raw, config = load_model(calibrated_run)
    result = CliRunner().invoke(app, ["calibrate", "--model", str(calibrated_run), "--data", "synthetic:200"])
    assert result.exit_code == 0, result.output
    stored = json.loads((calibrated_run / calibration.CALIBRATION_FILE).read_text())
    assert list(stored["offset_px"]) == list(KAGGLE.names) and stored["data"] == ["synthetic:200"]
    fitted, held_out = stored["fitted on"], stored["held out"]
    assert fitted["faces"] + held_out["faces"] == 200 and held_out["faces"] > 0
    assert fitted["rmse_px_after"] < fitted["rmse_px_before"]  # a mean residual removed leaves less on those faces
    assert "fitted on" in result.output and "held out" in result.output

    model, _ = load_model(calibrated_run)
    offset = calibration.offset_of(model)
    np.testing.assert_allclose(offset, np.array(list(stored["offset_px"].values())), atol=1e-4)
    images = make_faces(4, seed=9).images
    np.testing.assert_allclose(predict_model(model, images),
                               predict_model(raw, images) + offset.reshape(-1) / (config.size / 2), atol=1e-6)
    assert calibration.offset_of(load_model(calibrated_run, calibrated=False)[0]) is None

    result = CliRunner().invoke(app, ["calibrate", "--model", str(calibrated_run), "--reset"])
    assert result.exit_code == 0 and not (calibrated_run / calibration.CALIBRATION_FILE).exists()
    assert calibration.offset_of(load_model(calibrated_run)[0]) is None


@pytest.mark.parametrize("flip_tta", [False, True])
def test_predictor_moves_each_point_by_the_offset_mapped_into_the_photo(flip_tta):
    """The offset is in the frame; a stretched (not square) image taken as one face maps it back to the photo,
    and flip TTA's mirrored crop gets the mirrored offset, so the average moves by the offset itself."""
    model = create_model("heatmap", num_outputs=30, size=96, channels=1, seed=0, error_head=True)
    config = TrainConfig(model="heatmap")
    image = cv2.resize(make_faces(1, seed=4).images[0], (120, 100), interpolation=cv2.INTER_LINEAR)[..., None]
    [[plain]] = Predictor(model, config, detector=None, flip_tta=flip_tta)([image])
    calibration.calibrate(model, OFFSET)
    [[moved]] = Predictor(model, config, detector=None, flip_tta=flip_tta)([image])
    to_photo = invert_affine(resize_matrix(image.shape[:2], 96))[:, :2]
    np.testing.assert_allclose(moved.points - plain.points, OFFSET @ to_photo.T, atol=1e-3)
    np.testing.assert_allclose(moved.errors, plain.errors, rtol=1e-5)


def test_onnx_export_carries_the_offset_and_kpjax_engine_adds_it_itself(calibrated_run):
    model, config = load_model(calibrated_run)
    calibration.calibrate(model, OFFSET)
    images = make_faces(3, seed=2).images
    raw = np.asarray(predict_step(*split_model(model), images)[0])
    exported = to_onnx(model, config)
    assert verify(exported, model, config) <= 1e-4
    session = onnxruntime.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    (keypoints,) = session.run(["keypoints"], {"images": images})
    np.testing.assert_allclose(keypoints, raw + OFFSET.reshape(-1) / (config.size / 2), atol=1e-4)
    assert json.loads({p.key: p.value for p in exported.metadata_props}["calibration_px"])[0] == pytest.approx(
        OFFSET[0].tolist(), abs=1e-4)
    engine = onnxruntime.InferenceSession(to_onnx(model, config, calibrated=False).SerializeToString(),
                                          providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(engine.run(["keypoints"], {"images": images})[0], raw, atol=1e-4)


def test_a_calibration_moves_only_the_checkpoint_it_was_fitted_to(calibrated_run, capsys):
    """Weights trained on (a resume, a new best) are another checkpoint: the offset fitted to the old one is
    not applied to them, and the file stays for the user to see."""
    step, _ = best_progress(calibrated_run)
    calibration.save(calibrated_run, OFFSET, KAGGLE.names, step, {})
    np.testing.assert_allclose(calibration.offset_of(load_model(calibrated_run)[0]), OFFSET, atol=1e-4)
    calibration.save(calibrated_run, OFFSET, KAGGLE.names, step + 1, {})
    assert calibration.offset_of(load_model(calibrated_run)[0]) is None
    assert f"fitted to the checkpoint of step {step + 1}, not to this one (step {step})" in capsys.readouterr().err
    assert (calibrated_run / calibration.CALIBRATION_FILE).exists()


def test_a_damaged_calibration_is_named_with_what_to_do(calibrated_run):
    (calibrated_run / calibration.CALIBRATION_FILE).write_text('{"offset_px": {"left_eye_center": [1, 2]}}')
    with pytest.raises(KpjaxError, match=r"calibration.json: not a calibration of this model's keypoints .*"
                                         r"run kpjax calibrate again or delete it"):
        load_model(calibrated_run)


def test_calibrate_warns_when_the_persons_kept_out_fit_worse(calibrated_run, tmp_path):
    """Training persons that mark the points elsewhere than the others: the offset fitted on them is no
    convention of the data, and the check on the persons kept out says so."""
    faces = make_faces(200, seed=5)
    train_index, _ = group_split(faces.groups, 0.2, 0)
    keypoints = faces.keypoints.copy()
    keypoints[train_index] += 4.0
    save_faces(tmp_path / "faces.npz", dataclasses.replace(faces, keypoints=keypoints), [])
    result = CliRunner().invoke(app, ["calibrate", "--model", str(calibrated_run), "--data",
                                      str(tmp_path / "faces.npz")])
    assert result.exit_code == 0, result.output
    assert "warning: the persons kept out fit worse after it" in result.output
    stored = json.loads((calibrated_run / calibration.CALIBRATION_FILE).read_text())
    assert stored["held out"]["nme_after"] > stored["held out"]["nme_before"]
