"""Tests of the generated LiTS-format sample (``nnunet_ulseg.demo.lits``, E²Net Sec. 3 data).

One 3-case sample is written per module and read back with SimpleITK: file names, dtypes,
geometry ranges, label values, tumours inside the liver and visible in the CT with the
drawn sign of contrast, CT-like anatomy; then determinism per seed and the CLI.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.demo import lits
from nnunet_ulseg.demo.lits import (
    CONTRASTS,
    DIAMETER_MM,
    _contrast,
    _place_tumours,
    generate_case,
    make_lits_sample,
    segmentation_name,
    volume_name,
)

N_CASES = 3


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_lits_sample(tmp_path_factory.mktemp("lits") / "sample", N_CASES, seed=0, progress=False)


def _read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_files_and_geometry(sample):
    names = sorted(p.name for p in sample.iterdir())
    assert names == sorted([volume_name(i) for i in range(N_CASES)] + [segmentation_name(i) for i in range(N_CASES)]
                           + ["lits_sample_cases.csv", "lits_sample_tumours.csv"])
    for i in range(N_CASES):
        vol, hu = _read(sample / volume_name(i))
        seg, label = _read(sample / segmentation_name(i))
        assert hu.dtype == np.int16 and label.dtype == np.uint8
        assert hu.shape == label.shape and hu.shape[1:] == (128, 128) and 20 <= hu.shape[0] <= 40
        sx, sy, sz = vol.GetSpacing()
        assert sx == sy and 0.6 <= sx <= 0.9 and 1.0 <= sz <= 5.0
        assert seg.GetSpacing() == vol.GetSpacing() and seg.GetOrigin() == vol.GetOrigin()
        assert all(abs(o) >= 100 for o in vol.GetOrigin())  # a scanner-like, non-identity origin
        assert set(np.unique(label).tolist()) <= {0, 1, 2} and (label == 1).any()


def test_ct_like_intensities(sample):
    for i in range(N_CASES):
        _, hu = _read(sample / volume_name(i))
        _, label = _read(sample / segmentation_name(i))
        assert abs(float(hu[:, :4, :4].mean()) + 1000) < 40  # air in the corners
        assert 40 < float(hu[label == 1].mean()) < 75  # liver ~60 HU (native phase, 58 HU + texture)
        body = hu > -500
        assert ((hu > -150) & (hu < -50) & body).sum() > 500  # fat
        assert (hu > 300).sum() > 50  # bone (spine, ribs)


def test_tumours_inside_liver_and_visible(sample):
    tumours = _rows(sample / "lits_sample_tumours.csv")
    cases = _rows(sample / "lits_sample_cases.csv")
    assert [int(r["case"]) for r in cases] == list(range(N_CASES))
    assert sum(int(r["n_tumours"]) for r in cases) == len(tumours) > 0
    for r in cases:
        _, label = _read(sample / segmentation_name(int(r["case"])))
        assert int(r["tumour_voxels"]) == int((label == 2).sum())
        assert int(r["liver_voxels"]) == int((label > 0).sum())
    for t in tumours:
        _, hu = _read(sample / volume_name(int(t["case"])))
        _, label = _read(sample / segmentation_name(int(t["case"])))
        x, y, z = int(t["x"]), int(t["y"]), int(t["z"])
        assert label[z, y, x] == 2  # the centre voxel is always tumour
        assert DIAMETER_MM[0] <= float(t["diameter_mm"]) <= DIAMETER_MM[1]
        assert t["contrast"] in CONTRASTS
        delta = float(t["delta_hu"])
        assert (delta < 0) if t["contrast"] == "hypo" else (delta > 0) if t["contrast"] == "hyper" else \
            8 <= abs(delta) <= 15
        if abs(delta) >= 25 and int(t["voxels"]) >= 30:  # a clear tumour shows its sign against the liver
            near = np.zeros_like(label, dtype=bool)
            near[max(z - 1, 0):z + 2, max(y - 12, 0):y + 13, max(x - 12, 0):x + 13] = True
            diff = hu[near & (label == 2)].mean() - hu[near & (label == 1)].mean()
            assert np.sign(diff) == np.sign(delta) and abs(diff) > 10


def test_place_tumours_clips_to_liver_and_keeps_centre():
    liver = np.zeros((10, 40, 40), dtype=bool)
    liver[2:8, 10:30, 12:28] = True
    mask, offset, tumours = _place_tumours(np.random.default_rng(5), liver, (3.0, 0.8, 0.8), 4)
    assert len(tumours) == 4 and mask.any()
    assert not (mask & ~liver).any()  # label 2 only inside the liver
    assert not offset[~liver].any()  # and the CT changes only there
    for t in tumours:
        x, y, z = t.centre
        assert mask[z, y, x] and liver[z, y, x]
    empty, _, none = _place_tumours(np.random.default_rng(5), liver, (3.0, 0.8, 0.8), 0)
    assert not empty.any() and none == []


def test_contrast_kinds_and_ranges():
    rng = np.random.default_rng(0)
    draws = [_contrast(rng) for _ in range(300)]
    kinds = {k for k, _ in draws}
    assert kinds == set(CONTRASTS)
    for kind, delta in draws:
        _, lo, hi = CONTRASTS[kind]
        assert lo <= abs(delta) <= hi
        if kind == "hypo":
            assert delta < 0
        if kind == "hyper":
            assert delta > 0
    low = [d for k, d in draws if k == "low"]
    assert min(low) < 0 < max(low)  # low-contrast tumours come in both signs


def test_determinism_per_seed(sample, tmp_path):
    again = make_lits_sample(tmp_path / "again", 1, seed=0, progress=False)  # case 0 does not depend on N
    assert (again / volume_name(0)).read_bytes() == (sample / volume_name(0)).read_bytes()
    assert (again / segmentation_name(0)).read_bytes() == (sample / segmentation_name(0)).read_bytes()
    a, b = generate_case(0, seed=0), generate_case(0, seed=1)
    assert a.hu.shape != b.hu.shape or not np.array_equal(a.hu, b.hu)
    c1 = generate_case(1, seed=0)
    assert a.spacing != c1.spacing  # cases of one seed differ too


def test_refuses_non_empty_folder_and_bad_counts(tmp_path):
    (tmp_path / "x.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        make_lits_sample(tmp_path, 1, progress=False)
    with pytest.raises(ValueError, match="n_cases"):
        make_lits_sample(tmp_path / "new", 0, progress=False)
    assert (tmp_path / "x.txt").read_text() == "keep"


def test_cli(tmp_path, capsys):
    from nnunet_ulseg.cli import main

    assert main(["make-lits-sample", "-o", str(tmp_path / "s"), "--cases", "1", "--seed", "2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 LiTS-format cases" in out and (tmp_path / "s" / "volume-0.nii").is_file()
    assert lits.TUMOUR == 2 and lits.LIVER == 1
