"""Pseudo-mask registry: GrabCut-R's trimap and clamp (WSSS Sec. 3.1), the Table 1 makers, ``--pseudo``."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from nnunet_ulseg.conversion.sidecar import read_sidecar, write_sidecar
from nnunet_ulseg.labels import IGNORE, LABELS, LESION
from nnunet_ulseg.pseudo_masks.grabcut_r import AREA_RANGE, STATUS_FALLBACK, grabcut_r, grabcut_r_trimap
from nnunet_ulseg.pseudo_masks.registry import PSEUDO_NAMES, check_pseudo, make_pseudo_mask
from nnunet_ulseg.pseudo_masks.table1 import box_trimap, dilated_recist
from nnunet_ulseg.recist import Recist, ellipse_mask

# an axis-aligned mark: long axis x 40..88 (48 px) at y = 64, short axis y 52..76 (24 px) at x = 64
MARK = Recist.from_points([40, 64, 88, 64, 64, 52, 64, 76])
SHAPE = (128, 128)


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_trimap_region_fractions_are_10_20_20_50_percent_of_the_roi():
    labels, roi = grabcut_r_trimap(MARK, SHAPE)
    # the tight box is 48 x 24 px, so the ROI is the 96 x 48 box around (64, 64): x 16..112, y 40..88
    assert roi.sum() == 97 * 49  # pixel centres on both edges included
    assert roi[40:89, 16:113].all() and roi.sum() == roi[40:89, 16:113].sum()
    n = roi.sum()
    counts = [(labels[roi] == v).sum() for v in (cv2.GC_FGD, cv2.GC_PR_FGD, cv2.GC_PR_BGD, cv2.GC_BGD)]
    assert counts == [round(0.1 * n), round(0.3 * n) - round(0.1 * n), round(0.5 * n) - round(0.3 * n),
                      n - round(0.5 * n)]
    assert (labels[~roi] == cv2.GC_BGD).all()
    # FG is a band around the axes that stops at the endpoints: nothing beyond x = 88 or y = 76 on the axes' lines
    fg = labels == cv2.GC_FGD
    assert fg[64, 40:89].all() and fg[52:77, 64].all()
    assert not fg[64, 90:].any() and not fg[78:, 64].any()
    # ordered by distance to R: every PFG pixel is nearer the axes than every PBG pixel, PBG nearer than BG
    ys, xs = np.mgrid[0:128, 0:128]
    d = np.minimum(np.hypot(np.clip(xs, 40, 88) - xs, 64 - ys), np.hypot(64 - xs, np.clip(ys, 52, 76) - ys))
    assert d[labels == cv2.GC_PR_FGD].max() <= d[labels == cv2.GC_PR_BGD].min() + 1e-9
    assert d[labels == cv2.GC_PR_BGD].max() <= d[roi & (labels == cv2.GC_BGD)].min() + 1e-9


def test_trimap_rotates_with_the_mark():
    """The [w, h] box is the mark's own: a rotated mark gets the same region sizes (up to pixel rounding)."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    pts = (MARK.points - 64) @ np.array([[c, s], [-s, c]]) + 64
    labels, roi = grabcut_r_trimap(Recist.from_points(pts), SHAPE)
    assert abs(roi.sum() - 96 * 48) < 0.03 * 96 * 48  # the 2w x 2h area
    assert abs((labels == cv2.GC_FGD).sum() / roi.sum() - 0.10) < 0.005


def _ct_lesion(shape=SHAPE, seed=0):
    """A CT-like crop: soft tissue (40 HU) with noise, a notched lesion (120 HU), and the mark's true mask."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    blob = ((xs - 64) / 24.0) ** 2 + ((ys - 64) / 12.0) ** 2 <= 1.0
    notch = (np.abs(ys - 57) <= 6) & (xs >= 70) & (xs <= 84)  # a bite out of the upper right quarter
    lobe = ((xs - 50) / 7.0) ** 2 + ((ys - 74) / 6.0) ** 2 <= 1.0  # a lobe below the left half
    true = (blob & ~notch) | lobe
    image = np.where(true, 120.0, 40.0) + rng.normal(0, 12, shape)
    image = cv2.GaussianBlur(image, (3, 3), 0.8)
    return image.astype(np.int16), true


def test_grabcut_r_beats_the_ellipse_on_a_lesion_that_is_not_an_ellipse():
    image, true = _ct_lesion()
    mask, status = make_pseudo_mask("grabcut", MARK.points.ravel(), image, SHAPE, (-160, 240))
    assert status == "ok" and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, LESION}
    ellipse = ellipse_mask(MARK, SHAPE)
    assert dice(mask, true) > dice(ellipse, true) + 0.05
    assert dice(mask, true) > 0.9


def test_axis_clamp_on_homogeneous_tissue_keeps_the_axes():
    flat = np.full(SHAPE, 40, np.int16)
    result = grabcut_r(MARK, flat, (-160, 240))
    x = np.arange(40, 89)
    y = np.arange(52, 77)
    assert result.mask[64, x].all() and result.mask[y, 64].all()


def test_collapse_falls_back_to_the_ellipse():
    """An image that is bright exactly on the FG band: GrabCut keeps little more than the band (0.51 x ellipse)."""
    labels, _ = grabcut_r_trimap(MARK, SHAPE)
    image = np.where(labels == cv2.GC_FGD, 300, -100).astype(np.int16)
    result = grabcut_r(MARK, image, (-160, 240))
    assert result.status == STATUS_FALLBACK and result.reason == "collapse"
    assert result.area_ratio < AREA_RANGE[0]
    assert (result.mask == ellipse_mask(MARK, SHAPE)).all()
    mask, status = make_pseudo_mask("grabcut", MARK.points.ravel(), image, SHAPE, (-160, 240))
    assert status == "fallback_ellipse" and (mask.astype(bool) == result.mask).all()


def test_explosion_falls_back_to_the_ellipse():
    """A bright region filling the whole FG + PFG + PBG area: GrabCut takes 2.5 x the ellipse."""
    labels, _ = grabcut_r_trimap(MARK, SHAPE)
    image = np.where(labels != cv2.GC_BGD, 300, -100).astype(np.int16)
    result = grabcut_r(MARK, image, (-160, 240))
    assert result.status == STATUS_FALLBACK and result.reason in ("explosion", "axes")


def test_every_registry_name_runs_and_returns_a_binary_label():
    image, _ = _ct_lesion()
    assert PSEUDO_NAMES == ("ellipse", "grabcut", "dilated_recist", "grabcut_box", "grabcut_i")
    for name in PSEUDO_NAMES:
        mask, status = make_pseudo_mask(name, MARK.points.ravel(), image, SHAPE, (-160, 240))
        assert mask.shape == SHAPE and mask.dtype == np.uint8, name
        assert set(np.unique(mask)) <= {0, LESION} and mask.any(), name
        assert status in ("ok", "fallback_ellipse"), name
    with pytest.raises(ValueError, match="pseudo mask must be one of"):
        check_pseudo("dcrf")
    with pytest.raises(ValueError, match="needs the crop's HU image"):
        make_pseudo_mask("grabcut", MARK.points.ravel(), None, SHAPE, (-160, 240))


def test_table1_geometry():
    bbox_pixels = (np.abs(np.arange(128) - 64) <= 30).sum() * (np.abs(np.arange(128) - 64) <= 15).sum()
    dil = dilated_recist(MARK, SHAPE)  # 20 % of the 1.25-padded box (60 x 30 px)
    assert abs(dil.sum() - 0.2 * bbox_pixels) <= 2
    box = box_trimap(MARK, SHAPE, inner=False)
    assert (box == cv2.GC_PR_FGD).sum() == bbox_pixels and not (box == cv2.GC_FGD).any()
    inner = box_trimap(MARK, SHAPE, inner=True)
    assert abs((inner == cv2.GC_FGD).sum() / bbox_pixels - 0.2) < 0.02


def test_missing_window_uses_the_default_one():
    image, _ = _ct_lesion()
    a, _ = make_pseudo_mask("grabcut", MARK.points.ravel(), image, SHAPE, (float("nan"), float("nan")))
    b, _ = make_pseudo_mask("grabcut", MARK.points.ravel(), image, SHAPE, (-175, 275))
    assert (a == b).all()


def test_labels_module_is_the_dataset_json_contract():
    assert LABELS == {"background": 0, "lesion": LESION, "ignore": IGNORE} == {"background": 0, "lesion": 1,
                                                                                 "ignore": 2}


def test_convert_deeplesion_pseudo_grabcut_records_it(tmp_path):
    from nnunet_ulseg.conversion.cli import main
    from nnunet_ulseg.demo import make_sample

    sample = tmp_path / "sample"
    make_sample(sample, n_lesions=6, seed=5, image_size=256, progress=False)
    out = tmp_path / "raw"
    assert main(["-i", str(sample), "-o", str(out), "-np", "1", "--pseudo", "grabcut", "--quiet"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["pseudo"] == "grabcut" and meta["labels"] == LABELS
    rows = read_sidecar(out / "lesions.csv")
    assert rows and all(r.pseudo_status in ("ok", "fallback_ellipse") for r in rows)
    header = (out / "lesions.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "pseudo_status"
    # the written labels are GrabCut-R's, not the ellipse: at least one differs from its ellipse
    import SimpleITK as sitk

    differs = 0
    for r in rows:
        folder = "labelsTr" if r.split != "test" else "pseudolabelsTs"
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / folder / f"{r.case}.mha"))).reshape(r.crop_size, -1)
        differs += int((label.astype(bool) != ellipse_mask(Recist.from_points(r.recist_crop), label.shape)).any())
    assert differs > 0
    # an old sidecar without the column reads, as "ok"
    text = (out / "lesions.csv").read_text().splitlines()
    old = tmp_path / "old.csv"
    old.write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")
    assert [r.pseudo_status for r in read_sidecar(old)] == ["ok"] * len(rows)
    write_sidecar(tmp_path / "again.csv", rows)
    assert read_sidecar(tmp_path / "again.csv") == rows
