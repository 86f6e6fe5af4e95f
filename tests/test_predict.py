"""Whole photos, folders and videos: detection, the box -> frame crop, keypoints back in the photo's pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from kpjax.checkpoint import load_model
from kpjax.cli import app, run
from kpjax.errors import KpjaxError
from kpjax.detect import FRAME_SIDE, FaceDetector, box_matrix, frame_box
from kpjax.image import apply_affine, invert_affine
from kpjax.keypoints import KAGGLE_MEAN_FACE, KAGGLE_NAMES
from kpjax.inference import Predictor
from kpjax.predict import predict_paths
from kpjax.records import Face
from kpjax.video import Smoother

K = {name: i for i, name in enumerate(KAGGLE_NAMES)}
# The astronaut's face (Eileen Collins) in skimage.data.astronaut(): eyes near (215, 100) and (255, 103).
ASTRONAUT_FACE = (170, 55, 110, 115)  # x, y, w, h: a box the detection's centre must fall in


@pytest.fixture(scope="module")
def predictor(run_dir) -> Predictor:
    model, config = load_model(run_dir)
    return Predictor(model, config, FaceDetector())


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def assert_face_geometry(points: np.ndarray, box) -> None:
    """Inside the box, eyes above nose above mouth, the subject's left eye on the image's right."""
    x, y, w, h = box
    margin = 0.05 * w
    assert (points[:, 0] > x - margin).all() and (points[:, 0] < x + w + margin).all()
    assert (points[:, 1] > y - margin).all() and (points[:, 1] < y + h + margin).all()
    eyes_y = points[[K["left_eye_center"], K["right_eye_center"]], 1].max()
    assert eyes_y < points[K["nose_tip"], 1] < points[K["mouth_center_bottom_lip"], 1]
    assert points[K["left_eye_center"], 0] > points[K["right_eye_center"], 0]
    assert points[K["mouth_left_corner"], 0] > points[K["mouth_right_corner"], 0]


def test_box_crop_puts_the_mean_face_inside_the_box():
    box = (120.0, 40.0, 80.0, 80.0)
    matrix = box_matrix(box, 96)
    mean_face = apply_affine(invert_affine(matrix), KAGGLE_MEAN_FACE)
    assert_face_geometry(mean_face, box)
    eyes = mean_face[[K["left_eye_center"], K["right_eye_center"]]]
    assert 0.35 < np.linalg.norm(eyes[0] - eyes[1]) / box[2] < 0.45  # Haar boxes: eyes ~0.4 box widths apart
    assert np.allclose(frame_box(matrix, 96)[2:], np.array(box[2:]) * FRAME_SIDE)


def test_detector_finds_the_astronaut(astronaut):
    detections = FaceDetector()(astronaut)
    assert len(detections) == 1
    x, y, w, h = detections[0].box
    fx, fy, fw, fh = ASTRONAUT_FACE
    assert fx < x + w / 2 < fx + fw and fy < y + h / 2 < fy + fh and 70 < w < 130
    assert detections[0].score > 0


def test_astronaut_keypoints_in_the_photo(predictor, astronaut):
    (faces,) = predictor([astronaut])
    assert len(faces) == 1
    assert faces[0].points.shape == (15, 2)
    assert_face_geometry(faces[0].points, faces[0].box)


def test_kaggle_crop_is_taken_whole_and_batches_agree(predictor):
    from kpjax.sources.synthetic import make_faces

    crops = [make_faces(3, seed=1).images[i, ..., 0] for i in range(3)]
    together = predictor(crops)
    for crop, faces in zip(crops, together):
        assert len(faces) == 1 and faces[0].score is None
        assert np.allclose(faces[0].box, (0, 0, 96, 96))
        (alone,) = predictor([crop])
        np.testing.assert_allclose(alone[0].points, faces[0].points, atol=1e-3)


def test_grey_rgba_and_large_photos(predictor, astronaut, tmp_path):
    Image.fromarray(astronaut).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(astronaut).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)).save(tmp_path / "large.jpg")
    summary = predict_paths(predictor, [tmp_path], tmp_path / "out", progress=False, echo=lambda _: None)
    assert summary["images"] == 3 and summary["faces"] == 3 and summary["unreadable"] == 0
    results = {Path(r["image"]).name: r for r in json.loads((tmp_path / "out" / "predictions.json").read_text())}
    small_box = np.array(results["grey.png"]["faces"][0]["box"])
    large_box = np.array(results["large.jpg"]["faces"][0]["box"])
    assert np.allclose(large_box, small_box * 4, atol=12)  # the same face, found at the same place, in its pixels
    for result in results.values():
        (face,) = result["faces"]
        assert list(face["keypoints"]) == list(KAGGLE_NAMES)
        assert (tmp_path / "out" / Path(result["overlay"]).name).is_file()


def test_folder_reports_no_face_and_unreadable_files(run_dir, astronaut, tmp_path, capsys):
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    status = run(["predict", str(tmp_path), "--model", str(run_dir), "--out", str(out), "--format", "csv"])
    output = capsys.readouterr()
    assert status == 2, output.err  # an unreadable input is an error, once the others are done
    assert "blank.png: no face found" in output.out and "broken.jpg: unreadable image" in output.err
    assert "images/s" in output.out
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    status = {Path(r["image"]).name: r["status"] for r in rows}
    assert status["astronaut.png"] == "ok" and status["blank.png"] == "no face"
    assert status["broken.jpg"].startswith("unreadable")
    assert float(rows[[r["status"] for r in rows].index("ok")]["left_eye_center_x"]) > 0


def test_folder_in_chunks_keeps_order_and_writes_overlays_in_the_photos_format(predictor, astronaut, tmp_path):
    """Chunks are read ahead and overlays written on threads: results still come in input order, a broken file
    in the middle of a chunk is reported in its place, and a JPEG photo gets a JPEG overlay."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.png"]
    for name in names:
        Image.fromarray(astronaut).save(folder / name)
    (folder / "c.jpg").write_bytes(b"not an image")
    warnings = []
    summary = predict_paths(predictor, [folder], tmp_path / "out", chunk=2, progress=False, echo=lambda line: None,
                            warn=warnings.append)
    assert summary["images"] == 4 and summary["faces"] == 4 and summary["unreadable"] == 1
    assert len(warnings) == 1 and "c.jpg" in warnings[0]
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [Path(r["image"]).name for r in records] == names
    for record in records:
        if "error" in record:
            continue
        overlay = Path(record["overlay"])
        assert overlay.suffix == Path(record["image"]).suffix and cv2.imread(str(overlay)).shape == astronaut.shape


def test_an_overlay_that_cannot_be_written_is_one_error(predictor, astronaut, tmp_path, monkeypatch):
    Image.fromarray(astronaut).save(tmp_path / "astronaut.jpg")
    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)
    with pytest.raises(KpjaxError, match=r"astronaut\.jpg: could not write the overlay"):
        predict_paths(predictor, [tmp_path / "astronaut.jpg"], tmp_path / "out", progress=False, echo=lambda line: None)


def test_nothing_found_exits_3(run_dir, tmp_path):
    Image.fromarray(np.full((200, 200, 3), 30, np.uint8)).save(tmp_path / "dark.png")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "dark.png"), "--model", str(run_dir),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    taken_whole = CliRunner().invoke(app, ["predict", str(tmp_path / "dark.png"), "--no-detect", "--model",
                                           str(run_dir), "--out", str(tmp_path / "out")])
    assert taken_whole.exit_code == 0 and "1 faces" in taken_whole.output


def test_video_gives_annotated_video_and_per_frame_csv(predictor, astronaut, tmp_path):
    frames = [np.roll(cv2.resize(astronaut, (256, 256)), 3 * i, axis=1) for i in range(6)]
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    summary = predict_paths(predictor, [path], tmp_path / "out", smooth=0.5, progress=False, echo=lambda _: None)
    assert summary["videos"] == 1 and summary["faces"] >= 6
    rows = list(csv.DictReader((tmp_path / "out" / "clip.csv").read_text().splitlines()))
    assert sorted({int(r["frame"]) for r in rows}) == list(range(6))  # a face in every frame
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()


def test_smoother_follows_each_face_and_damps_jitter():
    rng = np.random.default_rng(0)
    smoother = Smoother(0.3)
    raw, smoothed = [], []
    for _ in range(40):
        faces = [Face((10.0, 10.0, 50.0, 50.0), 1.0, np.full((15, 2), 30.0) + rng.normal(0, 2, (15, 2))),
                 Face((200.0, 10.0, 50.0, 50.0), 1.0, np.full((15, 2), 220.0) + rng.normal(0, 2, (15, 2)))]
        raw.append(np.stack([f.points.copy() for f in faces]))
        smoothed.append(np.stack([f.points for f in smoother(faces)]))
    raw, smoothed = np.array(raw)[10:], np.array(smoothed)[10:]
    assert np.abs(smoothed.mean(axis=(0, 2, 3)) - [30, 220]).max() < 1  # the two faces never mix
    assert smoothed.std(axis=0).mean() < 0.6 * raw.std(axis=0).mean()


def test_box_crop_matches_the_training_crop_on_real_faces(shared_data):
    """On annotated photos, the frame cut from the Haar box is the one the training data's points give."""
    from kpjax.detect import FRAME_CENTRE
    from kpjax.image import read_image
    from kpjax.sources.convert import fit_crop, kaggle_points
    from kpjax.sources.landmarks68 import read_pts_folder

    detector, sides, centres = FaceDetector(), [], []
    for row in read_pts_folder(shared_data / "helen-68-train")[:150]:
        points = kaggle_points(row.points, "ibug")
        eyes = points[[K["left_eye_center"], K["right_eye_center"]]].mean(axis=0)
        boxes = [d.box for d in detector(read_image(row.image))
                 if d.box[0] < eyes[0] < d.box[0] + d.box[2] and d.box[1] < eyes[1] < d.box[1] + d.box[3]]
        if boxes:
            x, y, w, h = boxes[0]
            crop = fit_crop(points, 96)  # image -> frame of the training data: scale, then shift
            centre = (47.5 - crop[:, 2]) / crop[0, 0]
            sides.append(96 / (crop[0, 0] * w))
            centres.append(((centre[0] - x + 0.5) / w, (centre[1] - y + 0.5) / h))
    assert len(sides) > 100
    assert abs(np.median(sides) - FRAME_SIDE) < 0.06  # per face the side varies +-6 % (quartiles)
    np.testing.assert_allclose(np.median(centres, axis=0), FRAME_CENTRE, atol=0.03)
