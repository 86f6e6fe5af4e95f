"""Train the photo recipes and record their figures, scored with flip test-time augmentation, in
results/RECIPE.json: configs/photo.py (the best recipe on jittered crops with context, AFLW's and MTFL's faces
added; 48 min on a 2-core CPU), configs/photo_wide.py (the same on the wider heatmap CNN, 295 epochs, for a GPU)
configs/photo_hires.py (photo_wide's at 128 x 128, for a GPU), configs/photo_hires_wing.py (the shipped model's:
the same with the Wing loss), configs/photo_160.py (photo_hires's at 160 x 160, for a GPU) or
configs/photo_160_wing.py (photo_160's with the Wing loss).

    python experiments/photo_recipe.py
    python experiments/photo_recipe.py --recipe photo_hires_wing --run-root runs   # on a GPU

The end-to-end figures (detector, crops, refinement) come from experiments/photos_end_to_end.py.
"""

from common import parse_args, recipe_config, run_main, run_recipe


def main() -> None:
    args = parse_args(__doc__, recipes=("photo", "photo_wide", "photo_hires", "photo_hires_wing", "photo_160",
                                        "photo_160_wing"))
    run_recipe(args.recipe, recipe_config(args.recipe, args), args, flip_tta=True)


if __name__ == "__main__":
    run_main(main)
