"""More network time per face, end to end: does it buy accuracy? Measured, not shipped.

    python experiments/crop_variants.py [--persons train|val] [--averaged shift zoom flip]
                                        [--refine-with RUN ...] [--results DIR]

Each photo of the Helen and FG-NET persons goes through `kpjax predict`'s pipeline as the headline runs it
(fast detector, up to 3 passes, refinement stopping at 2 px, the last two passes averaged; shipped model), with
one change per row:
- averaged: each pass's keypoints are the mean over several placements of its crop (the crop itself and the crop
  shifted diagonally by 2 frame px, or zoomed by 5 %, or mirrored), mapped back to the photo. The passes' average
  already gains because two crops' errors partly cancel (kpjax.inference.Predictor); this asks how far that goes,
  at one network call per placement.
- refined with RUN: the detector's crop is predicted by the shipped model, every re-crop by RUN's network (a
  cascade: a second network for crops the keypoints placed, e.g. one fine-tuned with the small jitter those
  crops carry). A run at another frame size gets the same crops rescaled.
It also measures how far the re-crops land from the crops fitted to the annotated points (``recrop_placement``).
Writes results/analysis/crop-variants-PERSONS.json: the training persons' photos, where a setting would be chosen,
and the validation persons', the headline's.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import numpy as np  # noqa: E402
from common import ROOT, run_main, write_analysis  # noqa: E402
from photos_end_to_end import PHOTO_SOURCES, metrics_line  # noqa: E402

from kpjax import photo_eval  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import make_detector  # noqa: E402
from kpjax.image import compose_affine, mirror_matrix  # noqa: E402
from kpjax.inference import Predictor, similarity_crop  # noqa: E402

# Each placement: (mirrored, zoom, shift x, shift y in frame px), applied about the frame's centre after the crop.
PLACEMENTS = {
    "shift": [(False, 1.0, 0.0, 0.0), (False, 1.0, 2.0, 2.0), (False, 1.0, -2.0, -2.0), (False, 1.0, 2.0, -2.0),
              (False, 1.0, -2.0, 2.0)],
    "zoom": [(False, 1.0, 0.0, 0.0), (False, 1.05, 0.0, 0.0), (False, 0.95, 0.0, 0.0)],
    "flip": [(False, 1.0, 0.0, 0.0), (True, 1.0, 0.0, 0.0)],
}


def placement_matrix(size: int, mirrored: bool, zoom: float, dx: float, dy: float) -> np.ndarray:
    """The frame -> frame affine of one placement: zoom about the centre, shift, then mirror."""
    centre = (size - 1) / 2
    moved = np.array([[zoom, 0.0, centre * (1 - zoom) + dx], [0.0, zoom, centre * (1 - zoom) + dy]])
    return compose_affine(mirror_matrix(size), moved) if mirrored else moved


class AveragedCrops(Predictor):
    """Each pass's keypoints and expected errors averaged over ``placements`` of its crop."""

    def __init__(self, model, config, detector, placements: list[tuple], **kwargs):
        super().__init__(model, config, detector, **kwargs)
        self.placements = placements

    def placed_keypoints(self, crops, mirror=False):
        swap = list(self.layout.flip_permutation)
        estimates = []
        for mirrored, *move in self.placements:
            moved = placement_matrix(self.config.size, mirrored, *move)
            placed = super().placed_keypoints([(image, compose_affine(moved, m)) for image, m in crops],
                                              mirror=mirrored != mirror)
            estimates.append([(p[swap], e[swap]) if mirrored else (p, e) for p, e in placed])
        return [(np.mean([p for p, _ in face], axis=0), np.mean([e for _, e in face], axis=0))
                for face in zip(*estimates)]


class RefinedBy(Predictor):
    """The detector's crop predicted by this model, every later crop (and any mirrored one) by ``refiner``."""

    def __init__(self, model, config, detector, refiner, refiner_config, **kwargs):
        super().__init__(model, config, detector, **kwargs)
        self.refiner = Predictor(refiner, refiner_config, None)
        self.first_pass = True

    def placed_keypoints(self, crops, mirror=False):
        if self.first_pass and not mirror:
            self.first_pass = False
            return super().placed_keypoints(crops)
        factor = self.refiner.config.size / self.config.size
        return self.refiner.placed_keypoints([(image, m * factor) for image, m in crops], mirror)

    def __call__(self, images, detections=None):
        self.first_pass = True
        return super().__call__(images, detections)


def recrop_placement(photos: list, records: list[dict], size: int) -> dict:
    """How far the crop that a face's predicted points place (``similarity_crop``) lands from the one its
    annotated points place: the jitter a network for re-crops meets. Shift of the frame's centre (frame px),
    |log| of the zoom and |rotation| (degrees): median, 90th and 99th percentiles."""
    shift, zoom, rotation = [], [], []
    for match in photo_eval.match_records(photos, records):
        for _, _, predicted, truth, nme in match.found():
            if not np.isfinite(nme):
                continue
            placed, fitted = (np.vstack([similarity_crop(points, "kaggle", size), [0.0, 0.0, 1.0]])
                              for points in (predicted, truth))
            moved = placed @ np.linalg.inv(fitted)  # label-fitted frame -> predicted frame
            centre = np.array([(size - 1) / 2, (size - 1) / 2, 1.0])
            shift.append(np.linalg.norm(moved @ centre - centre))
            zoom.append(abs(np.log(np.sqrt(abs(np.linalg.det(moved[:2, :2]))))))
            rotation.append(abs(np.degrees(np.arctan2(moved[1, 0], moved[0, 0]))))
    return {name: [round(float(v), 4) for v in np.percentile(values, [50, 90, 99])]
            for name, values in (("shift_px", shift), ("log_zoom", zoom), ("rotation_deg", rotation))}


def row(name: str, predictor: Predictor, photos: list, worst: Path) -> dict:
    """The variant's end-to-end figures, its records, and its worst faces drawn under ``worst``."""
    records = photo_eval.run_pipeline(predictor, photos)
    metrics = photo_eval.score(photos, records)
    photo_eval.draw_worst(photos, records, worst / re.sub(r"\W+", "-", name).strip("-"))
    print(f"{name}: {metrics_line(metrics)}", flush=True)
    summary = {key: metrics[key] for key in ("detection_rate", "nme_mean", "nme_median", "failure_rate",
                                             "ms_per_photo_median")}
    by_source = {source: m["nme_mean"] for source, m in metrics["by_source"].items()}
    return {"variant": name, **summary, "nme_by_source": by_source, "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", choices=("train", "val"), default="val")
    parser.add_argument("--averaged", nargs="*", choices=tuple(PLACEMENTS), default=list(PLACEMENTS),
                        help="placement sets, each a row")
    parser.add_argument("--refine-with", type=Path, nargs="*", default=[], metavar="RUN",
                        help="runs whose networks predict the re-crops, each a row")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--worst", type=Path, default=ROOT / "runs" / "crop-variants-worst",
                        help="where each variant's worst faces are drawn (real faces: not committed)")
    args = parser.parse_args()
    refiners = {run: load_model(run) for run in args.refine_with}  # a missing run fails before any work
    model, config = load_model(None)
    photos = [photo for source in PHOTO_SOURCES.values() for photo in photo_eval.select_persons(
        photo_eval.read_annotated_photos(str(args.data_root / source)), args.persons)]
    worst = args.worst / args.persons
    rows = [row("as shipped", Predictor(model, config, make_detector("fast")), photos, worst)]
    placement = recrop_placement(photos, rows[0]["records"], config.size)
    print(f"re-crops against label-fitted crops (median, 90th, 99th percentile): {placement}", flush=True)
    for name in args.averaged:
        rows.append(row(f"averaged over {len(PLACEMENTS[name])} placements ({name})",
                        AveragedCrops(model, config, make_detector("fast"), PLACEMENTS[name]), photos, worst))
    for run, (refiner, refiner_config) in refiners.items():
        refined = RefinedBy(model, config, make_detector("fast"), refiner, refiner_config)
        rows.append(row(f"re-crops by {run.name}", refined, photos, worst))
    write_analysis(f"crop-variants-{args.persons}", {
        "command": "python " + shlex.join(["experiments/crop_variants.py", *sys.argv[1:]]),
        "persons": args.persons, "photos": len(photos), "recrop_placement": placement,
        "rows": [{key: value for key, value in r.items() if key != "records"} for r in rows],
    }, args.results)


if __name__ == "__main__":
    run_main(main)
