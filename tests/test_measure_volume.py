"""``ulseg measure --volume`` end to end through ``nnunet_ulseg.cli.main`` on hand-made lesions (issue 13 item 6).

Acceptance: the volume in mm³ equals the voxel count x voxel volume of a hand-made lesion.
Crop boxes are chosen so that paste-back is exact (scale 1 on pixel edges, or scale 2 with
2 x 2 blocks), so every expected number is counted here by hand.
"""
import csv
import math

import numpy as np
import pytest

from nnunet_ulseg.cli import main
from nnunet_ulseg.conversion.io import write_mha
from nnunet_ulseg.conversion.sidecar import LesionRow, write_sidecar
from nnunet_ulseg.evaluation import cli as evaluation_cli
from nnunet_ulseg.evaluation.measure import MEASURE_COLUMNS, MEASURE_VOLUME_COLUMNS, measure_folder
from nnunet_ulseg.evaluation.measure3d import VOLUME_COLUMNS, VOLUME_GEOMETRIES

SX, SY, SZ = 0.6, 0.7, 2.5
VOXEL = SX * SY * SZ


def row(case, **kw) -> LesionRow:
    # scale 1, edge origin (9.5, 19.5): crop pixel [r, c] is slice pixel [20 + r, 10 + c]
    base = dict(case=case, split="test", dl_row=2, File_name="000001_01_01_010.png", patient=1, study=1, series=1,
                key_slice=10, crop_x0=9.5, crop_y0=19.5, crop_side=16.0, crop_size=16, scale=1.0, spacing_x=SX,
                spacing_y=SY, spacing_z=SZ, recist_slice=(0.0,) * 8, recist_crop=(0.0,) * 8, long_mm=6.0,
                short_mm=4.0, lesion_type=4, possibly_noisy=0, window_min=-175.0, window_max=275.0, image_width=48,
                image_height=48, context_slices=(10,))
    base.update(kw)
    return LesionRow(**base)


def disc_stack(n=16, radii=(0, 2, 4, 5, 3, 1, 0)):
    """``[z, y, x]`` uint8 volume of discs of the given radii (px) about the crop centre; radius 0 = empty slice."""
    y, x = np.indices((n, n))
    return np.stack([((x - 7.5) ** 2 + (y - 7.5) ** 2 <= r * r) & (r > 0) for r in radii]).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path):
    lesion = disc_stack()
    stray = lesion.copy()
    stray[0, 0, 0] = 1  # a one-voxel blob on another slice, not touching the lesion
    half = np.kron(disc_stack(8, (0, 2, 3, 1)), np.ones((1, 2, 2), dtype=np.uint8))  # 2 x 2 blocks
    rows = [row("lesion"), row("stray"), row("scaled", crop_side=8.0, scale=2.0), row("missing")]
    write_sidecar(tmp_path / "lesions.csv", rows)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_mha(str(pred / "lesion.mha"), lesion, (1.0, 1.0, 1.0))  # nominal spacing: the sidecar's is used
    write_mha(str(pred / "stray.mha"), stray, (1.0, 1.0, 1.0))
    write_mha(str(pred / "scaled.mha"), half, (1.0, 1.0, 1.0))
    return {"root": tmp_path, "pred": pred, "sidecar": tmp_path / "lesions.csv", "lesion": lesion, "half": half}


def read_table(path):
    with open(path, newline="") as f:
        return {t["case"]: t for t in csv.DictReader(f)}


def test_volume_is_voxel_count_times_voxel_volume_through_the_cli(folder, capsys):
    out = folder["root"] / "out"
    rc = main(["measure", "--pred", str(folder["pred"]), "--sidecar", str(folder["sidecar"]), "-o", str(out),
               "--volume", "--chill"])
    assert rc == 0
    assert "measured 3 lesion volume(s) (0 empty, 1 missing)" in capsys.readouterr().out
    with open(out / "measurements.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == MEASURE_VOLUME_COLUMNS
    t = read_table(out / "measurements.csv")
    lesion = folder["lesion"]
    count = int(lesion.sum())
    per_slice = lesion.sum(axis=(1, 2))
    m = t["lesion"]
    assert int(m["voxels"]) == count and float(m["voxel_mm3"]) == pytest.approx(VOXEL)
    assert float(m["volume_mm3"]) == pytest.approx(count * VOXEL)  # the acceptance point
    assert float(m["total_volume_mm3"]) == pytest.approx(count * VOXEL) and m["components_3d"] == "1"
    assert (m["slices"], m["first_z"], m["last_z"]) == ("5", "1", "5")
    assert float(m["z_extent_mm"]) == pytest.approx(5 * SZ)
    assert m["axes_z"] == "3"  # radius 5: the largest slice; the 2D columns are measured there
    assert float(m["area_mm2"]) == pytest.approx(per_slice[3] * SX * SY)
    ellipsoid = math.pi * 6.0 * 4.0 ** 2 / 6
    assert float(m["recist_ellipsoid_volume_mm3"]) == pytest.approx(ellipsoid)
    assert float(m["volume_ratio"]) == pytest.approx(count * VOXEL / ellipsoid)
    s = t["stray"]  # the stray voxel: a second component, counted in the total only
    assert s["components_3d"] == "2" and float(s["volume_mm3"]) == pytest.approx(count * VOXEL)
    assert float(s["total_volume_mm3"]) == pytest.approx((count + 1) * VOXEL)
    # scale 2: four crop voxels are one slice voxel; the volume is in slice geometry with the true spacing
    c = t["scaled"]
    assert int(c["voxels"]) * 4 == int(folder["half"].sum())
    assert float(c["volume_mm3"]) == pytest.approx(folder["half"].sum() / 4 * VOXEL)
    g = t["missing"]
    assert g["status"] == "missing" and g["volume_mm3"] == "nan"
    assert float(g["recist_ellipsoid_volume_mm3"]) == pytest.approx(ellipsoid)


def test_slice_geometry_volumes_and_the_2d_table_unchanged(folder, tmp_path):
    sl = tmp_path / "slice"
    sl.mkdir()
    whole = np.zeros((7, 48, 48), dtype=np.uint8)
    whole[:, 20:36, 10:26] = folder["lesion"]  # the same lesion written in slice geometry
    write_mha(str(sl / "lesion.mha"), whole, (SX, SY, SZ))
    rows = measure_folder(sl, folder["sidecar"], split="all", allow_missing=True, volume=True,
                          volume_geometry="slice")
    r = {x["case"]: x for x in rows}["lesion"]
    assert r["volume_mm3"] == pytest.approx(folder["lesion"].sum() * VOXEL) and r["axes_z"] == 3
    # its x1 y1 x2 y2 endpoints are in slice pixels: inside the lesion's columns 10..25 and rows 20..35
    x1, y1, x2, y2 = map(float, r["long_axis_px"].split())
    assert 9 <= min(x1, x2) and max(x1, x2) <= 26 and 19 <= min(y1, y2) and max(y1, y2) <= 36
    with pytest.raises(ValueError, match=r"lesion\.mha: shape \(7, 48, 48\) is not a \[z, y, x\] volume of crop"):
        measure_folder(sl, folder["sidecar"], split="all", allow_missing=True, volume=True)
    # without --volume, a 2D crop folder still gives the 2D table
    flat = tmp_path / "flat"
    flat.mkdir()
    write_mha(str(flat / "lesion.mha"), folder["lesion"][3], (1.0, 1.0))
    out = tmp_path / "flat.csv"
    measure_folder(flat, folder["sidecar"], out, split="all", allow_missing=True)
    with open(out, newline="") as f:
        assert tuple(next(csv.reader(f))) == MEASURE_COLUMNS


def test_volume_errors_name_the_file(folder, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_mha(str(bad / "lesion.mha"), np.zeros((3, 15, 15), np.uint8), (1.0, 1.0, 1.0))
    argv = ["measure", "--pred", str(bad), "--sidecar", str(folder["sidecar"]), "-o", str(tmp_path / "o"),
            "--volume", "--chill"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lesion.mha: shape (3, 15, 15)" in err and "crop slices 16 x 16" in err
    # 0/255 masks: an error naming the file without --lesion-label, measured with it
    write_mha(str(bad / "lesion.mha"), folder["lesion"] * 255, (1.0, 1.0, 1.0))
    assert main(argv) == 2 and "label values 255" in capsys.readouterr().err
    assert main([*argv, "--lesion-label", "255"]) == 0
    t = read_table(tmp_path / "o" / "measurements.csv")
    assert float(t["lesion"]["volume_mm3"]) == pytest.approx(folder["lesion"].sum() * VOXEL)
    with pytest.raises(ValueError, match="volume_geometry must be one of"):
        measure_folder(bad, folder["sidecar"], volume=True, volume_geometry="voi")


def test_cli_choices_agree_with_the_library():
    assert evaluation_cli.VOLUME_GEOMETRIES == VOLUME_GEOMETRIES
    assert MEASURE_VOLUME_COLUMNS[:len(MEASURE_COLUMNS)] == MEASURE_COLUMNS
    assert MEASURE_VOLUME_COLUMNS[len(MEASURE_COLUMNS):] == VOLUME_COLUMNS
