"""One change at a time from the seed's recipe (configs/seed.py) towards the best, each scored on the same
grouped split.

    python experiments/sweep.py                          # every variant, in order
    python experiments/sweep.py --variants seed-row compact-light
    python experiments/sweep.py --data-root faces/       # SOURCE.npz files from kpjax data convert

Each variant writes results/sweep-NAME.json like the other scripts, so report.py
tables them; the seed variants repeat reproduce_seed.py's recipe under both splits.
"""

import dataclasses

from common import SOURCES_68, SOURCES_PARTIAL, data_specs, parse_args, recipe_config, run_main, run_recipe

LIGHT_AUGMENTATION = dict(rotation=5.0, scale=0.05, shift=2.0, photometric=True)
HEAVY_AUGMENTATION = dict(rotation=15.0, scale=0.1, shift=4.0, photometric=True)
SCHEDULE = dict(learning_rate=2e-3, schedule="cosine", weight_decay=1e-4)

# name: (config changes from the seed's recipe, flip test-time augmentation, sources)
VARIANTS = {
    "seed": ({}, False, SOURCES_68),
    "seed-row": ({"split": "row"}, False, SOURCES_68),
    "compact": ({"model": "compact", "epochs": 30}, False, SOURCES_68),
    "compact-schedule": ({"model": "compact", "epochs": 30, **SCHEDULE}, True, SOURCES_68),
    "compact-light": ({"model": "compact", "epochs": 30, **SCHEDULE, **LIGHT_AUGMENTATION}, True, SOURCES_68),
    "compact-heavy": ({"model": "compact", "epochs": 30, **SCHEDULE, **HEAVY_AUGMENTATION}, True, SOURCES_68),
    "resnet-small-light": ({"model": "resnet-small", "epochs": 30, **SCHEDULE, **LIGHT_AUGMENTATION}, True,
                           SOURCES_68),
    "seed-schedule": ({"epochs": 60, **SCHEDULE}, True, SOURCES_68),
    "seed-light": ({**SCHEDULE, **LIGHT_AUGMENTATION}, True, SOURCES_68),
    "heatmap": ({"model": "heatmap", "epochs": 60, **SCHEDULE}, True, SOURCES_68),
    "heatmap-photometric": ({"model": "heatmap", "epochs": 45, **SCHEDULE, "photometric": True}, True, SOURCES_68),
    "heatmap-partial": ({"model": "heatmap", "epochs": 45, **SCHEDULE, "photometric": True, "complete_only": False},
                        True, SOURCES_68 + SOURCES_PARTIAL),
    # The seed's next steps, each on the best recipe: colour, and (2.2x the parameters at 0.55x the
    # training speed, so 25 epochs fit in the 30-minute CPU budget) a wider model.
    "heatmap-partial-color": ({"model": "heatmap", "epochs": 45, **SCHEDULE, "photometric": True,
                               "complete_only": False, "color": True}, True, SOURCES_68 + SOURCES_PARTIAL),
    # For photos (configs/photo.py without AFLW and MTFL): crops with context, jittered like a detector's.
    "heatmap-jitter": ({"model": "heatmap", "epochs": 28, **SCHEDULE, "photometric": True, "complete_only": False,
                        "margin": 24, "rotation": 15.0, "scale": 0.15, "shift": 6.0}, True, SOURCES_68),
    "heatmap-wide-partial": ({"model": "heatmap-wide", "epochs": 25, **SCHEDULE, "photometric": True,
                              "complete_only": False}, True, SOURCES_68 + SOURCES_PARTIAL),
}


def main() -> None:
    args = parse_args(__doc__, tuple(VARIANTS))
    for name in args.variants:
        changes, flip_tta, sources = VARIANTS[name]
        config = dataclasses.replace(recipe_config("seed", args), data=data_specs(args, sources), **changes)
        run_recipe(f"sweep-{name}", config, args, flip_tta=flip_tta)


if __name__ == "__main__":
    run_main(main)
