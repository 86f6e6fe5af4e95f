"""The seed's recipe, as the reference Keras notebook trains it: the seed CNN on complete faces only, MSE, flip
augmentation, Adam 1e-3, batch 64, 150 epochs; here on the three 68-point sources, split by person.

    kpjax train --config configs/seed.py --run-dir runs/seed

Run from the project root: the sources are its ../shared/data (--data or --set data=... point elsewhere).
experiments/reproduce_seed.py trains it and records its figures, also under the notebook's row split.
"""

from kpjax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=["../shared/data/youtube-faces-68", "../shared/data/fgnet-68", "../shared/data/helen-68-train"],
        model="seed",
        complete_only=True,
        epochs=150,
        batch_size=64,
        learning_rate=1e-3,
        schedule="constant",
        flip=True,
        val_fraction=0.2,
        split="group",
    )
