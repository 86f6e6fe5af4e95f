"""The best recipe found: every source with masked partial labels (MTFL's 5 points), the compact CNN
(the seed's conv blocks, one more, a small dense head), pose and lighting augmentation, a cosine
schedule and flip test-time augmentation.

    python experiments/best_recipe.py
"""

from common import SOURCES_68, SOURCES_PARTIAL, data_specs, parse_args, run_recipe

from kpjax.config import TrainConfig

BEST = TrainConfig(
    model="compact",
    epochs=8,
    batch_size=64,
    learning_rate=2e-3,
    schedule="cosine",
    weight_decay=1e-4,
    flip=True,
    rotation=15.0,
    scale=0.1,
    shift=4.0,
    photometric=True,
)


def main() -> None:
    args = parse_args(__doc__)
    config = TrainConfig(**{**BEST.__dict__, "data": data_specs(args, SOURCES_68 + SOURCES_PARTIAL),
                            "split": args.split})
    run_recipe("best", config, args, flip_tta=True)


if __name__ == "__main__":
    main()
