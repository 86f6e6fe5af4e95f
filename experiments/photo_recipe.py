"""The recipe behind the shipped model, chosen for whole photos: the heatmap CNN trained on crops that
carry a detector's placement error, so it finds the face in its crop instead of drawing the mean face.

    python experiments/photo_recipe.py

On top of the best oracle-crop recipe (experiments/best_recipe.py): every training crop is cut with
24 px of real context around the frame and jittered by a random similarity (rotation +-15 degrees,
zoom +-15 %, shift +-6 px: wider than the Haar box's error against the label-fitted crop, 0.87-1.08x
in scale and 5.2 px at the 90th percentile, and head roll up to 12 degrees), and AFLW's 21-point
in-the-wild faces (13 of the 15 Kaggle keypoints, large poses) join the three 68-point sources.
MTFL's 5-point faces are left out to keep the run within about an hour on a 2-core CPU.
The end-to-end figures (detector, crops, refinement) come from experiments/photos_end_to_end.py.
"""

from best_recipe import BEST
from common import SOURCES_68, data_specs, parse_args, run_recipe

from kpjax.config import TrainConfig

SOURCES_WILD = ("aflw-21",)
PHOTO = TrainConfig(**{**BEST.__dict__, "epochs": 36, "margin": 24, "rotation": 15.0, "scale": 0.15, "shift": 6.0})


def main() -> None:
    args = parse_args(__doc__)
    config = TrainConfig(**{**PHOTO.__dict__, "data": data_specs(args, SOURCES_68 + SOURCES_WILD),
                            "split": args.split})
    run_recipe("photo", config, args, flip_tta=True)


if __name__ == "__main__":
    main()
