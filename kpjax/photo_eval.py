"""End to end on annotated photos: what a user of ``kpjax predict`` gets, scored as 300-W scores it.

Each photo goes through the whole pipeline (decode, detector, crop, network,
refinement, map back); the annotated faces (all the points their source marks: the
whole face, jaw included, as a detector boxes it) are matched to the detections, and
each matched face's keypoints are scored by their NME: the RMSE of the points
(Euclidean) over the distance between the annotated outer eye corners. Any
pipeline that writes ``predictions.json`` (kpjax, or a peer run elsewhere) is
scored by the same code.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kpjax.dataset import group_split
from kpjax.errors import KpjaxError
from kpjax.image import read_image
from kpjax.inference import Predictor, expected_nme, similarity_crop
from kpjax.keypoints import IBUG68, KAGGLE, KAGGLE_MEAN_FACE, LAYOUTS, OUTER_CORNERS
from kpjax.records import Face, ImageResult, draw_keypoints
from kpjax.sources import LoadOptions, read_rows
from kpjax.sources.convert import check_rows, kaggle_points
from kpjax.sources.rows import Row

FAILURE_NME = 0.10  # 300-W's failure threshold, and the end of the CED curve's area
MATCH_IOU = 0.3
# NME times this is an error in the pixels of Kaggle's 96 x 96 frame (its mean face's outer-eye distance).
KAGGLE_OUTER_EYES_PX = float(np.linalg.norm(KAGGLE_MEAN_FACE[3] - KAGGLE_MEAN_FACE[5]))


@dataclasses.dataclass
class AnnotatedPhoto:
    image: Path
    source: str
    group: str
    faces: list[dict]  # per face: layout name -> (K, 2) annotated points in photo pixels, NaN where missing
    marked: list[np.ndarray] = dataclasses.field(default_factory=list)  # per face: every point its source marks


def read_annotated_photos(spec: str, markup: str | None = None) -> list[AnnotatedPhoto]:
    """The photos of a landmark source (.pts folder, YouTube-Faces csv, AFLW, MTFL), their faces grouped by photo."""
    source, markup, rows = read_rows(Path(spec), LoadOptions(markup=markup))
    markup, checked = check_rows(rows, markup)
    photos: dict[Path, AnnotatedPhoto] = {}
    for row in checked:
        if not isinstance(row, Row):
            continue
        truth = {KAGGLE.name: kaggle_points(row.points, markup)}
        if markup == "ibug":
            truth[IBUG68.name] = row.points
        photo = photos.setdefault(row.image, AnnotatedPhoto(row.image, source, f"{source}:{row.group}", []))
        photo.faces.append(truth)
        photo.marked.append(row.points)
    if not photos:
        raise KpjaxError(f"{spec}: no annotated faces")
    return list(photos.values())


def select_persons(photos: list[AnnotatedPhoto], persons: str, val_fraction: float = 0.2,
                   seed: int = 0) -> list[AnnotatedPhoto]:
    """``val`` or ``train``: the photos of the persons on that side of the training split (kpjax's group split,
    which depends only on the seed and the person), so a model is scored on persons it never trained on."""
    if persons == "all":
        return photos
    if persons not in ("val", "train"):
        raise KpjaxError(f"--persons {persons}: expected all, val or train")
    train_index, val_index = group_split(np.array([p.group for p in photos]), val_fraction, seed)
    return [photos[i] for i in (val_index if persons == "val" else train_index)]


def run_pipeline(predictor: Predictor, photos: list[AnnotatedPhoto], progress: bool = False) -> list[dict]:
    """Each photo through the predictor alone, as ``kpjax predict PHOTO`` runs it: records shaped like
    predictions.json's, with the photo's wall time (decode to keypoints) in ``ms``."""
    if photos:  # compile outside the timed photos
        predictor([read_image(photos[0].image)])
    records = []
    for photo in tqdm(photos, unit="photo", disable=not progress):
        started = time.perf_counter()
        image = read_image(photo.image)
        faces = predictor([image])[0]
        ms = (time.perf_counter() - started) * 1e3
        record = ImageResult(str(photo.image), faces, image.shape[1], image.shape[0]).to_json(predictor.layout.names)
        records.append({**record, "ms": round(ms, 2)})
    return records


def run_label_fitted(predictor: Predictor, photos: list[AnnotatedPhoto]) -> list[dict]:
    """Each annotated face predicted once on the crop fitted to its own annotated points, as training crops are
    placed: the model's accuracy with the detector and the refinement passes taken out, beside ``run_pipeline``'s.
    Records shaped like it, without ms; each face boxed as its annotated points' square, so it matches itself."""
    layout = predictor.layout
    records = []
    for photo in photos:
        image = read_image(photo.image)
        placeable = [(face[layout.name], marked) for face, marked in zip(photo.faces, photo.marked)
                     if layout.name in face and np.isfinite(face[layout.name]).all()]
        crops = [(image, similarity_crop(points, layout.name, predictor.config.size)) for points, _ in placeable]
        faces = [Face(face_square(marked), None, points, errors,
                      None if errors is None else expected_nme(points, errors, layout.name))
                 for (_, marked), (points, errors) in zip(placeable, predictor.placed_keypoints(crops))]
        records.append(ImageResult(str(photo.image), faces, image.shape[1], image.shape[0]).to_json(layout.names))
    return records


def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union > 0 else 0.0


def face_square(points: np.ndarray) -> tuple[float, float, float, float]:
    """The square around a face's annotated points (its side the bounding box's longer side)."""
    present = points[~np.isnan(points).any(axis=1)]
    low, high = present.min(axis=0), present.max(axis=0)
    side = float((high - low).max())
    centre = (low + high) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side, side


def match_faces(boxes: list, faces: list[np.ndarray]) -> list[int | None]:
    """For each annotated face, the detection that found it, or None.

    A detection finds a face when its box holds the centroid of the face's points
    and overlaps the square around them by IoU >= 0.3; pairs are taken greedily,
    best overlap first, and a detection finds one face at most.
    """
    pairs = []
    for f, points in enumerate(faces):
        centroid, square = np.nanmean(points, axis=0), face_square(points)
        for d, (x, y, w, h) in enumerate(boxes):
            iou = box_iou((x, y, w, h), square)
            if x <= centroid[0] <= x + w and y <= centroid[1] <= y + h and iou >= MATCH_IOU:
                pairs.append((iou, f, d))
    matched: list[int | None] = [None] * len(faces)
    used: set[int] = set()
    for _, f, d in sorted(pairs, reverse=True):
        if matched[f] is None and d not in used:
            matched[f], used = d, used | {d}
    return matched


def found_and_false(boxes: list, faces: list[np.ndarray]) -> tuple[list[bool], int]:
    """Which annotated faces the boxes found (``match_faces``), and how many boxes are false faces."""
    matched = match_faces(boxes, faces)
    found = [m is not None for m in matched]
    return found, len(boxes) - sum(found)


def face_nme(predicted: np.ndarray, truth: np.ndarray, layout: str) -> float:
    """RMSE of the annotated points over the outer-eye-corner distance; NaN when a corner is not annotated."""
    a, b = OUTER_CORNERS[layout]
    normaliser = float(np.linalg.norm(truth[a] - truth[b]))
    present = ~np.isnan(truth).any(axis=1)
    if not normaliser > 0 or not present.any():
        return float("nan")
    squared = ((predicted[present] - truth[present]) ** 2).sum(axis=1)
    return float(np.sqrt(squared.mean()) / normaliser)


def auc(nmes: np.ndarray, limit: float = FAILURE_NME) -> float:
    """Area under the cumulative error curve up to ``limit``, over ``limit``: 1 would be no error at all."""
    grid = np.linspace(0.0, limit, 1001)
    curve = (np.sort(nmes)[None, :] <= grid[:, None]).mean(axis=1) if len(nmes) else np.zeros_like(grid)
    return float(np.trapezoid(curve, grid) / limit)


def _record_layout(record_faces: list[dict]) -> str:
    names = tuple(record_faces[0]["keypoints"]) if record_faces else KAGGLE.names
    for layout in LAYOUTS.values():
        if names == layout.names:
            return layout.name
    raise KpjaxError(f"predictions name keypoints {', '.join(names[:3])}...: not a layout kpjax knows")


@dataclasses.dataclass
class PhotoMatch:
    """An annotated photo beside a pipeline's record of it, its faces matched to the record's detections."""

    photo: AnnotatedPhoto
    detections: list[dict]  # the record's faces; none when the record is missing or holds an error
    matched: list[int | None]  # per annotated face, the index of the detection that found it
    ms: float | None
    missing: bool

    @property
    def false_faces(self) -> list[dict]:
        return [d for i, d in enumerate(self.detections) if i not in self.matched]

    def found(self) -> list[tuple[dict, dict, np.ndarray, str, float]]:
        """Per face found: its annotation, its detection, the predicted points and the annotated ones in the layout
        both have (a 68-point model on a source without iBUG points: its 15 Kaggle points), and that layout's NME."""
        layout = _record_layout(self.detections)
        scored = layout if layout in self.photo.faces[0] else KAGGLE.name
        result = []
        for face, d in zip(self.photo.faces, self.matched):
            if d is not None:
                predicted = np.array(list(self.detections[d]["keypoints"].values()), np.float64)
                if scored != layout:
                    predicted = kaggle_points(predicted, "ibug")
                result.append((face, self.detections[d], predicted, face[scored],
                               face_nme(predicted, face[scored], scored)))
        return result


def match_records(photos: list[AnnotatedPhoto], records: list[dict]) -> list[PhotoMatch]:
    """Each photo with its predictions.json-shaped record (matched by image path, however each pipeline spelled
    it) and its annotated faces matched to the record's detections on every point the source marks."""
    by_image = {str(Path(r["image"]).resolve()): r for r in records}
    matches = []
    for photo in photos:
        record = by_image.get(str(Path(photo.image).resolve()))
        missing = record is None or "error" in record
        detections = [] if missing else record["faces"]
        matches.append(PhotoMatch(photo, detections, match_faces([d["box"] for d in detections], photo.marked),
                                  None if missing else record.get("ms"), missing))
    return matches


def score(photos: list[AnnotatedPhoto], records: list[dict]) -> dict:
    """Detection rate, false faces, NME mean/median, failures, AUC, Kaggle-frame px and ms per photo,
    overall and per source, from predictions.json-shaped records."""
    matches = match_records(photos, records)
    per_face = []  # (source, NME; None when the face was not found)
    for m in matches:
        per_face += [(m.photo.source, None)] * m.matched.count(None)
        per_face += [(m.photo.source, nme) for *_, nme in m.found()]
    false_faces = [len(m.false_faces) for m in matches]
    ms = [m.ms for m in matches]
    result = _summary([n for _, n in per_face], false_faces, ms)
    result["photos_without_predictions"] = sum(m.missing for m in matches)
    sources = sorted({p.source for p in photos})
    if len(sources) > 1:
        result["by_source"] = {
            source: _summary([n for s, n in per_face if s == source],
                             [f for f, p in zip(false_faces, photos) if p.source == source],
                             [m for m, p in zip(ms, photos) if p.source == source])
            for source in sources
        }
    return result


def _summary(nmes: list, false_faces: list[int], ms: list) -> dict:
    ms = [m for m in ms if m is not None]
    found = np.array([n for n in nmes if n is not None], np.float64)
    scored = found[np.isfinite(found)]
    return {
        "photos": len(false_faces),
        "faces": len(nmes),
        "found": int(len(found)),
        "detection_rate": len(found) / len(nmes) if nmes else 0.0,
        "false_faces": int(sum(false_faces)),
        "false_faces_per_photo": float(np.mean(false_faces)) if false_faces else 0.0,
        "scored": int(len(scored)),
        "nme_mean": float(scored.mean()) if len(scored) else None,
        "nme_median": float(np.median(scored)) if len(scored) else None,
        "failure_rate": float((scored > FAILURE_NME).mean()) if len(scored) else None,
        "auc10": auc(scored),
        "kaggle_px": float(scored.mean() * KAGGLE_OUTER_EYES_PX) if len(scored) else None,
        "ms_per_photo_median": float(np.median(ms)) if ms else None,
        "nmes": [round(float(n), 5) for n in scored],
    }


def draw_worst(photos: list[AnnotatedPhoto], records: list[dict], out_dir: Path, count: int = 12) -> list[Path]:
    """The ``count`` found faces with the highest NME, each cut from its photo with the annotated points (green)
    and the predicted ones (red): the pictures to look at before trusting the figures. They replace the faces an
    earlier call drew in ``out_dir`` (its ``NN_nme*.png`` alone), so the folder shows one run."""
    found = [(nme, m.photo, truth, predicted, detection["box"]) for m in match_records(photos, records)
             for _, detection, predicted, truth, nme in m.found()]
    out_dir.mkdir(parents=True, exist_ok=True)
    for earlier in out_dir.glob("[0-9][0-9]_nme*.png"):
        earlier.unlink()
    written = []
    for rank, (nme, photo, truth, predicted, box) in enumerate(sorted(found, key=lambda f: -np.nan_to_num(f[0]))[:count]):
        image = read_image(photo.image)
        canvas = draw_keypoints(draw_keypoints(image, truth, colour=(40, 220, 40)), predicted)
        x, y, w, h = (int(round(v)) for v in box)
        pad = w // 2
        crop = canvas[max(0, y - pad):y + h + pad, max(0, x - pad):x + w + pad]
        path = out_dir / f"{rank:02d}_nme{nme * 100:.1f}_{photo.image.stem}.png"
        cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def plot_ced(curves: dict[str, list[float]], path: Path, title: str = "") -> None:
    """Cumulative error distributions (share of faces with NME <= x) to 10 %, one line per pipeline."""
    import matplotlib  # deferred: only --ced draws, and matplotlib takes a second to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    grid = np.linspace(0.0, FAILURE_NME, 201)
    for label, nmes in curves.items():
        values = np.sort(np.asarray(nmes))
        ax.plot(grid * 100, (values[None, :] <= grid[:, None]).mean(axis=1), label=f"{label} (AUC {auc(values):.3f})")
    ax.set(xlabel="NME (% of outer-eye distance)", ylabel="share of found faces", xlim=(0, FAILURE_NME * 100),
           ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)  # below: curves stay seen
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
