"""Seed CNN throughput in Keras 3 on TensorFlow (CPU, ``model.fit``), same protocol as benchmarks/kpjax_seed.py.

Train: batch 64 fp32, Adam(1e-3), masked MSE (mask packed beside the targets),
one ``fit`` of 1 + ``--repeats`` epochs of ``--steps`` steps; the first epoch
(tracing/compiling) is reported apart, images/s is the median of the others.
Inference through a ``tf.function`` of the model: batch-1 p50/p90 ms over
``--calls`` calls, batch-256 images/s. Prints one JSON line.

    KERAS_BACKEND=tensorflow /work/venv/bin/python benchmarks/peers/keras_seed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def seed_cnn() -> keras.Model:
    L = keras.layers
    return keras.Sequential([
        keras.Input((96, 96, 1)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 2, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 2, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(500, activation="relu"), L.Dropout(0.2),
        L.Dense(500, activation="relu"), L.Dropout(0.2),
        L.Dense(30),
    ])


def masked_mse(y_true, y_pred):
    y, m = y_true[:, :30], y_true[:, 30:]
    return tf.reduce_sum(m * (y_pred - y) ** 2) / tf.maximum(tf.reduce_sum(m), 1.0)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    a = p.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = a.batch * a.steps
    xs = rng.random((n, 96, 96, 1), np.float32)
    ys = np.concatenate([rng.standard_normal((n, 30)), rng.random((n, 30)) > 0.3], axis=1).astype(np.float32)
    model = seed_cnn()
    jit = {"auto": "auto", "true": True, "false": False}[a.jit_compile]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=masked_mse, jit_compile=jit)
    timer = EpochTimer()
    timer.times = []
    model.fit(xs, ys, batch_size=a.batch, epochs=1 + a.repeats, shuffle=False, verbose=0, callbacks=[timer])
    rates = [n / t for t in timer.times[1:]]

    serve = tf.function(lambda x: model(x, training=False))
    x1, x256 = tf.constant(xs[:1]), tf.constant(np.resize(xs, (256, 96, 96, 1)))
    t0 = time.perf_counter()
    serve(x1).numpy(), serve(x256).numpy()
    predict_warm = time.perf_counter() - t0
    lat, thr = [], []
    for i in range(a.calls):
        xi = tf.constant(xs[i % n : i % n + 1])
        t0 = time.perf_counter()
        serve(xi).numpy()
        lat.append((time.perf_counter() - t0) * 1e3)
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        serve(x256).numpy()
        thr.append(256 / (time.perf_counter() - t0))
    print(json.dumps({
        "framework": "keras", "version": f"keras {keras.__version__} tf {tf.__version__}",
        "variant": f"fit jit_compile={model.jit_compile}", "warmup_s": round(timer.times[0], 2),
        "predict_warmup_s": round(predict_warm, 2),
        "train_images_per_s": round(statistics.median(rates), 1),
        "infer_b1_p50_ms": round(float(np.percentile(lat, 50)), 3), "infer_b1_p90_ms": round(float(np.percentile(lat, 90)), 3),
        "infer_b256_images_per_s": round(statistics.median(thr), 1), "batch": a.batch,
    }), flush=True)


if __name__ == "__main__":
    main()
