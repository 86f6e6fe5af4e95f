"""How noisy are the labels? Two estimates of a floor under any model's RMSE, on youtube-faces-68.

    python experiments/label_noise.py [--model runs/best]

1. Nearest pairs. For every face, the most similar face of the same person (pixel
   RMS in the 96x96 crop) is nearly the same frame; the keypoint RMS difference of
   the closest such pairs bounds each label's noise from above (difference / sqrt 2).
2. Frame triplets. Each video gives three frames (NAME_V0, _V1, _V2); those of the
   validation persons are used, whom the models never saw. Where the face
   moves smoothly, the middle frame's labels equal the mean of the outer frames'
   plus noise: the second difference y1 - (y0 + y2) / 2 has variance 1.5 sigma^2 for
   independent label noise sigma. The same second difference of a model's
   predictions shows how much motion the images themselves carry that is not
   smooth; what the labels add beyond it is theirs alone.

A model scored against noisy labels cannot do better than their noise, however good it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import data_specs, parse_args, run_main, write_analysis

from kpjax.checkpoint import load_model
from kpjax.config import TrainConfig
from kpjax.inference import predict_model
from kpjax.keypoints import denormalise
from kpjax.sources import LoadOptions, load_one
from kpjax.sources.landmarks68 import frames_csvs, read_frames_csv
from kpjax.train import split_dataset

SOURCE = "youtube-faces-68"
FRACTIONS = (0.05, 0.10, 0.25)
STATIC_FRACTIONS = (0.25, 0.5, 1.0)


def nearest_pairs(images: np.ndarray, keypoints: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(pixel RMS, keypoint RMS px) of each face and its most similar face of the same person."""
    flat = images.reshape(len(images), -1).astype(np.float32) / 255
    pairs = []
    for group in np.unique(groups):
        index = np.flatnonzero(groups == group)
        if len(index) < 2:
            continue
        distance = ((flat[index, None] - flat[None, index]) ** 2).mean(-1)
        np.fill_diagonal(distance, np.inf)
        for a, b in enumerate(distance.argmin(1)):
            difference = keypoints[index[a]] - keypoints[index[b]]
            pairs.append((np.sqrt(distance[a, b]), np.sqrt(np.nanmean(difference**2))))
    return np.array(pairs)


def frame_triplets(names: list[str]) -> np.ndarray:
    """(T, 3) indices of the frames 0, 1, 2 of each video, from file names ``Person_Name_VF.jpg``."""
    index = {Path(name).stem: i for i, name in enumerate(names)}
    triplets = []
    for stem in index:
        if stem.endswith("0") and stem[-2].isdigit():
            frames = [index.get(stem[:-1] + str(f)) for f in range(3)]
            if None not in frames:
                triplets.append(frames)
    return np.array(triplets, dtype=int).reshape(-1, 3)


def second_difference(values: np.ndarray, triplets: np.ndarray) -> np.ndarray:
    """(T, ...) middle frame minus the mean of the outer two: zero for smooth motion, 1.5 sigma^2 for noise."""
    return values[triplets[:, 1]] - (values[triplets[:, 0]] + values[triplets[:, 2]]) / 2


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def main() -> None:
    args = parse_args(__doc__, model_option=True)
    [spec] = data_specs(args, (SOURCE,))
    faces = load_one(spec, LoadOptions())
    report = {"source": SOURCE, "command": "python experiments/label_noise.py", "n": len(faces)}

    pairs = nearest_pairs(faces.images, faces.keypoints, faces.groups)
    by_similarity = pairs[np.argsort(pairs[:, 0])]
    report["nearest_pairs"] = []
    for fraction in FRACTIONS:
        closest = by_similarity[: int(fraction * len(pairs))]
        difference = _rms(closest[:, 1])
        report["nearest_pairs"].append({
            "fraction": fraction, "pairs": len(closest), "max_pixel_rms": float(closest[-1, 0]),
            "keypoint_rms_difference_px": difference, "per_label_noise_px": difference / np.sqrt(2)})
        print(f"nearest pairs, closest {fraction:.0%} (pixel RMS <= {closest[-1, 0]:.3f}): labels differ by "
              f"{difference:.3f} px RMS, each label's noise at most ~{difference / np.sqrt(2):.3f} px")

    [csv_file] = frames_csvs(Path(spec)) if Path(spec).is_dir() else [None]
    if csv_file is None:
        print(f"{spec}: frame triplets need the source folder (file names), not a converted .npz")
    else:
        rows = read_frames_csv(csv_file)
        if len(rows) != len(faces):
            raise SystemExit(f"{csv_file}: {len(rows)} rows but {len(faces)} faces converted; triplets need all")
        triplets = frame_triplets([row.image.name for row in rows])
        _, val_index = split_dataset(faces, TrainConfig())  # the recipes' split: faces the models never trained on
        triplets = triplets[np.isin(triplets[:, 0], val_index)]
        model, _ = load_model(args.model)
        predictions = denormalise(predict_model(model, faces.images), faces.size).reshape(faces.keypoints.shape)
        label_residual = second_difference(faces.keypoints, triplets)
        model_residual = second_difference(predictions, triplets)
        images = faces.images.astype(np.float32) / 255
        motion = np.sqrt(((images[triplets[:, 0]] - images[triplets[:, 2]]) ** 2).mean(axis=(1, 2, 3)))
        report["triplets"] = {"model": str(args.model or "the shipped default"), "rows": []}
        for fraction in STATIC_FRACTIONS:
            still = np.argsort(motion)[: int(fraction * len(triplets))]
            labels, seen = _rms(label_residual[still]), _rms(model_residual[still])
            noise = np.sqrt(max(labels**2 - seen**2, 0.0) / 1.5)
            report["triplets"]["rows"].append({
                "fraction": fraction, "triplets": len(still), "max_pixel_rms": float(motion[still].max()),
                "labels_second_difference_px": labels, "model_second_difference_px": seen,
                "per_label_noise_px": labels / np.sqrt(1.5), "per_label_noise_beyond_model_px": float(noise)})
            print(f"frame triplets, stillest {fraction:.0%} ({len(still)}, pixel RMS <= {motion[still].max():.3f}): "
                  f"second difference labels {labels:.3f} px, model {seen:.3f} px; label noise "
                  f"~{labels / np.sqrt(1.5):.3f} px, ~{noise:.3f} px beyond what the images show")
    write_analysis("label_noise", report, args.results)


if __name__ == "__main__":
    run_main(main)
