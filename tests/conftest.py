"""Shared fixtures: a small trained run, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpjax.config import TrainConfig
from kpjax.train import train

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A seed-CNN run directory trained for two short epochs on drawn faces."""
    run_dir = tmp_path_factory.mktemp("run") / "seed"
    train(TrainConfig(data=["synthetic:300"], epochs=2, batch_size=32, seed=0), run_dir, log=lambda _: None)
    return run_dir


@pytest.fixture(scope="session")
def run_dir(request) -> Path:
    """The shipped default model when there is one, else the session's small trained run."""
    from kpjax.checkpoint import DEFAULT_MODEL

    if (DEFAULT_MODEL / "config.json").is_file():
        return DEFAULT_MODEL
    return request.getfixturevalue("trained_run")


@pytest.fixture
def shared_data() -> Path:
    """The real face datasets beside the project; tests that need them skip on a fresh machine."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
