"""The network at inference, for every caller: evaluate, predict, video, submit, serve and export.

The model is split once into a static graphdef and its parameters and other
state (``split_model``); ``predict_step`` is the one jitted forward pass of
(graphdef, params, rest, uint8 images). ``predict_normalised`` runs it over
any number of face crops in fixed-size batches, with optional flip test-time
augmentation.

``Predictor`` takes whole images: each face is cropped into the model's frame
by one affine (``kpjax.image``), from its detector box
(``kpjax.detect.box_matrix``) or, for an image that is already a face crop, by
stretching the whole image; the crop is then refined from the face's own
keypoints, and the keypoints mapped back to the image's pixels. The crops of
many images go through the network together in power-of-two batches, so a
folder costs a jitted call per batch and a handful of compilations, not one
per face.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kpjax.augment import flip_targets
from kpjax.config import TrainConfig
from kpjax.detect import Detection, FaceDetector, box_matrix, frame_box, is_face_crop
from kpjax.errors import KpjaxError
from kpjax.image import apply_affine, invert_affine, resize_matrix, warp
from kpjax.keypoints import denormalise
from kpjax.models import to_input
from kpjax.records import Face
from kpjax.sources.convert import kaggle_points, mean_face

PREDICT_BATCH = 256
# Refinement stops once a face's crop moves less than this (frame pixels): the network's own noise.
CONVERGED_PX = 0.5
DEFAULT_PASSES = 3


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, rest): the trained parameters apart from the model's other state (e.g. dropout's RNG)."""
    return nnx.split(model, nnx.Param, ...)


def _predict(graphdef, params, rest, images):
    return nnx.merge(graphdef, params, rest)(to_input(images))


predict_step = jax.jit(_predict, static_argnums=0)


def predict_normalised(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State, images: np.ndarray,
                       batch_size: int = PREDICT_BATCH, flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """(N, 2K) predictions in the seed's units, in fixed-size batches so one compilation serves all.

    With ``flip_permutation``, each is averaged with the mirrored face's prediction mapped back (flip
    test-time augmentation).
    """
    outputs = []
    batch_size = min(batch_size, len(images)) or 1
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        outputs.append(np.asarray(predict_step(graphdef, params, rest, padded))[: len(chunk)])
    predictions = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    if flip_permutation is None or not len(images):
        return predictions
    mirrored = predict_normalised(graphdef, params, rest, np.ascontiguousarray(images[:, :, ::-1]), batch_size)
    unflipped, _ = flip_targets(jnp.asarray(mirrored), jnp.ones(mirrored.shape, bool), flip_permutation, images.shape[2])
    return (predictions + np.asarray(unflipped)) / 2


def predict_model(model: nnx.Module, images: np.ndarray, batch_size: int = PREDICT_BATCH,
                  flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """Predictions in the seed's units (see ``predict_normalised``)."""
    return predict_normalised(*split_model(model), images, batch_size, flip_permutation)


def similarity_crop(points: np.ndarray, layout_name: str, size: int) -> np.ndarray:
    """The image -> frame affine (scale, rotation, translation) that best maps a face's predicted points onto
    the mean face: the crop training faces get, with the head's roll taken out so the face arrives upright."""
    kaggle = points if layout_name == "kaggle" else kaggle_points(points, "ibug")
    source = kaggle[:, 0] + 1j * kaggle[:, 1]
    target = mean_face(size) @ np.array([1, 1j])
    source_centred, target_centred = source - source.mean(), target - target.mean()
    s = np.vdot(source_centred, target_centred) / np.vdot(source_centred, source_centred)
    t = target.mean() - s * source.mean()
    return np.array([[s.real, -s.imag, t.real], [s.imag, s.real, t.imag]])


def crop_change(old: np.ndarray, new: np.ndarray, size: int) -> float:
    """How far (frame pixels) the corners of the ``old`` crop land from where the ``new`` crop puts them."""
    corners = np.array([[0.0, 0.0], [size - 1, 0.0], [0.0, size - 1], [size - 1, size - 1]])
    return float(np.abs(apply_affine(new, apply_affine(invert_affine(old), corners)) - corners).max())


class Predictor:
    """A model and a face detector: whole images in, every face's box and keypoints out.

    Each detected face is predicted, re-cropped from its own keypoints (``similarity_crop``) and predicted
    again, up to ``passes`` times or until its crop moves less than ``CONVERGED_PX``: the detector's box
    places the first crop only roughly, the keypoints place the next one the way training crops are placed.
    """

    def __init__(self, model: nnx.Module, config: TrainConfig, detector: FaceDetector | None = None,
                 batch_size: int = 32, passes: int = DEFAULT_PASSES, flip_tta: bool = False):
        """``detector=None`` takes every image as one face crop (``--no-detect``), which is never re-cropped."""
        if passes < 1:
            raise KpjaxError(f"--passes {passes}: expected at least 1")
        self.graphdef, self.params, self.rest = split_model(model)
        self.config = config
        self.layout = config.layout
        self.detector = detector
        self.batch_size = batch_size
        self.passes = passes
        self.flip_permutation = self.layout.flip_permutation if flip_tta else None

    def locate(self, image: np.ndarray) -> list[tuple[Detection, np.ndarray]]:
        """Each face's detection and its image -> frame affine."""
        size = self.config.size
        if self.detector is None or is_face_crop(image, size):
            matrix = resize_matrix(image.shape[:2], size)
            return [(Detection(frame_box(matrix, size), None), matrix)]
        return [(d, box_matrix(d.box, size)) for d in self.detector(image)]

    def frame_keypoints(self, frames: np.ndarray) -> np.ndarray:
        """(N, K, 2) keypoints in frame pixels, batches padded to a power of two (at most ``batch_size``)."""
        n = len(frames)
        if n == 0:
            return np.zeros((0, self.layout.num_keypoints, 2), np.float32)
        batch = min(self.batch_size, 1 << (n - 1).bit_length())
        if n < batch:
            frames = np.concatenate([frames, np.zeros((batch - n, *frames.shape[1:]), frames.dtype)])
        normalised = predict_normalised(self.graphdef, self.params, self.rest, frames, batch,
                                        self.flip_permutation)[:n]
        return denormalise(normalised, self.config.size).reshape(n, -1, 2)

    def __call__(self, images: list[np.ndarray], detections: list[list[Detection]] | None = None) -> list[list[Face]]:
        """Every face of every image, the crops of all images predicted together, pass by pass; ``detections``
        (one list per image) replaces the detector, e.g. with boxes that follow faces from a previous frame."""
        size, color = self.config.size, self.config.color
        located = ([self.locate(image) for image in images] if detections is None else
                   [[(d, box_matrix(d.box, size)) for d in found] for found in detections])
        faces = [(i, d, m) for i, found in enumerate(located) for d, m in found]
        matrices = [m for _, _, m in faces]
        points: list[np.ndarray] = [np.zeros((0, 2))] * len(faces)
        active = list(range(len(faces)))
        for step in range(self.passes):
            frames = [warp(images[faces[k][0]], matrices[k], size, color) for k in active]
            predicted = self.frame_keypoints(np.stack(frames) if frames else np.zeros((0,)))
            still_moving = []
            for k, frame_points in zip(active, predicted):
                points[k] = apply_affine(invert_affine(matrices[k]), frame_points)
                if step + 1 < self.passes and faces[k][1].score is not None:  # a whole-image crop stays as given
                    recrop = similarity_crop(points[k], self.layout.name, size)
                    if crop_change(matrices[k], recrop, size) >= CONVERGED_PX:
                        matrices[k] = recrop
                        still_moving.append(k)
            active = still_moving
            if not active:
                break
        result: list[list[Face]] = [[] for _ in images]
        for (i, d, _), face_points in zip(faces, points):
            result[i].append(Face(d.box, d.score, face_points))
        return result
