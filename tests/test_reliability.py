"""Runs survive kills, damage and a full disk; inputs are never written over; every failure is one line.

The numbers in the test names' comments are the items of issue #17.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from kpjax.checkpoint import DEFAULT_MODEL, load_model
from kpjax.cli import run
from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.image import read_image
from kpjax.rundir import RunLock
from kpjax.sources.synthetic import make_faces
from kpjax.train import train

ROOT = Path(__file__).resolve().parents[1]
# Three one-step epochs of the small model: an epoch's last step is every step.
TRAIN = ["train", "--data", "synthetic:40", "--batch", "16", "--epochs", "3", "--model", "compact"]
# Runs the CLI and SIGKILLs itself just before the N-th rename, replace or rmtree: every step of a save
# (Orbax's item and step renames, the manifest, the pruning of the previous step) and of every file write.
KILL_AT_NTH_WRITE = """
import os, shutil, signal, sys
count, target = 0, int(sys.argv[1])
def killing(function):
    def call(*args, **kwargs):
        global count
        count += 1
        if count == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return call
os.rename, os.replace, shutil.rmtree = killing(os.rename), killing(os.replace), killing(shutil.rmtree)
from kpjax.cli import run
sys.exit(run(sys.argv[2:]))
"""
WRITES_IN_A_RUN = 32  # what TRAIN does: 3 files, 5 checkpoints of 6 operations, 3 prunings, the curve


def errors(captured) -> list[str]:
    return [line for line in captured.err.splitlines() if line.startswith("error:")]


def one_error(capsys, args: list, status: int = 2) -> str:
    """Run the CLI; it must exit with ``status`` and exactly one ``error:`` line, no traceback."""
    assert run([str(a) for a in args]) == status
    captured = capsys.readouterr()
    assert len(errors(captured)) == 1 and "Traceback" not in captured.err, captured.err
    return errors(captured)[0]


def latest_params(run_dir: Path) -> list[np.ndarray]:
    model, _ = load_model(run_dir, "latest")
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert run([*TRAIN, "--run-dir", str(run_dir)]) == 0
    return run_dir


# 1. No input is ever written over.


def test_predict_refuses_an_out_folder_that_holds_its_inputs(tmp_path, capsys, monkeypatch):
    face = make_faces(1, seed=4).images[0, ..., 0]
    Image.fromarray(face).save(tmp_path / "portrait.png")
    before = (tmp_path / "portrait.png").read_bytes()
    message = one_error(capsys, ["predict", tmp_path, "--out", tmp_path, "--no-detect"])
    assert f"--out {tmp_path}: holds the input {tmp_path / 'portrait.png'}" in message
    monkeypatch.chdir(tmp_path)
    assert "--out .: holds the input portrait.png" in one_error(capsys, ["predict", "portrait.png", "--out", "."])
    assert (tmp_path / "portrait.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portrait.png"]


# 2. A resume continues the run as it was configured.


def test_resume_keeps_the_configuration_and_changes_only_what_may_change(straight_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    assert run(["train", "--resume", "--run-dir", str(run_dir)]) == 0  # no --epochs: still 3, not 150
    assert "finished its 3 epochs" in capsys.readouterr().out
    assert TrainConfig.load(run_dir).epochs == 3
    for option, value in [("--batch", "8"), ("--model", "seed"), ("--data", "synthetic:50"), ("--rotation", "5")]:
        message = one_error(capsys, ["train", "--resume", "--run-dir", run_dir, option, value])
        assert f"--resume: {option} cannot change within a run" in message and "--epochs, --lr, --devices" in message
    assert run(["train", "--resume", "--run-dir", str(run_dir), "--epochs", "4", "--lr", "1e-4"]) == 0
    saved = TrainConfig.load(run_dir)
    assert (saved.epochs, saved.learning_rate, saved.batch_size) == (4, 1e-4, 16)
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


# 3, 4, 6. A kill at any instant leaves a run that --resume continues, exactly.


def _kill_and_resume(nth_write: int, run_dir: Path, straight_run: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", KILL_AT_NTH_WRITE, str(nth_write), *TRAIN, "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The same command with --resume, as after any crash: it continues, or starts afresh if nothing was saved.
    assert run([*TRAIN, "--run-dir", str(run_dir), "--resume"]) == 0
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for resumed, straight in zip(latest_params(run_dir), latest_params(straight_run)):
        np.testing.assert_array_equal(resumed, straight)
    model, _ = load_model(run_dir)  # the best checkpoint evaluates
    assert np.isfinite(latest_params(run_dir)[0]).all() and model is not None


@pytest.mark.parametrize("nth_write", [7, 13, 25])  # before a step's final rename, its manifest, the old one's pruning
def test_sigkill_inside_a_save_resumes_exactly(nth_write, straight_run, tmp_path):
    _kill_and_resume(nth_write, tmp_path / "run", straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("nth_write", range(1, WRITES_IN_A_RUN + 1))
def test_sigkill_at_every_write_resumes_exactly(nth_write, straight_run, tmp_path):
    _kill_and_resume(nth_write, tmp_path / "run", straight_run)


def interrupt_at_step(monkeypatch, n: int) -> list:
    """SIGINT arrives during the ``n``-th train step of this process; returns the list of steps taken."""
    import kpjax.train as training

    make_step, steps = training.make_train_step, []

    def interrupting_step(*args):
        def step(*inputs):
            steps.append(1)
            if len(steps) == n:
                signal.raise_signal(signal.SIGINT)
            return jitted(*inputs)
        jitted = make_step(*args)
        return step

    monkeypatch.setattr(training, "make_train_step", interrupting_step)
    return steps


def test_stop_on_an_epochs_last_step_resumes_exactly(straight_run, tmp_path, monkeypatch):
    """Ctrl-C on a one-step epoch used to save a step that the epoch's end saved again (StepAlreadyExistsError)."""
    from kpjax.train import TrainingInterrupted

    config = TrainConfig.load(straight_run)
    interrupt_at_step(monkeypatch, 2)  # epoch 2's only step
    with pytest.raises(TrainingInterrupted, match="stopped after epoch 2"):
        train(config, tmp_path / "run", log=lambda _: None)
    monkeypatch.undo()
    train(config, tmp_path / "run", resume=True, log=lambda _: None)
    for resumed, straight in zip(latest_params(tmp_path / "run"), latest_params(straight_run)):
        np.testing.assert_array_equal(resumed, straight)


def test_mid_epoch_resume_keeps_the_epochs_training_loss(tmp_path, monkeypatch):
    from kpjax.train import TrainingInterrupted

    data = make_faces(96, seed=2)  # 4 steps an epoch
    config = TrainConfig(data=["synthetic"], epochs=1, batch_size=16, model="compact")
    straight = train(config, tmp_path / "straight", dataset=data, log=lambda _: None)
    interrupt_at_step(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted, match="stopped at epoch 1, step 2"):
        train(config, tmp_path / "split", dataset=data, log=lambda _: None)
    monkeypatch.undo()
    resumed = train(config, tmp_path / "split", dataset=data, resume=True, log=lambda _: None)
    assert resumed.history[0]["train_mse"] == straight.history[0]["train_mse"]
    assert resumed.history[0]["train_mae"] == straight.history[0]["train_mae"]


def test_no_whole_checkpoint_means_a_fresh_start_with_or_without_resume(straight_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    for step in (run_dir / "checkpoints").glob("*/*"):
        (step / "_CHECKPOINT_METADATA").write_bytes(b"garbage")  # no longer matches its manifest
    assert run([*TRAIN, "--run-dir", str(run_dir), "--epochs", "1"]) == 0  # damaged only: not a run to protect
    shutil.rmtree(run_dir / "checkpoints")
    assert run([*TRAIN, "--run-dir", str(run_dir), "--resume", "--epochs", "1"]) == 0
    assert "holds no whole checkpoint to resume from; starting afresh" in capsys.readouterr().out


def test_best_alone_is_resumed_from(straight_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "latest")
    assert "already holds a run" in one_error(capsys, [*TRAIN, "--run-dir", run_dir])
    assert run(["train", "--resume", "--run-dir", str(run_dir)]) == 0
    history = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    best_epoch = max(h["epoch"] for h in history if h["best"])
    expected = f"resuming at epoch {best_epoch + 1}" if best_epoch < 3 else "finished its 3 epochs"
    assert expected in capsys.readouterr().out


# 5. One run directory, one writer.


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        message = one_error(capsys, [*TRAIN, "--run-dir", run_dir])
    assert f"--run-dir {run_dir}: another kpjax train (pid {os.getpid()}) is writing to it" in message
    assert not (run_dir / "config.json").exists()


# 6. Damage is detected, reported in one line, and the other checkpoint used.


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_checkpoint_is_reported_and_the_other_one_used(straight_run, tmp_path, capsys, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    [best] = (run_dir / "checkpoints" / "best").iterdir()
    victim = max((p for p in (best / "model").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[100:164] = bytes(b ^ 0xFF for b in data[100:164])
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        victim.unlink()
    assert run(["evaluate", "--model", str(run_dir), "--data", "synthetic:20", "--json"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert any(f"{best}: damaged checkpoint (" in line for line in warnings), captured.err
    assert any("using the latest one" in line for line in warnings) and "Traceback" not in captured.err
    assert json.loads(captured.out)["n"] == 20


def test_checkpoints_are_sealed_and_the_shipped_model_too(straight_run):
    from kpjax.rundir import check_manifest

    for kind in ("best", "latest"):
        [step] = (straight_run / "checkpoints" / kind).iterdir()
        assert check_manifest(step) is None
    if (DEFAULT_MODEL / "config.json").is_file():
        [step] = (DEFAULT_MODEL / "checkpoints" / "best").iterdir()
        assert check_manifest(step) is None


# 7. Disk full and read-only: one line naming the path and the cause.


def _in_a_mount_namespace(setup: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    """``args`` run by the CLI behind ``setup`` mount commands, in a user and mount namespace of its own."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare -rm (user and mount namespaces) to mount a small or read-only file system")
    command = f"{setup} && exec {sys.executable} -c 'import sys; from kpjax.cli import run; sys.exit(run(sys.argv[1:]))' "
    return subprocess.run(["unshare", "-rm", "sh", "-c", command + " ".join(map(str, args))], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_disk_full_is_one_line(tmp_path):
    (tmp_path / "small").mkdir()
    result = _in_a_mount_namespace("mount -t tmpfs -o size=2m tmpfs small", [*TRAIN, "--run-dir", "small/run"],
                                   tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # a fresh-clone CI once saw more: show them
    line = result.stderr.strip()
    assert line.startswith(f"error: {tmp_path}/small/run/checkpoints/") and "(No space left on device)" in line


def test_read_only_run_directory_is_one_line(straight_run, tmp_path):
    shutil.copytree(straight_run, tmp_path / "run")
    result = _in_a_mount_namespace("mount --bind run run && mount -o remount,bind,ro run",
                                   ["train", "--resume", "--epochs", "4", "--run-dir", "run"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["error: run/.lock: Read-only file system"]


# 8. EXIF orientation.


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # stored landscape, 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: a phone's portrait photo
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


# 9, 10. User mistakes: one line, exit status 2.


def test_user_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a_file").write_text("x")
    Path("header.csv").write_text("ImageId,Image\n")
    Path("empty.csv").write_text("")
    face = make_faces(1, seed=4).images[0, ..., 0]
    Image.fromarray(face).save("face.png")
    cases = [
        ([*TRAIN, "--run-dir", "a_file"], "--run-dir a_file: is a file, not a directory"),
        (["predict", "face.png", "--out", "a_file"], "--out a_file: is a file, not a folder"),
        (["predict", "face.png", "--out", "out", "--smooth", "2"], "--smooth 2.0: expected a weight in (0, 1]"),
        (["train", "--epochs", "0"], "--epochs 0: expected at least 1"),
        (["predict", "face.png", "--out", "out", "--batch", "0"], "kpjax predict: Invalid value for '--batch'"),
        (["submit", str(DEFAULT_MODEL), "--test", "empty.csv"], "empty.csv: empty file"),
        (["submit", str(DEFAULT_MODEL), "--test", "header.csv"], "header.csv: no rows below the header"),
        (["train", "--data", "header.csv"], "header.csv: missing column(s) left_eye_center_x"),
    ]
    for args, expected in cases:
        assert expected in one_error(capsys, args)


def test_csv_mistakes_name_their_cause(tmp_path):
    from kpjax.keypoints import KAGGLE
    from kpjax.sources import LoadOptions, load_data
    from kpjax.train import load_training_data

    columns = [*KAGGLE.columns, "Image"]
    pixels = " ".join(["0"] * 96 * 96)
    (tmp_path / "header.csv").write_text(",".join(columns) + "\n")
    (tmp_path / "renamed.csv").write_text(",".join(["left_eye_centre_x", *columns[1:]]) + "\n"
                                          + ",".join(["50"] * 30 + [pixels]) + "\n")
    (tmp_path / "partial.csv").write_text(",".join(columns) + "\n" + ",".join([""] + ["50"] * 29 + [pixels]) + "\n")
    with pytest.raises(KpjaxError, match="header.csv: no rows below the header"):
        load_data([str(tmp_path / "header.csv")], LoadOptions())
    with pytest.raises(KpjaxError, match="renamed.csv: missing column.s. left_eye_center_x"):
        load_data([str(tmp_path / "renamed.csv")], LoadOptions())
    with pytest.raises(KpjaxError, match="--complete-only: none of the 1 faces has all 15 keypoints"):
        load_training_data(TrainConfig(data=[str(tmp_path / "partial.csv")], complete_only=True))


def test_a_bad_input_does_not_stop_a_folder_and_is_an_error(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(make_faces(1, seed=4).images[0, ..., 0]).save(folder / "face.png")
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(folder / "bomb.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 10_000  # bomb.png's 40,000 pixels are over twice the limit; face.png's 9,216 are not
    try:
        message = one_error(capsys, ["predict", folder, "--out", tmp_path / "out", "--no-detect"]
                            + ["--format", "json"], status=2)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    assert "2 input(s) missing or unreadable" in message
    captured_results = json.loads((tmp_path / "out" / "predictions.json").read_text())
    by_name = {Path(r["image"]).name: r for r in captured_results}
    assert len(by_name["face.png"]["faces"]) == 1
    assert "decompression bomb" in by_name["bomb.png"]["error"] and "unreadable" in by_name["broken.jpg"]["error"]


def test_missing_input_is_on_stderr_and_not_the_no_face_status(tmp_path, capsys):
    Image.fromarray(np.full((200, 200, 3), 30, np.uint8)).save(tmp_path / "dark.png")
    assert run(["predict", str(tmp_path / "dark.png"), "--out", str(tmp_path / "out")]) == 3  # no face
    capsys.readouterr()
    message = one_error(capsys, ["predict", tmp_path / "dark.png", tmp_path / "missing.png", "--out", tmp_path / "o2"])
    assert "1 input(s) missing or unreadable" in message


def test_a_finite_explosion_is_divergence_and_no_checkpoint_is_not_claimed(tmp_path, capsys):
    # --lr 10 takes the loss to about 1e32 in the first epoch: finite, and no model.
    message = one_error(capsys, ["train", "--data", "synthetic:100", "--batch", "16", "--epochs", "2", "--lr", "10",
                                 "--model", "compact", "--run-dir", tmp_path / "run"])
    assert "training diverged at epoch 1" in message
    assert "no checkpoint was saved; start again with a lower --lr" in message
