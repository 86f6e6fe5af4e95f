"""Image reading and the one geometry used everywhere: a 2x3 affine from image pixels to the model frame.

Coordinates are pixel indices (pixel centres at integers), the convention of
cv2.warpAffine, so a keypoint ``p`` maps to ``M @ [p, 1]`` exactly.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kpjax.errors import KpjaxError


class ImageTooLarge(KpjaxError):
    """An image with more pixels than the caller accepts (a server's guard against decompression bombs)."""


def read_image(path: Path) -> np.ndarray:
    """Any image file (grey, RGBA, palette, 16-bit, CMYK) as (H, W, 3) uint8 RGB, upright as its EXIF says."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise KpjaxError(f"{path}: no such file") from None
    except OSError as error:
        raise KpjaxError(f"{path}: unreadable image ({error.strerror})") from None
    return decode_image(data, str(path))


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """An image file's bytes (an upload, or a file ``read_image`` has read) as ``read_image`` describes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {image.width}x{image.height} pixels, more than the {max_pixels:,} accepted")
            if image.format == "JPEG" and image.mode in ("RGB", "L"):
                decoded = _decode_jpeg(data)
                if decoded is not None:
                    return decoded
            image.load()
            # Browsers and photo viewers turn a phone photo as its EXIF orientation says; so must the keypoints.
            ImageOps.exif_transpose(image, in_place=True)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if array.max() > 255 else 255.0
                grey = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:  # its message names the file object, which for bytes is a memory address
        raise KpjaxError(f"{name}: unreadable image (not an image format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise KpjaxError(f"{name}: unreadable image ({error})") from None


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """A whole colour or grey JPEG by OpenCV's libjpeg-turbo: the same pixels as Pillow's, turned by its EXIF
    orientation too, in three quarters of the time (benchmarks/photo_latency.py). None for data that does not end
    as a JPEG does (a cut file, which OpenCV would decode in part): Pillow then reports what is wrong."""
    if not data.endswith(b"\xff\xd9"):
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_channels(image: np.ndarray, color: bool) -> np.ndarray:
    """(H, W, 3) RGB or (H, W[, 1]) grey to (H, W, 3) if ``color`` else (H, W, 1)."""
    if image.ndim == 2:
        image = image[..., None]
    if color:
        return image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    if image.shape[2] == 1:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[..., None]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, color: bool) -> np.ndarray:
    """Crop ``image`` into a ``size`` square frame through the affine ``matrix`` (image -> frame)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        # Shrink first with area averaging, so a large face is not aliased.
        factor = 2 * scale
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        image = small if small.ndim == 3 else small[..., None]
        matrix = matrix @ np.array([[1 / factor, 0, 0.5 / factor - 0.5], [0, 1 / factor, 0.5 / factor - 0.5], [0, 0, 1]])
    out = cv2.warpAffine(
        np.ascontiguousarray(image), matrix.astype(np.float64), (size, size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    return to_channels(out if out.ndim == 3 else out[..., None], color)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 affine; NaN stays NaN."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine that applies ``inner``, then ``outer``."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def mirror_matrix(size: int) -> np.ndarray:
    """The square frame mirrored as training flips faces: x -> size - 1 - x, pixel indices."""
    return np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]])


def resize_matrix(from_size: tuple[int, int], to_size: int) -> np.ndarray:
    """The affine that stretches a (height, width) image onto a square frame, pixel centres aligned."""
    sy, sx = to_size / from_size[0], to_size / from_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])


def to_frame(images: np.ndarray, keypoints: np.ndarray, size: int, color: bool) -> tuple[np.ndarray, np.ndarray]:
    """Resize a batch of square crops (and their keypoints) to ``size`` and the colour mode."""
    if images.shape[1] == size:
        return np.stack([to_channels(im, color) for im in images]), keypoints
    matrix = resize_matrix(images.shape[1:3], size)
    frames = np.stack([warp(im, matrix, size, color) for im in images])
    return frames, apply_affine(matrix, keypoints).astype(np.float32)
