"""Keypoints of every face in photos, folders and videos, in each input's own pixels.

Each face is cropped into the model's frame by one affine (``kpjax.image``):
from its detector box (``kpjax.detect.box_matrix``), or, for an image that is
already a face crop, by stretching the whole image. The crops of many images
go through the network together in power-of-two batches, so a folder costs a
jitted call per batch and a handful of compilations, not one per face.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from flax import nnx
from tqdm import tqdm

from kpjax.config import TrainConfig
from kpjax.detect import Detection, FaceDetector, box_matrix, frame_box, is_face_crop
from kpjax.errors import KpjaxError
from kpjax.evaluate import predict_normalised
from kpjax.image import apply_affine, invert_affine, read_image, resize_matrix, warp
from kpjax.keypoints import LAYOUTS, denormalise
from kpjax.sources.convert import kaggle_points, mean_face

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclasses.dataclass
class Face:
    box: tuple[float, float, float, float]  # x, y, width, height in image pixels
    score: float | None  # detector score; None when the image was taken as the face
    points: np.ndarray  # (K, 2) in image pixels


# Refinement stops once a face's crop moves less than this (frame pixels): the network's own noise.
CONVERGED_PX = 0.5
DEFAULT_PASSES = 3


def similarity_crop(points: np.ndarray, layout_name: str, size: int) -> np.ndarray:
    """The image -> frame affine (scale, rotation, translation) that best maps a face's predicted points onto
    the mean face: the crop training faces get, with the head's roll taken out so the face arrives upright."""
    kaggle = points if layout_name == "kaggle" else kaggle_points(points, "ibug")
    source = kaggle[:, 0] + 1j * kaggle[:, 1]
    target = mean_face(size) @ np.array([1, 1j])
    source_centred, target_centred = source - source.mean(), target - target.mean()
    s = np.vdot(source_centred, target_centred) / np.vdot(source_centred, source_centred)
    t = target.mean() - s * source.mean()
    return np.array([[s.real, -s.imag, t.real], [s.imag, s.real, t.imag]])


def crop_change(old: np.ndarray, new: np.ndarray, size: int) -> float:
    """How far (frame pixels) the corners of the ``old`` crop land from where the ``new`` crop puts them."""
    corners = np.array([[0.0, 0.0], [size - 1, 0.0], [0.0, size - 1], [size - 1, size - 1]])
    return float(np.abs(apply_affine(new, apply_affine(invert_affine(old), corners)) - corners).max())


class Predictor:
    """A model and a face detector: whole images in, every face's box and keypoints out.

    Each detected face is predicted, re-cropped from its own keypoints (``similarity_crop``) and predicted
    again, up to ``passes`` times or until its crop moves less than ``CONVERGED_PX``: the detector's box
    places the first crop only roughly, the keypoints place the next one the way training crops are placed.
    """

    def __init__(self, model: nnx.Module, config: TrainConfig, detector: FaceDetector | None = None,
                 batch_size: int = 32, passes: int = DEFAULT_PASSES, flip_tta: bool = False):
        """``detector=None`` takes every image as one face crop (``--no-detect``), which is never re-cropped."""
        if passes < 1:
            raise KpjaxError(f"--passes {passes}: expected at least 1")
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.config = config
        self.layout = LAYOUTS[config.keypoints]
        self.detector = detector
        self.batch_size = batch_size
        self.passes = passes
        self.flip_permutation = self.layout.flip_permutation if flip_tta else None

    def locate(self, image: np.ndarray) -> list[tuple[Detection, np.ndarray]]:
        """Each face's detection and its image -> frame affine."""
        size = self.config.size
        if self.detector is None or is_face_crop(image, size):
            matrix = resize_matrix(image.shape[:2], size)
            return [(Detection(frame_box(matrix, size), None), matrix)]
        return [(d, box_matrix(d.box, size)) for d in self.detector(image)]

    def frame_keypoints(self, frames: np.ndarray) -> np.ndarray:
        """(N, K, 2) keypoints in frame pixels, batches padded to a power of two (at most ``batch_size``)."""
        n = len(frames)
        if n == 0:
            return np.zeros((0, self.layout.num_keypoints, 2), np.float32)
        batch = min(self.batch_size, 1 << (n - 1).bit_length())
        if n < batch:
            frames = np.concatenate([frames, np.zeros((batch - n, *frames.shape[1:]), frames.dtype)])
        normalised = predict_normalised(self.graphdef, self.params, self.rest, frames, batch,
                                        self.flip_permutation)[:n]
        return denormalise(normalised, self.config.size).reshape(n, -1, 2)

    def __call__(self, images: list[np.ndarray], detections: list[list[Detection]] | None = None) -> list[list[Face]]:
        """Every face of every image, the crops of all images predicted together, pass by pass; ``detections``
        (one list per image) replaces the detector, e.g. with boxes that follow faces from a previous frame."""
        size, color = self.config.size, self.config.color
        located = ([self.locate(image) for image in images] if detections is None else
                   [[(d, box_matrix(d.box, size)) for d in found] for found in detections])
        faces = [(i, d, m) for i, found in enumerate(located) for d, m in found]
        matrices = [m for _, _, m in faces]
        points: list[np.ndarray] = [np.zeros((0, 2))] * len(faces)
        active = list(range(len(faces)))
        for step in range(self.passes):
            frames = [warp(images[faces[k][0]], matrices[k], size, color) for k in active]
            predicted = self.frame_keypoints(np.stack(frames) if frames else np.zeros((0,)))
            still_moving = []
            for k, frame_points in zip(active, predicted):
                points[k] = apply_affine(invert_affine(matrices[k]), frame_points)
                if step + 1 < self.passes and faces[k][1].score is not None:  # a whole-image crop stays as given
                    recrop = similarity_crop(points[k], self.layout.name, size)
                    if crop_change(matrices[k], recrop, size) >= CONVERGED_PX:
                        matrices[k] = recrop
                        still_moving.append(k)
            active = still_moving
            if not active:
                break
        result: list[list[Face]] = [[] for _ in images]
        for (i, d, _), face_points in zip(faces, points):
            result[i].append(Face(d.box, d.score, face_points))
        return result


def draw_keypoints(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """An RGB copy of ``image`` with the keypoints marked, sized to stay visible on large images."""
    canvas = np.ascontiguousarray(image.copy())
    radius = max(1, round(max(image.shape[:2]) / 120))
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (round(float(x)), round(float(y))), radius, colour, -1, cv2.LINE_AA)
    return canvas


def draw_faces(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """An RGB copy of ``image`` with each face's box, score and keypoints."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), (40, 220, 40), thickness, cv2.LINE_AA)
        if face.score is not None:
            cv2.putText(canvas, f"{face.score:.1f}", (x, max(y - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness, (40, 220, 40), thickness, cv2.LINE_AA)
        canvas = draw_keypoints(canvas, face.points)
    return canvas


def face_record(face: Face, names: tuple[str, ...]) -> dict:
    return {
        "box": [round(float(v), 2) for v in face.box],
        "score": None if face.score is None else round(face.score, 3),
        "keypoints": {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(names, face.points)},
    }


def csv_header(names: tuple[str, ...]) -> list[str]:
    return ["face", "score", "box_x", "box_y", "box_w", "box_h", *[f"{n}_{a}" for n in names for a in "xy"]]


def csv_cells(index: int, face: Face) -> list:
    """One face's cells under ``csv_header``."""
    score = "" if face.score is None else f"{face.score:.3f}"
    return [index, score, *(f"{v:.2f}" for v in face.box), *(f"{v:.2f}" for v in face.points.reshape(-1))]


def expand_paths(paths: list[Path]) -> list[Path]:
    """Folders become their image and video files (sorted); files are kept as given, readable or not."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        else:
            files.append(path)
    return files


def check_out_dir(files: list[Path], out_dir: Path) -> None:
    """Refuse an output folder that holds an input: an overlay or annotated video would take the input's name."""
    if out_dir.exists() and not out_dir.is_dir():
        raise KpjaxError(f"--out {out_dir}: is a file, not a folder")
    target = out_dir.resolve()
    for path in files:
        if path.parent.resolve() == target:
            raise KpjaxError(f"--out {out_dir}: holds the input {path}, which the outputs could write over; "
                             "choose another folder")


def _overlay_name(path: Path, taken: set[str], suffix: str) -> str:
    """``STEM + suffix``, numbered when two inputs from different folders share a stem."""
    name, n = f"{path.stem}{suffix}", 1
    while name in taken:
        n += 1
        name = f"{path.stem}-{n}{suffix}"
    taken.add(name)
    return name


@dataclasses.dataclass
class ImageResult:
    """What became of one input image: its faces, or why it was skipped."""

    image: str
    faces: list[Face] = dataclasses.field(default_factory=list)
    width: int = 0
    height: int = 0
    overlay: str = ""
    error: str | None = None

    def to_json(self, names: tuple[str, ...]) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "width": self.width, "height": self.height, "overlay": self.overlay,
                "faces": [face_record(face, names) for face in self.faces]}


def predict_paths(predictor: Predictor, paths: list[Path], out_dir: Path, fmt: str = "json",
                  smooth: float | None = None, redetect: int = 30, chunk: int = 32, progress: bool = True,
                  echo=print, warn=lambda line: print(line, file=sys.stderr)) -> dict:
    """Predict images, folders and videos; write overlays and ``predictions.{json,csv}`` to ``out_dir``.

    Images are read and detected ``chunk`` at a time and their faces predicted
    together. A missing or unreadable file is reported through ``warn`` and
    skipped. Returns counts and throughput for the caller's summary and exit status.
    """
    from kpjax.video import check_smooth, predict_video

    if smooth is not None:
        check_smooth(smooth)
    if fmt not in ("json", "csv"):
        raise KpjaxError(f"--format {fmt}: expected json or csv")
    files = expand_paths(paths)
    check_out_dir(files, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in files if p.suffix.lower() not in VIDEO_SUFFIXES]
    results, taken = [], set()
    summary = {"images": 0, "faces": 0, "no_face": 0, "unreadable": 0, "videos": 0}
    start = time.perf_counter()
    with tqdm(total=len(images), unit="image", disable=not progress or not images) as bar:
        for offset in range(0, len(images), chunk):
            batch = images[offset : offset + chunk]
            loaded = []
            for path in batch:
                try:
                    loaded.append((path, read_image(path)))
                except KpjaxError as error:
                    warn(f"skipped: {error}")
                    results.append(ImageResult(str(path), error=str(error)))
                    summary["unreadable"] += 1
            for (path, image), faces in zip(loaded, predictor([image for _, image in loaded])):
                overlay = out_dir / _overlay_name(path, taken, ".png")
                cv2.imwrite(str(overlay), cv2.cvtColor(draw_faces(image, faces), cv2.COLOR_RGB2BGR))
                results.append(ImageResult(str(path), faces, image.shape[1], image.shape[0], str(overlay)))
                summary["images"] += 1
                summary["faces"] += len(faces)
                if not faces:
                    summary["no_face"] += 1
                    echo(f"{path}: no face found")
            bar.update(len(batch))
    elapsed = time.perf_counter() - start
    summary["seconds"] = round(elapsed, 3)
    summary["images_per_second"] = round(summary["images"] / elapsed, 2) if summary["images"] else 0.0
    if images:
        _write_results(results, out_dir, fmt, predictor.layout.names)
    for path in videos:
        try:
            result = predict_video(predictor, path, out_dir / _overlay_name(path, taken, ""), smooth=smooth,
                                   redetect=redetect, progress=progress)
        except KpjaxError as error:
            warn(f"skipped: {error}")
            summary["unreadable"] += 1
            continue
        echo(f"{path}: {result['frames']} frames, {result['faces']} faces -> {result['video']}, {result['csv']}")
        summary["videos"] += 1
        summary["faces"] += result["faces"]
    return summary


def _write_results(results: list[ImageResult], out_dir: Path, fmt: str, names: tuple[str, ...]) -> None:
    """All images' results in one file: a JSON list, or a CSV row per face (a status row for an image without)."""
    if fmt == "json":
        (out_dir / "predictions.json").write_text(json.dumps([r.to_json(names) for r in results], indent=2))
        return
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "status", *csv_header(names)])
        for result in results:
            if result.error is not None:
                writer.writerow([result.image, f"unreadable: {result.error}"])
            elif not result.faces:
                writer.writerow([result.image, "no face"])
            for i, face in enumerate(result.faces):
                writer.writerow([result.image, "ok", *csv_cells(i, face)])
