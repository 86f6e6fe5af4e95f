"""Readers of the 68-point and 5-point sources, the conversion to the Kaggle frame, skips and the cache.

Every face here is written by the test itself: 68-point shapes built so that
their Kaggle keypoints are exactly Kaggle's mean face, placed into noise images
by a known scale and translation.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kpjax.errors import KpjaxError
from kpjax.image import apply_affine
from kpjax.keypoints import IBUG68, KAGGLE, KAGGLE_MEAN_FACE, KAGGLE_NAMES
from kpjax.sources import LoadOptions, convert, convert_sources, detect_format, kaggle, load_one
from kpjax.keypoints import interocular_distance
from kpjax.sources.convert import best_markup, fit_crop, kaggle_points
from kpjax.sources.landmarks68 import parse_pts, person_group

MEAN = {name: KAGGLE_MEAN_FACE[k].astype(np.float64) for k, name in enumerate(KAGGLE_NAMES)}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPJAX_CACHE", str(tmp_path / "cache"))


def _line(a, b, n):
    return [a + (b - a) * t for t in np.linspace(0, 1, n)]


def _eye(centre, first, fourth):
    """Six iBUG eye points (a corner, 2 top, the other corner, 2 bottom, left to right on top) with mean ``centre``."""
    shift = (2 * centre - first - fourth) / 4
    half = (fourth - first) / 4
    top, bottom = np.array([0, -2.0]), np.array([0, 2.0])
    upper = [centre - half + top + shift, centre + half + top + shift]
    lower = [centre + half + bottom + shift, centre - half + bottom + shift]
    return [first, *upper, fourth, *lower]


def _jaw(n):
    angles = np.linspace(np.pi * 0.95, np.pi * 0.05, n)
    return [np.array([48 - 36 * np.cos(a), 40 + 50 * np.sin(a)]) for a in angles]


def ibug_face() -> np.ndarray:
    """68 iBUG points (image order) whose Kaggle keypoints are exactly the mean face."""
    m = MEAN
    nose = m["nose_tip"]
    mouth = [m["mouth_right_corner"], *_line(m["mouth_right_corner"], m["mouth_center_top_lip"], 4)[1:3],
             m["mouth_center_top_lip"], *_line(m["mouth_center_top_lip"], m["mouth_left_corner"], 4)[1:3],
             m["mouth_left_corner"], *_line(m["mouth_left_corner"], m["mouth_center_bottom_lip"], 4)[1:3],
             m["mouth_center_bottom_lip"], *_line(m["mouth_center_bottom_lip"], m["mouth_right_corner"], 4)[1:3]]
    inner_lip = [p * 0.8 + (m["mouth_center_top_lip"] + m["mouth_center_bottom_lip"]) / 2 * 0.2 for p in mouth[::3]]
    inner_lip += [(a + b) / 2 for a, b in zip(inner_lip, inner_lip[1:] + inner_lip[:1])]
    points = (
        _jaw(17)
        + _line(m["right_eyebrow_outer_end"], m["right_eyebrow_inner_end"], 5)
        + _line(m["left_eyebrow_inner_end"], m["left_eyebrow_outer_end"], 5)
        + _line((m["left_eye_center"] + m["right_eye_center"]) / 2 + [0, 2], nose, 4)
        + [nose + [dx, 4 - abs(dx) / 3] for dx in (-8, -4, 0, 4, 8)]
        + _eye(m["right_eye_center"], m["right_eye_outer_corner"], m["right_eye_inner_corner"])
        + _eye(m["left_eye_center"], m["left_eye_inner_corner"], m["left_eye_outer_corner"])
        + mouth
        + inner_lip
    )
    return np.array(points)


def fgnet_face() -> np.ndarray:
    """68 points in FG-NET's own markup whose Kaggle keypoints are exactly the mean face."""
    m = MEAN

    def brow(outer, inner):  # closed contour: outer, 2 top, inner, 2 bottom
        return [outer, *(p - [0, 2] for p in _line(outer, inner, 4)[1:3]), inner,
                *(p + [0, 2] for p in _line(inner, outer, 4)[1:3])]

    def eye(outer, inner, pupil):  # outer, top, inner, bottom, pupil
        return [outer, pupil - [0, 3], inner, pupil + [0, 3], pupil]

    nose = m["nose_tip"]
    mouth = [*_line(m["mouth_right_corner"], m["mouth_left_corner"], 7)[:6], m["mouth_left_corner"],
             *_line(m["mouth_left_corner"], m["mouth_right_corner"], 7)[1:6]]
    mouth[3], mouth[9] = m["mouth_center_top_lip"], m["mouth_center_bottom_lip"]
    mouth_centre = (m["mouth_center_top_lip"] + m["mouth_center_bottom_lip"]) / 2
    inner_mouth = [p * 0.7 + mouth_centre * 0.3 for p in mouth[1:6] + mouth[7:8]]
    points = (
        _jaw(15)
        + brow(m["left_eyebrow_outer_end"], m["left_eyebrow_inner_end"])
        + brow(m["right_eyebrow_outer_end"], m["right_eyebrow_inner_end"])
        + eye(m["right_eye_outer_corner"], m["right_eye_inner_corner"], m["right_eye_center"])
        + eye(m["left_eye_outer_corner"], m["left_eye_inner_corner"], m["left_eye_center"])
        + [nose + [8 * np.cos(a), -8 + 8 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 11, endpoint=False)]
        + mouth
        + inner_mouth
        + [mouth_centre, nose]
    )
    return np.array(points)


def place(face: np.ndarray, scale: float = 1.5, shift=(30.0, 20.0), angle_deg: float = 0.0) -> np.ndarray:
    angle = np.radians(angle_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return face @ rotation.T + np.asarray(shift)


def write_image(path, size=(200, 200), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image.convert("L"), np.uint16) * 257))
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)


def write_pts(path, points):
    lines = ["version: 1", f"n_points: {len(points)}", "{", *(f"{x:.3f} {y:.3f}" for x, y in points), "}"]
    path.write_text("\n".join(lines) + "\n")


def pts_folder(folder, faces: dict[str, np.ndarray], suffix=".jpg"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, points) in enumerate(faces.items()):
        write_image(folder / f"{name}{suffix}", seed=i)
        write_pts(folder / f"{name}.pts", points)
    return folder


# Geometry.


def test_templates_give_the_mean_face():
    np.testing.assert_allclose(kaggle_points(ibug_face(), "ibug"), KAGGLE_MEAN_FACE, atol=1e-5)
    np.testing.assert_allclose(kaggle_points(fgnet_face(), "fgnet"), KAGGLE_MEAN_FACE, atol=1e-5)
    assert ibug_face().shape == fgnet_face().shape == (68, 2)


def test_fit_crop_inverts_a_known_scale_and_translation_exactly():
    points = place(ibug_face(), scale=2.5, shift=(13.0, -7.0))
    matrix = fit_crop(kaggle_points(points, "ibug"), 96)
    np.testing.assert_allclose(matrix, [[0.4, 0, -13 * 0.4], [0, 0.4, 7 * 0.4]], atol=1e-9)
    np.testing.assert_allclose(apply_affine(matrix, points), ibug_face(), atol=1e-9)
    # Another frame size is the same crop, pixel centres aligned.
    matrix_192 = fit_crop(kaggle_points(points, "ibug"), 192)
    np.testing.assert_allclose(apply_affine(matrix_192, points), (ibug_face() + 0.5) * 2 - 0.5, atol=1e-9)


def test_fit_crop_uses_scale_and_translation_only():
    matrix = fit_crop(kaggle_points(place(ibug_face(), angle_deg=20), "ibug"), 96)
    assert matrix[0, 1] == matrix[1, 0] == 0 and matrix[0, 0] == matrix[1, 1]


def test_crop_pixels_follow_the_keypoints(tmp_path):
    """A bright dot at the source nose tip lands on the converted nose tip."""
    folder = tmp_path / "dots"
    folder.mkdir()
    points = place(ibug_face(), scale=1.7, shift=(21.3, 9.6))
    image = np.zeros((200, 220), np.uint8)
    x, y = np.round(points[30]).astype(int)
    image[y - 1 : y + 2, x - 1 : x + 2] = 255
    Image.fromarray(image).save(folder / "dot.png")
    write_pts(folder / "dot.pts", points)
    dataset = load_one(str(folder), LoadOptions())
    crop = dataset.images[0, ..., 0].astype(float)
    expected = apply_affine(fit_crop(kaggle_points(points, "ibug"), 96), np.array([x, y], float))
    peak = np.array(np.unravel_index(np.argmax(crop), crop.shape))[::-1]
    assert np.abs(peak - expected).max() <= 1.0
    nose = dataset.keypoints[0, KAGGLE_NAMES.index("nose_tip")]
    np.testing.assert_allclose(nose, KAGGLE_MEAN_FACE[KAGGLE_NAMES.index("nose_tip")], atol=1e-3)


def test_interocular_distance_agrees_across_layouts():
    kaggle_distance = np.hypot(*(KAGGLE_MEAN_FACE[0] - KAGGLE_MEAN_FACE[1]))
    assert interocular_distance(KAGGLE_MEAN_FACE, KAGGLE) == pytest.approx(kaggle_distance)
    assert interocular_distance(ibug_face()[None], IBUG68)[0] == pytest.approx(kaggle_distance)


# Markup: iBUG or FG-NET, from the geometry.


@pytest.mark.parametrize("angle", [0.0, -20.0, 25.0])
def test_best_markup_tells_ibug_from_fgnet(angle):
    assert best_markup(place(ibug_face(), angle_deg=angle)) == "ibug"
    assert best_markup(place(fgnet_face(), angle_deg=angle)) == "fgnet"


def test_fgnet_points_read_with_ibug_indices_are_far_off():
    """The wrong mapping puts keypoints tens of pixels from where they belong."""
    wrong = kaggle_points(fgnet_face(), "ibug")
    assert np.linalg.norm(wrong - KAGGLE_MEAN_FACE, axis=1).max() > 15


def test_fgnet_folder_is_detected_and_mapped(tmp_path):
    faces = {"001A02": place(fgnet_face()), "001A05": place(fgnet_face(), 1.2), "002A11b": place(fgnet_face(), 1.4)}
    dataset = load_one(str(pts_folder(tmp_path / "fgnet-68", faces)), LoadOptions())
    np.testing.assert_allclose(dataset.keypoints, np.broadcast_to(KAGGLE_MEAN_FACE, (3, 15, 2)), atol=1e-3)
    assert dataset.groups.tolist() == ["fgnet-68:001", "fgnet-68:001", "fgnet-68:002"]
    assert set(dataset.sources) == {"fgnet-68"}


def test_fgnet_file_read_as_ibug_is_caught(tmp_path, capsys):
    folder = pts_folder(tmp_path / "fg", {"001A02": place(fgnet_face()), "001A03": place(fgnet_face(), 1.1)})
    with pytest.raises(KpjaxError, match="points do not fit the ibug markup"):
        load_one(str(folder), LoadOptions(markup="ibug"))
    # In a folder of iBUG faces, a stray FG-NET file is skipped and counted.
    mixed = pts_folder(tmp_path / "mixed", {"a_1": place(ibug_face()), "b_1": place(ibug_face(), 1.2),
                                             "c_1": place(fgnet_face())})
    assert len(load_one(str(mixed), LoadOptions())) == 2
    assert "mixed: skipped 1 of 3: 1 points do not fit the ibug markup" in capsys.readouterr().err
    with pytest.raises(KpjaxError, match="unknown markup"):
        load_one(str(mixed), LoadOptions(markup="dlib"))


# Readers.


def test_pts_folder_reads_every_image_mode(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    for i, (mode, suffix) in enumerate([("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"), ("P", ".png"),
                                        ("I;16", ".png"), ("CMYK", ".jpg")]):
        write_image(folder / f"{i}{suffix}", seed=i, mode=mode)
        write_pts(folder / f"{i}.pts", place(ibug_face()))
    dataset = load_one(str(folder), LoadOptions())
    assert dataset.images.shape == (6, 96, 96, 1) and dataset.images.dtype == np.uint8
    assert dataset.images.reshape(6, -1).std(axis=1).min() > 10  # real pixels, not a blank fill


def test_native_68_mode(tmp_path):
    points = place(ibug_face(), scale=1.3, shift=(40, 31))
    folder = pts_folder(tmp_path / "helen", {"100040721_1": points, "100040721_2": points, "2000_1": points})
    dataset = load_one(str(folder), LoadOptions(layout=IBUG68, size=64, color=True))
    assert dataset.images.shape == (3, 64, 64, 3) and dataset.layout == IBUG68
    np.testing.assert_allclose(dataset.keypoints[0], (ibug_face() + 0.5) * 64 / 96 - 0.5, atol=1e-3)
    assert dataset.groups.tolist() == ["helen:100040721"] * 2 + ["helen:2000"]
    fgnet = pts_folder(tmp_path / "fgnet", {"001A02": place(fgnet_face())})
    with pytest.raises(KpjaxError, match="fgnet markup, which cannot be mapped to all 68 iBUG points"):
        load_one(str(fgnet), LoadOptions(layout=IBUG68))


def write_frames_csv(folder, rows: list[tuple[str, np.ndarray]], images=None):
    (folder / "training").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(images if images is not None else sorted({n for n, _ in rows})):
        write_image(folder / "training" / name, seed=i)
    header = "," + ",".join(str(i) for i in range(136))
    lines = [header] + [name + "," + ",".join(f"{v:.3f}" for v in points.ravel()) for name, points in rows]
    (folder / "training_frames_keypoints.csv").write_text("\n".join(lines) + "\n")


def test_frames_csv_layout(tmp_path):
    folder = tmp_path / "youtube-faces-68"
    write_frames_csv(folder, [(f"{name}.jpg", place(ibug_face(), 1 + i / 10))
                              for i, name in enumerate(["Jane_Doe_01", "Jane_Doe_42", "Abdel_Aziz_Al-Hakim_00"])])
    assert detect_format(folder) == "frames_csv"
    dataset = load_one(str(folder), LoadOptions())
    assert dataset.groups.tolist() == ["youtube-faces-68:Jane_Doe"] * 2 + ["youtube-faces-68:Abdel_Aziz_Al-Hakim"]
    np.testing.assert_allclose(dataset.keypoints, np.broadcast_to(KAGGLE_MEAN_FACE, (3, 15, 2)), atol=1e-3)
    # The csv itself names the same source.
    assert len(load_one(str(folder / "training_frames_keypoints.csv"), LoadOptions())) == 3


def write_mtfl(folder, rows: list[tuple[str, np.ndarray]], name="training.txt"):
    for i, (relative, _) in enumerate(rows):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        write_image(folder / relative, size=(80, 80), seed=i)
    lines = [f"{relative} " + " ".join(f"{v:.2f}" for v in np.concatenate([p[:, 0], p[:, 1]])) for relative, p in rows]
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


def mtfl_points(scale=0.6, shift=(10.0, 5.0)):
    """Image order: the eye on the image's left, the other eye, nose, mouth corners image-left, image-right."""
    face = KAGGLE_MEAN_FACE[[1, 0, 10, 12, 11]].astype(np.float64)
    return place(face, scale, shift)


def test_mtfl_list_and_folder(tmp_path):
    folder = tmp_path / "mtfl-5"
    listing = write_mtfl(folder, [("lfw_5590/A_B_0001.jpg", mtfl_points()), ("net_7876/0_1_0.jpg", mtfl_points(0.7))])
    for spec in (listing, folder):
        assert detect_format(spec) == "mtfl"
        dataset = load_one(str(spec), LoadOptions())
        assert dataset.groups.tolist() == ["mtfl-5:lfw_5590/A_B_0001", "mtfl-5:net_7876/0_1_0"]
        present = [KAGGLE_NAMES.index(n) for n in ("left_eye_center", "right_eye_center", "nose_tip",
                                                   "mouth_left_corner", "mouth_right_corner")]
        np.testing.assert_allclose(dataset.keypoints[:, present], np.broadcast_to(KAGGLE_MEAN_FACE[present], (2, 5, 2)),
                                   atol=0.05)
        assert np.isnan(np.delete(dataset.keypoints, present, axis=1)).all()
        assert dataset.mask.sum(axis=1).tolist() == [10, 10]
    with pytest.raises(KpjaxError, match="mtfl markup"):
        load_one(str(folder), LoadOptions(layout=IBUG68))


def test_unknown_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(KpjaxError, match="unknown data format"):
        detect_format(tmp_path)


def test_parse_pts_rejects_wrong_count_and_syntax():
    good = "version: 1\nn_points: 68\n{\n" + "1 2\n" * 68 + "}\n"
    assert parse_pts(good).shape == (68, 2)
    with pytest.raises(ValueError, match="67 points"):
        parse_pts(good.replace("1 2\n", "", 1).replace("n_points: 68", "n_points: 67"))
    with pytest.raises(ValueError, match="n_points: 68"):
        parse_pts(good.replace("1 2\n", "", 1))
    with pytest.raises(ValueError, match="two"):
        parse_pts(good.replace("1 2\n", "1 two\n", 1))
    with pytest.raises(ValueError, match="block"):
        parse_pts(good.replace("}", ""))


def test_person_groups_from_file_names():
    assert person_group("Luis_Fonsi_21") == "Luis_Fonsi"
    assert person_group("001A43a") == "001"
    assert person_group("100040721_2") == "100040721"
    assert person_group("image_0001") == "image_0001"  # 300-W numbering is not a face suffix


# Bad input: skipped and counted, or under --strict an error naming the first.


def test_bad_pts_folder_rows_are_skipped_and_counted(tmp_path, capsys):
    folder = pts_folder(tmp_path / "bad", {f"good_{i}": place(ibug_face(), 1 + i / 10) for i in range(3)})
    write_pts(folder / "no_image.pts", place(ibug_face()))
    write_image(folder / "truncated.jpg", seed=9)
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_pts(folder / "truncated.pts", place(ibug_face()))
    write_image(folder / "count.jpg")
    write_pts(folder / "count.pts", place(ibug_face())[:67])
    write_image(folder / "syntax.jpg")
    (folder / "syntax.pts").write_text("version: 1\nn_points: 68\n{\n" + "1 x\n" * 68 + "}\n")
    write_image(folder / "outside.jpg")
    write_pts(folder / "outside.pts", place(ibug_face(), 2.5, (0, 0)))
    write_image(folder / "tiny.jpg")
    write_pts(folder / "tiny.pts", place(ibug_face(), 0.2, (50, 50)))
    dataset = load_one(str(folder), LoadOptions())
    assert len(dataset) == 3
    line = capsys.readouterr().err.strip()
    assert line.startswith("bad: skipped 6 of 9: ")
    for part in ("2 malformed points", "1 missing image", "1 unreadable image", "1 points outside image",
                 "1 face too small"):
        assert part in line
    with pytest.raises(KpjaxError, match=r"count\.pts: malformed points \(67 points"):
        load_one(str(folder), LoadOptions(strict=True))


def test_duplicate_and_malformed_csv_rows(tmp_path, capsys):
    folder = tmp_path / "yt"
    face = place(ibug_face())
    write_frames_csv(folder, [("A_B_01.jpg", face), ("A_B_02.jpg", face), ("A_B_01.jpg", face)])
    with open(folder / "training_frames_keypoints.csv", "a") as f:
        f.write("A_B_03.jpg,1,2,3\n")
    assert len(load_one(str(folder), LoadOptions())) == 2
    line = capsys.readouterr().err.strip()
    assert line == "yt: skipped 2 of 4: 1 duplicate row, 1 malformed points"
    with pytest.raises(KpjaxError, match=r"line 4 \(A_B_01\.jpg\): duplicate row"):
        load_one(str(folder), LoadOptions(strict=True))


def test_mtfl_bad_rows(tmp_path, capsys):
    folder = tmp_path / "m"
    outside = mtfl_points(shift=(-20.0, 5.0))
    listing = write_mtfl(folder, [("a/1.jpg", mtfl_points()), ("a/2.jpg", outside), ("a/1.jpg", mtfl_points())])
    with open(listing, "a") as f:
        f.write("a/missing.jpg " + " ".join(["30"] * 10) + "\n")
        f.write("a/short.jpg 1 2 3\n")
    assert len(load_one(str(listing), LoadOptions())) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("m: skipped 4 of 5: ")
    for part in ("1 points outside image", "1 duplicate row", "1 missing image", "1 malformed points"):
        assert part in line


def test_no_usable_faces_is_an_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    write_pts(folder / "lonely.pts", place(ibug_face()))
    with pytest.raises(KpjaxError, match=r"no usable faces \(skipped 1 of 1: 1 missing image"):
        load_one(str(folder), LoadOptions())


# Cache and Kaggle CSV output.


def test_cache_serves_later_loads_until_a_file_changes(tmp_path, monkeypatch, capsys):
    folder = pts_folder(tmp_path / "c", {"a_1": place(ibug_face()), "b_1": place(ibug_face(), 1.2)})
    write_pts(folder / "orphan.pts", place(ibug_face()))
    first = load_one(str(folder), LoadOptions())
    assert "skipped 1 of 3: 1 missing image" in capsys.readouterr().err

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(convert, "convert_rows", no_conversion)
    again = load_one(str(folder), LoadOptions())
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.groups, first.groups)
    assert "skipped 1 of 3: 1 missing image" in capsys.readouterr().err  # a cached load still reports its skips
    with pytest.raises(KpjaxError, match="orphan.pts: missing image"):
        load_one(str(folder), LoadOptions(strict=True))
    write_pts(folder / "b_1.pts", place(ibug_face(), 1.25))
    with pytest.raises(AssertionError, match="converted again"):
        load_one(str(folder), LoadOptions())
    with pytest.raises(AssertionError, match="converted again"):
        load_one(str(folder / ".." / "c"), LoadOptions(size=48))


def test_convert_round_trips_through_the_kaggle_reader(tmp_path):
    folder = tmp_path / "mtfl"
    write_mtfl(folder, [("x/1.jpg", mtfl_points()), ("x/2.jpg", mtfl_points(0.7, (3, 4)))])
    faces = pts_folder(tmp_path / "faces", {"a_1": place(ibug_face()), "b_1": place(ibug_face(), 1.2, (5, 9))})
    out = tmp_path / "training.csv"
    assert convert_sources([str(faces), str(folder)], out) == 4
    expected = load_one(str(faces), LoadOptions())
    back = kaggle.read_training(out, LoadOptions())
    np.testing.assert_array_equal(back.images[:2], expected.images)
    np.testing.assert_allclose(back.keypoints[:2], expected.keypoints, atol=1e-4)
    assert np.isnan(back.keypoints[2:]).sum() == 2 * 20
    with pytest.raises(KpjaxError, match="96x96 grey"):
        convert_sources([str(faces)], out, LoadOptions(color=True))


def test_convert_to_npz_loads_back_with_its_groups_and_checks_the_frame(tmp_path):
    faces = pts_folder(tmp_path / "faces", {"a_1": place(ibug_face()), "b_1": place(ibug_face(), 1.2, (5, 9))})
    out = tmp_path / "faces.npz"
    assert convert_sources([str(faces)], out) == 2
    expected = load_one(str(faces), LoadOptions())
    back = load_one(str(out), LoadOptions())
    np.testing.assert_array_equal(back.images, expected.images)
    np.testing.assert_array_equal(back.keypoints, expected.keypoints)
    np.testing.assert_array_equal(back.groups, expected.groups)
    np.testing.assert_array_equal(back.sources, expected.sources)
    wrong_frame = r"faces\.npz: holds kaggle keypoints on 96x96x1 faces, but this run asks for kaggle on 48x48x1"
    with pytest.raises(KpjaxError, match=wrong_frame):
        load_one(str(out), LoadOptions(size=48))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(KpjaxError, match="broken.npz: not a faces .npz written by kpjax data convert"):
        load_one(str(tmp_path / "broken.npz"), LoadOptions())


def test_labels_that_do_not_sit_on_a_face_inside_the_image_are_skipped(tmp_path, capsys):
    # As in MTFL's rotated copies: a face-shaped set of points pushed against the top edge,
    # so the crop fitted to it would be mostly replicated border.
    folder = tmp_path / "mtfl-5"
    top = mtfl_points(scale=0.6, shift=(10.0, -18.0))
    assert top[:, 1].min() > 0  # every point is inside the image
    write_mtfl(folder, [("net_7876/a.jpg", mtfl_points()), ("net_7876/_40_1_0.jpg", top)])
    assert len(load_one(str(folder), LoadOptions())) == 1
    assert "1 crop outside image" in capsys.readouterr().err


AFLW_FROM_KAGGLE = {  # AFLW point number (1-based, as in labels.csv) -> the Kaggle keypoint it gives
    11: "left_eye_center", 8: "right_eye_center", 10: "left_eye_inner_corner", 12: "left_eye_outer_corner",
    9: "right_eye_inner_corner", 7: "right_eye_outer_corner", 4: "left_eyebrow_inner_end",
    6: "left_eyebrow_outer_end", 3: "right_eyebrow_inner_end", 1: "right_eyebrow_outer_end", 15: "nose_tip",
    20: "mouth_left_corner", 18: "mouth_right_corner",
}


def aflw_points(hidden: tuple[int, ...] = ()) -> list[str]:
    """The 42 cells of a labels.csv row: the mean face in a 120-px crop (offset 12), the ``hidden`` points empty."""
    points = {n: MEAN[name] + 12 for n, name in AFLW_FROM_KAGGLE.items()}
    points.update({2: (points[1] + points[3]) / 2, 5: (points[4] + points[6]) / 2, 13: np.array([5.0, 60.0]),
                   14: points[15] + (-8, -2), 16: points[15] + (8, -2), 17: np.array([114.0, 60.0]),
                   19: (points[18] + points[20]) / 2, 21: np.array([60.0, 110.0])})
    return [cell for n in range(1, 22) for cell in (("", "") if n in hidden else (f"{points[n][0]:.2f}", f"{points[n][1]:.2f}"))]


def test_aflw_labels_map_to_kaggle_keypoints_with_hidden_points_masked(tmp_path, capsys):
    from kpjax.sources import aflw

    folder = tmp_path / "aflw-21"
    (folder / "images").mkdir(parents=True)
    rows = [("a", aflw_points()), ("b", aflw_points(hidden=(1, 7, 13, 14, 18))),  # turned: its far side hidden
            ("c", aflw_points(hidden=(7, 8, 9, 10, 11, 12))),  # no eyes: too few points
            ("d", aflw_points()[:-3])]  # a short row
    lines = [",".join(aflw.HEADER)]
    for name, cells in rows:
        Image.fromarray(np.full((120, 120, 3), 100, np.uint8)).save(folder / "images" / f"{name}.jpg")
        lines.append(",".join([f"images/{name}.jpg", "10.0", *cells]))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    assert detect_format(folder) == detect_format(folder / "labels.csv") == "aflw"
    dataset = load_one(str(folder), LoadOptions())
    assert dataset.groups.tolist() == ["aflw-21:a", "aflw-21:b"]
    assert "skipped 2 of 4: 1 too few points, 1 malformed points" in capsys.readouterr().err
    # No lip centres in AFLW's markup, and its eyebrow ends follow another convention: both left out.
    absent = [KAGGLE_NAMES.index(n) for n in KAGGLE_NAMES if "lip" in n or "eyebrow" in n]
    np.testing.assert_allclose(np.delete(dataset.keypoints[0], absent, axis=0),
                               np.delete(KAGGLE_MEAN_FACE, absent, axis=0), atol=0.05)  # the subject's left eye on
    assert np.isnan(dataset.keypoints[0, absent]).all()                               # the image's right, as Kaggle
    turned_away = [KAGGLE_NAMES.index(AFLW_FROM_KAGGLE[n]) for n in (7, 18)]
    missing = turned_away + absent
    assert np.isnan(dataset.keypoints[1, missing]).all() and dataset.mask[1].sum() == 2 * (15 - len(missing))
    # Hidden: the points the markup places that the annotator left out, not the ones it never marks.
    expected_hidden = np.zeros((2, 15), bool)
    expected_hidden[1, turned_away] = True
    np.testing.assert_array_equal(dataset.hidden, expected_hidden)
    np.testing.assert_array_equal(load_one(str(folder), LoadOptions()).hidden, expected_hidden)  # from the cache
    np.testing.assert_array_equal(dataset.subset(np.array([1])).hidden, expected_hidden[1:])


def test_margin_adds_context_around_the_same_frame(tmp_path):
    folder = pts_folder(tmp_path / "helen", {"face_1": place(ibug_face())})
    plain = load_one(str(folder), LoadOptions())
    context = load_one(str(folder), LoadOptions(margin=20))
    assert context.images.shape == (1, 136, 136, 1)
    np.testing.assert_allclose(context.keypoints - 20, plain.keypoints, atol=1e-4)
    cropped = context.crop(20)
    np.testing.assert_array_equal(cropped.images, plain.images)  # the same frame, cut out of the wider crop
    synthetic = load_one("synthetic:4", LoadOptions(margin=8))  # no context exists: edges repeated
    assert synthetic.images.shape == (4, 112, 112, 1)
    np.testing.assert_array_equal(synthetic.crop(8).images, load_one("synthetic:4", LoadOptions()).images)
