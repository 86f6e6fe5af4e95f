"""Image decoding: files and in-memory bytes (uploads) give the same pixels and the same errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from kpjax.errors import KpjaxError
from kpjax.image import ImageTooLarge, apply_affine, compose_affine, decode_image, mirror_matrix, read_image

EXIF_ORIENTATION = 0x0112


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16", "RGBA", "P"])
def test_bytes_decode_like_the_file(tmp_path, mode):
    pixels = np.random.default_rng(0).integers(0, 255, (12, 20, 3), np.uint8)
    image = Image.fromarray(pixels).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    path = tmp_path / "face.png"
    path.write_bytes(encoded(image))
    from_file = read_image(path)
    assert from_file.shape == (12, 20, 3) and from_file.dtype == np.uint8
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "upload"), from_file)


def test_exif_orientation_is_applied():
    """A phone photo stored sideways with orientation 6 ("turn 90 degrees clockwise") comes out as it is shown."""
    pixels = np.random.default_rng(1).integers(0, 255, (20, 40, 3), np.uint8)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    upright = decode_image(encoded(Image.fromarray(pixels), exif=exif), "phone.png")
    np.testing.assert_array_equal(upright, np.rot90(pixels, k=-1))


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpegs_decode_to_pillows_pixels_in_every_orientation(tmp_path, mode, orientation):
    """JPEGs take OpenCV's decoder (faster); its pixels and its turn must be exactly Pillow's."""
    pixels = np.random.default_rng(orientation).integers(0, 255, (24, 40, 3), np.uint8)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "photo.jpg"
    path.write_bytes(encoded(Image.fromarray(pixels).convert(mode), "JPEG", exif=exif, quality=90))
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "upload"), expected)


def test_errors_name_the_upload():
    with pytest.raises(KpjaxError, match=r"^upload: unreadable image \(not an image format Pillow reads\)$"):
        decode_image(b"plain text", "upload")
    truncated = encoded(Image.new("RGB", (64, 64), "red"), "JPEG")[:300]
    with pytest.raises(KpjaxError, match=r"^cut\.jpg: unreadable image \(.*[Tt]runcated"):
        decode_image(truncated, "cut.jpg")
    with pytest.raises(ImageTooLarge, match=r"^big\.png: 300x200 pixels, more than the 50,000 accepted$"):
        decode_image(encoded(Image.new("L", (300, 200))), "big.png", max_pixels=50_000)
    with pytest.raises(KpjaxError, match=r"^missing\.png: no such file$"):
        read_image("missing.png")


def test_a_folder_is_no_image(tmp_path):
    with pytest.raises(KpjaxError, match=rf"^{tmp_path}: unreadable image \(Is a directory\)$"):
        read_image(tmp_path)


def test_composed_affines_apply_one_after_the_other_and_mirroring_twice_is_nothing():
    rng = np.random.default_rng(0)
    inner, outer, points = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(5, 2))
    np.testing.assert_allclose(apply_affine(compose_affine(outer, inner), points),
                               apply_affine(outer, apply_affine(inner, points)), atol=1e-12)
    np.testing.assert_allclose(apply_affine(mirror_matrix(96), np.array([[0.0, 7.0], [95.0, 3.0]])),
                               [[95.0, 7.0], [0.0, 3.0]])
    np.testing.assert_allclose(compose_affine(mirror_matrix(96), mirror_matrix(96)), np.eye(2, 3))
