"""What keeps a run directory whole through crashes: one writer at a time, files replaced atomically,
checkpoints with a checksum manifest.

A ``kill -9`` can land anywhere. Files are therefore written beside their final name and renamed over
it (a reader sees the old file or the new one, never half of one), and a checkpoint counts only once
its manifest of SHA-256 sums is written, so a damaged or half-written one is recognised and skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from kpjax.errors import KpjaxError

LOCK_NAME = ".lock"
MANIFEST_NAME = "kpjax_checksums.json"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, flushed, then renamed over it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(temporary, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class RunLock:
    """An advisory lock on a run directory, held while one ``kpjax train`` writes to it.

    ``flock`` is released by the kernel when its process dies, so a killed run never leaves a stale
    lock behind; the file records the holder's pid for the message the next writer gets.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None

    def __enter__(self) -> RunLock:
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise KpjaxError(f"--run-dir {self.path.parent}: another kpjax train (pid {holder}) is writing to it; "
                             "wait for it or pick another directory") from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()  # closing releases the lock


def _file_sums(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def write_manifest(directory: Path) -> None:
    """Seal a finished checkpoint: the SHA-256 of every file in it."""
    atomic_write(Path(directory) / MANIFEST_NAME, json.dumps(_file_sums(Path(directory)), indent=1))


def check_manifest(directory: Path) -> str | None:
    """Why the checkpoint in ``directory`` cannot be trusted, or None when every file matches its manifest."""
    directory = Path(directory)
    try:
        expected = json.loads((directory / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return "no checksum manifest (the save did not finish)"
    except (OSError, ValueError) as error:
        return f"unreadable checksum manifest ({error})"
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"{name} does not match its checksum"
    return None
