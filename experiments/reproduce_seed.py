"""Train configs/seed.py's recipe (the seed's: seed CNN, complete rows, MSE, flip, Adam 1e-3, 150 epochs, batch 64)
on real faces and record its figures in results/seed.json.

    python experiments/reproduce_seed.py                 # grouped split (the honest figure)
    python experiments/reproduce_seed.py --split row     # the seed's random row split, for comparison
"""

from common import parse_args, recipe_config, run_main, run_recipe


def main() -> None:
    args = parse_args(__doc__)
    run_recipe("seed" if args.split == "group" else "seed-row-split", recipe_config("seed", args), args)


if __name__ == "__main__":
    run_main(main)
