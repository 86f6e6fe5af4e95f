"""Seed CNN throughput in Keras 3 on TensorFlow (CPU, ``model.fit``), the protocol of protocol.py.

Train: Adam(1e-3), masked MSE (mask packed beside the targets), one ``fit`` of
1 + ``--repeats`` epochs of ``--steps`` steps; each epoch is a timed chunk.
Inference through a ``tf.function`` of the model.

    /work/venv/bin/python benchmarks/peers/keras_seed.py [--jit-compile auto|true|false]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import protocol  # noqa: E402


def seed_cnn() -> keras.Model:
    L = keras.layers
    return keras.Sequential([
        keras.Input((protocol.SIZE, protocol.SIZE, 1)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 2, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 2, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(500, activation="relu"), L.Dropout(0.2),
        L.Dense(500, activation="relu"), L.Dropout(0.2),
        L.Dense(protocol.OUTPUTS),
    ])


def masked_mse(y_true, y_pred):
    """y_true is [targets, mask] side by side: Keras passes one array per sample to the loss."""
    y, m = y_true[:, : protocol.OUTPUTS], y_true[:, protocol.OUTPUTS :]
    return tf.reduce_sum(m * (y_pred - y) ** 2) / tf.maximum(tf.reduce_sum(m), 1.0)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    parser = protocol.argument_parser(__doc__)
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    a = parser.parse_args()
    keras.utils.set_random_seed(0)
    n = a.batch * a.steps
    xs, ys, masks, xs256 = protocol.synthetic_data(n)
    model = seed_cnn()
    jit = {"auto": "auto", "true": True, "false": False}[a.jit_compile]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=masked_mse, jit_compile=jit)
    timer = EpochTimer()
    model.fit(xs, np.concatenate([ys, masks], axis=1), batch_size=a.batch, epochs=1 + a.repeats, shuffle=False,
              verbose=0, callbacks=[timer])

    serve = tf.function(lambda x: model(x, training=False))
    protocol.emit(
        framework="keras", version=f"keras {keras.__version__} tf {tf.__version__}",
        variant=f"fit jit_compile={model.jit_compile}", batch=a.batch,
        **protocol.train_figures(timer.seconds, n),
        **protocol.inference_figures(lambda x: serve(x).numpy(), lambda i: tf.constant(xs[i % n : i % n + 1]),
                                     tf.constant(xs256), a.calls, a.repeats),
    )


if __name__ == "__main__":
    main()
