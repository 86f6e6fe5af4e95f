"""The experiment scripts run end to end (one epoch on drawn faces) and the report is built from their results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from kpjax.checkpoint import load_model
from kpjax.inference import Predictor

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("script, name, extra", [("reproduce_seed.py", "seed", []), ("best_recipe.py", "best", []),
                                                 ("sweep.py", "sweep-heatmap-seed1",
                                                  ["--variants", "heatmap", "--seed", "1"])])
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
    run = tmp_path / "runs" / name
    ensemble = subprocess.run([sys.executable, EXPERIMENTS / "ensemble.py", run, run, "--synthetic", "160",
                               "--results", tmp_path / "results"], capture_output=True, text=True, timeout=600)
    assert ensemble.returncode == 0, ensemble.stderr
    record = json.loads((tmp_path / "results" / "analysis" / f"ensemble-{name}+{name}.json").read_text())
    assert record["ensemble"] == record["members"][str(run)]  # a model averaged with itself is itself
    report = subprocess.run([sys.executable, EXPERIMENTS / "report.py", "--results", tmp_path / "results",
                             "--runs", tmp_path / "runs", "--grid-run", name, "--out", tmp_path / "EXPERIMENTS.md",
                             "--data-root", tmp_path / "no-real-data"],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "EXPERIMENTS.md").read_text()
    assert f"| {name} |" in text and "9.37e-04" in text and f"| {name} + {name} |" in text
    assert (tmp_path / "runs" / "validation_grid.png").exists()  # real faces: drawn under runs/, not committed


def test_face_verifier_trains_on_the_shared_photos_and_its_weights_load(shared_data, tmp_path):
    """The script behind the shipped verifier's weights still runs (it once broke when the photos' reader moved)."""
    from kpjax.verify import load_verifier

    args = ["--data-root", shared_data, "--photos", "12", "--aflw", "8", "--epochs", "1", "--batch", "16",
            "--out", tmp_path / "verifier.npz", "--results", tmp_path]
    done = subprocess.run([sys.executable, EXPERIMENTS / "face_verifier.py", *map(str, args)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "analysis" / "face_verifier.json").read_text())
    assert result["train_faces"] > 0 and result["train_patches"] > result["train_faces"]
    load_verifier(tmp_path / "verifier.npz")


def test_a_run_trained_elsewhere_is_scored_as_it_is(tmp_path):
    """``--score-only`` records a finished run's figures without training it further (the shipped model trained on
    a GPU), with the device it names; a run root without the run is a one-line error."""
    args = ["--recipe", "photo_wide", "--synthetic", "160", "--epochs", "1", "--run-root", tmp_path / "runs",
            "--results", tmp_path / "results"]
    trained = subprocess.run([sys.executable, EXPERIMENTS / "photo_recipe.py", *map(str, args)], capture_output=True,
                             text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    metrics = (tmp_path / "runs" / "photo_wide" / "metrics.jsonl").read_text()
    first = json.loads((tmp_path / "results" / "photo_wide.json").read_text())
    assert first["config"]["model"] == "heatmap-wide"
    scored = subprocess.run([sys.executable, EXPERIMENTS / "photo_recipe.py", *map(str, args), "--score-only",
                             "--trained-on", "a lent GPU"], capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    again = json.loads((tmp_path / "results" / "photo_wide.json").read_text())
    assert (tmp_path / "runs" / "photo_wide" / "metrics.jsonl").read_text() == metrics  # nothing trained
    assert again["device"] == "a lent GPU" and "--score-only" in again["command"]
    assert again["evaluations"] == first["evaluations"] and again["best_epoch"] == first["best_epoch"] == 1
    missing = subprocess.run([sys.executable, EXPERIMENTS / "photo_recipe.py", *map(str, args), "--score-only",
                              "--run-root", str(tmp_path / "elsewhere")], capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: --score-only: {tmp_path / 'elsewhere' / 'photo_wide'} holds no trained epochs"]


@pytest.fixture
def experiments_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))


def test_label_noise_pairs_each_face_with_its_nearest_of_the_same_person(experiments_importable):
    from label_noise import nearest_pairs

    images = np.zeros((4, 2, 2, 1), np.uint8)
    images[1] += 10  # person a: faces 0 and 1 nearly alike; person b: faces 2 and 3 identical
    keypoints = np.zeros((4, 15, 2), np.float32)
    keypoints[1] += 3.0
    pairs = nearest_pairs(images, keypoints, np.array(["a", "a", "b", "b"]))
    np.testing.assert_allclose(pairs[:, 1], [3.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(pairs[:, 0], [10 / 255, 10 / 255, 0, 0], atol=1e-6)


def test_frame_triplets_come_from_file_names_and_need_all_three_frames(experiments_importable):
    from label_noise import frame_triplets

    names = ["Ann_Lee_01.jpg", "Bob_10.jpg", "Ann_Lee_00.jpg", "Bob_12.jpg", "Ann_Lee_02.jpg", "Bob_11.jpg",
             "Cy_40.jpg", "Cy_41.jpg"]  # Cy's video lacks its third frame
    assert sorted(map(tuple, frame_triplets(names))) == [(1, 5, 3), (2, 0, 4)]


def test_second_difference_cancels_smooth_motion_and_measures_noise(experiments_importable):
    from label_noise import second_difference

    rng = np.random.default_rng(0)
    start, velocity = rng.normal(size=(1000, 15, 2)), rng.normal(size=(1000, 15, 2))
    frames = np.stack([start + t * velocity for t in range(3)], axis=1).reshape(3000, 15, 2)
    triplets = np.arange(3000).reshape(1000, 3)
    np.testing.assert_allclose(second_difference(frames, triplets), 0.0, atol=1e-9)
    noisy = frames + rng.normal(scale=0.8, size=frames.shape)
    estimate = np.sqrt(np.mean(second_difference(noisy, triplets) ** 2) / 1.5)
    assert abs(estimate - 0.8) < 0.02


def test_ensemble_of_one_model_is_that_model_and_averages_two(experiments_importable):
    from ensemble import member_predictions

    from kpjax.inference import predict_model
    from kpjax.keypoints import KAGGLE
    from kpjax.models import create_model

    images = np.random.default_rng(0).integers(0, 256, (5, 96, 96, 1), dtype=np.uint8)
    first, second = (create_model("heatmap", num_outputs=30, size=96, channels=1, seed=s) for s in (0, 1))
    alone = [predict_model(m, images, flip_permutation=KAGGLE.flip_permutation) for m in (first, second)]
    np.testing.assert_allclose(member_predictions([first], images, KAGGLE.flip_permutation).mean(axis=0), alone[0])
    np.testing.assert_allclose(member_predictions([first, second], images, KAGGLE.flip_permutation).mean(axis=0),
                               (alone[0] + alone[1]) / 2, rtol=1e-6, atol=1e-7)
    assert not np.allclose(alone[0], alone[1])


def test_spearman_interval_brackets_the_median_per_point_spearman(experiments_importable):
    from confidence import spearman_interval, spearman_per_keypoint

    rng = np.random.default_rng(0)
    names = tuple(f"p{k}" for k in range(5))
    expected = rng.uniform(1, 3, (400, 5))
    perfect = spearman_interval(expected, expected * 2, names, draws=20)
    np.testing.assert_allclose(perfect, [1.0, 1.0])
    actual = expected * rng.laplace(1, 0.6, expected.shape) ** 2  # ranked only partly by the expected errors
    low, high = spearman_interval(expected, actual, names, draws=50)
    assert low < spearman_per_keypoint(expected, actual, names)["median"] < high < 1.0


def test_signal_jitters_are_small_similarities_about_the_frame_centre(experiments_importable):
    from confidence_signals import jitter_matrices

    from kpjax.image import apply_affine

    matrices = jitter_matrices(20, 128)
    centre = np.array([63.5, 63.5])
    for m in matrices:
        zoom = np.sqrt(abs(np.linalg.det(m[:2, :2])))
        assert np.allclose(m[:2, :2] / zoom @ (m[:2, :2] / zoom).T, np.eye(2)) and abs(np.log(zoom)) <= 0.08
        assert np.abs(apply_affine(m, centre) - centre).max() <= 4.0 + 1e-9
    assert len({m.tobytes() for m in matrices}) == 20
    np.testing.assert_array_equal(jitter_matrices(3, 128)[0], matrices[0])  # drawn from a fixed seed


def test_appended_rows_replace_the_pipelines_measured_again(experiments_importable):
    from photos_end_to_end import appended

    earlier = {"command": "python a", "rows": [{"pipeline": "old model", "ms": 15}, {"pipeline": "new model", "ms": 15},
                                               {"pipeline": "mediapipe", "ms": 5}]}
    record = {"command": "python b", "faces": 3, "rows": [{"pipeline": "new model", "ms": 20}, {"pipeline": "x", "ms": 9}]}
    merged = appended(earlier, record)
    assert [(row["pipeline"], row["ms"]) for row in merged["rows"]] == [
        ("old model", 15), ("mediapipe", 5), ("new model", 20), ("x", 9)]
    assert merged["command"] == "python a; then python b" and merged["faces"] == 3


@pytest.mark.parametrize("script, model_option", [("ensemble.py", ()), ("conventions.py", ("--model",)),
                                                  ("error_likelihood.py", ("--model",)),
                                                  ("photos_end_to_end.py", ("--model",)),
                                                  ("confidence_signals.py", ("--model",))])
def test_a_missing_run_is_a_one_line_error_with_status_2(tmp_path, script, model_option):
    done = subprocess.run([sys.executable, EXPERIMENTS / script, *model_option, tmp_path / "missing"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'missing'}: not a kpjax run directory (no config.json)"


@pytest.mark.parametrize("script", ["conventions.py", "photos_end_to_end.py"])
@pytest.mark.parametrize("spec, message", [
    ("mediapipe", "--peer mediapipe: expected NAME=PATTERN, {source} in PATTERN standing for helen or fgnet"),
    ("mediapipe={missing}/{source}.json", "--peer mediapipe: {missing}/helen.json unreadable"),
])
def test_a_bad_peer_is_a_one_line_error_before_any_work(tmp_path, script, spec, message):
    done = subprocess.run([sys.executable, EXPERIMENTS / script, "--peer", spec.replace("{missing}", str(tmp_path))],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"{script}: error: " + message.replace("{missing}", str(tmp_path)))


def test_the_training_persons_photos_never_replace_the_headline():
    done = subprocess.run([sys.executable, EXPERIMENTS / "photos_end_to_end.py", "--persons", "train"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("photos_end_to_end.py: error: --persons train needs --results "
                                                     "elsewhere: the headline's results are the validation persons'")


def test_a_missing_source_is_a_one_line_error_before_any_work(tmp_path):
    done = subprocess.run([sys.executable, EXPERIMENTS / "confidence.py", "--data-root", tmp_path, "--sources", "nosuch"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"confidence.py: error: --sources: {tmp_path / 'nosuch'}: "
                                                     "no such file or folder")


@pytest.mark.parametrize("script", ["conventions.py", "photos_end_to_end.py"])
def test_a_script_without_the_photos_ends_in_one_line_not_a_traceback(tmp_path, script):
    done = subprocess.run([sys.executable, EXPERIMENTS / script, "--data-root", tmp_path],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'helen-68-train'}: no such file or folder"


def test_shape_calibration_without_the_photos_is_a_one_line_error_before_any_work(tmp_path):
    done = subprocess.run([sys.executable, EXPERIMENTS / "shape_calibration.py", "--data-root", tmp_path],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"shape_calibration.py: error: --data-root: "
                                                     f"{tmp_path / 'helen-68-train'}: no such file or folder")


def test_a_refitted_model_is_saved_from_a_run_without_optimizer_state(trained_run, tmp_path, experiments_importable):
    """error_likelihood.py --save keeps a refitted model as a run to ship, from a run trained on a GPU, which comes
    back with its best weights and progress alone (device_train.tar_run)."""
    from error_likelihood import save_run

    from kpjax.checkpoint import best_progress, drop_optimizer_state, load_model

    source = tmp_path / "from-the-gpu"
    shutil.copytree(trained_run, source, ignore=shutil.ignore_patterns("latest"))
    drop_optimizer_state(source)
    assert not list((source / "checkpoints" / "best").glob("*/opt_state"))
    model, _ = load_model(source)
    save_run(model, source, tmp_path / "refitted", {"head": "refitted"})
    saved, _ = load_model(tmp_path / "refitted")
    for got, want in zip(jax.tree.leaves(nnx.state(saved)), jax.tree.leaves(nnx.state(model))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert best_progress(tmp_path / "refitted") == best_progress(source)
    assert json.loads((tmp_path / "refitted" / "refit.json").read_text()) == {"head": "refitted"}
    assert not (tmp_path / "refitted.partial").exists()


@pytest.fixture
def packed(tmp_path, monkeypatch, experiments_importable):
    """device_train's packed faces, as far as their recipe: the shipped recipe's config, no faces."""
    import device_train

    np.savez(tmp_path / "meta.npz", config=str(EXPERIMENTS.parent / "configs" / "photo_hires.py"))
    monkeypatch.setattr(device_train, "PACKED", tmp_path)
    return device_train


def test_each_gpu_variant_trains_with_its_own_settings_over_the_shared_ones(packed, monkeypatch, tmp_path):
    trained = {}
    monkeypatch.setattr(packed, "load_dataset", lambda: "faces")
    monkeypatch.setattr("kpjax.train.train", lambda config, run_dir, dataset: trained.update({run_dir.name: config}))
    for name, variant in {"s0": "heatmap-wide:wing", "s1": "heatmap-wide:wing,seed=1,split_seed=0"}.items():
        packed.train_one(variant, 7, str(tmp_path / name), settings=("seed=5", "learning_rate=1e-4"))
    assert [(c.model, c.loss, c.epochs, c.seed, c.split_seed, c.learning_rate) for c in trained.values()] == [
        ("heatmap-wide", "wing", 7, 5, None, 1e-4), ("heatmap-wide", "wing", 7, 1, 0, 1e-4)]


def test_a_gpu_variant_with_a_bad_setting_stops_the_call_before_any_run(packed, capsys):
    with pytest.raises(SystemExit) as stopped:
        packed.drive_command(60, Path("out"), ["s0=heatmap-wide", "s1=heatmap-wide,seeds=1"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: variant s1: seeds: unknown key")
    with pytest.raises(SystemExit):
        packed.drive_command(60, Path("out"), ["s0=heatmap-wide", "--set", "epoch=3"])
    assert capsys.readouterr().err.startswith("error: --set epoch: unknown key")


def test_a_shape_correction_is_fitted_in_each_faces_frame_and_moves_the_photos_points(experiments_importable):
    """shape_calibration.py: a residual that is a linear function of the frame's points is recovered, and applying
    the fitted correction to a record moves its points by that residual, mapped back to the photo."""
    from shape_calibration import corrected, features, fit

    from kpjax.image import apply_affine
    from kpjax.inference import similarity_crop
    from kpjax.keypoints import KAGGLE, KAGGLE_MEAN_FACE

    size = 96
    rng = np.random.default_rng(0)
    predicted = KAGGLE_MEAN_FACE * size + rng.normal(0, 2, (200, 15, 2))
    truth_weights = np.zeros((31, 30))
    truth_weights[0, 0], truth_weights[-1, 1] = 0.5, -1.0  # x of point 0 follows the frame's first coordinate
    annotated = predicted + (features(predicted, size) @ truth_weights).reshape(predicted.shape)
    np.testing.assert_allclose(fit(predicted, annotated, size, ridge=0.0), truth_weights, atol=1e-6)

    # a face in the photo at twice the frame's scale, shifted: its record's points move by the frame's residual
    to_photo = np.array([[2.0, 0.0, 50.0], [0.0, 2.0, 30.0]])
    points = apply_affine(to_photo, predicted[0])
    record = {"faces": [{"keypoints": dict(zip(KAGGLE.names, points.tolist()))}]}
    moved = np.array(list(corrected([record], truth_weights, size)[0]["faces"][0]["keypoints"].values()))
    to_frame = similarity_crop(points, "kaggle", size)
    in_frame = apply_affine(to_frame, points)
    expected = in_frame + (features(in_frame[None], size) @ truth_weights).reshape(-1, 2)
    np.testing.assert_allclose(apply_affine(to_frame, moved), expected, atol=1e-6)
    assert record["faces"][0]["keypoints"][KAGGLE.names[0]] == points[0].tolist()  # the input is left as it was


def test_a_placement_zooms_about_the_frame_centre_shifts_and_mirrors(experiments_importable):
    from crop_variants import placement_matrix

    from kpjax.image import apply_affine

    centre = np.array([[63.5, 63.5]])
    np.testing.assert_allclose(placement_matrix(128, False, 1.0, 0.0, 0.0), np.eye(3)[:2])
    np.testing.assert_allclose(apply_affine(placement_matrix(128, False, 1.05, 0.0, 0.0), centre), centre)
    np.testing.assert_allclose(apply_affine(placement_matrix(128, False, 1.0, 2.0, -2.0), centre), centre + [2, -2])
    np.testing.assert_allclose(apply_affine(placement_matrix(128, True, 1.0, 0.0, 0.0), [[10.0, 20.0]]),
                               [[117.0, 20.0]])


def test_crops_averaged_with_their_mirror_are_flip_tta(experiments_importable, run_dir):
    from crop_variants import PLACEMENTS, AveragedCrops

    model, config = load_model(run_dir)
    image = np.random.default_rng(0).integers(0, 255, (150, 120), dtype=np.uint8)
    [[averaged]] = AveragedCrops(model, config, None, PLACEMENTS["flip"])([image])
    [[flipped]] = Predictor(model, config, None, flip_tta=True)([image])
    np.testing.assert_allclose(averaged.points, flipped.points, atol=1e-4)
    if flipped.errors is not None:
        np.testing.assert_allclose(averaged.errors, flipped.errors, atol=1e-4)


def test_a_refining_network_predicts_every_crop_after_the_detectors(experiments_importable, run_dir, trained_run):
    from crop_variants import RefinedBy

    from kpjax.detect import Detection
    from kpjax.inference import similarity_crop

    model, config = load_model(run_dir)
    refiner, refiner_config = load_model(trained_run)  # another network at another frame size
    image = np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8)
    detections = [[Detection((50.0, 40.0, 100.0, 110.0), 0.9)]]
    settings = {"passes": 2, "converged_px": 0.0, "average_passes": False, "not_a_face_nme": None}
    [[first]] = Predictor(model, config, None, **{**settings, "passes": 1})([image], detections)
    recrop = similarity_crop(first.points, config.layout.name, config.size) * (refiner_config.size / config.size)
    [(expected, _)] = Predictor(refiner, refiner_config, None).placed_keypoints([(image, recrop)])
    [[refined]] = RefinedBy(model, config, None, refiner, refiner_config, **settings)([image], detections)
    np.testing.assert_allclose(refined.points, expected, atol=1e-4)


def test_recrop_placement_measures_how_far_predicted_points_move_the_crop(experiments_importable, tmp_path):
    from crop_variants import recrop_placement
    from test_photo_eval import record, write_photo_set

    from kpjax import photo_eval

    truths = write_photo_set(tmp_path, [(100, 100, 1.0), (200, 120, 1.0)])
    shifted = truths[0] + [3.0, 4.0]  # 5 photo px: 5 * 128 / 96 px of a 128-pixel frame
    zoomed = truths[1].mean(axis=0) + 1.1 * (truths[1] - truths[1].mean(axis=0))
    photos = photo_eval.read_annotated_photos(str(tmp_path))
    moved, zoomed = (recrop_placement([photo], [record(photo.image, [((x - 48, y - 48, 96, 96), points)])], 128)
                     for photo, (x, y), points in zip(photos, [(100, 100), (200, 120)], [shifted, zoomed]))
    np.testing.assert_allclose(moved["shift_px"], 5 * 128 / 96, atol=1e-3)
    np.testing.assert_allclose([moved["log_zoom"], moved["rotation_deg"], zoomed["rotation_deg"]], 0.0, atol=1e-3)
    np.testing.assert_allclose(zoomed["log_zoom"], np.log(1.1), atol=1e-3)
