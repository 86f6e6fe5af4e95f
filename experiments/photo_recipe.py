"""Train configs/photo.py's recipe (the shipped model's: the best recipe on jittered crops with context, AFLW's
and MTFL's faces added) and record its figures, scored with flip test-time augmentation, in results/photo.json.

    python experiments/photo_recipe.py

The end-to-end figures (detector, crops, refinement) come from experiments/photos_end_to_end.py.
"""

from common import parse_args, recipe_config, run_recipe


def main() -> None:
    args = parse_args(__doc__)
    run_recipe("photo", recipe_config("photo", args), args, flip_tta=True)


if __name__ == "__main__":
    main()
