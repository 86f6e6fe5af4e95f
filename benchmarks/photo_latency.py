"""Single-photo latency, stage by stage, on a 640x480 JPEG with one face (scikit-image's astronaut), for the
detectors (``--detector fast`` and ``thorough``), the fast preset as it was before its cascade went to pyramid
steps of 1.5 and the frontal Haar cascade kpjax had before the verifier, alternated run by run under the same load.
``--data`` times real photos instead: the validation persons' photos of annotated sources, each once per pipeline.

    python benchmarks/photo_latency.py [--model RUN_DIR] [--compare RUN_DIR ...] [--passes N ...]
        [--converged-px PX ...] [--runs 40 | --data SOURCE ...]

Stages: decode (the JPEG; beside it, not counted in the photo, the same file decoded by Pillow as kpjax did
before it gave JPEGs to OpenCV), detect (search copy, cascade proposals, verifier), keypoints (crop, network,
map back to the photo) and overlay (drawing and JPEG encoding, as ``kpjax predict`` writes a JPEG photo's
overlay). Prints the median of each stage and of the whole photo (decode to keypoints; the overlay apart),
and the load average before and after. ``--compare`` adds other models (e.g. the previous default) with the fast
detector to the alternation, so their ratio to the model's comes from the same runs; ``--passes`` adds the
model with other pass limits (the default is 3), ``--converged-px`` with other refinement thresholds, the same way.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps
from skimage import data

from kpjax.checkpoint import load_model
from kpjax.detect import DETECTORS, FAST_BEFORE, FaceDetector, make_detector
from kpjax.errors import KpjaxError
from kpjax.image import read_image
from kpjax.inference import Predictor
from kpjax.photo_eval import read_annotated_photos, select_persons
from kpjax.records import draw_faces
from kpjax.verify import patches


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, 1e3 * (time.perf_counter() - started)


def pillow_decode(path: Path) -> np.ndarray:
    """A JPEG decoded as kpjax decoded every photo before OpenCV took JPEGs: Pillow, EXIF turn, RGB."""
    with Image.open(path) as image:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return np.asarray(image.convert("RGB"))


def stages(predictor: Predictor, path: Path) -> dict:
    """One photo through the path, each stage timed (ms)."""
    detector = predictor.detector
    image, decode = timed(read_image, path)
    by_pillow = timed(pillow_decode, path)[1]
    (grey, _), search = timed(detector.search_image, image)
    (boxes, _), proposals = timed(detector.proposals, grey)
    verify = timed(detector.scorer, patches(grey, boxes))[1] if detector.scorer is not None else 0.0
    detections, detect = timed(detector, image)
    faces, keypoints = timed(lambda: predictor([image], [detections])[0])
    _, overlay = timed(lambda: cv2.imencode(".jpg", cv2.cvtColor(draw_faces(image, faces), cv2.COLOR_RGB2BGR)))
    return {"faces": len(faces), "decode": decode, "  by Pillow": by_pillow, "detect": detect, "  search copy": search,
            "  proposals": proposals, "  verifier": verify, "keypoints": keypoints, "overlay": overlay,
            "photo": decode + detect + keypoints}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--compare", type=Path, action="append", default=[], help="another model, fast detector")
    parser.add_argument("--passes", type=int, nargs="*", default=[],
                        help="other pass limits to alternate with the default's, fast detector")
    parser.add_argument("--converged-px", type=float, nargs="*", default=[],
                        help="other refinement thresholds (frame px) to alternate with the default's, fast detector")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--data", type=Path, nargs="+", default=[],
                        help="annotated photo sources (e.g. ../shared/data/helen-68-train): their validation persons' "
                             "photos, each timed once per pipeline, instead of the astronaut --runs times")
    args = parser.parse_args()
    try:
        model, config = load_model(args.model)
        others = {f"fast, {other.name}": load_model(other) for other in args.compare}
    except KpjaxError as error:
        parser.error(str(error))
    predictors = {name: Predictor(model, config, make_detector(name)) for name in DETECTORS}
    predictors["fast (before)"] = Predictor(model, config, FaceDetector(**FAST_BEFORE))
    predictors["haar (before)"] = Predictor(model, config, FaceDetector(cascades=("frontal",), min_neighbors=4,
                                                                        verifier=None))
    predictors |= {name: Predictor(*loaded, make_detector("fast")) for name, loaded in others.items()}
    predictors |= {f"fast, {n} passes": Predictor(model, config, make_detector("fast"), passes=n) for n in args.passes}
    predictors |= {f"fast, {px:g} px": Predictor(model, config, make_detector("fast"), converged_px=px)
                   for px in args.converged_px}
    photo = np.zeros((480, 640, 3), np.uint8)  # the 512x512 photo scaled to 480x480 on a 640x480 canvas
    photo[:, 80:560] = cv2.resize(data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / "astronaut.jpg"] * args.runs
        cv2.imwrite(str(paths[0]), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if args.data:
            try:
                paths = [p.image for source in args.data
                         for p in select_persons(read_annotated_photos(str(source)), "val")]
            except KpjaxError as error:
                parser.error(str(error))
        for predictor in predictors.values():
            stages(predictor, paths[0])  # warm-up: compiles
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        runs = {name: [] for name in predictors}
        for path in paths:
            for name, predictor in predictors.items():
                runs[name].append(stages(predictor, path))
        load_after = Path("/proc/loadavg").read_text().split()[:3]
    what = f"{len(paths)} validation photos" if args.data else f"{args.runs} runs"
    print(f"load average {' '.join(load_before)} -> {' '.join(load_after)}; medians of {what}, alternated, ms")
    width = max(16, *(len(name) + 2 for name in runs))
    print(f"{'stage':16}" + "".join(f"{name:>{width}}" for name in runs))
    for stage in runs["fast"][0]:
        print(f"{stage:16}" + "".join(f"{statistics.median(r[stage] for r in rs):{width}.1f}" for rs in runs.values()))
    for name in runs:
        if name != "fast":
            ratio = statistics.median(a["photo"] / b["photo"] for a, b in zip(runs["fast"], runs[name]))
            print(f"fast / {name}, whole photo: {ratio:.2f} (median of the runs' ratios)")

if __name__ == "__main__":
    main()
