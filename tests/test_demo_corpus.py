"""Tests of the demo corpus generator (``nnunet_ulseg.demo``).

One 24-lesion corpus is generated per module (the smallest size at which all eight
types must appear among val/test rows) and checked against DeepLesion's format and
against its own true masks; the building blocks get small direct tests.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from nnunet_ulseg.demo import make_sample
from nnunet_ulseg.demo.anatomy import PHASES, make_patient_anatomy, make_series_anatomy, render_anatomy
from nnunet_ulseg.demo.canvas import LABELS, Canvas, bump
from nnunet_ulseg.demo.cli import add_make_sample_parser, summary
from nnunet_ulseg.demo.corpus import DL_INFO_COLUMNS, dl_info_row
from nnunet_ulseg.demo.ct import blur, correlated_noise, hu_to_png, scan
from nnunet_ulseg.demo.layout import NEIGHBOURS, TYPE_LEVELS, plan_corpus, split_counts
from nnunet_ulseg.demo.lesions import (
    calibrate_radius,
    largest_component,
    lesion_box,
    lesion_level,
    paint_lesion,
    sample_lesion,
)
from nnunet_ulseg.demo.placement import host_mask, place_lesions
from nnunet_ulseg.demo.series import annotate, folder_name, render_series
from nnunet_ulseg.demo.shapes import (
    ANGLES,
    box_around,
    coverage,
    lookup,
    polar,
    radial_profile,
    random_profile,
    star_level,
)
from nnunet_ulseg.demo.skeleton import paint_bone
from nnunet_ulseg.demo.writer import PngWriter
from nnunet_ulseg.recist import Recist, ellipse_mask, mask_axes, parse_numbers


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("demo") / "dl", n_lesions=24, seed=3, progress=False)


@pytest.fixture(scope="module")
def rows(corpus) -> list[dict]:
    return _rows(corpus / "DL_info.csv")


@pytest.fixture(scope="module")
def mask_rows(corpus) -> list[dict]:
    return _rows(corpus / "masks.csv")


def _mask(corpus: Path, mrow: dict) -> np.ndarray:
    m = cv2.imread(str(corpus / mrow["mask_path"]), cv2.IMREAD_UNCHANGED)
    return m == int(mrow["lesion_instance"])


def _image_hu(corpus: Path, folder: str, index: int) -> np.ndarray:
    img = cv2.imread(str(corpus / "Images_png" / folder / f"{index:03d}.png"), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint16
    return img.astype(np.float64) - 32768


# ----------------------------------------------------------------------------- corpus format


def test_dl_info_has_the_18_deeplesion_columns_and_parses(corpus, rows):
    with open(corpus / "DL_info.csv", newline="") as fh:
        raw = list(csv.reader(fh))
    assert raw[0] == DL_INFO_COLUMNS and len(DL_INFO_COLUMNS) == 18
    assert len(raw) == 25 and all(len(r) == 18 for r in raw)
    text = (corpus / "DL_info.csv").read_text()
    assert re.search(r'\.png,\d+,\d+,\d+,\d+,"[\d.]+, [\d.]+, ', text), "multi-number fields must be quoted"
    for r in rows:
        folder, name = r["File_name"].rsplit("_", 1)
        key = int(r["Key_slice_index"])
        assert folder == f"{int(r['Patient_index']):06d}_{int(r['Study_index']):02d}_{int(r['Series_ID']):02d}"
        assert name == f"{key:03d}.png"
        Recist.from_deeplesion(r["Measurement_coordinates"])
        assert len(parse_numbers(r["Bounding_boxes"], 4)) == 4
        assert np.all(parse_numbers(r["Lesion_diameters_Pixel_"], 2) > 0)
        loc = parse_numbers(r["Normalized_lesion_location"], 3)
        assert np.all((loc >= 0) & (loc <= 1))
        np.testing.assert_array_equal(parse_numbers(r["Slice_range"], 2), [key - NEIGHBOURS, key + NEIGHBOURS])
        sx, sy, sz = parse_numbers(r["Spacing_mm_px_"], 3)
        assert sx == sy and 0.6 <= sx <= 1.0 and sz in (1.0, 2.5, 5.0)
        assert r["Image_size"] == "512, 512"
        assert int(r["Possibly_noisy"]) in (0, 1)
        assert r["Patient_gender"] in ("M", "F")
        assert r["Patient_age"] == "" or 18 <= int(r["Patient_age"]) < 90
        assert r["Train_Val_Test"] in ("1", "2", "3")
    assert len({r["Spacing_mm_px_"] for r in rows}) > 2, "spacing should vary across series"


def test_dicom_windows_follow_the_true_type(rows, mask_rows):
    expected = {5: "-1350, 150", 1: "-450, 1050"}
    for r, m in zip(rows, mask_rows):
        assert r["DICOM_windows"] == expected.get(int(m["true_type"]), "-175, 275")


def test_every_sub_volume_is_written_as_uint16_hu(corpus, rows):
    for r in rows:
        folder = r["File_name"].rsplit("_", 1)[0]
        lo, hi = parse_numbers(r["Slice_range"], 2).astype(int)
        for i in range(lo, hi + 1):
            assert (corpus / "Images_png" / folder / f"{i:03d}.png").is_file()
    folder = rows[0]["File_name"].rsplit("_", 1)[0]
    hu = _image_hu(corpus, folder, int(rows[0]["Key_slice_index"]))
    assert hu.shape == (512, 512)
    assert abs(np.median(hu[:40, :40]) + 1000) < 30, "air outside the body is ~-1000 HU"
    assert 10 < np.std(hu[:40, :40]) < 40, "CT noise of ~10-25 HU"
    assert np.median(hu[200:312, 200:312]) > -300, "the body is in the middle"


def test_masks_csv_pairs_each_row_with_its_instance(corpus, rows, mask_rows):
    assert list(mask_rows[0]) == ["File_name", "lesion_instance", "mask_path", "true_type"]
    assert [m["File_name"] for m in mask_rows] == [r["File_name"] for r in rows]
    seen = Counter()
    for r, m in zip(rows, mask_rows):
        seen[r["File_name"]] += 1
        assert int(m["lesion_instance"]) == seen[r["File_name"]]
        folder, name = r["File_name"].rsplit("_", 1)
        assert m["mask_path"] == f"Masks_png/{folder}/{name}"
        assert _mask(corpus, m).sum() > 0
        t = int(r["Coarse_lesion_type"])
        assert t == (-1 if r["Train_Val_Test"] == "1" else int(m["true_type"]))
    for name, count in seen.items():
        m = cv2.imread(str(corpus / "Masks_png" / name.rsplit("_", 1)[0] / name.rsplit("_", 1)[1]),
                       cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and set(np.unique(m)) == set(range(count + 1))


def test_recist_is_measured_from_the_true_mask(corpus, rows, mask_rows):
    for r, m in zip(rows, mask_rows):
        mask = _mask(corpus, m)
        rec = Recist.from_deeplesion(r["Measurement_coordinates"])
        ys, xs = np.nonzero(mask)
        pts = rec.points
        assert np.all(pts[:, 0] >= xs.min() - 2) and np.all(pts[:, 0] <= xs.max() + 2), r["File_name"]
        assert np.all(pts[:, 1] >= ys.min() - 2) and np.all(pts[:, 1] <= ys.max() + 2), r["File_name"]
        true_long = mask_axes(mask).long_px
        assert abs(rec.long_length - true_long) <= 0.1 * true_long, r["File_name"]
        np.testing.assert_allclose(parse_numbers(r["Lesion_diameters_Pixel_"], 2),
                                   [rec.long_length, rec.short_length], atol=1e-3)
        one_based = rec.points + 1
        np.testing.assert_allclose(parse_numbers(r["Bounding_boxes"], 4),
                                   [*(one_based.min(axis=0) - 5), *(one_based.max(axis=0) + 5)], atol=2e-4)
        long_mm = rec.long_length * parse_numbers(r["Spacing_mm_px_"], 3)[0]
        assert 4.5 <= long_mm <= 85


def test_split_is_patient_level_with_every_split_present(rows):
    splits = defaultdict(set)
    for r in rows:
        splits[r["Patient_index"]].add(r["Train_Val_Test"])
    assert all(len(s) == 1 for s in splits.values())
    per_split = Counter(r["Train_Val_Test"] for r in rows)
    assert set(per_split) == {"1", "2", "3"}
    assert 0.45 <= per_split["1"] / len(rows) <= 0.75
    patients = {r["Patient_index"] for r in rows}
    assert len(patients) >= 4
    assert any(r["Patient_age"] == "" for r in rows), "some ages are missing, as in DeepLesion"
    assert len({r["Patient_gender"] for r in rows}) == 2
    studies = Counter((r["Patient_index"], r["Study_index"]) for r in rows)
    assert max(Counter(p for p, _ in studies).values()) >= 2, "some patient has several studies"


def test_all_eight_types_among_val_and_test(rows, mask_rows):
    evaluated = {int(r["Coarse_lesion_type"]) for r in rows if r["Train_Val_Test"] != "1"}
    assert evaluated == set(range(1, 9))
    assert {int(m["true_type"]) for m in mask_rows} <= set(range(1, 9))


def test_several_lesions_share_a_key_slice(rows):
    per_slice = Counter(r["File_name"] for r in rows)
    assert sum(c >= 2 for c in per_slice.values()) >= 2


def test_lesions_are_irregular_not_ellipses(corpus, rows, mask_rows):
    dice = []
    for r, m in zip(rows, mask_rows):
        mask = _mask(corpus, m)
        ell = ellipse_mask(Recist.from_deeplesion(r["Measurement_coordinates"]), mask.shape)
        dice.append(2 * (mask & ell).sum() / (mask.sum() + ell.sum()))
    assert 0.6 < np.mean(dice) < 0.92
    assert min(dice) < 0.8


def test_lesions_are_visible_against_their_surroundings(corpus, rows, mask_rows):
    from scipy import ndimage

    contrasts = []
    for r, m in zip(rows, mask_rows):
        mask = _mask(corpus, m)
        folder = r["File_name"].rsplit("_", 1)[0]
        hu = _image_hu(corpus, folder, int(r["Key_slice_index"]))
        inner = ndimage.binary_erosion(mask, iterations=1)
        ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask, iterations=1)
        if inner.sum() > 5:
            contrasts.append(abs(np.median(hu[inner]) - np.median(hu[ring])))
    assert np.median(contrasts) > 25


def test_neighbouring_slices_change_smoothly(corpus, rows):
    r = rows[0]
    folder, key = r["File_name"].rsplit("_", 1)[0], int(r["Key_slice_index"])
    k = _image_hu(corpus, folder, key)
    near = np.mean(np.abs(_image_hu(corpus, folder, key + 1) - k))
    far = np.mean(np.abs(_image_hu(corpus, folder, key + 3) - k))
    noise_only = 2 / math.sqrt(math.pi) * 15  # E|n1 - n2| for two ~15 HU noise fields, for scale
    assert near < far + 1
    assert near < 3 * noise_only


def test_make_sample_is_deterministic_and_refuses_a_used_folder(tmp_path):
    a = make_sample(tmp_path / "a", n_lesions=6, seed=11, image_size=256, progress=False)
    (tmp_path / "b").mkdir()  # an existing empty folder is fine
    b = make_sample(tmp_path / "b", n_lesions=6, seed=11, image_size=256, progress=False)
    assert (a / "DL_info.csv").read_bytes() == (b / "DL_info.csv").read_bytes()
    assert (a / "masks.csv").read_bytes() == (b / "masks.csv").read_bytes()
    pngs = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert pngs == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for rel in pngs[:: max(1, len(pngs) // 5)]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    rows = _rows(a / "DL_info.csv")
    assert len(rows) == 6 and {r["Train_Val_Test"] for r in rows} == {"1", "2", "3"}
    assert rows[0]["Image_size"] == "256, 256"
    with pytest.raises(ValueError, match="not empty"):
        make_sample(a, n_lesions=6, seed=11, progress=False)
    with pytest.raises(ValueError, match="n_lesions"):
        make_sample(tmp_path / "c", n_lesions=0, progress=False)


def test_cli_registers_make_sample_and_prints_a_summary(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="ulseg")
    add_make_sample_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-sample", "--out", str(tmp_path / "s"), "--lesions", "2", "--seed", "5",
                              "--image-size", "128", "--no-progress"])
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"2 lesions, \d+ patients, \d+ slices written to .*s", line)
    assert line == summary(tmp_path / "s")


# ----------------------------------------------------------------------------- building blocks


def test_radial_profile_and_star_shapes():
    circle = radial_profile()
    assert circle.shape == ANGLES.shape and np.all(circle == 1)
    p = radial_profile([0.3], [0.0])  # order 2: widest along x, narrowest along y
    assert p.max() == pytest.approx(1.0) and p[np.argmin(np.abs(ANGLES))] == pytest.approx(1.0)
    assert p[np.argmin(np.abs(ANGLES - math.pi / 2))] == pytest.approx(0.7 / 1.3, rel=1e-3)
    spiky = radial_profile(spikes=[(10, 0.5, 8.0, 0.0)])
    assert spiky.min() < 0.7 and spiky.max() == pytest.approx(1.0)
    notched = radial_profile(notch=(0.0, 0.4, 4.0))
    assert notched[np.argmin(np.abs(ANGLES))] == pytest.approx(0.6, rel=1e-3)
    rough = random_profile(np.random.default_rng(0), 0.8)
    assert rough.max() == pytest.approx(1.0) and rough.min() < 0.9
    angles = np.float32([0.0, math.pi / 2, -3.0, 4.0, 6.2])
    expected = np.interp(angles, ANGLES, p, period=2 * math.pi)
    np.testing.assert_allclose(lookup(p, angles), expected, atol=1e-5)
    both = lookup(np.stack([p, rough]), angles)
    np.testing.assert_allclose(both[0], expected, atol=1e-5)
    np.testing.assert_allclose(both[1], np.interp(angles, ANGLES, rough, period=2 * math.pi), atol=1e-5)


def test_star_level_coverage_area_and_boxes():
    box = box_around(50.0, 40.0, 20.0, (100, 100))
    g, theta = star_level(box, 50.0, 40.0, 20.0, 10.0, radial_profile())
    assert theta is None
    assert coverage(g, 10.0).sum() == pytest.approx(math.pi * 200, rel=0.02)
    rot, _ = star_level(box, 50.0, 40.0, 20.0, 10.0, radial_profile([0.01], [0.0]), math.pi / 2)
    inside = rot < 1
    ys, xs = np.nonzero(inside)
    assert np.ptp(ys) > np.ptp(xs), "rotated by 90 degrees: taller than wide"
    rho, theta = polar((slice(0, 100), slice(0, 100)), 50.0, 40.0, 20.0, 10.0, math.pi / 2)
    assert rho[40, 60] == pytest.approx(1.0) and theta[40, 60] == pytest.approx(1.5 * math.pi, abs=1e-3)
    assert rho[60, 50] == pytest.approx(1.0) and theta[60, 50] == pytest.approx(0.0, abs=1e-3)
    assert polar(box, 50.0, 40.0, 20.0, 10.0, with_angle=False)[1] is None
    assert box_around(-50, -50, 10, (100, 100)) is None
    assert box_around(95, 5, 10, (100, 100)) == (slice(0, 17), slice(84, 100))


def test_bump_is_an_ellipsoid_profile():
    assert bump(0.1, 0.2, 0.3, 0.5) == 0 and bump(0.5, 0.2, 0.3, 0.5) == 0
    assert bump(0.3, 0.2, 0.3, 0.5) == 1
    assert bump(0.4, 0.2, 0.3, 0.5) == pytest.approx(math.sqrt(0.75))


def test_canvas_paint_blends_and_labels():
    c = Canvas(64, np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32))
    c.paint(32, 32, 10, 10, 100.0, "liver")
    assert c.hu[32, 32] == pytest.approx(100) and c.hu[0, 0] == -1000
    assert c.labels[32, 32] == LABELS["liver"] and c.labels[32, 50] == 0
    c.paint(32, 32, 10, 10, -990.0, "bowel", above_y=32)
    assert c.hu[25, 32] == pytest.approx(-990) and c.hu[38, 32] == pytest.approx(100)
    assert c.paint(32, 32, 0.2, 10, 5.0, "bone") is None
    paint_bone(c, 32, 32, 8, 8, 900.0, 200.0, 1.0)
    assert c.hu[32, 32] < 400 < c.hu[32, 25] and c.labels[32, 32] == LABELS["bone"]


def test_noise_blur_and_png_encoding():
    rng = np.random.default_rng(0)
    n = correlated_noise(rng, (256, 256), 20.0, 0.9)
    assert n.std() == pytest.approx(20.0, rel=0.05)
    assert np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1] > 0.4, "CT noise is correlated"
    step = np.zeros((20, 20), np.float32)
    step[:, 10:] = 100
    b = blur(step, 1.0)
    assert 0 < b[5, 9] < 50 < b[5, 10] < 100 and b.mean() == pytest.approx(50, abs=0.5)
    s = scan(np.full((64, 64), -1200, np.float32), rng, 10.0)
    assert s.min() >= -1024
    png = hu_to_png(np.array([[-1000.4, 0.0, 40.6]]))
    assert png.dtype == np.uint16 and png.tolist() == [[31768, 32768, 32809]]


def _series(level_rng_seed=0, size=512, phase="portal"):
    rng = np.random.default_rng(level_rng_seed)
    return make_series_anatomy(make_patient_anatomy(rng, female=True), rng, 0.75, size, phase)


def test_anatomy_has_organs_at_their_levels():
    s = _series()
    c, f = render_anatomy(s, 0.22)
    lab, hu = c.labels, c.hu
    assert np.median(hu[lab == LABELS["lung"]]) < -700
    assert lab[int(f.spine_y), int(f.cx)] == LABELS["bone"], "vertebral body on the midline"
    assert (lab == LABELS["heart"]).sum() > 1000
    ribs = (lab == LABELS["bone"]) & (np.abs(np.arange(512) - f.cx)[None, :] > 0.6 * f.a)
    assert ribs.sum() > 50, "ribs in the lateral chest wall"
    c, f = render_anatomy(s, 0.45)
    assert abs(np.median(c.hu[c.labels == LABELS["liver"]]) - s.hu["liver"]) < 15
    assert (c.labels == LABELS["lung"]).sum() == 0 or (c.labels == LABELS["lung"]).sum() < 5000
    c, f = render_anatomy(s, 0.53)
    assert (c.labels == LABELS["kidney"]).sum() > 1500
    c, f = render_anatomy(s, 0.9)
    assert (c.labels == LABELS["bladder"]).sum() > 1000
    assert np.all(c.hu[:30, :30] == -1000)
    assert s.hu["artery"] > PHASES["native"]["artery"] + 80
    small = _series(size=128)
    assert small.mm * small.patient.half_width_mm < 0.46 * 128, "anatomy scaled to fit a small field"


def test_skeleton_muscles_and_slice_frame():
    s = _series(3)
    c, f = render_anatomy(s, 0.2)
    assert f.xy(0.0, 0.0) == (f.cx, f.cy) and f.xy(1.0, -1.0) == (f.cx + f.a, f.cy - f.b)
    x, y = f.cavity_edge(-math.pi / 2)  # anterior chest wall: the sternum straddles it
    assert abs(x - f.cx) < 1 and y < f.cy
    assert (c.labels[int(y) - 12 : int(y) + 4, int(x) - 3 : int(x) + 4] == LABELS["bone"]).any()
    canal_y = f.spine_y + (0.92 * f.vertebra_mm + 8.5) * f.mm
    for side in (-1, 1):  # paraspinal muscles beside the spinous process
        assert c.labels[int(canal_y + 14 * f.mm), int(f.cx + side * 30 * f.mm)] == LABELS["muscle"]
    c, f = render_anatomy(s, 0.93)
    for side in (-1, 1):  # femoral heads
        x, y = f.xy(side * 0.54, 0.1)
        assert c.labels[int(y), int(x)] == LABELS["bone"] and c.hu[int(y), int(x)] > 150


def test_anatomy_changes_smoothly_along_z():
    s = _series(1)
    a, _ = render_anatomy(s, 0.5)
    b, _ = render_anatomy(s, 0.5 + 2.5 / s.patient.length_mm)
    c, _ = render_anatomy(s, 0.5 + 40 / s.patient.length_mm)
    assert np.abs(a.hu - b.hu).mean() < 0.5 * np.abs(a.hu - c.hu).mean()


def test_lesion_shape_size_and_z_profile():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError):
        sample_lesion(rng, 9, 20.0)
    lesion = sample_lesion(rng, 4, 30.0)
    lesion.cx = lesion.cy = 100.0
    lesion.radius_px = calibrate_radius(lesion, 40.0)
    box = lesion_box(lesion, (200, 200))
    key = lesion_level(lesion, box, 0.0) < 1
    assert mask_axes(key).long_px == pytest.approx(40.0, rel=0.02)
    assert not key[0].any() and not key[-1].any() and not key[:, 0].any() and not key[:, -1].any()
    side = lesion_level(lesion, box, 0.6 * lesion.blobs[0].hz_mm)
    assert side is None or (side < 1).sum() < key.sum()
    assert lesion_level(lesion, box, lesion.hz_mm + 1.0) is None
    hu = np.full((200, 200), 60.0, np.float32)
    lesion.hu = -20.0
    box2, hard = paint_lesion(hu, lesion, 0.0, 7)
    assert hard.sum() == key.sum()
    assert np.median(hu[box2][hard]) < 10 and hu[0, 0] == 60
    assert paint_lesion(hu, lesion, lesion.hz_mm + 1.0, 8) is None
    specks = np.zeros((9, 9), bool)
    specks[1:4, 1:4] = True
    specks[5, 5] = specks[7, 8] = True
    assert largest_component(specks).sum() == 9 and largest_component(specks[:4]).sum() == 9


def test_lesions_are_placed_in_their_host_organ_without_overlap():
    s = _series(2)
    c, f = render_anatomy(s, 0.45)
    rng = np.random.default_rng(0)
    lesions = [sample_lesion(rng, 4, 20.0), sample_lesion(rng, 4, 15.0), sample_lesion(rng, 7, 20.0)]
    place_lesions(c, f, lesions, [20 / 0.75, 15 / 0.75, 20 / 0.75], rng, 0.75)
    liver = host_mask(c.labels, f, 4)
    wall = host_mask(c.labels, f, 7)
    assert liver[int(lesions[0].cy), int(lesions[0].cx)] and liver[int(lesions[1].cy), int(lesions[1].cx)]
    assert wall[int(lesions[2].cy), int(lesions[2].cx)]
    masks = []
    for lesion in lesions:
        box, hard = paint_lesion(c.hu, lesion, 0.0, 1)
        m = np.zeros((512, 512), bool)
        m[box] = hard
        masks.append(m)
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()


def test_annotate_measures_the_mask_with_small_jitter():
    mask = np.zeros((80, 80), bool)
    mask[20:40, 10:70] = True
    rec = annotate(mask, (0.8, 0.8), np.random.default_rng(0))
    true = mask_axes(mask, spacing=(0.8, 0.8))
    assert rec.long_length == pytest.approx(true.long_px, abs=3 * 0.7)
    assert np.abs(rec.points - np.concatenate([true.long_endpoints, true.short_endpoints])).max() <= 1.4 + 1e-9


def test_plan_splits_and_series_layout():
    assert split_counts(40) == {1: 24, 2: 6, 3: 10}
    for n in range(6, 30):
        c = split_counts(n)
        assert sum(c.values()) == n and min(c.values()) >= 1 and c[1] >= c[3] >= c[2]
    assert split_counts(1) == {1: 1, 2: 0, 3: 0}
    plan = plan_corpus(60, 0)
    assert [p.patient_index for p in plan] == list(range(1, len(plan) + 1))
    n = 0
    for p in plan:
        assert folder_name(p, p.studies[0], p.studies[0].series[0]).startswith(f"{p.patient_index:06d}_01_01")
        for st in p.studies:
            for se in st.series:
                idx = [k.index for k in se.keys]
                assert idx == sorted(idx) and min(idx) - NEIGHBOURS >= 1
                for k1, k2 in zip(se.keys, se.keys[1:]):
                    gap = (k2.index - k1.index) * se.spacing[2]
                    assert gap >= NEIGHBOURS * se.spacing[2] + max(k1.reach_mm, k2.reach_mm)
                for k in se.keys:
                    assert se.slice_level(k.index, p.anatomy.length_mm) == pytest.approx(k.level)
                    for les in k.lesions:
                        lo, hi = TYPE_LEVELS[les.lesion_type]
                        assert lo - 0.01 <= k.level <= hi + 0.01
                        n += 1
    assert n == 60


def test_render_series_and_dl_info_row(tmp_path):
    plan = plan_corpus(3, 2)
    patient = plan[0]
    study, series = patient.studies[0], patient.studies[0].series[0]
    calls = []
    recs = render_series(patient, study, series, 256, tmp_path, on_slice=lambda: calls.append(1))
    assert len(calls) == len(series.keys) * (2 * NEIGHBOURS + 1)
    assert len(recs) == sum(len(k.lesions) for k in series.keys)
    row = dl_info_row(recs[0], patient, study, series, 256)
    assert len(row) == 18 and row[0] == f"{recs[0].folder}_{recs[0].key_index:03d}.png"
    assert row[9] == (-1 if patient.split == 1 else recs[0].lesion_type)
    assert (tmp_path / recs[0].mask_path).is_file()


def test_png_writer_writes_and_reports_failures(tmp_path):
    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    with PngWriter() as w:
        w.write(tmp_path / "a.png", img)
    assert np.array_equal(cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED), img)
    with pytest.raises(OSError, match="could not write"):
        with PngWriter() as w:
            w.write(tmp_path / "missing" / "b.png", img)
