"""Faces followed through video against a search of every frame: frames/s and keypoint jitter on a still face.

    python benchmarks/video_tracking.py [--model RUN_DIR] [--frames 60] [--noise 4] [--redetect 30] [--rounds 3]

The video is scikit-image's astronaut, still, on a 640x480 canvas, each frame with fresh Gaussian pixel noise
(``--noise``, grey levels) as a camera gives. Jitter is the median over frames of the keypoints' mean
movement from the previous frame, in pixels (the face does not move, so all of it is noise). The two ways
alternate for ``--rounds`` rounds; figures are medians over rounds, with the load average.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from kpjax.checkpoint import load_model
from kpjax.detect import FaceDetector
from kpjax.inference import Predictor
from kpjax.video import FaceTracker


def still_video(count: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    photo = np.zeros((480, 640, 3), np.float32)
    photo[:, 80:560] = cv2.resize(data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    return [np.clip(photo + rng.normal(0, noise, photo.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def searcher(predictor: Predictor):
    return lambda frame: predictor([frame])[0]


def follower(predictor: Predictor, redetect: int):
    tracker = FaceTracker(predictor, redetect)
    return lambda frame: [face for _, face in tracker(frame)]


def run(follow, frames: list[np.ndarray]) -> dict:
    """frames/s and the median frame-to-frame keypoint movement (px) of the first face."""
    points = []
    started = time.perf_counter()
    for frame in frames:
        faces = follow(frame)
        points.append(faces[0].points if faces else None)
    seconds = time.perf_counter() - started
    moves = [float(np.linalg.norm(b - a, axis=1).mean()) for a, b in zip(points, points[1:])
             if a is not None and b is not None]
    return {"fps": len(frames) / seconds, "jitter_px": statistics.median(moves) if moves else float("nan"),
            "frames_with_face": sum(p is not None for p in points)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--noise", type=float, default=4.0)
    parser.add_argument("--redetect", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model, config = load_model(args.model)
    predictor = Predictor(model, config, FaceDetector())
    frames = still_video(args.frames, args.noise)
    ways = {"search every frame": lambda: searcher(predictor),
            f"follow, search every {args.redetect}": lambda: follower(predictor, args.redetect)}
    for make in ways.values():
        run(make(), frames[:3])  # warm-up: compiles
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    results = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, make in ways.items():
            results[name].append(run(make(), frames))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.frames} frames, noise {args.noise}; load average {' '.join(load_before)} -> {' '.join(load_after)}; "
          f"medians of {args.rounds} rounds")
    for name, rounds in results.items():
        print(f"{name:28} {statistics.median(r['fps'] for r in rounds):6.1f} frames/s  "
              f"jitter {statistics.median(r['jitter_px'] for r in rounds):.3f} px  "
              f"face in {min(r['frames_with_face'] for r in rounds)}/{args.frames} frames")


if __name__ == "__main__":
    main()
