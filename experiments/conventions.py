"""Where the end-to-end error is systematic: each point's mean offset from each source's labels.

    python experiments/conventions.py [--model RUN] [--peer NAME=PATTERN ...]

The photos of helen-68-train and fgnet-68 go through `kpjax predict`'s pipeline (fast detector, 3 passes), as in
experiments/photos_end_to_end.py, for the training persons and the validation persons apart. Each found face's
residuals (predicted minus annotated) are turned into the face's own frame (x along the annotated outer-eye
line, y across it) and divided by the outer-eye distance; per source and point, their mean is the offset the
model keeps from that source's way of marking the point. An offset the model keeps on the persons it trained on
as on the others is a convention it cannot follow (sources that mark a point differently pull it apart), not
a face it has not seen. Last, each validation face is scored again with the training persons' offsets
removed: the end-to-end NME if each photo's source, and so its convention, were known (no model of the
photo knows it: this bounds what conventions cost, it is not a reachable figure). And from the labels
alone: where each source the model trained on puts the nose tip and the mouth corners, relative to the eyes.

And where each source puts its pixel origin. kpjax reads every label as a pixel index (0 the first pixel's
centre) and flips faces in training as such (x -> W-1-x); a source whose labels sit δ px further on (1-based,
as the .pts files of 300-W are: menpo/menpo#160) has its flipped copies off by -δ in x and its own by +δ, so
the model learns δ in y and none in x. The flip-averaged model (flip TTA) is mirror-equivariant under
x -> W-1-x, so its x residual on a source's label-fitted crops is that source's origin, read in photo pixels:
on the training persons of every source, and with --peer (as experiments/photos_end_to_end.py takes it), on
MediaPipe's and dlib's points (predictions.json from benchmarks/photo_peers.py), which no kpjax label trained.
Writes results/analysis/conventions.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import numpy as np  # noqa: E402

from common import ROOT, run_main, write_analysis  # noqa: E402
from photos_end_to_end import PHOTO_SOURCES, read_peers  # noqa: E402

from kpjax import photo_eval  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import make_detector  # noqa: E402
from kpjax.forward import xla_forward  # noqa: E402
from kpjax.image import apply_affine, invert_affine, read_image, warp  # noqa: E402
from kpjax.inference import Predictor, predict_normalised, similarity_crop  # noqa: E402
from kpjax.keypoints import IBUG68, KAGGLE, OUTER_CORNERS, denormalise  # noqa: E402
from kpjax.sources.convert import fit_crop  # noqa: E402

LABEL_POINTS = ("nose_tip", "mouth_left_corner", "mouth_right_corner")
ORIGIN_FACES = 1000  # per source, the training persons' faces drawn for the pixel origin
ONE_BASED = ("helen-68-train",)  # 300-W's .pts: 1-based (menpo, the 300-W organisers' reader, subtracts 1)


def face_frame_residuals(photos: list, records: list[dict]) -> np.ndarray:
    """(faces, K, 2) residuals of the found faces, in the face's eye-line frame, over the outer-eye distance."""
    residuals = []
    for match in photo_eval.match_records(photos, records):
        for _, _, predicted, truth, _ in match.found():
            a, b = OUTER_CORNERS[KAGGLE.name if len(truth) == KAGGLE.num_keypoints else IBUG68.name]
            eye_line = truth[a] - truth[b]
            distance = np.linalg.norm(eye_line)
            if not distance > 0:
                continue
            along = eye_line / distance
            across = np.array([-along[1], along[0]])
            residuals.append((predicted - truth) @ np.stack([along, across], axis=1) / distance)
    return np.array(residuals)


def label_geometry(points: np.ndarray, names: tuple[str, ...] = LABEL_POINTS) -> dict[str, list[float]]:
    """The median position of ``names`` in one source's labels ((N, 15, 2) Kaggle points), relative to the eye
    centres' midpoint in the frame of the line through them, in % of their distance: how the source marks these
    points (poses and expressions differ between sources too, so this shows conventions only where they are
    large)."""
    index = {name: k for k, name in enumerate(KAGGLE.names)}
    left, right = points[:, index["left_eye_center"]], points[:, index["right_eye_center"]]
    distance = np.linalg.norm(left - right, axis=1)
    along = (left - right) / distance[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    result = {}
    for name in names:
        offset = points[:, index[name]] - (left + right) / 2
        x, y = ((offset * axis).sum(axis=1) / distance for axis in (along, across))
        if np.isfinite(x).any():
            result[name] = [round(float(100 * np.nanmedian(v)), 1) for v in (x, y)]
    return result


def pixel_origin(model, config, photos: list, faces: int = ORIGIN_FACES, seed: int = 0) -> dict:
    """Mean residual (photo px, x and y) of the flip-averaged model against ``photos``' labels: each face cropped
    as training crops it (``fit_crop``), re-cropped once from the prediction as the pipeline does, predicted again."""
    order = np.random.default_rng(seed).permutation(len(photos))
    images, matrices, labels = [], [], []
    for i in order:
        if len(labels) >= faces:
            break
        image = read_image(photos[i].image)
        for face in photos[i].faces:
            points = face[KAGGLE.name]
            if (~np.isnan(points).any(axis=1)).sum() >= 3:
                images.append(image)
                matrices.append(fit_crop(points, config.size))
                labels.append(points)
    forward, size = xla_forward(model), config.size
    for _ in range(2):
        frames = np.stack([warp(image, m, size, config.color) for image, m in zip(images, matrices)])
        normalised = predict_normalised(forward, frames, flip_permutation=config.layout.flip_permutation)
        points = denormalise(normalised, size).reshape(len(frames), -1, 2)
        predicted = [apply_affine(invert_affine(m), p) for m, p in zip(matrices, points)]
        matrices = [similarity_crop(p, KAGGLE.name, size) for p in predicted]
    residuals = np.array(predicted) - np.array(labels)
    return {"faces": len(labels), "x_px": round(float(np.nanmean(residuals[..., 0])), 2),
            "y_px": round(float(np.nanmean(residuals[..., 1])), 2)}


def peer_residuals(photos: list, records: list[dict]) -> dict:
    """Mean residual (photo px, x and y) of a pipeline's points on the annotated faces it found."""
    residuals = [predicted - truth for match in photo_eval.match_records(photos, records) if not match.missing
                 for _, _, predicted, truth, _ in match.found()]
    residuals = np.array(residuals)
    return {"faces": len(residuals), "x_px": round(float(np.nanmean(residuals[..., 0])), 2),
            "y_px": round(float(np.nanmean(residuals[..., 1])), 2)}


def moved(photos: list, by: float) -> list:
    """``photos`` with every label moved by ``by`` px in x and y: 1-based labels read as pixel indices (by = -1)."""
    return [dataclasses.replace(p, faces=[{layout: points + by for layout, points in face.items()} for face in p.faces],
                                marked=[points + by for points in p.marked]) for p in photos]


def nme(residuals: np.ndarray) -> np.ndarray:
    """Per face: RMSE of its points over the outer-eye distance (the residuals are already in those units)."""
    return np.sqrt(np.nanmean((residuals**2).sum(axis=-1), axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run directory (default: the shipped model)")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PATTERN",
                        help="a peer's predictions.json per source, {source} standing for helen or fgnet")
    parser.set_defaults(synthetic=0)
    args = parser.parse_args()
    peers = read_peers(parser, args.peer)
    model, config = load_model(args.model)
    predictor = Predictor(model, config, make_detector("fast"))
    names = predictor.layout.names
    sources, before, after, one_based = {}, [], [], {}
    for source in PHOTO_SOURCES.values():
        photos = photo_eval.read_annotated_photos(str(args.data_root / source))
        chosen = {side: photo_eval.select_persons(photos, side) for side in ("train", "val")}
        records = {side: photo_eval.run_pipeline(predictor, chosen[side]) for side in chosen}
        train, val = (face_frame_residuals(chosen[side], records[side]) for side in ("train", "val"))
        if source in ONE_BASED:  # the validation NME as the labels are read, and read 1-based
            pipelines = {"kpjax": records["val"], **{name: by_source[source] for name, by_source in peers.items()}}
            for name, scored in pipelines.items():
                one_based.setdefault(name, {})[source] = {
                    "as_read": photo_eval.score(chosen["val"], scored)["nme_mean"],
                    "one_based": photo_eval.score(moved(chosen["val"], -1.0), scored)["nme_mean"]}
                print(f"{name} on {source}: validation NME {one_based[name][source]}", flush=True)
        offsets = np.nanmean(train, axis=0)
        sources[source] = {
            "faces": {"train": len(train), "val": len(val)},
            "offsets_percent": {side: {name: [round(float(v), 2) for v in 100 * np.nanmean(r[:, k], axis=0)]
                                       for k, name in enumerate(names)}
                                for side, r in (("train", train), ("val", val))},
            "val_nme": float(nme(val).mean()),
            "val_nme_without_train_offsets": float(nme(val - offsets).mean()),
        }
        before += list(nme(val))
        after += list(nme(val - offsets))
        print(f"{source}: validation NME {sources[source]['val_nme']:.2%}, without the training persons' offsets "
              f"{sources[source]['val_nme_without_train_offsets']:.2%}", flush=True)
    print(f"both: {np.mean(before):.2%} -> {np.mean(after):.2%}")
    labels, origins, peer_origins = {}, {}, {name: {} for name in peers}
    for spec in config.data:
        source = Path(spec).name
        photos = photo_eval.read_annotated_photos(str(args.data_root / source))
        labels[source] = label_geometry(np.stack([face[KAGGLE.name] for photo in photos for face in photo.faces]))
        origins[source] = pixel_origin(model, config, photo_eval.select_persons(photos, "train"))
        print(f"{source}: flip-averaged residual {origins[source]}", flush=True)
        for name, by_source in peers.items():
            if source in by_source:  # the photos it has no record of are skipped as missing
                peer_origins[name][source] = peer_residuals(photos, by_source[source])
                print(f"{name} on {source}: residual {peer_origins[name][source]}", flush=True)
    write_analysis("conventions", {
        "command": "python " + shlex.join(["experiments/conventions.py", *sys.argv[1:]]),
        "frame": "x along the annotated outer-eye line (towards the subject's left eye), y across it (down); "
                 "percent of the outer-eye distance",
        "sources": sources, "val_nme": float(np.mean(before)), "val_nme_without_train_offsets": float(np.mean(after)),
        "label_geometry": labels,
        "pixel_origin": {"flip_averaged_model_on_training_persons": origins, "peers": peer_origins,
                         "validation_nme_with_labels_read_1_based": one_based},
    }, args.results)


if __name__ == "__main__":
    run_main(main)
