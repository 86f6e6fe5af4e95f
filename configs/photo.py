"""The recipe of the shipped model, chosen for whole photos: configs/best.py's, on crops that carry a detector's
placement error, so the model finds the face in its crop instead of drawing the mean face.

    kpjax train --config configs/photo.py --run-dir runs/photo

Every training crop is cut with 24 px of real context around the frame and jittered by a random similarity
(rotation +-15 degrees, zoom +-15 %, shift +-6 px: wider than the Haar box's error against the label-fitted crop,
0.87-1.08x in scale and 5.2 px at the 90th percentile, and head roll up to 12 degrees), and AFLW's 21-point
in-the-wild faces (13 of the 15 Kaggle keypoints, large poses) and MTFL's 5-point faces (partial labels) join the
three 68-point sources. experiments/photo_recipe.py trains it (48 min on a 2-core CPU); adding MTFL took the
end-to-end NME from 4.02 % to 3.82 %. The end-to-end figures (detector, crops, refinement) come from
experiments/photos_end_to_end.py.
"""

import dataclasses
from pathlib import Path

from kpjax.config import TrainConfig, load_config


def get_config() -> TrainConfig:
    return dataclasses.replace(
        load_config(Path(__file__).with_name("best.py")),
        data=["../shared/data/youtube-faces-68", "../shared/data/fgnet-68", "../shared/data/helen-68-train",
              "../shared/data/aflw-21", "../shared/data/mtfl-5"],
        epochs=36,
        margin=24,
        rotation=15.0,
        scale=0.15,
        shift=6.0,
    )
