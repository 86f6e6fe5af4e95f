"""Photos per second for ``kpjax predict FOLDER``, overlays and predictions.json written, as a user runs it.

    python benchmarks/folder_throughput.py [--photos 200] [--runs 3] [--model RUN_DIR]

The folder holds ``--photos`` 640x480 JPEGs with one face each: scikit-image's astronaut, placed at a random
position and size (its face 65-105 px wide) and mirrored at random, so no two photos are alike. Each run
predicts the whole folder into a fresh output folder through ``kpjax.predict.predict_paths`` after a warm-up
run; prints photos/s per run, their median, the faces found, and the load average before and after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from kpjax.checkpoint import load_model
from kpjax.detect import make_detector
from kpjax.inference import Predictor
from kpjax.predict import predict_paths


def write_photos(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for i in range(count):
        side = int(rng.integers(300, 480))  # the 512-px photo's face is about 110 px wide
        face = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            face = face[:, ::-1]
        photo = np.full((480, 640, 3), rng.integers(0, 256, 3), np.uint8)
        x, y = int(rng.integers(0, 640 - side + 1)), int(rng.integers(0, 480 - side + 1))
        photo[y:y + side, x:x + side] = face
        cv2.imwrite(str(folder / f"photo{i:04d}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--detector", default="fast")
    args = parser.parse_args()
    model, config = load_model(args.model)
    predictor = Predictor(model, config, make_detector(args.detector))
    with tempfile.TemporaryDirectory() as folder:
        photos, out = Path(folder) / "photos", Path(folder) / "out"
        photos.mkdir()
        write_photos(photos, args.photos)
        predict_paths(predictor, [photos], out / "warm-up", progress=False, echo=lambda line: None)
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        rates, faces = [], []
        for run in range(args.runs):
            started = time.perf_counter()
            summary = predict_paths(predictor, [photos], out / f"run{run}", progress=False, echo=lambda line: None)
            rates.append(summary["images"] / (time.perf_counter() - started))
            faces.append(summary["faces"])
        load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average {' '.join(load_before)} -> {' '.join(load_after)}; {args.photos} photos of 640x480, "
          f"{args.detector} detector")
    print("photos/s per run: " + ", ".join(f"{r:.1f}" for r in rates) + f"; median {statistics.median(rates):.1f}")
    print(f"faces found per run: {faces}")


if __name__ == "__main__":
    main()
