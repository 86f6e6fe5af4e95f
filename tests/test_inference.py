"""The network at inference: the model split, the jitted predict step, batching, flip TTA and the crop refinement."""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kpjax.augment import flip_targets
from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.forward import predict_step, split_model, xla_forward
from kpjax.inference import CONVERGED_PX, Predictor, crop_change, predict_model, predict_normalised, similarity_crop
from kpjax.keypoints import IBUG68, KAGGLE
from kpjax.models import create_model, to_input
from kpjax.sources.convert import mean_face
from kpjax.sources.synthetic import make_faces


@pytest.fixture(scope="module")
def model() -> nnx.Module:
    return create_model("seed", num_outputs=30, size=96, channels=1, seed=0)


def test_config_names_its_layout_and_channels():
    assert (TrainConfig().layout, TrainConfig().channels) == (KAGGLE, 1)
    assert (TrainConfig(keypoints="ibug68", color=True).layout, TrainConfig(color=True).channels) == (IBUG68, 3)


def test_split_model_keeps_the_parameters_apart_and_predicts_as_the_model(model):
    graphdef, params, rest = split_model(model)
    for part, kind in ((params, nnx.Param), (rest, nnx.Not(nnx.Param))):
        expected = jax.tree.leaves(nnx.state(model, kind))
        assert len(jax.tree.leaves(part)) == len(expected)
        for leaf, want in zip(jax.tree.leaves(part), expected):
            np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want))
    images = make_faces(3, seed=1).images
    np.testing.assert_allclose(np.asarray(predict_step(graphdef, params, rest, images)[0]),
                               np.asarray(model(to_input(images))), atol=1e-6)


def test_predictions_do_not_depend_on_the_batch(model):
    images = make_faces(7, seed=2).images
    whole = predict_model(model, images)
    assert whole.shape == (7, 30)
    np.testing.assert_allclose(predict_model(model, images, batch_size=3), whole, atol=1e-5)
    np.testing.assert_allclose(predict_normalised(xla_forward(model), images[:1]), whole[:1], atol=1e-5)
    assert predict_model(model, images[:0]).shape[0] == 0


def test_flip_tta_of_a_mirror_symmetric_predictor_changes_nothing(model):
    images = np.zeros((2, 96, 96, 1), np.uint8)  # a blank image is its own mirror image
    plain = predict_model(model, images)
    tta = predict_model(model, images, flip_permutation=KAGGLE.flip_permutation)
    expected, _ = flip_targets(jnp.asarray(plain), jnp.ones(plain.shape, bool), KAGGLE.flip_permutation, 96)
    np.testing.assert_allclose(tta, (plain + np.asarray(expected)) / 2, atol=1e-6)


def test_flip_tta_is_mirror_equivariant_in_pixel_index_coordinates(model):
    """Mirror a face and the flip-averaged points mirror with it (x -> 95 - x, sides swapped), whatever the
    network learnt: what lets experiments/conventions.py read a source's pixel origin from its x residual."""
    images = make_faces(3, seed=3).images
    tta = predict_model(model, images, flip_permutation=KAGGLE.flip_permutation)
    mirrored = predict_model(model, np.ascontiguousarray(images[:, :, ::-1]), flip_permutation=KAGGLE.flip_permutation)
    expected, _ = flip_targets(jnp.asarray(tta), jnp.ones(tta.shape, bool), KAGGLE.flip_permutation, 96)
    np.testing.assert_allclose(mirrored, np.asarray(expected), atol=1e-5)


def test_predictor_flip_tta_is_mirror_equivariant_in_the_photo():
    """The Predictor mirrors each face's last crop and maps its points back to the photo: mirror a whole (not
    square) image taken as one face and its points mirror with it (x -> W - 1 - x, sides swapped), their
    expected errors swapped with them."""
    model = create_model("heatmap", num_outputs=30, size=96, channels=1, seed=0, error_head=True)
    config = TrainConfig(model="heatmap")
    predictor = Predictor(model, config, detector=None, flip_tta=True)
    image = cv2.resize(make_faces(1, seed=4).images[0], (120, 100), interpolation=cv2.INTER_LINEAR)[..., None]
    [[face]], [[mirrored]] = predictor([image]), predictor([np.ascontiguousarray(image[:, ::-1])])
    swap = list(KAGGLE.flip_permutation)
    np.testing.assert_allclose(face.points, mirrored.points[swap] * [-1, 1] + [image.shape[1] - 1, 0], atol=1e-3)
    np.testing.assert_allclose(face.errors, mirrored.errors[swap], rtol=1e-4)
    [[plain]] = Predictor(model, config, detector=None)([image])
    assert np.abs(plain.points - face.points).max() > 1e-3  # the untrained network is not mirror-symmetric


def test_similarity_crop_takes_a_turned_and_moved_face_back_to_the_mean_face():
    angle, scale, shift = np.radians(20), 2.5, np.array([130.0, 70.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    in_photo = scale * mean_face(96) @ rotation.T + shift
    matrix = similarity_crop(in_photo, KAGGLE.name, 96)
    np.testing.assert_allclose(in_photo @ matrix[:, :2].T + matrix[:, 2], mean_face(96), atol=1e-9)
    assert crop_change(matrix, matrix, 96) == pytest.approx(0.0, abs=1e-9)
    moved = matrix + np.array([[0.0, 0.0, 2 * CONVERGED_PX], [0.0, 0.0, 0.0]])
    assert crop_change(matrix, moved, 96) == pytest.approx(2 * CONVERGED_PX)


def test_predictor_refuses_no_passes(model):
    with pytest.raises(KpjaxError, match="--passes 0: expected at least 1"):
        Predictor(model, TrainConfig(), passes=0)


def test_a_kaggle_crop_is_taken_as_a_face_by_a_model_of_another_size():
    """A 128-pixel model handed Kaggle's 96 x 96 crops predicts on each whole crop, scaled into its frame, and never
    looks for a face in it: the points it gives the crop resized to 128 x 128, scaled back."""
    model = create_model("heatmap", num_outputs=30, size=128, channels=1, seed=0)
    config = TrainConfig(model="heatmap", size=128)

    def no_detector(image):
        raise AssertionError("a face crop went to the detector")

    crop = make_faces(1, seed=3).images[0]
    [[face]] = Predictor(model, config, no_detector, passes=1)([crop])
    assert face.score is None and face.box[2:] == pytest.approx((96.0, 96.0))
    resized = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_LINEAR)[..., None]
    [[big]] = Predictor(model, config, no_detector, passes=1)([resized])
    np.testing.assert_allclose((face.points + 0.5) * 128 / 96 - 0.5, big.points, atol=0.5)
