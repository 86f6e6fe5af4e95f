"""The in-memory face dataset every source converts to, and its seeded splits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from kpjax.keypoints import Layout, normalise
from kpjax.rundir import atomic_write


@dataclasses.dataclass
class Dataset:
    """Face crops with keypoints in the crop's pixels.

    ``groups`` names the person (or video) a face belongs to, so that a split
    never puts near-identical faces on both sides; ``sources`` names where each
    face came from, for per-source reports. ``hidden`` marks the missing points
    that the source's markup places but its annotator saw hidden (AFLW leaves a
    point turned away from the camera empty): unlike a point a source never
    marks, the error head learns that such a point cannot be found precisely.
    """

    images: np.ndarray  # (N, H, W, C) uint8
    keypoints: np.ndarray  # (N, K, 2) float32 pixels, NaN where missing
    layout: Layout
    groups: np.ndarray  # (N,) str
    sources: np.ndarray  # (N,) str
    hidden: np.ndarray | None = None  # (N, K) bool; None: no point hidden

    def __post_init__(self):
        n = len(self.images)
        if self.hidden is None:
            self.hidden = np.zeros((n, self.layout.num_keypoints), bool)
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}")
        if self.keypoints.shape != (n, self.layout.num_keypoints, 2):
            raise ValueError(f"keypoints must be {(n, self.layout.num_keypoints, 2)}, got {self.keypoints.shape}")
        if len(self.groups) != n or len(self.sources) != n:
            raise ValueError("groups and sources need one entry per face")
        if self.hidden.shape != (n, self.layout.num_keypoints):
            raise ValueError(f"hidden must be {(n, self.layout.num_keypoints)}, got {self.hidden.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    @property
    def mask(self) -> np.ndarray:
        """(N, 2K) bool: which target values are present."""
        return ~np.isnan(self.keypoints.reshape(len(self), 2 * self.layout.num_keypoints))

    def targets(self, margin: int = 0) -> np.ndarray:
        """(N, 2K) float32 in the seed's units, missing values set to 0 (masked out); with a ``margin``, in the
        units of the frame inside the crops (``crop(margin)``'s targets, without copying the images)."""
        flat = normalise(self.keypoints.reshape(len(self), 2 * self.layout.num_keypoints) - margin,
                         self.size - 2 * margin)
        return np.nan_to_num(flat, nan=0.0).astype(np.float32)

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.images[index], self.keypoints[index], self.layout, self.groups[index],
                       self.sources[index], self.hidden[index])

    def pad(self, margin: int) -> Dataset:
        """Context for crop jitter where a source has none past its crops: ``margin`` edge pixels a side."""
        if not margin:
            return self
        images = np.pad(self.images, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="edge")
        return dataclasses.replace(self, images=images, keypoints=self.keypoints + margin)

    def crop(self, margin: int) -> Dataset:
        """The frame inside crops converted with a ``margin`` of context: what the model sees, unjittered."""
        if not margin:
            return self
        images = self.images[:, margin:-margin, margin:-margin]
        return dataclasses.replace(self, images=np.ascontiguousarray(images), keypoints=self.keypoints - margin)

    def complete_only(self) -> Dataset:
        return self.subset(np.flatnonzero(self.mask.all(axis=1)))

    @staticmethod
    def concatenate(parts: list[Dataset]) -> Dataset:
        first = parts[0]
        for part in parts[1:]:
            if part.layout != first.layout or part.images.shape[1:] != first.images.shape[1:]:
                raise ValueError("cannot mix datasets of different layouts, sizes or colour modes")
        return Dataset(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.keypoints for p in parts]),
            first.layout,
            np.concatenate([p.groups for p in parts]),
            np.concatenate([p.sources for p in parts]),
            np.concatenate([p.hidden for p in parts]),
        )


def group_split(groups: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into (train, val) indices with every group on one side only.

    Each group's side depends only on (seed, group name), not on which other faces
    are loaded, so runs on different mixes of sources share one validation split
    for the faces they have in common.
    """
    unique, inverse = np.unique(groups, return_inverse=True)
    draws = np.array([
        int.from_bytes(hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest(), "little") / 2.0**64
        for group in unique
    ])
    is_val = (draws < val_fraction)[inverse]
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def save_split(path: Path, dataset: Dataset, train_index: np.ndarray, val_index: np.ndarray, **info) -> None:
    """Record the split (indices and the validation groups) so a run can be audited and repeated."""
    record = {
        **info,
        "num_train": int(len(train_index)),
        "num_val": int(len(val_index)),
        "val_index": val_index.tolist(),
        "val_groups": sorted(set(dataset.groups[val_index].tolist())),
    }
    atomic_write(path, json.dumps(record))

