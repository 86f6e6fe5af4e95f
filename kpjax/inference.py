"""The network at inference, for every caller: evaluate, predict, video, submit and serve.

``predict_with_errors`` runs a forward pass (``kpjax.forward``: XLA's jitted
step, or onnxruntime on the exported graph) over any number of face crops in
fixed-size batches, with optional flip test-time augmentation.

``Predictor`` takes whole images: each face is cropped into the model's frame
by one affine (``kpjax.image``), from its detector box
(``kpjax.detect.box_matrix``) or, for an image that is already a face crop, by
stretching the whole image; the crop is then refined from the face's own
keypoints, and the keypoints mapped back to the image's pixels. The crops of
many images go through the network together in power-of-two batches, one
call per batch. Photos run on onnxruntime, the faster engine on CPU for the
same outputs (benchmarks/inference_engines.py).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from kpjax.augment import flip_targets
from kpjax.calibration import apply_offset, offset_of
from kpjax.config import TrainConfig
from kpjax.detect import Detection, FaceDetector, box_matrix, frame_box, is_face_crop
from kpjax.errors import KpjaxError
from kpjax.export import onnx_forward
from kpjax.forward import Forward, xla_forward
from kpjax.image import apply_affine, compose_affine, invert_affine, mirror_matrix, resize_matrix, warp
from kpjax.keypoints import OUTER_CORNERS, denormalise
from kpjax.models import LAPLACE_MEAN_DISTANCE
from kpjax.records import Face
from kpjax.sources.convert import kaggle_points, mean_face

PREDICT_BATCH = 256
# Refinement stops once a face's crop moves less than this (frame pixels). The second pass is what pays (3.33 % ->
# 3.23 % NME end to end, shipped model); at 0.5 px nearly every face took a third, which bought nothing: 3.23 %
# either way (`python experiments/photos_end_to_end.py --pipelines '3 passes' --converged-px 0.5`), 20.0 against
# 17.6 ms a photo (`python benchmarks/photo_latency.py --converged-px 0.5`, alternated).
CONVERGED_PX = 2.0
DEFAULT_PASSES = 3
# A detection whose keypoints are expected to miss by more than 8 % NME is not taken for a face (necks, ties,
# shirts). Chosen on the training persons' photos (`python experiments/detection.py --split train --detectors fast
# "fast + keypoints" --not-a-face-nme 0.06 0.07 0.1`): on 450 of them it more than halves the fast detector's false
# faces (0.049 -> 0.020 a photo; at a failure's NME, 300-W's 10 %, 0.022) and finds one face fewer, 92.4 % against
# 92.7 %. Validation figures in EXPERIMENTS.md, "Finding faces". Needs an error head.
NOT_A_FACE_NME = 0.08


def predict_with_errors(forward: Forward, images: np.ndarray, batch_size: int = PREDICT_BATCH,
                        flip_permutation: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 2K) predictions in the seed's units and each keypoint's expected error (N, K, frame pixels; None
    without an error head), in fixed-size batches so one compilation serves all.

    With ``flip_permutation``, each is averaged with the mirrored face's prediction mapped back (flip
    test-time augmentation).
    """
    points, errors = [], []
    batch_size = min(batch_size, len(images)) or 1
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        chunk_points, chunk_errors = forward(padded)
        points.append(np.asarray(chunk_points)[: len(chunk)])
        errors.append(None if chunk_errors is None else np.asarray(chunk_errors)[: len(chunk)])
    predictions = np.concatenate(points) if points else np.zeros((0, 0), np.float32)
    expected = None if not errors or errors[0] is None else np.concatenate(errors)
    if flip_permutation is not None and len(images):
        mirrored, mirrored_errors = predict_with_errors(forward, np.ascontiguousarray(images[:, :, ::-1]), batch_size)
        unflipped, _ = flip_targets(jnp.asarray(mirrored), jnp.ones(mirrored.shape, bool), flip_permutation,
                                    images.shape[2])
        predictions = (predictions + np.asarray(unflipped)) / 2
        if expected is not None:
            expected = (expected + mirrored_errors[:, list(flip_permutation)]) / 2
    return predictions, expected


def predict_normalised(forward: Forward, images: np.ndarray, batch_size: int = PREDICT_BATCH,
                       flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """``predict_with_errors``'s predictions alone."""
    return predict_with_errors(forward, images, batch_size, flip_permutation)[0]


def predict_model(model: nnx.Module, images: np.ndarray, batch_size: int = PREDICT_BATCH,
                  flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """Predictions in the seed's units (see ``predict_normalised``), by XLA, as training and evaluation make them,
    moved by the model's calibration (``kpjax.calibration``) where it has one."""
    predictions = predict_normalised(xla_forward(model), images, batch_size, flip_permutation)
    return apply_offset(predictions, offset_of(model), images.shape[1])


def expected_nme(points: np.ndarray, errors: np.ndarray, layout_name: str) -> float:
    """The NME a face's keypoints are expected to have (its quality score): the root mean expected squared error
    of its points over its predicted outer-eye-corner distance, under the error head's Laplace model."""
    a, b = OUTER_CORNERS[layout_name]
    mean_squared = float(np.mean(4 * (errors / LAPLACE_MEAN_DISTANCE) ** 2))
    return float(np.sqrt(mean_squared) / max(np.linalg.norm(points[a] - points[b]), 1e-6))


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
    again, up to ``passes`` times or until its crop moves less than ``converged_px``: the detector's box
    places the first crop only roughly, the keypoints place the next one the way training crops are placed.
    With ``flip_tta``, the last crop is predicted mirrored too (``with_mirrored``). With ``average_passes``, a
    face's keypoints and expected errors are the mean of its last two passes': the two crops place the face
    differently, so their errors partly cancel, at no extra network call (end to end, 3.23 % -> 3.18 % NME on the
    model shipped before the current one; EXPERIMENTS.md, "Headline").
    A detected face whose expected NME (its quality score) is above ``not_a_face_nme`` is dropped as no face.
    """

    def __init__(self, model: nnx.Module, config: TrainConfig, detector: FaceDetector | None = None,
                 batch_size: int = 32, passes: int = DEFAULT_PASSES, flip_tta: bool = False,
                 not_a_face_nme: float | None = NOT_A_FACE_NME, converged_px: float = CONVERGED_PX,
                 average_passes: bool = True):
        """``detector=None`` takes every image as one face crop (``--no-detect``), which is never re-cropped."""
        if passes < 1:
            raise KpjaxError(f"--passes {passes}: expected at least 1")
        self.forward = onnx_forward(model, config, stop_spinning=detector is not None)
        self.offset = offset_of(model)
        self.config = config
        self.layout = config.layout
        self.detector = detector
        self.batch_size = batch_size
        self.passes = passes
        self.flip_permutation = self.layout.flip_permutation if flip_tta else None
        self.not_a_face_nme = not_a_face_nme
        self.converged_px = converged_px
        self.average_passes = average_passes

    def locate(self, image: np.ndarray) -> list[tuple[Detection, np.ndarray]]:
        """Each face's detection and its image -> frame affine."""
        size = self.config.size
        if self.detector is None or is_face_crop(image, size):
            matrix = resize_matrix(image.shape[:2], size)
            return [(Detection(frame_box(matrix, size), None), matrix)]
        return [(d, box_matrix(d.box, size)) for d in self.detector(image)]

    def frame_keypoints(self, frames: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, K, 2) calibrated keypoints and (N, K) expected errors (None without an error head) in frame pixels,
        batches padded to a power of two (at most ``batch_size``); ``mirror``: the frames hold mirrored faces."""
        n = len(frames)
        if n == 0:
            return np.zeros((0, self.layout.num_keypoints, 2), np.float32), None
        batch = min(self.batch_size, 1 << (n - 1).bit_length())
        if n < batch:
            frames = np.concatenate([frames, np.zeros((batch - n, *frames.shape[1:]), frames.dtype)])
        normalised, errors = predict_with_errors(self.forward, frames, batch)
        normalised = apply_offset(normalised[:n], self.offset, self.config.size,
                                  self.layout.flip_permutation if mirror else None)
        points = denormalise(normalised, self.config.size).reshape(n, -1, 2)
        return points, None if errors is None else errors[:n]

    def placed_keypoints(self, crops: list[tuple[np.ndarray, np.ndarray]], mirror: bool = False,
                         ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each (image, image -> frame affine) crop's keypoints and expected errors in image pixels, the crops
        predicted together; ``mirror``: the affines mirror the face."""
        size, color = self.config.size, self.config.color
        frames = [warp(image, matrix, size, color) for image, matrix in crops]
        predicted, expected = self.frame_keypoints(np.stack(frames) if frames else np.zeros((0,)), mirror)
        return [(apply_affine(invert_affine(matrix), frame_points),  # errors: frame pixels times the crop's scale
                 None if expected is None else expected[j] / np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
                for j, ((_, matrix), frame_points) in enumerate(zip(crops, predicted))]

    def with_mirrored(self, images: list[np.ndarray], matrices: list[np.ndarray], points: list[np.ndarray],
                      errors: list[np.ndarray | None]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Flip test-time augmentation on each face's last crop alone: its keypoints (and expected errors)
        averaged with those of the mirrored crop, mapped back and their left and right swapped. The passes before
        only place that crop."""
        mirror, swap = mirror_matrix(self.config.size), list(self.flip_permutation)
        flipped = self.placed_keypoints([(image, compose_affine(mirror, m)) for image, m in zip(images, matrices)],
                                        mirror=True)
        return ([(p + q[swap]) / 2 for p, (q, _) in zip(points, flipped)],
                [None if e is None else (e + f[swap]) / 2 for e, (_, f) in zip(errors, flipped)])

    def __call__(self, images: list[np.ndarray], detections: list[list[Detection]] | None = None) -> list[list[Face]]:
        """Every face of every image, the crops of all images predicted together, pass by pass; ``detections``
        (one list per image) replaces the detector, e.g. with boxes that follow faces from a previous frame."""
        size = self.config.size
        located = ([self.locate(image) for image in images] if detections is None else
                   [[(d, box_matrix(d.box, size)) for d in found] for found in detections])
        faces = [(i, d, m) for i, found in enumerate(located) for d, m in found]
        matrices = [m for _, _, m in faces]
        estimates: list[list[tuple[np.ndarray, np.ndarray | None]]] = [[] for _ in faces]  # each face's passes'
        active = list(range(len(faces)))
        for step in range(self.passes):
            placed = self.placed_keypoints([(images[faces[k][0]], matrices[k]) for k in active])
            still_moving = []
            for k, (face_points, face_errors) in zip(active, placed):
                estimates[k].append((face_points, face_errors))
                if step + 1 < self.passes and faces[k][1].score is not None:  # a whole-image crop stays as given
                    recrop = similarity_crop(face_points, self.layout.name, size)
                    if crop_change(matrices[k], recrop, size) >= self.converged_px:
                        matrices[k] = recrop
                        still_moving.append(k)
            active = still_moving
            if not active:
                break
        points = [face_estimates[-1][0] for face_estimates in estimates]
        errors = [face_estimates[-1][1] for face_estimates in estimates]
        if self.flip_permutation is not None:
            points, errors = self.with_mirrored([images[i] for i, _, _ in faces], matrices, points, errors)
        for k, face_estimates in enumerate(estimates):
            if self.average_passes and len(face_estimates) > 1:
                earlier_points, earlier_errors = face_estimates[-2]
                points[k] = (points[k] + earlier_points) / 2
                errors[k] = None if errors[k] is None else (errors[k] + earlier_errors) / 2
        result: list[list[Face]] = [[] for _ in images]
        for (i, d, _), face_points, face_errors in zip(faces, points, errors):
            quality = None if face_errors is None else expected_nme(face_points, face_errors, self.layout.name)
            if None not in (quality, self.not_a_face_nme, d.score) and quality > self.not_a_face_nme:
                continue  # not a face: a whole image taken as the face (no score) is always kept
            result[i].append(Face(d.box, d.score, face_points, face_errors, quality))
        return result
