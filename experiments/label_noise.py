"""How far apart the labels of near-identical faces are: a floor under any model's RMSE.

    python experiments/label_noise.py

YouTube-Faces holds many frames of each video. For every face, the most similar
face of the same person (pixel RMS in the 96x96 crop) is nearly the same frame;
the keypoint RMS difference of the closest such pairs bounds the labels' own
noise from above (per label, difference / sqrt 2). A model scored against noisy
labels cannot do better than that noise, however good it is.
"""

from __future__ import annotations

import json

import numpy as np
from common import ROOT, data_specs, parse_args

from kpjax.sources import LoadOptions, load_one

SOURCE = "youtube-faces-68"
FRACTIONS = (0.05, 0.10, 0.25)


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


def main() -> None:
    args = parse_args(__doc__)
    [spec] = data_specs(args, (SOURCE,))
    faces = load_one(spec, LoadOptions())
    pairs = nearest_pairs(faces.images, faces.keypoints, faces.groups)
    by_similarity = pairs[np.argsort(pairs[:, 0])]
    rows = []
    for fraction in FRACTIONS:
        closest = by_similarity[: int(fraction * len(pairs))]
        difference = float(np.sqrt((closest[:, 1] ** 2).mean()))
        rows.append({"fraction": fraction, "pairs": len(closest), "max_pixel_rms": float(closest[-1, 0]),
                     "keypoint_rms_difference_px": difference, "per_label_noise_px": difference / np.sqrt(2)})
        print(f"closest {fraction:.0%} of {len(pairs)} pairs (pixel RMS <= {closest[-1, 0]:.3f}): labels differ by "
              f"{difference:.3f} px RMS, so each label's noise is at most ~{difference / np.sqrt(2):.3f} px")
    out = args.results / "analysis" / "label_noise.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python experiments/label_noise.py"
    out.write_text(json.dumps({"source": SOURCE, "command": command, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
