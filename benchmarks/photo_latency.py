"""Single-photo latency, detection to keypoints, on a 640x480 photo with one face (scikit-image's astronaut).

    python benchmarks/photo_latency.py --model RUN_DIR [--runs 40]
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
from kpjax.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    model, config = load_model(args.model)
    predictor = Predictor(model, config, FaceDetector())
    photo = np.zeros((480, 640, 3), np.uint8)  # the 512x512 photo scaled to 480x480 on a 640x480 canvas
    photo[:, 80:560] = cv2.resize(data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    faces = predictor([photo])[0]  # warm-up: compiles
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        predictor([photo])
        times.append((time.perf_counter() - started) * 1e3)
    print(f"faces {len(faces)}; median {statistics.median(times):.1f} ms, p90 {np.percentile(times, 90):.1f} ms "
          f"over {args.runs} runs")


if __name__ == "__main__":
    main()
