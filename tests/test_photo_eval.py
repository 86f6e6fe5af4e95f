"""End to end on annotated photos: reading them, matching faces to detections, the metrics, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kpjax import photo_eval
from kpjax.checkpoint import load_model
from kpjax.cli import app
from kpjax.detect import Detection
from kpjax.errors import KpjaxError
from kpjax.image import read_image
from kpjax.keypoints import KAGGLE_MEAN_FACE, KAGGLE_NAMES
from kpjax.inference import Predictor
from kpjax.sources.convert import mean_face

K = {name: i for i, name in enumerate(KAGGLE_NAMES)}


def ibug_points(kaggle: np.ndarray) -> np.ndarray:
    """68 iBUG points whose Kaggle keypoints (as kpjax derives them) are exactly ``kaggle``."""
    points = np.zeros((68, 2))
    centre = kaggle.mean(axis=0)
    points[:17] = centre + np.stack([np.linspace(-45, 45, 17), 30 - np.abs(np.linspace(-30, 30, 17))], 1)
    for eye, outer, inner, centre_name, (o, i) in (
            ("right", 36, 39, "right_eye_center", (0, 3)), ("left", 45, 42, "left_eye_center", (3, 0))):
        first = min(outer, inner)
        points[outer], points[inner] = kaggle[K[f"{eye}_eye_outer_corner"]], kaggle[K[f"{eye}_eye_inner_corner"]]
        rest = [first + j for j in range(6) if first + j not in (outer, inner)]
        points[rest] = (6 * kaggle[K[centre_name]] - points[outer] - points[inner]) / 4
    points[17], points[21] = kaggle[K["right_eyebrow_outer_end"]], kaggle[K["right_eyebrow_inner_end"]]
    points[22], points[26] = kaggle[K["left_eyebrow_inner_end"]], kaggle[K["left_eyebrow_outer_end"]]
    points[18:21] = np.linspace(points[17], points[21], 5)[1:4]
    points[23:26] = np.linspace(points[22], points[26], 5)[1:4]
    points[27:30] = np.linspace((points[21] + points[22]) / 2, kaggle[K["nose_tip"]], 5)[1:4]
    points[30] = kaggle[K["nose_tip"]]
    points[31:36] = kaggle[K["nose_tip"]] + np.stack([np.linspace(-8, 8, 5), np.full(5, 4.0)], 1)
    points[48], points[54] = kaggle[K["mouth_right_corner"]], kaggle[K["mouth_left_corner"]]
    points[51], points[57] = kaggle[K["mouth_center_top_lip"]], kaggle[K["mouth_center_bottom_lip"]]
    for j in (49, 50, 52, 53, 55, 56, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67):
        points[j] = (points[48] + points[54]) / 2 + np.array([(j % 5 - 2) * 3.0, 0.0])
    return points


def write_photo_set(folder: Path, faces: list[tuple[float, float, float]]) -> list[np.ndarray]:
    """Photos (plain grey 320x240), each with the .pts file of one face ``(x, y, scale)`` of Kaggle's mean face,
    as the shared photo sets hold them. Returns each face's 15 Kaggle keypoints."""
    folder.mkdir(parents=True, exist_ok=True)
    truths = []
    for n, (x, y, scale) in enumerate(faces):
        Image.fromarray(np.full((240, 320, 3), 90, np.uint8)).save(folder / f"photo{n}.jpg")
        kaggle = (KAGGLE_MEAN_FACE - 48) * scale + (x, y)
        truths.append(kaggle)
        lines = ["version: 1", "n_points: 68", "{", *(f"{a:.3f} {b:.3f}" for a, b in ibug_points(kaggle)), "}"]
        (folder / f"photo{n}.pts").write_text("\n".join(lines) + "\n")
    return truths


def record(image: Path, faces: list[tuple[tuple, np.ndarray]], ms: float = 5.0) -> dict:
    return {"image": str(image), "width": 320, "height": 240, "ms": ms,
            "faces": [{"box": list(box), "score": 1.0,
                       "keypoints": {n: [float(x), float(y)] for n, (x, y) in zip(KAGGLE_NAMES, points)}}
                      for box, points in faces]}


def test_ibug_points_derive_the_kaggle_keypoints():
    from kpjax.sources.convert import best_markup, kaggle_points

    points = ibug_points(KAGGLE_MEAN_FACE.astype(np.float64) + 100)
    np.testing.assert_allclose(kaggle_points(points, "ibug"), KAGGLE_MEAN_FACE + 100, atol=1e-9)
    assert best_markup(points) == "ibug"


def test_nme_auc_and_matching_on_constructed_cases():
    truth = KAGGLE_MEAN_FACE.astype(np.float64)
    outer = np.linalg.norm(truth[K["left_eye_outer_corner"]] - truth[K["right_eye_outer_corner"]])
    assert photo_eval.face_nme(truth + (3.0, 4.0), truth, "kaggle") == pytest.approx(5.0 / outer)
    missing = truth.copy()
    missing[K["left_eye_outer_corner"]] = np.nan
    assert np.isnan(photo_eval.face_nme(truth, missing, "kaggle"))  # no normaliser, no score
    assert photo_eval.auc(np.zeros(10)) == pytest.approx(1.0, abs=1e-3)
    assert photo_eval.auc(np.full(10, 0.2)) == 0.0
    assert photo_eval.auc(np.array([0.0, 0.2])) == pytest.approx(0.5, abs=1e-3)

    face_a, face_b = truth, truth + (150.0, 0.0)
    box_a, box_b = photo_eval.face_square(face_a), photo_eval.face_square(face_b)
    beside = (box_a[0] + 0.8 * box_a[2], box_a[1], box_a[2], box_a[3])  # overlaps a, misses its centroid
    assert photo_eval.match_faces([box_b, beside, box_a], [face_a, face_b]) == [2, 0]
    assert photo_eval.match_faces([beside], [face_a]) == [None]
    assert photo_eval.match_faces([box_a], [face_a, face_a + 1.0]) in ([0, None], [None, 0])  # one face a box


def test_score_counts_found_missed_and_false_faces(tmp_path):
    truths = write_photo_set(tmp_path, [(100, 100, 1.0), (160, 120, 1.2), (200, 100, 0.8)])
    photos = photo_eval.read_annotated_photos(str(tmp_path))
    assert [len(p.faces) for p in photos] == [1, 1, 1]
    outer = np.linalg.norm(truths[0][K["left_eye_outer_corner"]] - truths[0][K["right_eye_outer_corner"]])
    records = [
        # photo 0: its face found 2 px off in x, and a false face far away
        record(photos[0].image, [(photo_eval.face_square(truths[0]), truths[0] + (2.0, 0.0)),
                                 ((280, 10, 30, 30), truths[0])], ms=10.0),
        record(photos[1].image, [(photo_eval.face_square(truths[1]), truths[1])], ms=20.0),
        record(photos[2].image, [], ms=5.0),  # its face missed
    ]
    metrics = photo_eval.score(photos, records)
    assert (metrics["photos"], metrics["faces"], metrics["found"], metrics["false_faces"]) == (3, 3, 2, 1)
    assert metrics["detection_rate"] == pytest.approx(2 / 3)
    assert metrics["false_faces_per_photo"] == pytest.approx(1 / 3)
    assert sorted(metrics["nmes"]) == pytest.approx([0.0, 2.0 / outer], abs=1e-4)
    assert metrics["failure_rate"] == 0.0
    assert metrics["ms_per_photo_median"] == 10.0
    assert metrics["kaggle_px"] == pytest.approx(1.0, rel=1e-4)  # 2 px and 0 px at the Kaggle frame's scale

    nothing = photo_eval.score(photos, [])  # a pipeline that found nothing, e.g. every photo unreadable
    assert (nothing["found"], nothing["nme_mean"], nothing["photos_without_predictions"]) == (0, None, 3)


def test_person_split_is_kpjax_training_split(tmp_path):
    write_photo_set(tmp_path, [(100 + n, 100, 1.0) for n in range(20)])
    photos = photo_eval.read_annotated_photos(str(tmp_path))
    val, train = (photo_eval.select_persons(photos, side) for side in ("val", "train"))
    assert len(val) + len(train) == 20 and not {p.image for p in val} & {p.image for p in train}
    from kpjax.dataset import group_split

    _, val_index = group_split(np.array([p.group for p in photos]), 0.2, 0)
    assert [p.image for p in val] == [photos[i].image for i in val_index]


class BoxesDetector:
    """A detector that reports given boxes per photo size: the pipeline without a cascade's whims."""

    def __init__(self, boxes: list[tuple]):
        self.boxes = boxes

    def __call__(self, image):
        return [Detection(box, 0.9) for box in self.boxes] if image.mean() > 50 else []


def test_run_pipeline_predicts_each_photo_and_misses_what_the_detector_misses(tmp_path, trained_run):
    write_photo_set(tmp_path, [(100, 100, 1.0), (160, 120, 1.0)])
    Image.fromarray(np.zeros((240, 320, 3), np.uint8)).save(tmp_path / "photo1.jpg")  # dark: nothing detected
    photos = photo_eval.read_annotated_photos(str(tmp_path))
    model, config = load_model(trained_run)
    box = photo_eval.face_square(photos[0].faces[0]["kaggle"])
    predictor = Predictor(model, config, BoxesDetector([box]), passes=2)
    records = photo_eval.run_pipeline(predictor, photos)
    assert [len(r["faces"]) for r in records] == [1, 0]
    assert all(r["ms"] > 0 for r in records)
    assert list(records[0]["faces"][0]["keypoints"]) == list(KAGGLE_NAMES)
    metrics = photo_eval.score(photos, records)
    assert (metrics["found"], metrics["faces"]) == (1, 2)


def test_refinement_stops_once_the_crop_moves_less_than_converged_px(tmp_path, trained_run, monkeypatch):
    write_photo_set(tmp_path, [(100, 100, 1.0)])
    [photo] = photo_eval.read_annotated_photos(str(tmp_path))
    model, config = load_model(trained_run)
    image = read_image(photo.image)
    x, y, w, h = photo_eval.face_square(photo.faces[0]["kaggle"])
    detector = BoxesDetector([(x + w / 8, y, w, h)])  # the first crop off, as a detector's box is
    points = {}
    for converged_px in (0.0, float("inf")):  # every move is one, or none is
        predictor = Predictor(model, config, detector, passes=3, converged_px=converged_px)
        passes = []
        predict = predictor.frame_keypoints
        monkeypatch.setattr(predictor, "frame_keypoints",
                            lambda frames, mirror=False: passes.append(len(frames)) or predict(frames, mirror))
        [[face]] = predictor([image])
        points[converged_px] = face.points
        assert len(passes) == (3 if converged_px == 0.0 else 1)
    [[first]] = Predictor(model, config, detector, passes=1)([image])
    np.testing.assert_allclose(points[float("inf")], first.points, atol=1e-5)
    assert np.abs(points[0.0] - first.points).max() > 1e-3


def test_a_face_takes_the_mean_of_its_last_two_passes(tmp_path):
    write_photo_set(tmp_path, [(100, 100, 1.0)])
    [photo] = photo_eval.read_annotated_photos(str(tmp_path))
    model, config = load_model(None)  # the shipped model: expected errors too
    image = read_image(photo.image)
    x, y, w, h = photo_eval.face_square(photo.faces[0]["kaggle"])
    detector = BoxesDetector([(x + w / 8, y, w, h)])

    def face(passes, average_passes):
        [[found]] = Predictor(model, config, detector, passes=passes, converged_px=0.0, not_a_face_nme=None,
                              average_passes=average_passes)([image])
        return found

    last = {n: face(n, average_passes=False) for n in (1, 2, 3)}
    for n in (2, 3):
        averaged = face(n, average_passes=True)
        np.testing.assert_allclose(averaged.points, (last[n].points + last[n - 1].points) / 2, atol=1e-5)
        np.testing.assert_allclose(averaged.errors, (last[n].errors + last[n - 1].errors) / 2, rtol=1e-5)
    np.testing.assert_allclose(face(1, average_passes=True).points, last[1].points)  # nothing before one pass


def test_label_fitted_crops_place_each_face_by_its_annotated_points(tmp_path, trained_run, monkeypatch):
    """A network that always answers the mean face is exact on crops fitted to the labels, whatever the face's
    place and size in the photo, and its frame-pixel errors come back at the photo's scale."""
    write_photo_set(tmp_path, [(100, 100, 1.0), (160, 120, 1.4)])
    photos = photo_eval.read_annotated_photos(str(tmp_path))
    model, config = load_model(trained_run)
    predictor = Predictor(model, config)
    answer = mean_face(config.size).astype(np.float32)
    monkeypatch.setattr(predictor, "frame_keypoints", lambda frames, mirror=False: (
        np.repeat(answer[None], len(frames), 0), np.ones((len(frames), len(answer)), np.float32)))
    records = photo_eval.run_label_fitted(predictor, photos)
    metrics = photo_eval.score(photos, records)
    assert (metrics["found"], metrics["false_faces"], metrics["ms_per_photo_median"]) == (2, 0, None)
    assert metrics["nme_mean"] == pytest.approx(0.0, abs=1e-3)
    for r, scale in zip(records, (1.0, 1.4)):
        assert list(r["faces"][0]["errors"].values()) == pytest.approx([scale] * len(answer), abs=0.01)


def test_cli_scores_predictions_of_any_pipeline_and_draws_the_ced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    truths = write_photo_set(tmp_path / "photos", [(100, 100, 1.0), (160, 120, 1.0)])
    images = sorted((tmp_path / "photos").glob("photo?.jpg"))
    predictions, more = tmp_path / "peer.json", tmp_path / "peer-more.json"
    predictions.write_text(json.dumps([record(images[0], [(photo_eval.face_square(truths[0]), truths[0] + 1.0)])]))
    more.write_text(json.dumps([record(Path("photos", images[1].name), [])]))  # a relative path names it too
    ced = tmp_path / "ced.png"
    result = CliRunner().invoke(app, ["evaluate", "--detect", "--data", str(tmp_path / "photos"), "--predictions",
                                      str(predictions), "--predictions", str(more), "--ced", str(ced), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert (metrics["faces"], metrics["found"]) == (2, 1)
    assert metrics["nme_mean"] == pytest.approx(np.sqrt(2) / 51.05, rel=1e-3)
    assert metrics["photos_without_predictions"] == 0
    assert Image.open(ced).size[0] > 100

    text = CliRunner().invoke(app, ["evaluate", "--detect", "--data", str(tmp_path / "photos"), "--predictions",
                                    str(predictions), "--predictions", str(more)])
    assert "found 1/2 faces (50.0%)" in text.output


@pytest.mark.parametrize("args, message", [
    (["--detect"], "--detect needs --data"),
    (["--detect", "--data", "DATA", "--persons", "some"], "--persons some: expected all, val or train"),
    (["--detect", "--data", "DATA", "--predictions", "missing.json"], "--predictions missing.json: unreadable"),
])
def test_cli_photo_errors_are_one_line(tmp_path, args, message):
    write_photo_set(tmp_path / "photos", [(100, 100, 1.0)])
    args = [str(tmp_path / "photos") if a == "DATA" else a for a in args]
    result = CliRunner().invoke(app, ["evaluate", *args])  # kpjax's main() prints it as one error: line, exit 2
    assert isinstance(result.exception, KpjaxError)
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_draw_worst_writes_the_worst_found_faces_first(tmp_path):
    truths = write_photo_set(tmp_path / "photos", [(100, 100, 1.0), (160, 120, 1.0), (200, 100, 1.0)])
    photos = photo_eval.read_annotated_photos(str(tmp_path / "photos"))
    records = [record(photo.image, [(photo_eval.face_square(truth), truth + offset)])
               for photo, truth, offset in zip(photos, truths, (1.0, 6.0, 3.0))]
    written = photo_eval.draw_worst(photos, records, tmp_path / "worst", count=2)
    assert [p.name.split("_")[0] for p in written] == ["00", "01"]
    assert "photo1" in written[0].name and "photo2" in written[1].name  # 6 px off, then 3 px
    assert np.asarray(Image.open(written[0])).shape[2] == 3
    (tmp_path / "worst" / "notes.txt").write_text("mine")
    again = photo_eval.draw_worst(photos, records, tmp_path / "worst", count=1)  # a later run replaces the drawing
    assert sorted(p.name for p in (tmp_path / "worst").iterdir()) == sorted([again[0].name, "notes.txt"])


def test_conventions_measure_offsets_in_the_face_frame_over_the_eye_distance(tmp_path, monkeypatch):
    """A prediction 2 % of the outer-eye distance towards the subject's left eye and 1 % down, on faces of two
    sizes: the same offset in the face's own units, whatever the face's size (experiments/conventions.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    from conventions import face_frame_residuals, nme

    truths = write_photo_set(tmp_path / "set", [(160, 120, 1.0), (150, 110, 1.6)])
    photos = photo_eval.read_annotated_photos(str(tmp_path / "set"))
    records = []
    for photo, truth in zip(photos, truths):
        eye_line = truth[K["left_eye_outer_corner"]] - truth[K["right_eye_outer_corner"]]  # not quite level
        across = np.array([-eye_line[1], eye_line[0]])
        box = photo_eval.face_square(truth)
        records.append(record(photo.image, [(box, truth + 0.02 * eye_line + 0.01 * across)]))
    residuals = face_frame_residuals(photos, records)
    assert residuals.shape == (2, 15, 2)
    np.testing.assert_allclose(residuals, np.broadcast_to([0.02, 0.01], residuals.shape), atol=1e-5)
    np.testing.assert_allclose(nme(residuals), np.hypot(0.02, 0.01), rtol=1e-3)


def test_conventions_read_a_pipelines_pixel_offset_in_photo_pixels(tmp_path, monkeypatch):
    """Points 0.7 px right and 0.3 px up of the labels, on faces of two sizes: the same offset in photo pixels
    (a pixel origin is in pixels, not in the face's units; experiments/conventions.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    from conventions import peer_residuals

    truths = write_photo_set(tmp_path / "set", [(160, 120, 1.0), (150, 110, 1.6)])
    photos = photo_eval.read_annotated_photos(str(tmp_path / "set"))
    records = [record(photo.image, [(photo_eval.face_square(truth), truth + (0.7, -0.3))])
               for photo, truth in zip(photos, truths)]
    assert peer_residuals(photos, records) == {"faces": 2, "x_px": 0.7, "y_px": -0.3}


def test_label_geometry_is_the_same_whatever_the_faces_roll_size_and_place(monkeypatch):
    """Where a source puts the nose and mouth, relative to the eyes: a rolled, scaled and moved copy of a face marks
    them the same (experiments/conventions.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    from conventions import label_geometry

    angle = np.deg2rad(20)
    roll = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    faces = np.stack([KAGGLE_MEAN_FACE, 1.7 * KAGGLE_MEAN_FACE @ roll.T + (300, 40)])
    upright, rolled = label_geometry(faces[:1]), label_geometry(faces[1:])
    assert upright.keys() == rolled.keys() == {"nose_tip", "mouth_left_corner", "mouth_right_corner"}
    np.testing.assert_allclose([upright[k] for k in upright], [rolled[k] for k in upright], atol=0.11)
    eyes = (KAGGLE_MEAN_FACE[K["left_eye_center"]] + KAGGLE_MEAN_FACE[K["right_eye_center"]]) / 2
    distance = np.linalg.norm(KAGGLE_MEAN_FACE[K["left_eye_center"]] - KAGGLE_MEAN_FACE[K["right_eye_center"]])
    assert upright["nose_tip"][1] == pytest.approx(100 * (KAGGLE_MEAN_FACE[K["nose_tip"]][1] - eyes[1]) / distance, abs=1)
