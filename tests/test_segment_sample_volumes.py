"""``ulseg sample-volumes``: a generated sample's series as NIfTI volumes, true masks and a segment manifest.

Checked against the sample's own files: the HU are the PNGs minus 32768, the spacing is
DL_info's, the truth label ``n`` is the ``n``-th manifest lesion's true mask, the
manifest's marks parse with ``ulseg segment``'s reader onto the lesion; ``--shrink``
scales the marks exactly and the masks' axes within 2 px, refills the voxels the lesions
left and touches nothing else.
"""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg import cli
from nnunet_ulseg.demo import make_sample
from nnunet_ulseg.demo.truth3d import TrueMasks3D
from nnunet_ulseg.demo.volume import shrink_mask, write_sample_volumes
from nnunet_ulseg.evaluation.metrics import measure_mask
from nnunet_ulseg.segment.marks import parse_marks
from nnunet_ulseg.segment.scan import read_manifest
from nnunet_ulseg.segment.volume_io import read_volume

FACTOR = 0.6


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_volumes")
    sample = make_sample(root / "sample", n_lesions=6, seed=3, image_size=128, progress=False)
    assert cli.main(["sample-volumes", "-i", str(sample), "-o", str(root / "t0"), "--no-progress"]) == 0
    assert cli.main(["sample-volumes", "-i", str(sample), "-o", str(root / "t1"), "--shrink", str(FACTOR),
                     "--no-progress"]) == 0
    return sample, root / "t0", root / "t1"


def _rows(folder):
    return list(csv.DictReader(open(folder / "manifest.csv", newline="")))


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_volumes_are_the_sample_slices_with_their_spacing_and_true_masks(volumes):
    sample, t0, _ = volumes
    info = list(csv.DictReader(open(sample / "DL_info.csv", newline="")))
    rows = _rows(t0)
    assert [r["lesion_id"] for r in rows] == [f"dl{n}" for n in range(2, len(info) + 2)]
    truth = TrueMasks3D(sample)
    jobs = read_manifest(t0 / "manifest.csv")
    assert sum(len(j.rows) for j in jobs) == len(info)
    for job in jobs:
        folder, lo = job.name.rsplit("_", 1)
        volume = read_volume(job.ct)
        labels = _array(t0 / f"{job.name}_truth.nii.gz")
        png = cv2.imread(str(sample / "Images_png" / folder / f"{int(lo):03d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(volume.hu[0], png.astype(np.float32) - 32768)
        marks, issues = parse_marks(job.rows, volume, strict=True)
        assert not issues
        for n, mark in enumerate(marks, start=1):
            line = int(mark.lesion_id[2:])
            r = info[line - 2]
            assert volume.spacing == pytest.approx([float(v) for v in r["Spacing_mm_px_"].split(",")])
            assert mark.k == int(r["Key_slice_index"]) - int(lo)
            true = truth.volume(line, r["File_name"]).mask
            assert np.array_equal(labels == n, true & ~np.isin(labels, range(1, n)))
            centre = np.round(mark.recist.points.mean(axis=0)).astype(int)
            assert true[mark.k, centre[1], centre[0]], "the mark's centre lies on the lesion"


def test_shrink_scales_marks_and_masks_and_refills_only_the_left_voxels(volumes):
    _, t0, t1 = volumes
    before, after = read_manifest(t0 / "manifest.csv"), read_manifest(t1 / "manifest.csv")
    assert [j.name for j in before] == [j.name for j in after]
    for a, b in zip(before, after):
        va, vb = read_volume(a.ct), read_volume(b.ct)
        ma, _ = parse_marks(a.rows, va, strict=True)
        mb, _ = parse_marks(b.rows, vb, strict=True)
        la, lb = _array(t0 / f"{a.name}_truth.nii.gz"), _array(t1 / f"{b.name}_truth.nii.gz")
        sx, sy, _ = va.spacing
        for n, (x, y) in enumerate(zip(ma, mb), start=1):
            assert (x.lesion_id, x.k) == (y.lesion_id, y.k)
            assert np.allclose(np.array(y.recist.lengths_mm((sx, sy))), FACTOR * np.array(x.recist.lengths_mm((sx, sy))),
                               atol=1e-3)
            big = measure_mask(la[x.k] == n, (1.0, 1.0), convention="uls23")
            small = measure_mask(lb[x.k] == n, (1.0, 1.0), convention="uls23")
            # 2 px: nearest-neighbour sampling (1 px) and ULS23's boundary-centre axes ((1 - factor) px)
            assert abs(small.long_mm - FACTOR * big.long_mm) <= 2.0
            assert abs(small.short_mm - FACTOR * big.short_mm) <= 2.0
        assert np.array_equal(va.hu[la == 0], vb.hu[la == 0]), "tissue outside the lesions is untouched"
        left = (la > 0) & (lb == 0)
        for k in np.flatnonzero(left.any(axis=(1, 2))):
            assert len(np.unique(vb.hu[k][left[k]])) == 1, "left voxels get one ring median per slice"


def test_shrink_mask_by_hand():
    mask = np.zeros((5, 21, 21), dtype=bool)
    mask[1:4, 5:16, 5:16] = True  # an 11 x 11 x 3 block about (10, 10), key slice 2
    half = shrink_mask(mask, (10.0, 10.0), 2, 0.5)
    assert half[2].sum() == half[2, 7:14, 7:14].sum() and half[2, 8:13, 8:13].all()
    assert half[[0, 1, 3, 4]].sum() == 0  # 3 slices x 0.5: slice 2 +- 1 samples the empty slices 0 and 4
    deep = mask.copy()
    deep[:, 5:16, 5:16] = True  # 5 slices x 0.6: slice 2 +- 1 sample 0.33 -> 0 and 3.67 -> 4; +- 2 fall outside
    assert [bool(s.any()) for s in shrink_mask(deep, (10.0, 10.0), 2, 0.6)] == [False, True, True, True, False]
    assert np.array_equal(shrink_mask(mask, (10.0, 10.0), 2, 1.0), mask)


def test_shrink_outside_range_is_refused(volumes, tmp_path):
    sample, _, _ = volumes
    with pytest.raises(ValueError, match="shrink"):
        write_sample_volumes(sample, tmp_path / "x", shrink=1.5, progress=False)
