"""``kpjax predict``'s files: images, folders and videos in; overlays and ``predictions.{json,csv}`` out.

Folders become their images and videos; images are read a chunk at a time and
their faces found together by a ``kpjax.inference.Predictor``; each video goes
to ``kpjax.video``. A missing or unreadable input is reported and skipped.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
from tqdm import tqdm

from kpjax.errors import KpjaxError
from kpjax.image import read_image
from kpjax.inference import Predictor
from kpjax.records import ImageResult, csv_cells, csv_header, draw_faces
from kpjax.video import check_smooth, predict_video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def expand_paths(paths: list[Path]) -> list[Path]:
    """Folders become their image and video files (sorted); files are kept as given, readable or not."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        else:
            files.append(path)
    return files


def check_out_dir(files: list[Path], out_dir: Path) -> None:
    """Refuse an output folder that holds an input: an overlay or annotated video would take the input's name."""
    if out_dir.exists() and not out_dir.is_dir():
        raise KpjaxError(f"--out {out_dir}: is a file, not a folder")
    target = out_dir.resolve()
    for path in files:
        if path.parent.resolve() == target:
            raise KpjaxError(f"--out {out_dir}: holds the input {path}, which the outputs could write over; "
                             "choose another folder")


def _overlay_name(path: Path, taken: set[str], suffix: str) -> str:
    """``STEM + suffix``, numbered when two inputs from different folders share a stem."""
    name, n = f"{path.stem}{suffix}", 1
    while name in taken:
        n += 1
        name = f"{path.stem}-{n}{suffix}"
    taken.add(name)
    return name


def _read(path: Path):
    """The image, or the error that says why it cannot be read (raised in the caller's thread, not here)."""
    try:
        return read_image(path)
    except KpjaxError as error:
        return error


def _overlay_suffix(path: Path) -> str:
    """JPEG photos get JPEG overlays (a tenth of PNG's encoding time), anything else PNG."""
    return ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"


def _write_overlay(path: Path, image, faces) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(draw_faces(image, faces), cv2.COLOR_RGB2BGR)):
        raise KpjaxError(f"{path}: could not write the overlay")


def predict_paths(predictor: Predictor, paths: list[Path], out_dir: Path, fmt: str = "json",
                  smooth: float | None = None, redetect: int = 30, chunk: int = 32, progress: bool = True,
                  echo=print, warn=lambda line: print(line, file=sys.stderr)) -> dict:
    """Predict images, folders and videos; write overlays and ``predictions.{json,csv}`` to ``out_dir``.

    Images are read and detected ``chunk`` at a time and their faces predicted
    together. A missing or unreadable file is reported through ``warn`` and
    skipped. Returns counts and throughput for the caller's summary and exit status.
    """
    if smooth is not None:
        check_smooth(smooth)
    if fmt not in ("json", "csv"):
        raise KpjaxError(f"--format {fmt}: expected json or csv")
    files = expand_paths(paths)
    check_out_dir(files, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in files if p.suffix.lower() not in VIDEO_SUFFIXES]
    results, taken = [], set()
    summary = {"images": 0, "faces": 0, "no_face": 0, "unreadable": 0, "videos": 0}
    chunks = [images[offset : offset + chunk] for offset in range(0, len(images), chunk)]
    start = time.perf_counter()
    # Decoding the next chunk and encoding the last chunk's overlays run on threads beside the detector and the
    # network (OpenCV and onnxruntime release the GIL); at most two chunks of images are held at a time.
    with tqdm(total=len(images), unit="image", disable=not progress or not images) as bar, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="kpjax-io") as io:
        reading = [io.submit(_read, path) for path in chunks[0]] if chunks else []
        writing: list = []
        for k, batch in enumerate(chunks):
            loaded = []
            for path, read in zip(batch, reading):
                image = read.result()
                if isinstance(image, KpjaxError):
                    warn(f"skipped: {image}")
                    results.append(ImageResult(str(path), error=str(image)))
                    summary["unreadable"] += 1
                else:
                    loaded.append((path, image))
            reading = [io.submit(_read, path) for path in chunks[k + 1]] if k + 1 < len(chunks) else []
            predicted = predictor([image for _, image in loaded])
            for write in writing:
                write.result()
            writing = []
            for (path, image), faces in zip(loaded, predicted):
                overlay = out_dir / _overlay_name(path, taken, _overlay_suffix(path))
                writing.append(io.submit(_write_overlay, overlay, image, faces))
                results.append(ImageResult(str(path), faces, image.shape[1], image.shape[0], str(overlay)))
                summary["images"] += 1
                summary["faces"] += len(faces)
                if not faces:
                    summary["no_face"] += 1
                    echo(f"{path}: no face found")
            bar.update(len(batch))
        for write in writing:
            write.result()
    elapsed = time.perf_counter() - start
    summary["seconds"] = round(elapsed, 3)
    summary["images_per_second"] = round(summary["images"] / elapsed, 2) if summary["images"] else 0.0
    if images:
        _write_results(results, out_dir, fmt, predictor.layout.names)
    for path in videos:
        try:
            result = predict_video(predictor, path, out_dir / _overlay_name(path, taken, ""), smooth=smooth,
                                   redetect=redetect, progress=progress)
        except KpjaxError as error:
            warn(f"skipped: {error}")
            summary["unreadable"] += 1
            continue
        echo(f"{path}: {result['frames']} frames, {result['faces']} faces -> {result['video']}, {result['csv']}")
        summary["videos"] += 1
        summary["faces"] += result["faces"]
    return summary


def _write_results(results: list[ImageResult], out_dir: Path, fmt: str, names: tuple[str, ...]) -> None:
    """All images' results in one file: a JSON list, or a CSV row per face (a status row for an image without)."""
    if fmt == "json":
        (out_dir / "predictions.json").write_text(json.dumps([r.to_json(names) for r in results], indent=2))
        return
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "status", *csv_header(names)])
        for result in results:
            if result.error is not None:
                writer.writerow([result.image, f"unreadable: {result.error}"])
            elif not result.faces:
                writer.writerow([result.image, "no face"])
            for i, face in enumerate(result.faces):
                writer.writerow([result.image, "ok", *csv_cells(i, face)])
