"""Keypoints through a video: an annotated copy and a CSV row per face per frame.

Frames are read in chunks so that their faces share jitted calls; smoothing is
then applied in frame order, each face following the nearest face of the
previous frame (a track), because an exponential average needs the same face.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kpjax.errors import KpjaxError


def check_smooth(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise KpjaxError(f"--smooth {alpha}: expected a weight in (0, 1]; 1 means no smoothing")


class Smoother:
    """Exponential smoothing of each face's keypoints: ``s = alpha * x + (1 - alpha) * s_prev``.

    A face continues the previous frame's nearest face whose box centre lies
    within half a box width; a face with no such partner starts afresh.
    """

    def __init__(self, alpha: float):
        check_smooth(alpha)
        self.alpha = alpha
        self.previous: list = []  # the previous frame's (smoothed) faces

    def __call__(self, faces: list) -> list:
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
                face.points = self.alpha * face.points + (1 - self.alpha) * self.previous[best].points
        self.previous = faces
        return faces


def _frames(capture: cv2.VideoCapture, count: int) -> list[np.ndarray]:
    """Up to ``count`` next frames, RGB."""
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames


def predict_video(predictor, path: Path, out_stem: Path, smooth: float | None = None, chunk: int = 16,
                  progress: bool = True) -> dict:
    """Write ``out_stem.mp4`` (boxes and points drawn) and ``out_stem.csv`` (frame, time, face, score, box, points)."""
    from kpjax.predict import csv_cells, csv_header, draw_faces

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
            while frames := _frames(capture, chunk):
                if writer is None:
                    height, width = frames[0].shape[:2]
                    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                for frame, faces in zip(frames, predictor(frames)):
                    if smoother is not None:
                        faces = smoother(faces)
                    for i, face in enumerate(faces):
                        table.writerow([frames_seen, f"{frames_seen / fps:.3f}", *csv_cells(i, face)])
                    writer.write(cv2.cvtColor(draw_faces(frame, faces), cv2.COLOR_RGB2BGR))
                    frames_seen += 1
                    faces_seen += len(faces)
                bar.update(len(frames))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames_seen == 0:
        csv_path.unlink(missing_ok=True)
        raise KpjaxError(f"{path}: unreadable video (no frames)")
    return {"video": str(video_path), "csv": str(csv_path), "frames": frames_seen, "faces": faces_seen}
