"""Photos per second for ``kpjax predict FOLDER``, overlays and predictions.json written, as a user runs it.

    python benchmarks/folder_throughput.py [--photos 200] [--runs 3] [--model RUN_DIR]

The folder holds ``--photos`` 640x480 JPEGs with one face each: scikit-image's astronaut, placed at a random
position and size (its face 65-105 px wide) and mirrored at random, so no two photos are alike. Each run
predicts the whole folder into a fresh output folder through ``kpjax.predict.predict_paths`` after a warm-up
run; prints photos/s per run, their median, the faces found (a reported box centred on the face) and the false
ones, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
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


ASTRONAUT_FACE = (170, 55, 110, 115)  # x, y, w, h of her face in skimage.data.astronaut() (as in the tests)


def write_photos(folder: Path, count: int, seed: int = 0) -> dict[str, tuple[float, float, float, float]]:
    """The photos, and where each one's face is (x, y, w, h)."""
    rng = np.random.default_rng(seed)
    faces = {}
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for i in range(count):
        side = int(rng.integers(300, 480))  # the 512-px photo's face is about 110 px wide
        face = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
        mirrored = rng.random() < 0.5
        if mirrored:
            face = face[:, ::-1]
        photo = np.full((480, 640, 3), rng.integers(0, 256, 3), np.uint8)
        x, y = int(rng.integers(0, 640 - side + 1)), int(rng.integers(0, 480 - side + 1))
        photo[y:y + side, x:x + side] = face
        cv2.imwrite(str(folder / f"photo{i:04d}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
        fx, fy, fw, fh = (side / 512 * v for v in ASTRONAUT_FACE)
        faces[f"photo{i:04d}.jpg"] = (x + (side - fx - fw if mirrored else fx), y + fy, fw, fh)
    return faces


def found_and_false(records: list[dict], faces: dict) -> tuple[int, int]:
    """Photos whose face a reported box is centred on, and reported boxes centred on no face."""
    found = false = 0
    for record in records:
        fx, fy, fw, fh = faces[Path(record["image"]).name]
        hits = [fx < x + w / 2 < fx + fw and fy < y + h / 2 < fy + fh for x, y, w, h in
                (face["box"] for face in record["faces"])]
        found += any(hits)
        false += hits.count(False)
    return found, false


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
        faces = write_photos(photos, args.photos)
        predict_paths(predictor, [photos], out / "warm-up", progress=False, echo=lambda line: None)
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        rates = []
        for run in range(args.runs):
            started = time.perf_counter()
            summary = predict_paths(predictor, [photos], out / f"run{run}", progress=False, echo=lambda line: None)
            rates.append(summary["images"] / (time.perf_counter() - started))
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        found, false = found_and_false(json.loads((out / "run0" / "predictions.json").read_text()), faces)
    print(f"load average {' '.join(load_before)} -> {' '.join(load_after)}; {args.photos} photos of 640x480, "
          f"{args.detector} detector")
    print("photos/s per run: " + ", ".join(f"{r:.1f}" for r in rates) + f"; median {statistics.median(rates):.1f}")
    print(f"faces found: {found} of {args.photos}; false faces: {false}")


if __name__ == "__main__":
    main()
