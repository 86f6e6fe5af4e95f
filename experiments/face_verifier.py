"""Train the face verifier shipped as kpjax/weights/face_verifier.npz (the detector's second stage).

    python experiments/face_verifier.py [--epochs 8] [--photos 1000] [--aflw 800] [--out WEIGHTS.npz]

Patches come from the training persons' photos only (kpjax's person split, seed 0), cut exactly as the
detector cuts them (``kpjax.verify.patches`` on the photo shrunk to the detector's search size):

- faces: the cascade proposals that find the annotated face (IoU >= 0.4 with its square), and the face's
  square itself, shifted by up to 10 % and scaled by 0.8-1.25, twice;
- not faces: the proposals that miss it (IoU < 0.2 and not holding its centroid), and random squares of
  the photo clear of it (IoU < 0.1), twice per photo.

AFLW's crops (every pose) add turned faces. Each epoch mirrors half the patches. Reports accuracy and the
face / not-face rates at the detector's threshold on the validation persons' patches, cut the same way;
writes results/analysis/face_verifier.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT, run_main, write_analysis
from detection import AFLW, annotated_photos

import jax
import optax
from flax import nnx

from kpjax.detect import FaceDetector
from kpjax.photo_eval import box_iou, face_square
from kpjax.image import read_image
from kpjax.verify import FaceVerifier, Scorer, patches, save_verifier


def labelled_patches(photos, proposer: FaceDetector, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, CROP, CROP, 1) uint8 patches and (N,) labels (1 face, 0 not) from every photo."""
    images, labels = [], []
    for photo in photos:
        grey, factor = proposer.search_image(read_image(photo.image))
        x, y, side, _ = face_square(photo.marked[0] * factor)
        centre = np.array([x + side / 2, y + side / 2])
        boxes, box_labels = [], []
        for box in proposer.proposals(grey)[0]:
            overlap = box_iou(box, (x, y, side, side))
            holds_centre = box[0] <= centre[0] <= box[0] + box[2] and box[1] <= centre[1] <= box[1] + box[3]
            if overlap >= 0.4:
                boxes.append(box), box_labels.append(1)
            elif overlap < 0.2 and not holds_centre:
                boxes.append(box), box_labels.append(0)
        for _ in range(2):
            scaled = side * rng.uniform(0.8, 1.25)
            shift = rng.uniform(-0.1, 0.1, 2) * side
            boxes.append((*(centre + shift - scaled / 2), scaled, scaled)), box_labels.append(1)
        height, width = grey.shape
        for _ in range(2):
            for _attempt in range(10):
                s = rng.uniform(24, max(25, min(height, width)))
                box = (rng.uniform(0, width - s), rng.uniform(0, height - s), s, s)
                if box_iou(box, (x, y, side, side)) < 0.1:
                    boxes.append(box), box_labels.append(0)
                    break
        images.append(np.round(patches(grey, np.array(boxes)) * 255).astype(np.uint8))
        labels += box_labels
    return np.concatenate(images), np.array(labels, np.float32)


def draw(photos: list, count: int, crops: int, rng: np.random.Generator, seed: int = 0) -> list:
    """``count`` whole photos drawn with ``rng`` and ``crops`` AFLW crops drawn with the ``seed``, in their order."""
    whole = [i for i, photo in enumerate(photos) if photo.source != AFLW]
    aflw = [i for i, photo in enumerate(photos) if photo.source == AFLW]
    if len(aflw) > crops:
        aflw = np.random.default_rng(seed).choice(aflw, crops, replace=False).tolist()
    keep = set(aflw) | set(rng.choice(whole, min(count, len(whole)), replace=False).tolist())
    return [photo for i, photo in enumerate(photos) if i in keep]


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.sigmoid_binary_cross_entropy(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    said_face = scores >= threshold
    return {"accuracy": round(float((said_face == (labels == 1)).mean()), 4),
            "faces_kept": round(float(said_face[labels == 1].mean()), 4),
            "not_faces_kept": round(float(said_face[labels == 0].mean()), 4),
            "faces": int((labels == 1).sum()), "not_faces": int((labels == 0).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=1000, help="whole training photos used (drawn at random)")
    parser.add_argument("--aflw", type=int, default=800, help="AFLW training crops used")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "kpjax" / "weights" / "face_verifier.npz")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    proposer = FaceDetector(verifier=None)
    started = time.perf_counter()
    train = draw(annotated_photos(args.data_root, "train"), args.photos, args.aflw, rng)
    x_train, y_train = labelled_patches(train, proposer, rng)
    val = draw(annotated_photos(args.data_root, "val"), args.photos // 4, args.aflw // 4, rng)
    x_val, y_val = labelled_patches(val, proposer, rng)
    print(f"patches: {len(x_train)} training ({y_train.mean():.1%} faces), {len(x_val)} validation, "
          f"cut in {time.perf_counter() - started:.0f} s")

    model = FaceVerifier(rngs=nnx.Rngs(args.seed))
    steps = args.epochs * (len(x_train) // args.batch)
    optimizer = nnx.Optimizer(model, optax.adam(optax.cosine_decay_schedule(args.lr, steps)), wrt=nnx.Param)
    history = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order) - args.batch + 1, args.batch):
            index = order[start : start + args.batch]
            x = x_train[index].astype(np.float32) / 255.0
            flip = rng.random(len(index)) < 0.5
            x[flip] = x[flip, :, ::-1]
            losses.append(float(train_step(model, optimizer, x, y_train[index])))
        val = rates(Scorer(model)(x_val.astype(np.float32) / 255.0), y_val, 0.5)
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
                        "seconds": round(time.perf_counter() - started, 1), **val})
        print(history[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_verifier(model, args.out)
    scores = Scorer(model)(x_val.astype(np.float32) / 255.0)
    write_analysis("face_verifier", {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "train_patches": len(x_train), "train_faces": int(y_train.sum()), "val_patches": len(x_val),
        "params": int(sum(np.size(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))),
        "history": history, "val_at": {str(t): rates(scores, y_val, t) for t in (0.3, 0.5, 0.7, 0.9)},
        "weights": str(args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out),
    }, args.results)


if __name__ == "__main__":
    run_main(main)
