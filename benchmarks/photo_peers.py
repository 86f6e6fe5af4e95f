"""Run a photo peer, MediaPipe FaceMesh or dlib, on whole photos in its own virtualenv.

    python benchmarks/photo_peers.py --peer mediapipe|dlib --images LIST --out FILE

LIST is a text file of image paths, one a line. FILE gets the peer's faces in
the shape of ``kpjax predict``'s predictions.json, with the 15 Kaggle keypoints
in the photo's pixels and each photo's wall time ``ms``, so that one evaluator
scores kpjax and the peers alike. The peers' virtualenvs come from
benchmarks/peers/setup_photo_peers.sh, under $KPJAX_PEERS (default
~/.cache/kpjax/peers). Prints a JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE_NAMES

PEERS = ("mediapipe", "dlib")
SCRIPTS = Path(__file__).resolve().parent / "peers"


def peer_python(peer: str) -> Path:
    root = Path(os.environ.get("KPJAX_PEERS") or Path.home() / ".cache" / "kpjax" / "peers")
    return root / peer / "bin" / "python"


def check_records(records: list, out: Path) -> None:
    """The peer's output must read as predictions.json does, with every Kaggle keypoint of every face."""
    for i, record in enumerate(records):
        for face in record.get("faces", ()):
            if tuple(face["keypoints"]) != KAGGLE_NAMES:
                raise KpjaxError(f"{out}: record {i} ({record['image']}): keypoints {list(face['keypoints'])} "
                                 "are not Kaggle's 15 in order")


def run_peer(peer: str, images: Path, out: Path) -> dict:
    """Run ``peer`` on the photos listed in ``images``, write ``out`` and return a summary of it."""
    if not images.is_file():
        raise KpjaxError(f"--images {images}: no such file")
    if not images.read_text().split():
        raise KpjaxError(f"--images {images}: no image paths in it")
    if not out.parent.is_dir():
        raise KpjaxError(f"--out {out}: no folder {out.parent}")
    python = peer_python(peer)
    if not python.is_file():
        raise KpjaxError(f"--peer {peer}: no virtualenv at {python.parents[1]}; "
                         f"run bash benchmarks/peers/setup_photo_peers.sh {peer}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer's venv, nothing of ours
    started = time.perf_counter()
    done = subprocess.run([str(python), str(SCRIPTS / f"photo_{peer}.py"), str(images), str(out)],
                          capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise KpjaxError(f"{peer}: " + (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])
    records = json.loads(out.read_text())
    check_records(records, out)
    times = [r["ms"] for r in records if "ms" in r]
    return {
        "peer": peer,
        "photos": len(records),
        "faces": sum(len(r.get("faces", ())) for r in records),
        "no_face": sum(r.get("faces") == [] for r in records),
        "unreadable": len(records) - len(times),
        "median_ms": round(statistics.median(times), 2) if times else None,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--images", type=Path, required=True, help="text file: one image path per line")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    try:
        print(json.dumps(run_peer(args.peer, args.images, args.out)))
    except KpjaxError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
