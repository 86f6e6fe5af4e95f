"""Each keypoint's expected error: learnt beside the keypoints without changing them, and handed out with them."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kpjax.config import TrainConfig
from kpjax.keypoints import KAGGLE
from kpjax.models import LAPLACE_MEAN_DISTANCE, create_model, estimates_error
from kpjax.train import train
from kpjax.train_step import HIDDEN_MIN_ERROR_PX, HIDDEN_WEIGHT, error_nll


def test_error_head_leaves_the_keypoints_as_they_were(tmp_path):
    """The head is created last and learns from stop-gradient residuals: the same seed trains the same keypoints."""
    histories = {}
    for error_head in (False, True):
        config = TrainConfig(data=["synthetic:256"], model="heatmap", epochs=2, batch_size=32, shift=3.0, margin=4,
                             error_head=error_head)
        histories[error_head] = train(config, tmp_path / str(error_head), log=lambda _: None).history
    for without, with_head in zip(histories[False], histories[True]):
        assert with_head["train_mse"] == without["train_mse"]
        # Predicting the errors too compiles another graph: the same keypoints up to rounding.
        assert with_head["val_mse"] == pytest.approx(without["val_mse"], rel=1e-5)
        assert "train_error_nll" in with_head and "train_error_nll" not in without
    assert histories[True][1]["train_error_nll"] < histories[True][0]["train_error_nll"]


def test_error_nll_is_least_at_the_true_mean_distance():
    """Under the Laplace likelihood, the best constant estimate is the residuals' mean distance."""
    rng = np.random.default_rng(0)
    size, scale_px = 96, 2.0
    residual_px = rng.laplace(scale=scale_px, size=(4000, 2))
    predictions = jnp.asarray(residual_px.reshape(-1, 2) / (size / 2)).reshape(4000, 2)
    targets, mask = jnp.zeros_like(predictions), jnp.ones(predictions.shape, bool)
    candidates = np.linspace(1.0, 6.0, 101)
    losses = [float(error_nll(jnp.full((4000, 1), np.log(c)), predictions, targets, mask, size)) for c in candidates]
    best = candidates[int(np.argmin(losses))]
    assert best == pytest.approx(LAPLACE_MEAN_DISTANCE * scale_px, rel=0.05)


def test_error_nll_trains_only_the_error_estimate():
    predictions = jnp.array([[0.1, -0.2, 0.3, 0.0]])
    grads = jax.grad(lambda p: error_nll(jnp.zeros((1, 2)), p, jnp.zeros((1, 4)), jnp.ones((1, 4), bool), 96))(predictions)
    assert not np.asarray(grads).any()


def test_training_learns_from_hidden_points_without_moving_the_keypoints(tmp_path):
    """A dataset's hidden points reach the train step's error likelihood (its value changes) and nothing else."""
    from kpjax.sources import LoadOptions, load_one

    faces = load_one("synthetic:256", LoadOptions(margin=4))
    nose = KAGGLE.names.index("nose_tip")
    turned = np.arange(len(faces)) % 2 == 0
    faces.keypoints[turned, nose] = np.nan
    with_hidden = dataclasses.replace(faces, hidden=np.zeros_like(faces.hidden))
    with_hidden.hidden[turned, nose] = True
    config = TrainConfig(data=["synthetic:256"], model="heatmap", epochs=1, batch_size=32, shift=3.0, margin=4,
                         error_head=True)
    plain = train(config, tmp_path / "plain", dataset=faces, log=lambda _: None).history[0]
    hidden = train(config, tmp_path / "hidden", dataset=with_hidden, log=lambda _: None).history[0]
    assert hidden["train_mse"] == plain["train_mse"]
    assert hidden["train_error_nll"] != plain["train_error_nll"]


def test_hidden_points_teach_the_head_to_expect_a_large_error():
    """A hidden point has no residual, only a censored one: its loss falls as its expected error grows past
    HIDDEN_MIN_ERROR_PX, and it leaves the visible points' likelihood as it was."""
    predictions, targets = jnp.array([[0.02, 0.0, 0.0, 0.0]]), jnp.zeros((1, 4))
    mask = jnp.array([[True, True, False, False]])  # point 0 visible, point 1 missing
    hidden = jnp.array([[False, True]])  # ... because the annotator saw it hidden
    visible_only = error_nll(jnp.zeros((1, 2)), predictions, targets, mask, 96)
    assert error_nll(jnp.zeros((1, 2)), predictions, targets, mask, 96, jnp.zeros((1, 2), bool)) == visible_only

    def hidden_loss(log_error):
        both = error_nll(jnp.array([[0.0, log_error]]), predictions, targets, mask, 96, hidden)
        return float((both - visible_only) / HIDDEN_WEIGHT)

    expected = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 32.0]) * HIDDEN_MIN_ERROR_PX
    losses = [hidden_loss(np.log(e)) for e in expected]
    assert all(a > b for a, b in zip(losses, losses[1:])) and losses[-1] < 0.01
    ratio = HIDDEN_MIN_ERROR_PX * LAPLACE_MEAN_DISTANCE / expected[1]  # threshold over the Laplace scale
    assert losses[1] == pytest.approx(ratio - np.log1p(ratio), rel=1e-5)  # -log P(|x| + |y| > threshold)


def test_only_heatmap_models_grow_an_error_head_and_old_runs_load_without_one():
    kwargs = dict(num_outputs=30, size=96, channels=1, error_head=True)
    assert estimates_error(create_model("heatmap", **kwargs))
    assert not estimates_error(create_model("compact", **kwargs))
    legacy = TrainConfig(model="heatmap").to_json().replace('"error_head": true', '"retired": 1')
    assert TrainConfig.from_json(legacy).error_head is False
    assert TrainConfig.from_json(TrainConfig(model="heatmap").to_json()).error_head is True


@pytest.fixture(scope="module")
def shipped():
    from kpjax.checkpoint import load_model

    return load_model(None)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def test_the_shipped_model_estimates_its_errors(shipped):
    model, config = shipped
    assert config.error_head and estimates_error(model)


def test_every_output_format_carries_the_confidence(shipped, astronaut, tmp_path):
    import csv
    import json

    from PIL import Image

    from kpjax.cli import run

    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    for fmt in ("json", "csv"):
        assert run(["predict", str(tmp_path / "astronaut.png"), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
    (face,) = json.loads((tmp_path / "json" / "predictions.json").read_text())[0]["faces"]
    assert list(face["errors"]) == list(face["keypoints"]) == list(shipped[1].layout.names)
    assert all(0.1 < e < 30 for e in face["errors"].values())  # pixels of a 512-px photo with a ~110-px face
    assert 0.0 < face["expected_nme"] < 0.1
    (row,) = csv.DictReader((tmp_path / "csv" / "predictions.csv").read_text().splitlines())
    assert float(row["expected_nme"]) == pytest.approx(face["expected_nme"], abs=1e-4)
    assert float(row["nose_tip_error"]) == pytest.approx(face["errors"]["nose_tip"], abs=0.01)


def test_the_onnx_export_carries_the_expected_errors(shipped, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from kpjax.cli import run
    from kpjax.forward import predict_step, split_model
    from kpjax.inference import predict_model

    model, config = shipped
    assert run(["export", "--format", "onnx", "--out", str(tmp_path / "model.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["keypoints", "errors"]
    images = np.random.default_rng(0).integers(0, 256, (3, config.size, config.size, 1), np.uint8)
    keypoints, errors = session.run(["keypoints", "errors"], {"images": images})
    _, expected_errors = predict_step(*split_model(model), images)
    np.testing.assert_allclose(keypoints, predict_model(model, images), atol=1e-4)  # calibrated, as kpjax predicts
    np.testing.assert_allclose(errors, np.asarray(expected_errors), rtol=1e-3)


def test_a_misplaced_crop_gets_a_worse_face_score(shipped, astronaut):
    from kpjax.detect import Detection, make_detector
    from kpjax.inference import Predictor

    model, config = shipped
    predictor = Predictor(model, config, make_detector("fast"), passes=1, not_a_face_nme=None)
    ((found,),) = predictor([astronaut])  # the detector's box, then boxes shifted by a third and a half of it
    x, y, w, h = found.box
    boxes = [found.box, (x + w / 3, y, w, h), (x, y + h / 2, w, h), (x - w / 2, y - h / 2, 2 * w, 2 * h)]
    (faces,) = predictor([astronaut], [[Detection(box, 1.0) for box in boxes]])
    scores = [face.expected_nme for face in faces]
    assert all(scores[0] < s for s in scores[1:]), scores
    assert all(faces[0].errors.mean() < face.errors.mean() for face in faces[1:])


def test_a_detection_whose_points_are_expected_to_fail_is_no_face(shipped, astronaut):
    """Boxes on the rocket behind the astronaut and on her suit's patch, given as detections beside her face's:
    only the face is kept (their expected NME is above ``NOT_A_FACE_NME``); with the check off all three are."""
    from kpjax.detect import Detection, make_detector
    from kpjax.inference import NOT_A_FACE_NME, Predictor

    model, config = shipped
    predictor = Predictor(model, config, make_detector("fast"))
    ((found,),) = predictor([astronaut])
    boxes = [found.box, (380.0, 20.0, 110.0, 110.0), (150.0, 330.0, 110.0, 110.0)]
    detections = [[Detection(box, 1.0) for box in boxes]]
    (kept,) = predictor(detections=detections, images=[astronaut])
    assert [face.box for face in kept] == [found.box] and kept[0].expected_nme <= NOT_A_FACE_NME
    predictor.not_a_face_nme = None
    (everything,) = predictor(detections=detections, images=[astronaut])
    assert len(everything) == 3 and all(face.expected_nme > NOT_A_FACE_NME for face in everything[1:])


def test_smoothing_leans_on_the_past_for_doubtful_points():
    from kpjax.records import Face
    from kpjax.video import Smoother

    smoother = Smoother(0.5)
    box = (0.0, 0.0, 100.0, 100.0)
    errors = np.ones(15)
    errors[0] = 4.0  # one doubtful point
    smoother([Face(box, 1.0, np.zeros((15, 2)), errors)])
    (face,) = smoother([Face(box, 1.0, np.full((15, 2), 10.0), errors)])
    assert face.points[1, 0] == pytest.approx(5.0)  # a point as sure as the median: alpha itself
    assert face.points[0, 0] == pytest.approx(10.0 * 0.5 / 4)  # four times as doubtful: a quarter of alpha
    (plain,) = Smoother(0.5)([Face(box, 1.0, np.zeros((15, 2)))])
    assert plain.errors is None
