"""A Kaggle "Facial Keypoints Detection" submission: ``RowId,Location``, one row per IdLookupTable row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from flax import nnx

from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE, KAGGLE_SIZE
from kpjax.inference import Predictor
from kpjax.sources.kaggle import read_lookup, read_test

HEADER = ["RowId", "Location"]


def make_submission(model: nnx.Module, config: TrainConfig, ids: np.ndarray, images: np.ndarray,
                    lookup: pd.DataFrame) -> pd.DataFrame:
    """The lookup table's rows answered from the model's keypoints on the test images, clipped to the 0..96 frame."""
    if config.keypoints != KAGGLE.name:
        raise KpjaxError(f"this model predicts {config.keypoints} keypoints; a Kaggle submission needs kaggle")
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    unknown = ~lookup["ImageId"].isin(row_of.index)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise KpjaxError(f"lookup table line {row + 2}: ImageId {lookup['ImageId'].iloc[row]} is not in the test set")
    points = np.stack([faces[0].points for faces in Predictor(model, config, batch_size=256)(list(images))])
    columns = points.reshape(len(ids), -1)  # x, y per keypoint: the order of KAGGLE.columns
    column_of = {name: j for j, name in enumerate(KAGGLE.columns)}
    values = columns[row_of[lookup["ImageId"]].to_numpy(), lookup["FeatureName"].map(column_of).to_numpy()]
    return pd.DataFrame({"RowId": lookup["RowId"].to_numpy(), "Location": np.clip(values, 0.0, KAGGLE_SIZE)})


def check_submission(submission: pd.DataFrame, lookup: pd.DataFrame) -> None:
    """Kaggle rejects (or mis-scores) anything else: refuse it here, before the file is written."""
    if list(submission.columns) != HEADER:
        raise KpjaxError(f"submission columns {list(submission.columns)}, expected {HEADER}")
    if len(submission) != len(lookup) or not np.array_equal(submission["RowId"].to_numpy(), lookup["RowId"].to_numpy()):
        raise KpjaxError("submission rows do not match the lookup table's RowIds one for one")
    location = submission["Location"].to_numpy(np.float64)
    if not (np.isfinite(location).all() and (location >= 0).all() and (location <= KAGGLE_SIZE).all()):
        raise KpjaxError(f"submission has a Location outside 0..{KAGGLE_SIZE} or not a number")


def write_submission(model: nnx.Module, config: TrainConfig, test_csv: Path, lookup_csv: Path, out: Path) -> pd.DataFrame:
    """Predict test.csv, check the answer against the lookup table, then write it."""
    ids, images = read_test(test_csv)
    lookup = read_lookup(lookup_csv)
    submission = make_submission(model, config, ids, images, lookup)
    check_submission(submission, lookup)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission.to_csv(out, index=False, float_format="%.4f")
    return submission
