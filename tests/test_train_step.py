"""Flip augmentation, the masked loss, the group split and that training learns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kpjax.augment import flip_targets, make_augmentation, random_affine, random_flip, random_photometric
from kpjax.config import TrainConfig
from kpjax.dataset import group_split
from kpjax.keypoints import IBUG68, KAGGLE, normalise
from kpjax.models import create_model
from kpjax.sources.synthetic import make_faces
from kpjax.train_step import (WING_CURVATURE_PX, WING_WIDTH_PX, init_state, make_optimizer, make_train_step,
                              masked_mse, masked_wing)


def _targets(points_px: np.ndarray, size: int = 96):
    flat = normalise(points_px.reshape(1, -1), size).astype(np.float32)
    return jnp.asarray(flat), jnp.ones_like(flat, dtype=bool)


def test_flip_mirrors_x_and_swaps_subject_left_and_right():
    points = np.zeros((15, 2), np.float32)
    points[KAGGLE.names.index("left_eye_center")] = (66.0, 37.0)
    points[KAGGLE.names.index("right_eye_center")] = (30.0, 38.0)
    points[KAGGLE.names.index("nose_tip")] = (48.0, 60.0)
    targets, mask = _targets(points)
    flipped, _ = flip_targets(targets, mask, KAGGLE.flip_permutation, 96)
    flipped_px = np.asarray(flipped).reshape(15, 2) * 48 + 48
    # The subject's left eye of the mirrored face is the old right eye, mirrored: x -> 95 - x.
    np.testing.assert_allclose(flipped_px[KAGGLE.names.index("left_eye_center")], (95 - 30.0, 38.0), atol=1e-4)
    np.testing.assert_allclose(flipped_px[KAGGLE.names.index("right_eye_center")], (95 - 66.0, 37.0), atol=1e-4)
    np.testing.assert_allclose(flipped_px[KAGGLE.names.index("nose_tip")], (47.0, 60.0), atol=1e-4)


def test_kaggle_flip_swaps_every_left_right_pair():
    perm = KAGGLE.flip_permutation
    for name in KAGGLE.names:
        partner = KAGGLE.names[perm[KAGGLE.names.index(name)]]
        expected = name.replace("left", "@").replace("right", "left").replace("@", "right")
        assert partner == expected, (name, partner)
    assert KAGGLE.names[perm[KAGGLE.names.index("mouth_left_corner")]] == "mouth_right_corner"


@pytest.mark.parametrize("layout", [KAGGLE, IBUG68])
def test_flip_twice_is_identity_and_pairs_are_mirror_partners(layout):
    perm = np.array(layout.flip_permutation)
    np.testing.assert_array_equal(perm[perm], np.arange(layout.num_keypoints))
    targets = jax.random.uniform(jax.random.key(0), (4, 2 * layout.num_keypoints), minval=-1, maxval=1)
    mask = jax.random.bernoulli(jax.random.key(1), 0.8, targets.shape)
    once = flip_targets(targets, mask, layout.flip_permutation, 96)
    twice = flip_targets(*once, layout.flip_permutation, 96)
    np.testing.assert_allclose(twice[0], targets, atol=1e-6)
    np.testing.assert_array_equal(twice[1], mask)


def test_random_flip_moves_image_and_keypoint_together():
    image = np.zeros((1, 96, 96, 1), np.uint8)
    image[0, 40, 70, 0] = 255  # a bright dot exactly at the subject's left eye
    points = np.tile(np.array([[48.0, 48.0]], np.float32), (15, 1))
    points[0] = (70.0, 40.0)
    targets, mask = _targets(points)
    batch = {"images": jnp.asarray(np.repeat(image, 64, 0)), "targets": jnp.tile(targets, (64, 1)),
             "mask": jnp.tile(mask, (64, 1))}
    out = random_flip(batch, jax.random.key(3), KAGGLE.flip_permutation)
    flipped = np.flatnonzero(np.asarray(out["images"][:, 40, 70, 0]) == 0)
    assert 10 < len(flipped) < 54  # about half the batch, chosen per sample
    for i in flipped:
        row, col = np.unravel_index(np.argmax(np.asarray(out["images"][i, ..., 0])), (96, 96))
        dot_px = np.asarray(out["targets"][i]).reshape(15, 2)[1] * 48 + 48  # now the subject's right eye
        np.testing.assert_allclose(dot_px, (col, row), atol=1e-4)


def test_random_flip_swaps_hidden_points_with_their_keypoints():
    hidden = np.zeros((64, 15), bool)
    hidden[:, 0] = True  # the subject's left eye centre, hidden
    targets, mask = _targets(np.full((15, 2), 48.0, np.float32))
    batch = {"images": jnp.zeros((64, 96, 96, 1), jnp.uint8), "targets": jnp.tile(targets, (64, 1)),
             "mask": jnp.tile(mask, (64, 1)), "hidden": jnp.asarray(hidden)}
    out = random_flip(batch, jax.random.key(3), KAGGLE.flip_permutation)
    flipped = np.asarray(out["hidden"][:, 1])  # now the subject's right eye centre
    assert 10 < flipped.sum() < 54 and (np.asarray(out["hidden"]).sum(axis=1) == 1).all()
    np.testing.assert_array_equal(np.asarray(out["hidden"][:, 0]), ~flipped)


def test_masked_mse_ignores_missing_values_and_their_gradient():
    predictions = jnp.array([[0.5, 0.1, 9.0, -3.0]])
    targets = jnp.array([[0.0, 0.1, 0.0, 0.0]])
    mask = jnp.array([[True, True, False, False]])
    assert float(masked_mse(predictions, targets, mask)) == pytest.approx(0.125)
    grad = jax.grad(masked_mse)(predictions, targets, mask)
    np.testing.assert_allclose(grad, [[0.5, 0.0, 0.0, 0.0]])
    # A NaN label under the mask must not poison the loss either.
    assert np.isfinite(float(masked_mse(predictions, targets.at[0, 3].set(jnp.nan), mask)))


def test_wing_loss_is_logarithmic_below_its_width_then_l1_and_masked():
    """In frame pixels (a 96-px frame: 1 normalised unit is 48 px): w ln(1 + e / eps) up to the width w, then
    continuous with slope 1; a missing value adds nothing, not even gradient."""
    size, w, eps = 96, WING_WIDTH_PX, WING_CURVATURE_PX
    errors_px = jnp.array([[1.0, w / 2, 3 * w, 50.0]])
    mask = jnp.array([[True, True, True, False]])
    per_value = [w * np.log1p(1.0 / eps), w * np.log1p(w / 2 / eps), 3 * w - w + w * np.log1p(w / eps)]
    assert float(masked_wing(errors_px / 48, jnp.zeros((1, 4)), mask, size)) == pytest.approx(np.mean(per_value),
                                                                                               rel=1e-5)
    grad = np.asarray(jax.grad(masked_wing)(errors_px / 48, jnp.zeros((1, 4)), mask, size))[0] / 48 * 3
    np.testing.assert_allclose(grad, [w / (eps + 1.0), w / (eps + w / 2), 1.0, 0.0], rtol=1e-5)  # d/d(error px) each
    just_below, just_above = (float(masked_wing(jnp.array([[e / 48]]), jnp.zeros((1, 1)), jnp.array([[True]]), size))
                              for e in (w - 1e-3, w + 1e-3))
    assert just_above - just_below == pytest.approx(2e-3 * 1.0, abs=5e-4)  # no jump at the width


def test_the_wing_step_learns_from_wing_and_still_reports_the_mse():
    """``loss="wing"`` changes what the keypoints learn from, not what the metrics call their loss (train_mse)."""
    data = make_faces(64, seed=1)
    batch = {"images": jnp.asarray(data.images), "targets": jnp.asarray(data.targets()),
             "mask": jnp.asarray(data.mask)}
    tx = make_optimizer(TrainConfig(learning_rate=3e-4), steps_per_epoch=1)
    updated, reported = {}, {}
    for loss in ("mse", "wing"):  # the same weights, batch and dropout: the same predictions before the update
        graphdef, state = init_state(create_model("seed", num_outputs=30, size=96, channels=1, seed=0), tx)
        params_before = jax.tree.map(np.asarray, state["params"])
        state, metrics = make_train_step(tx, None, loss)(graphdef, state, batch, jax.random.key(0))
        reported[loss] = float(metrics["loss"])
        updated[loss] = jax.tree.map(lambda a, b: np.asarray(a) - b, state["params"], params_before)
    assert reported["wing"] == pytest.approx(reported["mse"], rel=1e-6)
    differences = [np.abs(a - b).max()
                   for a, b in zip(jax.tree.leaves(updated["mse"]), jax.tree.leaves(updated["wing"]))]
    assert max(differences) > 1e-6


def test_group_split_keeps_each_group_on_one_side_and_is_seeded():
    groups = np.repeat(np.array([f"person{i}" for i in range(500)]), 4)
    train, val = group_split(groups, 0.2, seed=7)
    assert set(groups[train]).isdisjoint(groups[val])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(2000))
    assert 0.16 <= len(val) / 2000 <= 0.24
    np.testing.assert_array_equal(group_split(groups, 0.2, seed=7)[1], val)
    assert not np.array_equal(group_split(groups, 0.2, seed=8)[1], val)
    # Adding other sources leaves the validation side of the existing faces unchanged.
    more = np.concatenate([groups, [f"other{i}" for i in range(300)]])
    np.testing.assert_array_equal(group_split(more, 0.2, seed=7)[1][: len(val)], val)


def test_split_seed_keeps_one_validation_split_across_seeds():
    from kpjax.train import split_dataset

    faces = make_faces(200, seed=0)
    fixed = [split_dataset(faces, TrainConfig(batch_size=8, seed=s, split_seed=0))[1] for s in (0, 1, 2)]
    for val in fixed[1:]:
        np.testing.assert_array_equal(val, fixed[0])
    assert not np.array_equal(split_dataset(faces, TrainConfig(batch_size=8, seed=1))[1], fixed[0])


def _run_steps(steps: int, seed: int = 0):
    data = make_faces(64, seed=1)
    batch = {"images": jnp.asarray(data.images), "targets": jnp.asarray(data.targets()),
             "mask": jnp.asarray(data.mask)}
    model = create_model("seed", num_outputs=30, size=96, channels=1, seed=seed)
    tx = make_optimizer(TrainConfig(learning_rate=3e-4), steps_per_epoch=steps)
    graphdef, state = init_state(model, tx)
    step = make_train_step(tx, make_augmentation(TrainConfig(), KAGGLE))
    losses = []
    for i in range(steps):
        state, metrics = step(graphdef, state, batch, jax.random.fold_in(jax.random.key(seed), i))
        losses.append(float(metrics["loss"]))
    return losses, state


def test_training_lowers_the_loss_and_is_deterministic():
    losses, state = _run_steps(12)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    _, again = _run_steps(12)
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(again["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_random_affine_moves_keypoints_with_the_image():
    image = np.zeros((8, 96, 96, 1), np.float32)
    image[:, 30, 60, 0] = 255.0  # one bright dot, labelled as keypoint 0
    points = np.tile(np.array([[48.0, 48.0]], np.float32), (15, 1))
    points[0] = (60.0, 30.0)
    targets, mask = _targets(points)
    batch = {"images": jnp.asarray(image), "targets": jnp.tile(targets, (8, 1)), "mask": jnp.tile(mask, (8, 1))}
    out = random_affine(batch, jax.random.key(0), rotation=20.0, scale=0.2, shift=6.0, size=96)
    for i in range(8):
        warped = np.asarray(out["images"][i, ..., 0])
        ys, xs = np.nonzero(warped > 0)
        centre = np.average(np.stack([xs, ys], 1), axis=0, weights=warped[ys, xs])
        predicted = np.asarray(out["targets"][i]).reshape(15, 2)[0] * 48 + 48
        np.testing.assert_allclose(predicted, centre, atol=0.35)
    assert not np.allclose(out["targets"][0], out["targets"][1])  # per-sample parameters


def test_random_affine_crops_the_frame_out_of_its_context():
    """With a margin and no jitter the frame is cut out exactly; with jitter the dot still lands on its label."""
    from kpjax.dataset import Dataset
    from kpjax.keypoints import KAGGLE

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 96 + 2 * 16, 96 + 2 * 16, 1), dtype=np.uint8)
    keypoints = rng.uniform(30, 90, (4, 15, 2)).astype(np.float32)
    context = Dataset(images, keypoints, KAGGLE, np.arange(4).astype(str), np.full(4, "x"))
    framed = context.crop(16)
    batch = {"images": jnp.asarray(context.images), "targets": jnp.asarray(framed.targets()),
             "mask": jnp.asarray(framed.mask)}
    out = random_affine(batch, jax.random.key(0), rotation=0.0, scale=0.0, shift=0.0, size=96)
    np.testing.assert_allclose(np.asarray(out["images"]), framed.images.astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(np.asarray(out["targets"]), framed.targets(), atol=1e-6)
    np.testing.assert_allclose(context.targets(16), framed.targets(), atol=1e-6)
    assert context.crop(16).pad(16).keypoints.tolist() == context.keypoints.tolist()

    dot = np.zeros((8, 128, 128, 1), np.float32)
    dot[:, 30 + 16, 60 + 16, 0] = 255.0  # frame pixel (60, 30)
    points = np.tile(np.array([[48.0, 48.0]], np.float32), (15, 1))
    points[0] = (60.0, 30.0)
    targets, mask = _targets(points)
    batch = {"images": jnp.asarray(dot), "targets": jnp.tile(targets, (8, 1)), "mask": jnp.tile(mask, (8, 1))}
    out = random_affine(batch, jax.random.key(1), rotation=15.0, scale=0.15, shift=6.0, size=96)
    assert out["images"].shape == (8, 96, 96, 1)
    for i in range(8):
        warped = np.asarray(out["images"][i, ..., 0])
        ys, xs = np.nonzero(warped > 0)
        centre = np.average(np.stack([xs, ys], 1), axis=0, weights=warped[ys, xs])
        np.testing.assert_allclose(np.asarray(out["targets"][i]).reshape(15, 2)[0] * 48 + 48, centre, atol=0.35)


def test_photometric_keeps_range_and_targets():
    data = {"images": jnp.full((4, 96, 96, 1), 128, jnp.uint8), "targets": jnp.zeros((4, 30)),
            "mask": jnp.ones((4, 30), bool)}
    out = random_photometric(data, jax.random.key(0))
    assert float(out["images"].min()) >= 0 and float(out["images"].max()) <= 255
    assert len(np.unique(np.asarray(out["images"][:, 48, 48, 0]))) == 4
    np.testing.assert_array_equal(out["targets"], data["targets"])
