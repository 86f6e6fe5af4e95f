"""Distribution stats against Kaggle's labels; on the real shared sources when they are present."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kpjax.keypoints import KAGGLE_MEAN_FACE, KAGGLE_NAMES
from kpjax.sources import LoadOptions, load_one
from kpjax.stats import KAGGLE_REFERENCE, data_stats, format_stats, keypoint_stats, read_reference

SOURCES_68 = ("youtube-faces-68", "fgnet-68", "helen-68-train")


def kaggle_like(count=3000, spread=1.0, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return KAGGLE_MEAN_FACE + shift + spread * KAGGLE_REFERENCE.std * rng.standard_normal((count, 15, 2))


def test_kaggle_like_keypoints_pass():
    stats = keypoint_stats(kaggle_like())
    assert stats["passes"] == {"mean": True, "std": True, "rmse": True}
    assert stats["reference_rmse"] == pytest.approx(3.18, abs=0.01)
    assert stats["std_ratio_median"] == pytest.approx(1.0, abs=0.05)


def test_pinned_or_shifted_keypoints_fail():
    pinned = keypoint_stats(kaggle_like(spread=0.3))
    assert not pinned["passes"]["std"] and not pinned["passes"]["rmse"] and pinned["passes"]["mean"]
    shifted = keypoint_stats(kaggle_like(shift=np.array([4.0, 0.0])))
    assert not shifted["passes"]["mean"] and shifted["max_mean_offset"] == pytest.approx(4.0, abs=0.3)


def test_partial_keypoints_compare_on_their_own_coordinates():
    """Five-point data (MTFL) is measured on the keypoints it has, against Kaggle's spread there."""
    keypoints = kaggle_like()
    present = [KAGGLE_NAMES.index(n) for n in ("left_eye_center", "right_eye_center", "nose_tip")]
    keypoints[:, [k for k in range(15) if k not in present]] = np.nan
    stats = keypoint_stats(keypoints)
    assert all(stats["passes"].values()) and stats["complete"] == 0
    assert set(stats["keypoints"]) == {KAGGLE_NAMES[k] for k in present}
    assert stats["reference_rmse"] == pytest.approx(np.sqrt(np.mean(KAGGLE_REFERENCE.std[present] ** 2)))


def test_format_stats_is_a_table():
    stats = {"reference": {"rows": 2140}, "sources": {"all": keypoint_stats(kaggle_like())},
             "criteria": {"max_mean_offset": 3.0, "std_ratio_range": (0.4, 2.0),
                          "std_ratio_median_range": (0.85, 1.2), "rmse_tolerance": 0.15}}
    lines = format_stats(stats).splitlines()
    assert lines[0].startswith("source") and lines[1].startswith("all") and "FAIL" not in lines[1]


def test_reference_constants_match_the_label_file(shared_data):
    reference = read_reference(shared_data / "kaggle-fkd-labels" / "facial_keypoints.csv")
    assert reference.rows == KAGGLE_REFERENCE.rows == 2140
    np.testing.assert_allclose(reference.mean, KAGGLE_REFERENCE.mean, atol=0.01)
    np.testing.assert_allclose(reference.std, KAGGLE_REFERENCE.std, atol=0.001)


def test_shared_68_point_sources_are_distributed_like_kaggle(shared_data):
    """Together they meet every criterion; each alone has every mean keypoint within 3 px (uses the cache)."""
    stats = data_stats([str(shared_data / name) for name in SOURCES_68], LoadOptions(),
                       reference=shared_data / "kaggle-fkd-labels" / "facial_keypoints.csv")
    print(format_stats(stats))
    together = stats["sources"]["all"]
    assert together["passes"] == {"mean": True, "std": True, "rmse": True}, json.dumps(together, indent=1)
    for name in SOURCES_68:
        assert stats["sources"][name]["passes"]["mean"], (name, stats["sources"][name]["max_mean_offset"])


def test_shared_groups_name_people(shared_data):
    youtube = load_one(str(shared_data / "youtube-faces-68"), LoadOptions())
    assert "youtube-faces-68:Luis_Fonsi" in set(youtube.groups)
    assert len(set(youtube.groups)) < len(youtube) / 3  # several frames per person
    fgnet = load_one(str(shared_data / "fgnet-68"), LoadOptions())
    assert len(set(fgnet.groups)) == 82 and "fgnet-68:001" in set(fgnet.groups)
