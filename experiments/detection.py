"""Face detection on the shared photos: how many annotated faces each detector finds, how many false faces it
reports, and how long it takes, on the validation persons (``--split train`` for the training persons).

    python experiments/detection.py [--detectors haar fast 'fast + keypoints' thorough proposals] [--per-source 150] [--thresholds 0.5 0.9]

Photos are read and split by person as ``kpjax evaluate --detect`` does (``kpjax.photo_eval``), and a face is
found under its ``match_faces``, here on every point the source marks (the jaw line too, where the end-to-end
evaluation takes the 15 Kaggle keypoints). Recall is broken down by source, by the side of the square around
those points and, on AFLW, by yaw. Times are medians over the photos,
detectors alternated photo by photo so that they share the machine's load; ``--repeats`` times each call more
than once. Writes ``experiments/results/analysis/detection.json``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, run_main, write_analysis

from kpjax.checkpoint import load_model
from kpjax.detect import FAST_BEFORE, FaceDetector, make_detector
from kpjax.image import read_image
from kpjax.inference import NOT_A_FACE_NME, Predictor
from kpjax.photo_eval import AnnotatedPhoto, face_square, found_and_false, read_annotated_photos, select_persons

PHOTO_SOURCES = ("helen-68-train", "fgnet-68", "youtube-faces-68")  # whole photos, one annotated face each
AFLW = "aflw-21"  # 120x120 crops of every pose, with yaw
SIZE_BINS = (48, 96, 160)  # the annotated face's side in the photo's pixels
YAW_BINS = (30, 60, 90)  # |yaw| in degrees


def annotated_photos(data_root: Path, split: str = "val", per_source: int | None = None,
                     seed: int = 0) -> list[AnnotatedPhoto]:
    """The photos of kpjax's person split (seed 0, 20 %) with their annotated faces, read and split as
    ``kpjax evaluate --detect`` reads them, at most ``per_source`` of each source (drawn at random)."""
    photos = [photo for source in (*PHOTO_SOURCES, AFLW) if (data_root / source).is_dir()
              for photo in select_persons(read_annotated_photos(str(data_root / source)), split, seed=seed)]
    rng = np.random.default_rng(seed)
    drawn = []
    for source in (*PHOTO_SOURCES, AFLW):
        index = [i for i, photo in enumerate(photos) if photo.source == source]
        if per_source is not None and len(index) > per_source:
            index = sorted(rng.choice(index, per_source, replace=False).tolist())
        drawn += [photos[i] for i in index]
    return drawn


def aflw_yaws(data_root: Path) -> dict[Path, float]:
    """Each AFLW photo's yaw (degrees), which ``read_annotated_photos`` has no use for."""
    labels = data_root / AFLW / "labels.csv"
    if not labels.is_file():
        return {}
    with open(labels, newline="") as f:
        return {data_root / AFLW / fields[0]: float(fields[1]) for fields in itertools.islice(csv.reader(f), 1, None)}


def bin_name(value: float, edges: tuple[int, ...]) -> str:
    for low, high in zip((0, *edges), edges):
        if value < high:
            return f"{low}-{high}"
    return f">={edges[-1]}"


class PredictPipeline:
    """``kpjax predict``'s whole pipeline with the fast detector and the shipped model: the faces it reports, after
    the keypoints' own check (``kpjax.inference.NOT_A_FACE_NME``). Its times include the keypoints."""

    def __init__(self, not_a_face_nme: float | None = NOT_A_FACE_NME):
        self.predictor = Predictor(*load_model(None), make_detector("fast"), batch_size=1,
                                   not_a_face_nme=not_a_face_nme)

    def __call__(self, image):
        return self.predictor([image])[0]


def has_verifier(detector) -> bool:
    """Whether ``detector`` keeps its proposals by a verifier's score: a threshold that ``--thresholds`` sweeps."""
    return isinstance(detector, FaceDetector) and detector.scorer is not None


def detectors() -> dict:
    return {
        "haar": lambda: FaceDetector(cascades=("frontal",), min_neighbors=4, verifier=None),  # kpjax's first detector
        "fast": lambda: make_detector("fast"),
        "fast (before)": lambda: FaceDetector(**FAST_BEFORE),  # pyramid steps of 1.25, two windows a proposal
        "fast + keypoints": PredictPipeline,
        "thorough": lambda: make_detector("thorough"),
        "proposals": lambda: FaceDetector(verifier=None),  # thorough's first stage alone
    }


def evaluate(photos: list[AnnotatedPhoto], named: dict, yaws: dict[Path, float], repeats: int = 1,
             thresholds: tuple[float, ...] = ()) -> dict:
    """Each detector's recall (overall, by source, size and yaw), false faces per photo and median ms a photo.

    With ``thresholds``, each verified detector (run with the lowest) is also scored keeping only the
    detections at or above each threshold: one pass gives the whole trade-off.
    """
    columns = {name: [(name, 0.0)] for name in named}
    for name, detector in named.items():
        if thresholds and has_verifier(detector):
            columns[name] = [(f"{name} >= {t}", t) for t in thresholds]
    tallies = {label: {"found": {}, "false": {}, "photos": {}, "ms": []}
               for labels in columns.values() for label, _ in labels}
    for photo in photos:
        image = read_image(photo.image)
        side = face_square(photo.marked[0])[2]
        keys = [f"source {photo.source}", "all", "photos" if photo.source != AFLW else f"{AFLW} (crops)"]
        keys.append(f"size {bin_name(side, SIZE_BINS)} px")
        if photo.image in yaws:
            keys.append(f"{AFLW} yaw ±{bin_name(abs(yaws[photo.image]), YAW_BINS)}°")
        for name, detector in named.items():
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                detections = detector(image)
                times.append(time.perf_counter() - started)
            for label, threshold in columns[name]:
                tally = tallies[label]
                tally["ms"].append(1e3 * min(times))
                found, false = found_and_false([d.box for d in detections if d.score >= threshold], photo.marked)
                for key in keys:
                    tally["found"].setdefault(key, []).extend(found)
                    tally["false"][key] = tally["false"].get(key, 0) + false
                    tally["photos"][key] = tally["photos"].get(key, 0) + 1
    return {
        label: {
            "median_ms": round(statistics.median(t["ms"]), 2),
            "groups": {key: {"faces": len(found), "recall": round(float(np.mean(found)), 4),
                             "false_per_photo": round(t["false"][key] / t["photos"][key], 4)}
                       for key, found in sorted(t["found"].items())},
        }
        for label, t in tallies.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--per-source", type=int, default=150, help="photos drawn from each source's split")
    parser.add_argument("--detectors", nargs="+", choices=tuple(detectors()), default=list(detectors()))
    parser.add_argument("--repeats", type=int, default=1, help="calls per photo and detector; the fastest is kept")
    parser.add_argument("--thresholds", type=float, nargs="+", default=(),
                        help="also score the verified detector keeping only detections at or above each face score")
    parser.add_argument("--not-a-face-nme", type=float, nargs="+", default=(), metavar="NME",
                        help="also run kpjax predict's pipeline dropping the faces expected to miss by more than each "
                             "NME (kpjax.inference.NOT_A_FACE_NME is its default)")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    photos = annotated_photos(args.data_root, args.split, args.per_source)
    if not photos:
        sys.exit(f"error: no annotated photos under {args.data_root}")
    named = {name: detectors()[name]() for name in args.detectors}
    named |= {f"keypoints, not a face above {nme:.0%}": PredictPipeline(nme) for nme in args.not_a_face_nme}
    if args.thresholds:
        for detector in filter(has_verifier, named.values()):
            detector.threshold = min(detector.threshold, *args.thresholds)
    for detector in named.values():
        detector(read_image(photos[0].image))  # warm-up: the verifier compiles
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    results = evaluate(photos, named, aflw_yaws(args.data_root), args.repeats, tuple(args.thresholds))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    keys = list(next(iter(results.values()))["groups"])
    print(f"{len(photos)} photos; load average {' '.join(load_before)} -> {' '.join(load_after)}")
    widths = [max(24, len(name) + 2) for name in results]
    print(f"{'':34}" + "".join(f"{name:>{w}}" for name, w in zip(results, widths)))
    for key in keys:
        cells = [f"{r['groups'][key]['recall']:7.1%} {r['groups'][key]['false_per_photo']:5.3f} fp"
                 for r in results.values()]
        faces = next(iter(results.values()))["groups"][key]["faces"]
        print(f"{key + f' ({faces})':34}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    print(f"{'median ms a photo':34}" + "".join(f"{r['median_ms']:>{w}.1f}" for r, w in zip(results.values(), widths)))
    name = "detection" if args.split == "val" else "detection-train"
    name += "-thresholds" if args.thresholds else ""
    write_analysis(f"{name}-not-a-face" if args.not_a_face_nme else name, {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "photos": len(photos), "load_average": [load_before, load_after], "detectors": results,
    }, args.results)


if __name__ == "__main__":
    run_main(main)
