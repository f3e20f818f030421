"""ulseg segment outputs: the label volume has the input's geometry exactly; a known ellipse measures within 1 px; QA flag.

The model here is a real, if simple, segmenter (HU threshold on the crop it is given), so
the test exercises the whole crop -> predict -> paste-back -> measure path of
:mod:`nnunet_ulseg.segment` without training; nnU-Net's predictor is exercised by
``test_segment_e2e.py``.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.conversion.crop import CropSettings
from nnunet_ulseg.segment.marks import command_line_row
from nnunet_ulseg.segment.scan import ScanJob, segment_scans

SPACING = (0.7, 0.9, 2.0)
A, B, THETA = 18.0, 9.0, math.radians(30)  # semi-axes (px) and angle of the lesion
CX, CY, KEY = 60.0, 50.0, 3


class ThresholdModel:
    """Segments every crop pixel above 0 HU (the lesion is +60 HU, the background -100 HU)."""

    settings = CropSettings()
    lesion_label = 1

    def __init__(self):
        self.calls = []

    def predict(self, channels, spacing_xy):
        self.calls.append((channels.shape, tuple(spacing_xy)))
        return (channels[0] > 0).astype(np.uint8)


def _ellipse(shape, scale=1.0):
    yy, xx = np.indices(shape)
    u, v = xx - CX, yy - CY
    c, s = math.cos(THETA), math.sin(THETA)
    return ((u * c + v * s) / (A * scale)) ** 2 + ((-u * s + v * c) / (B * scale)) ** 2 <= 1.0


def _ct(tmp_path):
    hu = np.full((7, 100, 120), -100, np.int16)
    for k in range(7):  # an ellipsoid: sections shrink away from the key slice
        scale = math.sqrt(max(0.0, 1 - ((k - KEY) * SPACING[2] / 6.5) ** 2))
        if scale > 0.2:
            hu[k][_ellipse(hu.shape[1:], scale)] = 60
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(SPACING)
    img.SetOrigin((-30.0, 12.5, 200.0))
    img.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return path, img, hu


def _mark(scale_short=1.0):
    c, s = math.cos(THETA), math.sin(THETA)
    long = [CX - A * c, CY - A * s, CX + A * c, CY + A * s]
    short = [CX + B * s * scale_short, CY - B * c * scale_short, CX - B * s * scale_short, CY + B * c * scale_short]
    return ",".join(f"{v:.4f}" for v in long + short)


def test_label_volume_has_the_input_geometry_and_the_ellipse_measures_within_one_pixel(tmp_path):
    path, img, hu = _ct(tmp_path)
    model = ThresholdModel()
    job = ScanJob(path, [command_line_row(_mark(), None, KEY, lesion_id="E1")], "ct")
    result = segment_scans(model, [job], tmp_path / "out", progress=False)
    out = sitk.ReadImage(str(tmp_path / "out" / "ct.nii.gz"))
    img = sitk.ReadImage(str(path))  # the input as stored (NIfTI keeps float32 geometry): equal bit for bit
    assert out.GetSize() == img.GetSize() and out.GetSpacing() == img.GetSpacing()
    assert out.GetOrigin() == img.GetOrigin() and out.GetDirection() == img.GetDirection()
    labels = sitk.GetArrayFromImage(out)
    truth = hu[KEY] > 0
    assert set(np.unique(labels)) == {0, 1} and labels[KEY].astype(bool).sum() > 0
    assert not labels[[k for k in range(7) if k != KEY]].any()  # 2D: the RECIST slice only
    dice = 2 * (labels[KEY].astype(bool) & truth).sum() / (labels[KEY].astype(bool).sum() + truth.sum())
    assert dice > 0.97
    assert model.calls[0][1] == (1.0, 1.0)  # policy lesion: the converter's nominal spacing
    (rec,) = result.records
    # ULS23 convention: between boundary pixel centres; the true axes 2A, 2B px along the tilted axes
    long_px_mm = math.hypot(2 * A * math.cos(THETA) * SPACING[0], 2 * A * math.sin(THETA) * SPACING[1])
    px = max(SPACING[:2])
    assert abs(rec["long_mm"] - long_px_mm) <= px
    assert rec["recist_long_mm"] == pytest.approx(long_px_mm, abs=1e-3)
    assert rec["qa_flag"] == 0 and rec["qa_reason"] == ""
    assert rec["area_mm2"] == pytest.approx(truth.sum() * SPACING[0] * SPACING[1], rel=0.05)
    assert rec["recist_ellipsoid_mm3"] == pytest.approx(
        math.pi * rec["recist_long_mm"] * rec["recist_short_mm"] ** 2 / 6)
    # endpoints: voxel (x, y, k) on the key slice and their world points through the direction matrix
    (x, y, k) = rec["long_voxel"][0]
    assert k == KEY and truth[round(y), round(x)]
    np.testing.assert_allclose(rec["long_world"][0], img.TransformContinuousIndexToPhysicalPoint((x, y, k)))
    rows = list(csv.DictReader(open(tmp_path / "out" / "measurements.csv")))
    assert rows[0]["lesion_id"] == "E1" and rows[0]["volume_mm3"] == ""
    assert json.loads((tmp_path / "out" / "measurements.json").read_text())[0]["label"] == 1


def test_qa_flag_when_the_mark_disagrees_and_propagate_gives_a_volume(tmp_path):
    path, img, hu = _ct(tmp_path)
    rows = [command_line_row(_mark(scale_short=3.0), None, KEY, lesion_id="wide")]  # short axis drawn 3x too long
    result = segment_scans(ThresholdModel(), [ScanJob(path, rows, "ct")], tmp_path / "a", progress=False)
    (rec,) = result.records
    assert rec["qa_flag"] == 1 and rec["qa_reason"].startswith("short axis") and rec["short_error"] > 0.3
    result = segment_scans(ThresholdModel(), [ScanJob(path, [command_line_row(_mark(), None, KEY)], "ct")],
                           tmp_path / "b", propagate=True, ending=".mha", progress=False)
    (rec,) = result.records
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / "ct.mha")))
    truth = hu > 0
    assert rec["slices"] == int(truth.any(axis=(1, 2)).sum()) >= 3
    voxel = SPACING[0] * SPACING[1] * SPACING[2]
    assert rec["volume_mm3"] == pytest.approx(truth.sum() * voxel, rel=0.1)
    assert labels.astype(bool).sum() == pytest.approx(truth.sum(), rel=0.1)


class DilatedModel(ThresholdModel):
    """The threshold segmenter grown by 3 px: a model that paints a rim of tissue around the lesion."""

    def predict(self, channels, spacing_xy):
        from scipy.ndimage import binary_dilation

        return binary_dilation(channels[0] > 0, iterations=3).astype(np.uint8)


def test_propagate_with_mark_grabcut_snaps_every_slice_to_the_ct(tmp_path):
    path, img, hu = _ct(tmp_path)
    truth = hu > 0
    dice = {}
    for mode in ("mark", "mark-grabcut"):
        result = segment_scans(DilatedModel(), [ScanJob(path, [command_line_row(_mark(), None, KEY)], "ct")],
                               tmp_path / mode, propagate=True, postprocess=mode, ending=".mha", progress=False)
        (rec,) = result.records
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / mode / "ct.mha"))).astype(bool)
        # the walk ends where the model sees nothing (no tissue above 0 HU): the lesion's own slices only
        assert rec["slices"] == int(truth.any(axis=(1, 2)).sum())
        assert not labels[~truth.any(axis=(1, 2))].any()
        dice[mode] = 2 * (labels & truth).sum() / (labels.sum() + truth.sum())
    # the rim costs 'mark' Dice (0.87 measured); GrabCut on each slice's CT removes most of it (0.93), which
    # refining the key slice alone (a quarter of the voxels) could not reach
    assert dice["mark"] < 0.9 and dice["mark-grabcut"] > max(0.91, dice["mark"] + 0.05)
