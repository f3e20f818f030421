"""Tests of the demo corpus' 3D lesions and true 3D masks (issue 13 item 7).

One small corpus (8 lesions, 256 px, seed 1: series with 1, 2.5 and 5 mm slice
intervals, one slice with three lesions) is checked on disk: an instance map per written
slice, ``masks3d.csv`` listing exactly where each lesion is, the key slice the largest
section, sections that never grow away from it, and the :class:`TrueMasks3D` reader.
Series are also rendered directly, with and without the lesions painted (the same
random stream), to see that the CT shows a lesion exactly where its true mask is, and
with and without off-key sections, to see that the key slice does not depend on them.
"""
from __future__ import annotations

import csv
import math
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from nnunet_ulseg.demo import TrueMasks3D, make_sample
from nnunet_ulseg.demo import series as series_module
from nnunet_ulseg.demo.corpus import MASKS3D_COLUMNS
from nnunet_ulseg.demo.layout import NEIGHBOURS, plan_corpus
from nnunet_ulseg.demo.lesions import (
    calibrate_radius,
    fit_sections,
    lesion_box,
    lesion_level,
    sample_lesion,
    section_mask,
    z_extent_mm,
)
from nnunet_ulseg.demo.shapes import star_level
from nnunet_ulseg.evaluation.references.sample import TrueMasks
from nnunet_ulseg.recist import mask_axes, parse_numbers

SIZE = 256


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("demo3d") / "s", n_lesions=8, seed=1, image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def rows(corpus) -> list[dict]:
    return _rows(corpus / "DL_info.csv")


@pytest.fixture(scope="module")
def lesions(corpus, rows) -> list[dict]:
    """Per DL_info row: folder, key, instance, slice interval and the on-disk mask of every Slice_range slice."""
    out = []
    for r, m in zip(rows, _rows(corpus / "masks.csv")):
        folder = r["File_name"].rsplit("_", 1)[0]
        lo, hi = parse_numbers(r["Slice_range"], 2).astype(int)
        k = int(m["lesion_instance"])
        maps = {i: cv2.imread(str(corpus / "Masks_png" / folder / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED)
                for i in range(lo, hi + 1)}
        out.append({"file": r["File_name"], "folder": folder, "key": int(r["Key_slice_index"]), "instance": k,
                    "dz": parse_numbers(r["Spacing_mm_px_"], 3)[2], "maps": maps,
                    "masks": {i: im == k for i, im in maps.items()}})
    return out


# ----------------------------------------------------------------------------- on disk


def test_every_slice_has_an_instance_map_and_masks3d_lists_each_lesion_exactly(corpus, rows, lesions):
    table = _rows(corpus / "masks3d.csv")
    assert list(table[0]) == MASKS3D_COLUMNS
    by_lesion = defaultdict(list)
    for t in table:
        by_lesion[(t["File_name"], int(t["lesion_instance"]))].append(t)
    assert len(by_lesion) == len(rows), "every lesion has rows"
    order = [(t["File_name"], int(t["lesion_instance"])) for t in table]
    assert order == sorted(order, key=[(les["file"], les["instance"]) for les in lesions].index), "DL_info order"
    for les in lesions:
        for i, im in les["maps"].items():
            assert im is not None and im.dtype == np.uint8 and im.shape == (SIZE, SIZE), (les["folder"], i)
        mine = by_lesion[(les["file"], les["instance"])]
        listed = [int(t["slice_index"]) for t in mine]
        present = [i for i, m in les["masks"].items() if m.any()]
        assert listed == present, les["file"]
        assert les["key"] in listed and listed == list(range(listed[0], listed[-1] + 1)), "consecutive slices"
        for t in mine:
            i = int(t["slice_index"])
            assert int(t["offset"]) == i - les["key"]
            assert float(t["z_mm"]) == pytest.approx((i - les["key"]) * les["dz"])
            assert int(t["pixels"]) == les["masks"][i].sum()
            assert t["mask_path"] == f"Masks_png/{les['folder']}/{i:03d}.png"
    # a slice shared by several lesions keeps one instance number per lesion on all its neighbours
    shared = [les for les in lesions if les["maps"][les["key"]].max() > 1]
    assert len(shared) >= 3
    for les in shared:
        for i, im in les["maps"].items():
            assert set(np.unique(im)) <= set(range(int(les["maps"][les["key"]].max()) + 1))


def test_key_slice_has_the_longest_axis_and_sections_shrink_towards_the_ends(lesions):
    ended = shrank = 0
    for les in lesions:
        masks, key = les["masks"], les["key"]
        longs = {i: mask_axes(m).long_px if m.any() else 0.0 for i, m in masks.items()}
        areas = {i: int(m.sum()) for i, m in masks.items()}
        assert longs[key] == max(longs.values()), les["file"]
        for side in (-1, 1):
            run = [key + side * j for j in range(NEIGHBOURS + 1)]
            assert all(areas[a] >= areas[b] for a, b in zip(run, run[1:])), (les["file"], [areas[i] for i in run])
            assert all(longs[a] >= longs[b] for a, b in zip(run, run[1:])), (les["file"], [longs[i] for i in run])
            if areas[run[-1]] == 0:
                ended += 1
            shrank += areas[run[1]] < areas[key]
    assert ended >= 4, "on 5 mm series lesions end inside their sub-volume"
    assert shrank >= len(lesions), "the first neighbours are mostly smaller than the key section"


def test_z_extent_in_mm_on_thin_and_thick_series(lesions):
    by_dz = defaultdict(list)
    for les in lesions:
        present = [i - les["key"] for i, m in les["masks"].items() if m.any()]
        by_dz[les["dz"]].append((les, present))
    assert {1.0, 5.0} <= set(by_dz)
    for les, present in by_dz[1.0]:
        # 7 slices span only 6 mm: every lesion of >= 5 mm reaches at least the first neighbours
        assert {-1, 0, 1} <= set(present), les["file"]
    mean_slices = {dz: np.mean([len(p) for _, p in v]) for dz, v in by_dz.items()}
    assert mean_slices[1.0] > mean_slices[5.0]


def test_true_masks_3d_round_trip(corpus, rows, lesions):
    truth = TrueMasks3D(corpus)
    key_truth = TrueMasks(corpus)
    for line, (r, les) in enumerate(zip(rows, lesions), start=2):
        vol = truth.volume(line, r["File_name"])
        mask, slices, spacing = vol
        lo, hi = parse_numbers(r["Slice_range"], 2).astype(int)
        np.testing.assert_array_equal(slices, np.arange(lo, hi + 1))
        assert mask.dtype == bool and mask.shape == (hi - lo + 1, SIZE, SIZE)
        assert spacing == tuple(parse_numbers(r["Spacing_mm_px_"], 3))
        for z, i in enumerate(slices):
            np.testing.assert_array_equal(mask[z], les["masks"][i])
        np.testing.assert_array_equal(mask[les["key"] - lo], key_truth.mask(line, r["File_name"]))
        assert truth.present_slices(line) == [i for i in slices if les["masks"][i].any()]
        assert vol.complete == (not mask[0].any() and not mask[-1].any())
        assert vol.volume_mm3 == pytest.approx(mask.sum() * spacing[0] * spacing[1] * spacing[2])
    assert any(truth.volume(line).complete for line in range(2, len(rows) + 2))
    assert not all(truth.volume(line).complete for line in range(2, len(rows) + 2))
    with pytest.raises(ValueError, match="expected"):
        truth.volume(2, "000099_01_01_001.png")
    with pytest.raises(ValueError, match="no entry"):
        truth.volume(len(rows) + 2)


def test_true_masks_3d_refuses_inconsistent_or_old_samples(corpus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    table = _rows(broken / "masks3d.csv")
    victim = next(t for t in table if t["offset"] != "0")
    victim["pixels"] = str(int(victim["pixels"]) + 1)
    with open(broken / "masks3d.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, MASKS3D_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(table)
    line = 2 + [r["File_name"] for r in _rows(broken / "DL_info.csv")].index(victim["File_name"]) \
        + int(victim["lesion_instance"]) - 1
    with pytest.raises(ValueError, match=victim["mask_path"].split("/")[-1]):
        TrueMasks3D(broken).volume(line)
    (broken / "masks3d.csv").unlink()
    with pytest.raises(FileNotFoundError, match="masks3d.csv"):
        TrueMasks3D(broken)


def test_make_sample_3d_masks_are_deterministic(tmp_path):
    a = make_sample(tmp_path / "a", n_lesions=3, seed=4, image_size=128, progress=False)
    b = make_sample(tmp_path / "b", n_lesions=3, seed=4, image_size=128, progress=False)
    c = make_sample(tmp_path / "c", n_lesions=3, seed=5, image_size=128, progress=False)
    assert (a / "masks3d.csv").read_bytes() == (b / "masks3d.csv").read_bytes()
    assert (a / "masks3d.csv").read_bytes() != (c / "masks3d.csv").read_bytes()
    maps = sorted(p.relative_to(a) for p in (a / "Masks_png").rglob("*.png"))
    assert maps == sorted(p.relative_to(b) for p in (b / "Masks_png").rglob("*.png"))
    assert len(maps) == len(list((a / "Images_png").rglob("*.png"))), "one instance map per written slice"
    for rel in maps:
        np.testing.assert_array_equal(cv2.imread(str(a / rel), cv2.IMREAD_UNCHANGED),
                                      cv2.imread(str(b / rel), cv2.IMREAD_UNCHANGED))


# ----------------------------------------------------------------------------- rendering


def _series(dz: float):
    """(patient, study, series) of plan_corpus(8, 1) with slice interval ``dz`` and most lesions."""
    found = [(p, st, se) for p in plan_corpus(8, 1) for st in p.studies for se in st.series if se.spacing[2] == dz]
    return max(found, key=lambda t: sum(len(k.lesions) for k in t[2].keys))


def _hu(folder: Path, index: int) -> np.ndarray:
    return cv2.imread(str(folder / f"{index:03d}.png"), cv2.IMREAD_UNCHANGED).astype(np.int32) - 32768


@pytest.mark.parametrize("dz", [1.0, 5.0])
def test_ct_shows_each_lesion_exactly_where_its_true_mask_is(tmp_path, monkeypatch, dz):
    patient, study, series = _series(dz)
    recs = series_module.render_series(patient, study, series, SIZE, tmp_path / "with")
    real = series_module.paint_lesion
    monkeypatch.setattr(series_module, "paint_lesion", lambda hu, *a, **k: real(hu.copy(), *a, **k))
    series_module.render_series(patient, study, series, SIZE, tmp_path / "without")
    folder = recs[0].folder
    seen = 0
    for key in series.keys:
        for index in range(key.index - NEIGHBOURS, key.index + NEIGHBOURS + 1):
            diff = np.abs(_hu(tmp_path / "with" / "Images_png" / folder, index)
                          - _hu(tmp_path / "without" / "Images_png" / folder, index))
            inst = cv2.imread(str(tmp_path / "with" / "Masks_png" / folder / f"{index:03d}.png"),
                              cv2.IMREAD_UNCHANGED)
            # partial-volume blur (<= 5 px) then the scanner's blur (<= 3 px) spread a lesion's HU
            near = ndimage.binary_dilation(inst > 0, structure=np.ones((3, 3), bool), iterations=9)
            assert not diff[~near].any(), f"slice {index}: CT changed away from every true mask"
            for k in np.unique(inst[inst > 0]):
                inner = ndimage.binary_erosion(inst == k, iterations=2)
                if inner.sum() >= 4:
                    assert np.median(diff[inner]) > 10, f"slice {index} instance {k}: lesion not drawn"
                    seen += 1
    assert seen >= len(recs) * (3 if dz == 1.0 else 2)


def test_key_slice_does_not_depend_on_the_off_key_sections(tmp_path, monkeypatch):
    patient, study, series = _series(5.0)
    recs = series_module.render_series(patient, study, series, SIZE, tmp_path / "3d")
    real = series_module.fit_sections
    monkeypatch.setattr(series_module, "fit_sections",
                        lambda lesion, shape, offsets: {o: (1.0 if o == 0 else None) for o in real(lesion, shape, offsets)})
    flat = series_module.render_series(patient, study, series, SIZE, tmp_path / "2d")
    for a, b in zip(recs, flat):
        np.testing.assert_array_equal(a.recist.points, b.recist.points)
        assert b.slices == [(a.key_index, dict(a.slices)[a.key_index])]
    for key in series.keys:
        for sub in ("Images_png", "Masks_png"):
            one = tmp_path / "3d" / sub / recs[0].folder / f"{key.index:03d}.png"
            two = tmp_path / "2d" / sub / recs[0].folder / f"{key.index:03d}.png"
            assert one.read_bytes() == two.read_bytes()
    assert any(len(r.slices) > 1 for r in recs), "the 3D render does have off-key sections"


# ----------------------------------------------------------------------------- building blocks


def _old_key_level(lesion, box):
    """The key-slice level as the key-slice-only generator computed it (blob ellipsoids, unrotated offsets)."""
    d_lesion = 0.0 - lesion.z_mm
    cx = lesion.cx + lesion.drift[0] * d_lesion
    cy = lesion.cy + lesion.drift[1] * d_lesion
    out = None
    for b in lesion.blobs:
        f = 1.0 - ((d_lesion - b.dz_mm) / b.hz_mm) ** 2
        if f <= 0.0:
            continue
        rad = lesion.radius_px * b.scale
        g, _ = star_level(box, cx + lesion.radius_px * b.dx, cy + lesion.radius_px * b.dy, rad, rad * b.aspect,
                          b.profile, b.rotation + lesion.twist * d_lesion)
        g = g / np.float32(math.sqrt(f))
        out = g if out is None else np.minimum(out, g)
    return out


def _lesion(seed: int, family_type: int = 2, long_px: float = 30.0):
    rng = np.random.default_rng(seed)
    lesion = sample_lesion(rng, family_type, 20.0)
    lesion.cx, lesion.cy = 100.0 + rng.uniform(-0.5, 0.5), 100.0 + rng.uniform(-0.5, 0.5)
    lesion.z_mm = rng.uniform(-1.5, 1.5)
    lesion.drift = (rng.normal(0, 0.3), rng.normal(0, 0.3))
    lesion.twist = rng.normal(0, 0.05)
    lesion.radius_px = calibrate_radius(lesion, long_px)
    return lesion


def test_key_section_is_the_key_slice_only_generators():
    for seed in range(12):
        lesion = _lesion(seed)
        box = lesion_box(lesion, (200, 200))
        np.testing.assert_array_equal(lesion_level(lesion, box, 0.0), _old_key_level(lesion, box))


def test_sections_are_moved_subsets_that_end_where_the_blobs_end():
    for seed in range(6):
        lesion = _lesion(seed, 4)
        below, above = z_extent_mm(lesion)
        key = section_mask(lesion, (200, 200), 0.0)[2]
        key_long = mask_axes(key).long_px
        for dz in (1.0, 2.5, 5.0):
            offsets = [j * dz for j in range(-12, 13)]
            fit = fit_sections(lesion, (200, 200), offsets)
            present = [o for o in offsets if fit[o] is not None]
            expected = [o for o in offsets if -below < o < above]
            assert set(present) <= set(expected) and 0.0 in present
            assert present == [o for o in expected if present[0] <= o <= present[-1]], "one run of slices"
            assert len(expected) - len(present) <= 2, "at most the last tiny section on each side is empty"
            for side in (-1, 1):
                run = sorted((o for o in present if o * side >= 0), key=abs)
                areas = [int(section_mask(lesion, (200, 200), o, fit[o])[2].sum()) for o in run]
                assert areas == sorted(areas, reverse=True)
                assert all(mask_axes(section_mask(lesion, (200, 200), o, fit[o])[2]).long_px <= key_long
                           for o in run)
                if len(run) > 1:
                    assert areas[-1] < areas[0]
        # the true (unfitted) sections: never larger than the key section beyond pixelation
        for o in (1.0, -1.0, 3.0, -3.0):
            section = section_mask(lesion, (200, 200), o)
            if section is not None:
                assert section[2].sum() <= key.sum() * 1.05 + 4
        # thin slices sample the same lesion more densely: about extent / dz slices
        n1 = sum(fit_sections(lesion, (200, 200), [j * 1.0 for j in range(-30, 31)])[j * 1.0] is not None
                 for j in range(-30, 31))
        assert abs(n1 - (below + above)) <= 3


def test_a_blob_shrinks_as_a_half_ellipse_from_the_key_slice_to_its_ends():
    rng = np.random.default_rng(0)
    lesion = next(les for les in (sample_lesion(rng, 6, 40.0) for _ in range(50)) if len(les.blobs) == 1)
    lesion.cx = lesion.cy = 100.25
    lesion.z_mm = 0.2 * lesion.blobs[0].hz_mm  # centre above the key slice: the old ellipsoid grew towards it
    lesion.radius_px = calibrate_radius(lesion, 70.0)
    below, above = z_extent_mm(lesion)
    key_area = section_mask(lesion, (200, 200), 0.0)[2].sum()
    for dz in (-0.6 * below, -0.3 * below, 0.15 * above, 0.3 * above, 0.6 * above):
        end = above if dz > 0 else below
        area = section_mask(lesion, (200, 200), dz)[2].sum()
        assert area / key_area == pytest.approx(1 - (dz / end) ** 2, abs=0.03), dz
