"""Keypoints through a video: an annotated copy and a CSV row per face per frame.

By default each face is followed from frame to frame (``FaceTracker``): the
detector runs on the first frame, every ``redetect`` frames and whenever a
followed face is lost, and in between each face is cropped where its previous
keypoints put it, as MediaPipe's face mesh does. With ``redetect=1`` every
frame is detected, frames read in chunks so that their faces share jitted
calls. Smoothing is applied in frame order, each face following the nearest
face of the previous frame, because an exponential average needs the same face.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from kpjax.detect import Detection, keypoint_box, overlap
from kpjax.errors import KpjaxError
from kpjax.inference import Predictor
from kpjax.records import Face, csv_cells, csv_header, draw_faces


def check_smooth(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise KpjaxError(f"--smooth {alpha}: expected a weight in (0, 1]; 1 means no smoothing")


class Smoother:
    """Exponential smoothing of each face's keypoints: ``s = alpha * x + (1 - alpha) * s_prev``.

    A face continues the previous frame's nearest face whose box centre lies
    within half a box width; a face with no such partner starts afresh. With
    expected errors (an error head), each point's ``alpha`` is scaled by how sure
    it is against the face's median point (between alpha / 4 and 1): a doubtful
    point leans on its past, a sure one follows the frame.
    """

    def __init__(self, alpha: float):
        check_smooth(alpha)
        self.alpha = alpha
        self.previous: list[Face] = []  # the previous frame's (smoothed) faces

    def __call__(self, faces: list[Face]) -> list[Face]:
        taken: set[int] = set()
        for face in faces:
            centre = np.array(face.box[:2]) + np.array(face.box[2:]) / 2
            best, best_distance = None, face.box[2] / 2
            for i, old in enumerate(self.previous):
                distance = np.linalg.norm(np.array(old.box[:2]) + np.array(old.box[2:]) / 2 - centre)
                if i not in taken and distance < best_distance:
                    best, best_distance = i, distance
            if best is not None:
                taken.add(best)
                alpha = self.point_weights(face)
                face.points = alpha * face.points + (1 - alpha) * self.previous[best].points
        self.previous = faces
        return faces

    def point_weights(self, face: Face) -> float | np.ndarray:
        """``alpha``, or with expected errors one weight per point (K, 1)."""
        if face.errors is None or self.alpha == 1.0:
            return self.alpha
        relative = np.median(face.errors) / np.maximum(face.errors, 1e-6)
        return np.clip(self.alpha * relative, self.alpha / 4, 1.0)[:, None]


class FaceTracker:
    """Faces of consecutive frames, each with an id that it keeps while it is followed.

    A followed face is cropped where its previous keypoints put it
    (``keypoint_box``) and kept while the detector's verifier scores that crop
    ``keep`` or more: less than the detector asks of a new face (0.9), as
    MediaPipe's tracking confidence is below its detection confidence, since a
    face already found needs less proof. When one is lost, or every ``redetect`` frames (new faces
    may have come in), the whole frame is searched again and each face found
    takes the id of the followed face its box overlaps most.
    """

    def __init__(self, predictor: Predictor, redetect: int = 30, keep: float = 0.5):
        if redetect < 1:
            raise KpjaxError(f"--redetect {redetect}: expected a frame count of at least 1")
        if predictor.detector is None or predictor.detector.scorer is None:
            raise KpjaxError("following faces needs the detector and its verifier; use --redetect 1")
        self.predictor = predictor
        self.redetect = redetect
        self.keep = keep
        self.faces: list[tuple[int, Face]] = []  # (id, Face) of the previous frame
        self.since_detection = 0
        self.next_id = 0
        self.detections = 0  # frames searched by the detector, for reports

    def __call__(self, frame: np.ndarray) -> list[tuple[int, Face]]:
        if self.faces and self.since_detection < self.redetect:
            boxes = [keypoint_box(face.points, self.predictor.config.size) for _, face in self.faces]
            scores = self.predictor.detector.score(frame, boxes)
            if (scores >= self.keep).all():
                found = [Detection(tuple(float(v) for v in box), float(score)) for box, score in zip(boxes, scores)]
                faces = self.predictor([frame], [found])[0]
                self.faces = [(face_id, face) for (face_id, _), face in zip(self.faces, faces)]
                self.since_detection += 1
                return self.faces
        faces = self.predictor([frame])[0]
        self.detections += 1
        self.since_detection = 1
        self.faces = self._identify(faces)
        return self.faces

    def _identify(self, faces: list[Face]) -> list[tuple[int, Face]]:
        """Each newly detected face with the id of the followed face it overlaps most (half its area or more)."""
        previous = np.array([face.box for _, face in self.faces], np.float64).reshape(-1, 4)
        taken: set[int] = set()
        identified = []
        for face in faces:
            shares = overlap(face.box, previous) if len(previous) else np.zeros(0)
            shares[list(taken)] = 0.0
            if len(shares) and shares.max() >= 0.5:
                best = int(shares.argmax())
                taken.add(best)
                identified.append((self.faces[best][0], face))
            else:
                identified.append((self.next_id, face))
                self.next_id += 1
        return identified


def _frames(capture: cv2.VideoCapture, count: int) -> list[np.ndarray]:
    """Up to ``count`` next frames, RGB."""
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames


def faces_by_frame(predictor: Predictor, capture: cv2.VideoCapture, redetect: int = 30,
                   chunk: int = 16) -> Iterator[tuple[np.ndarray, list[tuple[int, Face]]]]:
    """(frame, [(face id, Face)]) for each frame in order: faces followed by a ``FaceTracker``, or, with
    ``redetect=1`` or no detector, every frame searched (face ids are then their rank in the frame)."""
    tracker = FaceTracker(predictor, redetect) if redetect > 1 and predictor.detector is not None else None
    while frames := _frames(capture, chunk):
        if tracker is None:
            for frame, faces in zip(frames, predictor(frames)):
                yield frame, list(enumerate(faces))
        else:
            for frame in frames:
                yield frame, tracker(frame)


def predict_video(predictor: Predictor, path: Path, out_stem: Path, smooth: float | None = None,
                  redetect: int = 30, chunk: int = 16, progress: bool = True) -> dict:
    """Write ``out_stem.mp4`` (boxes and points drawn) and ``out_stem.csv`` (frame, time, face id, score, box,
    points)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise KpjaxError(f"{path}: unreadable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    smoother = Smoother(smooth) if smooth is not None else None
    video_path, csv_path = out_stem.with_suffix(".mp4"), out_stem.with_suffix(".csv")
    writer = None
    frames_seen = faces_seen = 0
    try:
        with open(csv_path, "w", newline="") as f, tqdm(total=total, unit="frame", disable=not progress) as bar:
            table = csv.writer(f)
            table.writerow(["frame", "time_s", *csv_header(predictor.layout.names)])
            for frame, identified in faces_by_frame(predictor, capture, redetect, chunk):
                if writer is None:
                    height, width = frame.shape[:2]
                    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                faces = [face for _, face in identified]
                if smoother is not None:
                    faces = smoother(faces)
                for (face_id, _), face in zip(identified, faces):
                    table.writerow([frames_seen, f"{frames_seen / fps:.3f}", *csv_cells(face_id, face)])
                writer.write(cv2.cvtColor(draw_faces(frame, faces), cv2.COLOR_RGB2BGR))
                frames_seen += 1
                faces_seen += len(faces)
                bar.update(1)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames_seen == 0:
        csv_path.unlink(missing_ok=True)
        raise KpjaxError(f"{path}: unreadable video (no frames)")
    return {"video": str(video_path), "csv": str(csv_path), "frames": frames_seen, "faces": faces_seen}
