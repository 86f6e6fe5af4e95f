"""The seed's recipe on real faces: seed CNN, complete rows, MSE, flip, Adam 1e-3, 150 epochs, batch 64.

    python experiments/reproduce_seed.py                 # grouped split (the honest figure)
    python experiments/reproduce_seed.py --split row     # the seed's random row split, for comparison
"""

from common import SOURCES_68, data_specs, parse_args, run_recipe

from kpjax.config import TrainConfig


def main() -> None:
    args = parse_args(__doc__)
    config = TrainConfig(data=data_specs(args, SOURCES_68), model="seed", complete_only=True, epochs=150,
                         batch_size=64, learning_rate=1e-3, flip=True, val_fraction=0.2, split=args.split)
    run_recipe("seed" if args.split == "group" else "seed-row-split", config, args)


if __name__ == "__main__":
    main()
