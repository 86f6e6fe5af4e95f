"""Wall time to a validation RMSE on real faces: the seed recipe in kpjax and in Keras, one after the other.

Throughput is not the whole story: what a user waits for is a model that is
good enough. Both frameworks get the same arrays: the three 68-point sources
under ../shared/data as Kaggle's 15 keypoints (96 px grey, complete rows), the
person-grouped split of kpjax.train.split_dataset (TrainConfig defaults). Both
train the seed CNN with the seed recipe (Adam 1e-3, batch 64, masked MSE,
dropout 0.2, per-sample horizontal flip with left/right swap) and score the
validation faces with kpjax.evaluate.keypoint_metrics after every epoch. The
clock runs from the start of training (compilation included, data loading
excluded) to the first epoch whose RMSE is at most --threshold pixels.

    /work/venv/bin/python benchmarks/time_to_accuracy.py [--threshold 3.0] [--max-epochs 150]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kpjax.augment import flip_targets, make_augmentation  # noqa: E402
from kpjax.config import TrainConfig  # noqa: E402
from kpjax.dataset import Dataset  # noqa: E402
from kpjax.evaluate import keypoint_metrics  # noqa: E402
from kpjax.forward import predict_step  # noqa: E402
from kpjax.inference import predict_normalised  # noqa: E402
from kpjax.models import create_model  # noqa: E402
from kpjax.train import load_training_data, split_dataset  # noqa: E402
from kpjax.train_step import init_state, make_optimizer, make_train_step, take_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES_68 = ("youtube-faces-68", "fgnet-68", "helen-68-train")


def kpjax_epochs(config: TrainConfig, train_set: Dataset, val_set: Dataset) -> Iterator[float]:
    """kpjax's training loop (kpjax.train.train without checkpoints and logs): validation RMSE px per epoch."""
    model = create_model(config.model, num_outputs=2 * train_set.layout.num_keypoints, size=train_set.size,
                         channels=train_set.channels, seed=config.seed)
    steps = len(train_set) // config.batch_size
    tx = make_optimizer(config, steps)
    graphdef, state = init_state(model, tx)
    train_step = make_train_step(tx, make_augmentation(config, train_set.layout))
    data = jax.device_put({"images": train_set.images, "targets": train_set.targets(), "mask": train_set.mask})
    root_key = jax.random.key(config.seed)
    for epoch in itertools.count():
        order_key, steps_key = jax.random.split(jax.random.fold_in(root_key, epoch))
        order = jax.random.permutation(order_key, len(train_set))
        for step in range(steps):
            batch = take_batch(data, order, step, config.batch_size)
            state, _ = train_step(graphdef, state, batch, jax.random.fold_in(steps_key, step))
        predictions = predict_normalised(functools.partial(predict_step, graphdef, state["params"], state["rest"]),
                                         val_set.images)
        yield keypoint_metrics(predictions, val_set)["rmse_px"]


def keras_epochs(config: TrainConfig, train_set: Dataset, val_set: Dataset) -> Iterator[float]:
    """benchmarks/peers/keras_seed.py's model and loss under ``model.fit``, one epoch per call.

    The flip is drawn per face and epoch on the host, from copies mirrored once
    with kpjax's own flip_targets, so both frameworks see the same augmentation.
    """
    sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
    import keras
    from keras_seed import masked_mse, seed_cnn

    keras.utils.set_random_seed(config.seed)
    images = train_set.images.astype(np.float32) / 255.0  # kpjax.models.to_input
    targets, mask = train_set.targets(), train_set.mask
    flipped_targets, flipped_mask = map(np.asarray, flip_targets(jnp.asarray(targets), jnp.asarray(mask),
                                                                 train_set.layout.flip_permutation, train_set.size))
    plain, flipped = (np.concatenate([t, m.astype(np.float32)], axis=1)
                      for t, m in ((targets, mask), (flipped_targets, flipped_mask)))
    val_images = val_set.images.astype(np.float32) / 255.0
    model = seed_cnn()
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=masked_mse)
    rng = np.random.default_rng(config.seed)
    while True:
        flip = rng.random(len(images)) < 0.5
        x = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        model.fit(x, np.where(flip[:, None], flipped, plain), batch_size=config.batch_size, epochs=1, shuffle=True,
                  verbose=0)
        yield keypoint_metrics(model.predict(val_images, batch_size=256, verbose=0), val_set)["rmse_px"]


def time_to_threshold(epochs: Iterator[float], threshold: float, max_epochs: int) -> dict:
    """Run epochs until the validation RMSE is at most ``threshold`` px or ``max_epochs`` have run."""
    started = time.perf_counter()
    history = []
    for rmse in itertools.islice(epochs, max_epochs):
        history.append(round(rmse, 3))
        if rmse <= threshold:
            break
    return {"reached": history[-1] <= threshold, "epochs": len(history),
            "seconds": round(time.perf_counter() - started, 1), "val_rmse_px_by_epoch": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threshold", type=float, default=3.0, help="validation RMSE to reach, pixels")
    parser.add_argument("--max-epochs", type=int, default=150, help="give up after this many epochs")
    args = parser.parse_args()
    config = TrainConfig(data=[str(args.data_root / source) for source in SOURCES_68], complete_only=True)
    dataset = load_training_data(config)
    train_index, val_index = split_dataset(dataset, config)
    train_set, val_set = dataset.subset(train_index), dataset.subset(val_index)
    result = {"threshold_px": args.threshold, "max_epochs": args.max_epochs, "train_faces": len(train_set),
              "val_faces": len(val_set)}
    for name, epochs in (("kpjax", kpjax_epochs), ("keras", keras_epochs)):
        result[name] = time_to_threshold(epochs(config, train_set, val_set), args.threshold, args.max_epochs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
