"""The Kaggle CSV readers on valid files and on each kind of malformed row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE
from kpjax.sources import LoadOptions, detect_format, load_data
from kpjax.sources.kaggle import read_lookup, read_test, read_training


def write_training(path, rows: int = 3, *, image=None, keypoint=None):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.uniform(10, 80, (rows, 30)).round(3), columns=KAGGLE.columns)
    frame.iloc[1, 4:8] = np.nan  # a partly labelled face, as in Kaggle's own data
    frame["Image"] = [" ".join(map(str, rng.integers(0, 256, 96 * 96))) for _ in range(rows)]
    if image is not None:
        frame.loc[rows - 1, "Image"] = image
    if keypoint is not None:
        frame["left_eye_inner_corner_x"] = frame["left_eye_inner_corner_x"].astype(object)
        frame.loc[rows - 1, "left_eye_inner_corner_x"] = keypoint
    frame.to_csv(path, index=False)
    return frame


def test_reads_training_csv_with_missing_keypoints_masked(tmp_path):
    frame = write_training(tmp_path / "training.csv")
    dataset = read_training(tmp_path / "training.csv", LoadOptions())
    assert dataset.images.shape == (3, 96, 96, 1) and dataset.images.dtype == np.uint8
    expected_pixels = np.array(frame["Image"][0].split(), dtype=np.uint8).reshape(96, 96)
    np.testing.assert_array_equal(dataset.images[0, ..., 0], expected_pixels)
    np.testing.assert_allclose(dataset.keypoints[0].ravel(), frame.iloc[0, :30].to_numpy(float), rtol=1e-6)
    assert dataset.mask[1].sum() == 26 and dataset.mask[0].all()
    assert np.all(dataset.targets()[~dataset.mask] == 0)
    np.testing.assert_allclose(dataset.targets()[0], (frame.iloc[0, :30].to_numpy(float) - 48) / 48, atol=1e-6)
    assert len(dataset.complete_only()) == 2


def test_folder_and_default_location(tmp_path, monkeypatch):
    write_training(tmp_path / "training.csv")
    assert detect_format(tmp_path) == "kaggle"
    monkeypatch.setenv("KPJAX_DATA", str(tmp_path))
    assert len(load_data(None)) == 3


def test_no_data_explains_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KPJAX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KpjaxError, match="kaggle competitions download"):
        load_data(None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image": "1 2 3"}, r"line 4, column Image: 3 pixel values, expected 9216"),
        ({"image": " ".join(["7"] * 9215 + ["x"])}, r"line 4, column Image: non-numeric pixel value"),
        ({"image": " ".join(["7"] * 9215 + ["300"])}, r"line 4, column Image: pixel value outside 0..255"),
        ({"keypoint": "abc"}, r"line 4, column left_eye_inner_corner_x: not a number \('abc'\)"),
        ({"keypoint": "120.5"}, r"line 4, column left_eye_inner_corner_x: keypoint 120.5 outside the 0..96 frame"),
    ],
)
def test_malformed_rows_name_file_line_and_column(tmp_path, kwargs, message):
    path = tmp_path / "training.csv"
    write_training(path, **kwargs)
    with pytest.raises(KpjaxError, match=message) as error:
        read_training(path, LoadOptions())
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file_and_missing_column(tmp_path):
    with pytest.raises(KpjaxError, match="no such file"):
        load_data([str(tmp_path / "training.csv")])
    path = tmp_path / "training.csv"
    write_training(path).drop(columns=["nose_tip_x"]).to_csv(path, index=False)
    with pytest.raises(KpjaxError, match=r"missing column\(s\) nose_tip_x"):  # the cause, not "unknown data format"
        load_data([str(path)])


def test_unknown_format_and_bad_synthetic_spec(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(KpjaxError, match="notes.txt: unknown data format"):
        load_data([str(tmp_path / "notes.txt")])
    with pytest.raises(KpjaxError, match="synthetic:N"):
        load_data(["synthetic:lots"])


def test_resizes_to_another_frame_size(tmp_path):
    write_training(tmp_path / "training.csv")
    small = read_training(tmp_path / "training.csv", LoadOptions(size=48, color=True))
    base = read_training(tmp_path / "training.csv", LoadOptions())
    assert small.images.shape == (3, 48, 48, 3)
    np.testing.assert_allclose(small.keypoints, (base.keypoints + 0.5) / 2 - 0.5, atol=1e-5)


def test_test_csv_and_lookup_table(tmp_path):
    pixels = " ".join(["5"] * 9216)
    pd.DataFrame({"ImageId": [1, 2], "Image": [pixels, pixels]}).to_csv(tmp_path / "test.csv", index=False)
    ids, images = read_test(tmp_path / "test.csv")
    assert ids.tolist() == [1, 2] and images.shape == (2, 96, 96, 1) and images.max() == 5
    lookup = pd.DataFrame({"RowId": [1, 2], "ImageId": [1, 2], "FeatureName": ["nose_tip_x", "left_ear_x"],
                           "Location": ["", ""]})
    lookup.to_csv(tmp_path / "IdLookupTable.csv", index=False)
    with pytest.raises(KpjaxError, match="line 3, column FeatureName: unknown keypoint 'left_ear_x'"):
        read_lookup(tmp_path / "IdLookupTable.csv")
