"""benchmarks/photo_peers.py and the photo peer scripts: their keypoint names, output shape and failures.

The peers run in virtualenvs of their own (benchmarks/peers/setup_photo_peers.sh);
the end-to-end tests skip where those are absent.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from skimage import data

from kpjax.keypoints import KAGGLE_NAMES
from kpjax.sources.convert import _KAGGLE_FROM

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DRIVER = BENCHMARKS / "photo_peers.py"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mapping(script: str, name: str) -> dict:
    """The dict literal ``name`` of a peer script, read without importing it (its venv's packages are not here)."""
    tree = ast.parse((BENCHMARKS / "peers" / script).read_text())
    node = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return eval(compile(ast.Expression(node), script, "eval"), {"range": range})  # literals and range() only


def drive(*args: str, peers_root: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"KPJAX_PEERS": str(peers_root)} if peers_root else {})}
    return subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True, check=False,
                          timeout=300, env=env)


def test_peer_names_are_kaggles():
    assert load(BENCHMARKS / "peers" / "photo_protocol.py").KAGGLE_NAMES == KAGGLE_NAMES


def test_peer_mappings_cover_every_kaggle_keypoint():
    mesh = mapping("photo_mediapipe.py", "MESH_FROM")
    assert set(mesh) == set(KAGGLE_NAMES)
    assert all(0 <= i < 478 for indices in mesh.values() for i in indices)
    dlib = mapping("photo_dlib.py", "IBUG_FROM")
    assert {k: list(v) for k, v in dlib.items()} == {k: list(v) for k, v in _KAGGLE_FROM["ibug"].items()}


def test_missing_virtualenv_is_one_line_error(tmp_path):
    images = tmp_path / "images.txt"
    images.write_text("photo.jpg\n")
    done = drive("--peer", "dlib", "--images", str(images), "--out", str(tmp_path / "out.json"),
                 peers_root=tmp_path / "none")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: --peer dlib: no virtualenv at {tmp_path / 'none' / 'dlib'}; "
                                   "run bash benchmarks/peers/setup_photo_peers.sh dlib")


@pytest.mark.parametrize("images, text, out, message", [
    ("no.txt", None, "out.json", "--images {tmp}/no.txt: no such file"),
    ("images.txt", "\n", "out.json", "--images {tmp}/images.txt: no image paths in it"),
    ("images.txt", "photo.jpg\n", "a/out.json", "--out {tmp}/a/out.json: no folder {tmp}/a"),
])
def test_bad_image_list_or_out_folder_is_one_line_error(tmp_path, images, text, out, message):
    if text is not None:
        (tmp_path / images).write_text(text)
    done = drive("--peer", "mediapipe", "--images", str(tmp_path / images), "--out", str(tmp_path / out))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: " + message.format(tmp=tmp_path)


def test_peer_without_its_package_is_one_line_error(tmp_path):
    """A virtualenv whose python lacks the peer's package: the peer's last stderr line, after the peer's name."""
    python = tmp_path / "mediapipe" / "bin" / "python"
    if importlib.util.find_spec("mediapipe"):
        pytest.skip("this venv has mediapipe")
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # this venv: OpenCV and numpy, no mediapipe
    python.chmod(0o755)
    (tmp_path / "images.txt").write_text("photo.jpg\n")
    done = drive("--peer", "mediapipe", "--images", str(tmp_path / "images.txt"), "--out", str(tmp_path / "o.json"),
                 peers_root=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: mediapipe: ModuleNotFoundError: No module named 'mediapipe'"


@pytest.mark.parametrize("peer", ["mediapipe", "dlib"])
def test_peer_end_to_end(peer, tmp_path):
    """One real photo and one that does not decode, through the driver and the peer's own venv."""
    root = Path(os.environ.get("KPJAX_PEERS") or Path.home() / ".cache" / "kpjax" / "peers")
    if not (root / peer / "bin" / "python").is_file():
        pytest.skip(f"no {peer} virtualenv under {root} (benchmarks/peers/setup_photo_peers.sh)")
    photo, broken = tmp_path / "astronaut.jpg", tmp_path / "broken.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))  # 512x512, one upright face
    broken.write_text("not a JPEG")
    (tmp_path / "images.txt").write_text(f"{photo}\n{broken}\n")
    out = tmp_path / "out.json"
    done = drive("--peer", peer, "--images", str(tmp_path / "images.txt"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {k: summary[k] for k in ("peer", "photos", "no_face", "unreadable")} == {
        "peer": peer, "photos": 2, "no_face": 0, "unreadable": 1}
    found, failed = json.loads(out.read_text())
    assert failed["image"] == str(broken) and "unreadable image" in failed["error"] and "faces" not in failed
    assert (found["image"], found["width"], found["height"]) == (str(photo), 512, 512) and found["ms"] > 0
    assert len(found["faces"]) == summary["faces"] >= 1  # dlib also finds the mission patch, with a low score
    face = max(found["faces"], key=lambda f: f["score"] or 0)
    assert tuple(face["keypoints"]) == KAGGLE_NAMES
    x, y, w, h = face["box"]
    points = {name: tuple(xy) for name, xy in face["keypoints"].items()}
    assert all(x - 0.2 * w <= px <= x + 1.2 * w and y - 0.2 * h <= py <= y + 1.2 * h for px, py in points.values())
    # The subject's left is the image's right; eyes above the nose tip, above the mouth.
    for left, right in [("left_eye_center", "right_eye_center"), ("left_eye_outer_corner", "left_eye_inner_corner"),
                        ("right_eye_inner_corner", "right_eye_outer_corner"),
                        ("left_eyebrow_outer_end", "left_eyebrow_inner_end"),
                        ("mouth_left_corner", "mouth_right_corner")]:
        assert points[left][0] > points[right][0], (left, right)
    assert points["left_eye_center"][1] < points["nose_tip"][1] < points["mouth_center_top_lip"][1]
    assert points["mouth_center_top_lip"][1] < points["mouth_center_bottom_lip"][1]
    assert (face["score"] is None) == (peer == "mediapipe")
    assert 400 < w * h < 512 * 512 / 4
