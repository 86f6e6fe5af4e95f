"""Kaggle submissions: one RowId,Location row per lookup row, in its order, clipped to the frame, checked first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kpjax.cli import app
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE
from kpjax.records import Face
from kpjax.sources.synthetic import make_faces
from kpjax.submit import check_submission, make_submission


@pytest.fixture
def kaggle_test(tmp_path):
    """A test.csv of 3 drawn faces (ImageIds 1..3) and a lookup table asking for a few features of each."""
    images = make_faces(3, seed=2).images
    pd.DataFrame({"ImageId": [1, 2, 3], "Image": [" ".join(map(str, im.reshape(-1))) for im in images]}).to_csv(
        tmp_path / "test.csv", index=False)
    features = ["left_eye_center_x", "left_eye_center_y", "nose_tip_y", "mouth_center_bottom_lip_x"]
    lookup = pd.DataFrame([(image_id, feature) for image_id in (2, 1, 3) for feature in features],
                          columns=["ImageId", "FeatureName"])
    lookup.insert(0, "RowId", np.arange(1, len(lookup) + 1))
    lookup["Location"] = ""
    lookup.to_csv(tmp_path / "IdLookupTable.csv", index=False)
    return tmp_path


def test_submit_writes_kaggle_format(trained_run, kaggle_test):
    out = kaggle_test / "sub" / "submission.csv"
    result = CliRunner().invoke(app, ["submit", str(trained_run), "--test", str(kaggle_test / "test.csv"),
                                      "--lookup", str(kaggle_test / "IdLookupTable.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == "RowId,Location"
    submission = pd.read_csv(out)
    assert list(submission["RowId"]) == list(range(1, 13))
    assert submission["Location"].between(0, 96).all()
    left_eye_x = submission["Location"].iloc[0]
    assert 48 < left_eye_x < 96  # the subject's left eye is on the image's right


def test_values_are_clipped_and_unknown_images_refused(monkeypatch, kaggle_test):
    from kpjax.config import TrainConfig
    from kpjax.sources.kaggle import read_lookup, read_test

    class OutsideFrame:
        """Every face's keypoints at (-5, 120): outside the 0..96 frame both ways."""

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, images):
            return [[Face((0, 0, 96, 96), None, np.tile([-5.0, 120.0], (KAGGLE.num_keypoints, 1)))] for _ in images]

    monkeypatch.setattr("kpjax.submit.Predictor", OutsideFrame)
    ids, images = read_test(kaggle_test / "test.csv")
    lookup = read_lookup(kaggle_test / "IdLookupTable.csv")
    submission = make_submission(None, TrainConfig(), ids, images, lookup)
    assert len(submission) == len(lookup)
    assert set(submission["Location"]) == {0.0, 96.0}
    check_submission(submission, lookup)
    with pytest.raises(KpjaxError, match="not in the test set"):
        make_submission(None, TrainConfig(), ids[:2], images[:2], lookup)


def test_check_refuses_malformed_submissions():
    lookup = pd.DataFrame({"RowId": [1, 2], "ImageId": [1, 1], "FeatureName": ["nose_tip_x", "nose_tip_y"]})
    good = pd.DataFrame({"RowId": [1, 2], "Location": [40.0, 60.0]})
    check_submission(good, lookup)
    with pytest.raises(KpjaxError, match="columns"):
        check_submission(good.rename(columns={"Location": "location"}), lookup)
    with pytest.raises(KpjaxError, match="RowIds"):
        check_submission(good.iloc[:1], lookup)
    with pytest.raises(KpjaxError, match="outside"):
        check_submission(good.assign(Location=[40.0, 97.0]), lookup)
