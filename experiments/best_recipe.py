"""Train configs/best.py's recipe (the best found on face crops, experiments/sweep.py) and record its figures,
scored with flip test-time augmentation, in results/best.json.

    python experiments/best_recipe.py
"""

from common import parse_args, recipe_config, run_main, run_recipe


def main() -> None:
    args = parse_args(__doc__)
    run_recipe("best", recipe_config("best", args), args, flip_tta=True)


if __name__ == "__main__":
    run_main(main)
