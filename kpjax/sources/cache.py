"""Converted sources cached as ``.npz`` under $KPJAX_CACHE (default ~/.cache/kpjax).

The key covers the conversion settings and every file under the source's
folder (relative path, size, modification time), so an edited, added or
removed file means a fresh conversion; the skipped rows are cached too, so a
cached load reports them just like the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from kpjax.dataset import Dataset
from kpjax.keypoints import LAYOUTS
from kpjax.sources.rows import Skip

CONVERSION_VERSION = 4  # bump when a reader or the conversion changes its output


# What reading a damaged or foreign .npz raises.
LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def cache_dir() -> Path:
    return Path(os.environ.get("KPJAX_CACHE") or Path.home() / ".cache" / "kpjax")


def _files(root: Path):
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            yield from _files(Path(entry.path))
        elif entry.is_file():
            stat = entry.stat()
            yield entry.path, stat.st_size, stat.st_mtime_ns


def source_key(path: Path, settings: dict) -> str:
    path = path.resolve()
    root = path if path.is_dir() else path.parent
    files = sorted((os.path.relpath(name, root), size, mtime) for name, size, mtime in _files(root))
    record = json.dumps([CONVERSION_VERSION, str(path), settings, files])
    return hashlib.sha256(record.encode()).hexdigest()[:32]


def save_faces(file: Path, dataset: Dataset, skips: list[Skip], *, compress: bool = False) -> None:
    """Converted faces as one ``.npz``: the cache's format, and ``kpjax data convert --out F.npz``'s."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
    (np.savez_compressed if compress else np.savez)(
        partial, images=dataset.images, keypoints=dataset.keypoints, layout=dataset.layout.name,
        groups=dataset.groups, sources=dataset.sources, hidden=dataset.hidden,
        skips=np.array([[s.where, s.reason, s.detail] for s in skips], dtype=str).reshape(-1, 3),
    )
    partial.replace(file)  # atomic: a concurrent reader never sees half a file


def load_faces(file: Path) -> tuple[Dataset, list[Skip]]:
    with np.load(file) as saved:
        # Files written before hidden points were kept have none.
        hidden = saved["hidden"] if "hidden" in saved.files else None
        dataset = Dataset(saved["images"], saved["keypoints"], LAYOUTS[str(saved["layout"])],
                          saved["groups"], saved["sources"], hidden)
        return dataset, [Skip(*row) for row in saved["skips"].tolist()]


def cached(path: Path, settings: dict, convert: Callable[[], tuple[Dataset, list[Skip]]]) -> tuple[Dataset, list[Skip]]:
    """``convert()``'s result for this source and these settings, from the cache when it is still valid."""
    file = cache_dir() / f"{source_key(path, settings)}.npz"
    if file.is_file():
        try:
            return load_faces(file)
        except LOAD_ERRORS:
            pass  # a damaged cache file is rebuilt below
    result = convert()
    try:
        save_faces(file, *result)
    except OSError:
        pass  # an unwritable cache only costs time
    return result
