"""``ulseg evaluate --3d``: slice-by-slice crop predictions scored as volumes and per offset (WSSS Sec. 4, Fig. 4).

A hand-made sample (DL_info.csv, masks.csv, masks3d.csv and Masks_png instance maps, as
``ulseg make-sample`` writes them) holds box-shaped lesions whose every slice is known;
predictions are written as crop PNGs with a ``slices.csv`` (the format of ``ulseg
propagate``'s ``round<m>/test_predictions``).  Every expected number is counted by hand
from the boxes.  The ellipse baseline is checked on a sphere against the 3D RECIST
estimate's radius by Pythagoras.
"""
from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest

from nnunet_ulseg.cli import main
from nnunet_ulseg.conversion.sidecar import LesionRow, write_sidecar
from nnunet_ulseg.conversion.slices import SliceRow, read_slices, slice_case_name, write_slices
from nnunet_ulseg.demo.corpus import DL_INFO_COLUMNS, MASKS3D_COLUMNS, MASKS_COLUMNS
from nnunet_ulseg.evaluation.ellipse3d import write_ellipse_predictions
from nnunet_ulseg.evaluation.evaluate3d import METRICS3D_COLUMNS, evaluate_3d

SX, SY, SZ = 0.6, 0.7, 2.5
VOXEL = SX * SY * SZ
SIZE = 48
KEY, FIRST, LAST = 11, 8, 14  # key slice and Slice_range of every lesion


def _csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)


def write_sample(root, lesions, spacing=(SX, SY, SZ)):
    """A make-sample-like folder: ``lesions`` = [(series folder, {slice: [y, x] bool mask})], instance 1 each."""
    dl, masks, masks3d = [], [], []
    for folder, per_slice in lesions:
        (root / "Masks_png" / folder).mkdir(parents=True)
        name = f"{folder}_{KEY:03d}.png"
        for index in range(FIRST, LAST + 1):
            m = per_slice.get(index, np.zeros((SIZE, SIZE), bool))
            path = f"Masks_png/{folder}/{index:03d}.png"
            cv2.imwrite(str(root / path), m.astype(np.uint8))
            if m.any():
                masks3d.append({"File_name": name, "lesion_instance": 1, "slice_index": index,
                                "offset": index - KEY, "z_mm": (index - KEY) * spacing[2], "pixels": int(m.sum()),
                                "mask_path": path})
        dl.append({"File_name": name, "Key_slice_index": KEY, "Slice_range": f"{FIRST}, {LAST}",
                   "Spacing_mm_px_": ", ".join(str(s) for s in spacing), "Image_size": f"{SIZE}, {SIZE}"})
        masks.append({"File_name": name, "lesion_instance": 1, "mask_path": f"Masks_png/{folder}/{KEY:03d}.png",
                      "true_type": 4})
    _csv(root / "DL_info.csv", DL_INFO_COLUMNS, dl)
    _csv(root / "masks.csv", MASKS_COLUMNS, masks)
    _csv(root / "masks3d.csv", MASKS3D_COLUMNS, masks3d)
    return root


def row(case, dl_row, patient, **kw) -> LesionRow:
    # scale 1, edge origin (9.5, 19.5): crop pixel [r, c] is slice pixel [20 + r, 10 + c]
    base = dict(case=case, split="test", dl_row=dl_row, File_name=f"{patient:06d}_01_01_{KEY:03d}.png",
                patient=patient, study=1, series=1, key_slice=KEY, crop_x0=9.5, crop_y0=19.5, crop_side=16.0,
                crop_size=16, scale=1.0, spacing_x=SX, spacing_y=SY, spacing_z=SZ,
                recist_slice=(12.0, 24.0, 16.0, 24.0, 14.0, 22.0, 14.0, 26.0),
                recist_crop=(2.0, 4.0, 6.0, 4.0, 4.0, 2.0, 4.0, 6.0), long_mm=3.0, short_mm=2.8, lesion_type=4,
                possibly_noisy=0, window_min=-175.0, window_max=275.0, image_width=SIZE, image_height=SIZE,
                context_slices=(KEY,))
    base.update(kw)
    return LesionRow(**base)


def square(side, shape=(SIZE, SIZE), r0=20, c0=10):
    """A ``side`` x ``side`` box at slice pixel ``[r0, c0]`` (crop pixel [0, 0])."""
    m = np.zeros(shape, bool)
    m[r0:r0 + side, c0:c0 + side] = True
    return m


def crop_of(m):
    return m[20:36, 10:26].astype(np.uint8)


def write_predictions(folder, key_case, per_offset, ending=".png"):
    """Crop files of ``{offset: slice-geometry mask}`` and their slices.csv rows."""
    folder.mkdir(exist_ok=True)
    rows = []
    for offset, m in sorted(per_offset.items()):
        case = slice_case_name(key_case, offset)
        if m is not None:
            cv2.imwrite(str(folder / f"{case}{ending}"), crop_of(m))
        rows.append(SliceRow(case, key_case, offset, offset * SZ, KEY + offset, "test", "key" if offset == 0 else "none"))
    return rows


@pytest.fixture()
def data(tmp_path):
    # lesion A: boxes 2, 4, 6, 4, 2 px on slices 9..13 (ends inside the stack); B: 2 x 2 on slices 9..14
    a = {9: square(2), 10: square(4), 11: square(6), 12: square(4), 13: square(2)}
    b = {i: square(2, r0=24, c0=14) for i in range(9, 15)}
    sample = write_sample(tmp_path / "sample", [("000001_01_01", a), ("000002_01_01", b)])
    sidecar = tmp_path / "lesions.csv"
    write_sidecar(sidecar, [row("A", 2, 1), row("B", 3, 2), row("C", 4, 3, split="train")])
    half = square(4)
    half[:, 12:] = False  # 4 x 2 of the 4 x 4 box: 8 px
    pred = tmp_path / "round1"
    # A: offset -2 not listed (unpredicted), -1 and 0 exact, +1 half, +2 empty; B: exact on -2..+2
    rows = write_predictions(pred, "A", {-1: a[10], 0: a[11], 1: half, 2: np.zeros((SIZE, SIZE), bool)})
    rows += write_predictions(pred, "B", {k: b[KEY + k] for k in range(-2, 3)})
    write_slices(pred / "slices.csv", rows)
    return {"root": tmp_path, "sample": sample, "sidecar": sidecar, "pred": pred, "a": a}


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_3d_dice_volumes_and_offset_curve_by_hand_through_the_cli(data, capsys):
    out = data["root"] / "out"
    argv = ["evaluate", "--3d", "--pred", str(data["pred"]), "--ref", str(data["sample"]), "--sidecar",
            str(data["sidecar"]), "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3D Dice per lesion" in printed and "+2" in printed and "-2" in printed
    table = read_rows(out / "metrics3d.csv")
    assert tuple(table[0]) == METRICS3D_COLUMNS
    t = {r["case"]: r for r in table}
    assert set(t) == {"A", "B"}  # C is a train case: not in the test split
    a = t["A"]
    # reach 2 (largest listed offset): slices 9..13; truth 4 + 16 + 36 + 16 + 4 = 76 voxels
    # predicted: 16 + 36 + 8 = 60, all inside the truth; missed: slice 9 (not predicted), 8 px on 12, 4 px on 13
    assert (a["reach"], a["first_slice"], a["last_slice"]) == ("2", "9", "13")
    assert (int(a["tp_voxels"]), int(a["fp_voxels"]), int(a["fn_voxels"])) == (60, 0, 16)
    assert float(a["dice_3d"]) == pytest.approx(120 / 136)
    assert float(a["vs_3d"]) == pytest.approx(1 - 16 / 136)
    assert float(a["pred_volume_mm3"]) == pytest.approx(60 * VOXEL)
    assert float(a["ref_volume_mm3"]) == pytest.approx(76 * VOXEL)
    assert float(a["ref_volume_total_mm3"]) == pytest.approx(76 * VOXEL)
    assert (a["predicted_slices"], a["unpredicted_slices"], a["unpredicted_lesion_slices"]) == ("4", "1", "1")
    assert a["complete"] == "1"
    assert float(a["recist_ellipsoid_volume_mm3"]) == pytest.approx(math.pi * 3.0 * 2.8 ** 2 / 6)
    b = t["B"]
    # B's truth goes on to slice 14 (offset +3): outside the range, not counted as missed, and B is not complete
    assert float(b["dice_3d"]) == 1.0 and b["complete"] == "0"
    assert float(b["ref_volume_mm3"]) == pytest.approx(5 * 4 * VOXEL)
    assert float(b["ref_volume_total_mm3"]) == pytest.approx(6 * 4 * VOXEL)
    curve = {(r["grouping"], int(r["offset"])): r for r in read_rows(out / "offset_curve.csv")}
    # signed, mean over A and B: -2: (0 + 1) / 2, -1: 1, 0: 1, +1: (2/3 + 1) / 2, +2: (0 + 1) / 2
    expected = {-2: 0.5, -1: 1.0, 0: 1.0, 1: (2 * 8 / 24 + 1) / 2, 2: 0.5}
    for k, v in expected.items():
        assert float(curve[("signed", k)]["mean_dice"]) == pytest.approx(v) and curve[("signed", k)]["n"] == "2"
        assert float(curve[("signed", k)]["mean_offset_mm"]) == pytest.approx(k * SZ)
    assert float(curve[("absolute", 1)]["mean_dice"]) == pytest.approx((1 + 1 + 2 / 3 + 1) / 4)
    assert curve[("absolute", 2)]["n"] == "4" and float(curve[("absolute", 2)]["mean_offset_mm"]) == 2 * SZ
    summary = json.loads((out / "summary3d.json").read_text())
    s = summary["per_prediction"]["round1"]
    assert s["n"] == 2 and s["n_complete"] == 1
    assert s["dice_3d"]["mean"] == pytest.approx((120 / 136 + 1) / 2)
    assert s["dice_3d"]["worst"] == pytest.approx(120 / 136)
    assert s["dice_3d"]["std"] == pytest.approx((1 - 120 / 136) / 2)  # population sd of two values
    assert s["dice_3d_complete"]["mean"] == pytest.approx(120 / 136)
    assert summary["settings"]["file_endings"]["round1"] == ".png"  # detected from the files
    # --reach 1: slices 10..12 only; A: tp 16 + 36 + 8, fn 8 -> Dice 120 / 128
    assert main([*argv, "--reach", "1"]) == 0
    capsys.readouterr()
    t = {r["case"]: r for r in read_rows(out / "metrics3d.csv")}
    assert float(t["A"]["dice_3d"]) == pytest.approx(120 / 128) and t["A"]["complete"] == "0"


def test_errors_name_the_slices_csv_line_and_the_missing_file(data, capsys):
    pred, out = data["pred"], data["root"] / "out"
    base = ["evaluate", "--pred", str(pred), "--ref", str(data["sample"]), "--sidecar", str(data["sidecar"]),
            "-o", str(out)]
    rows = read_slices(pred / "slices.csv")
    write_slices(pred / "slices.csv", rows[:2] + [SliceRow("nope_zp1", "nope", 1, SZ, KEY + 1, "test", "none")])
    assert main([*base, "--3d"]) == 2
    err = capsys.readouterr().err
    assert "slices.csv, line 4: key case 'nope' of case 'nope_zp1' is not in" in err and "lesions.csv" in err
    # --slices names the table explicitly (and implies --3d)
    good = data["root"] / "good.csv"
    write_slices(good, rows)
    assert main([*base, "--slices", str(good)]) == 0
    capsys.readouterr()
    (pred / "A_zp1.png").unlink()
    assert main([*base, "--slices", str(good)]) == 2
    err = capsys.readouterr().err
    assert "A_zp1.png: no prediction for the slice on" in err and "good.csv line 4" in err
    assert main([*base, "--slices", str(good), "--allow-missing"]) == 0
    capsys.readouterr()
    t = {r["case"]: r for r in read_rows(out / "metrics3d.csv")}
    assert t["A"]["status"] == "missing" and t["A"]["dice_3d"] == "nan" and t["B"]["status"] == "ok"
    # a slice index that is not key + offset
    bad = data["root"] / "bad.csv"
    write_slices(bad, [SliceRow("A_zp1", "A", 1, SZ, KEY + 2, "test", "none")])
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: case 'A_zp1' has slice_index 13, but key slice 11"):
        evaluate_3d([pred], data["sample"], data["sidecar"], out, slices=[bad], progress=False)
    # 2D options refused in 3D and 3D options refused in 2D
    assert main([*base, "--slices", str(good), "--allow-missing", "--postprocess", "mark-grabcut"]) == 2
    assert "--postprocess mark-grabcut needs the CT crops of the slices (--images DIR" in capsys.readouterr().err
    assert main([*base, "--ellipse"]) == 2
    assert "options of the 3D evaluation" in capsys.readouterr().err


def test_postprocess_mark_walks_from_the_key_slice_with_the_3d_recist_estimate(data, capsys):
    # every lesion's mark has a 4 px long axis of 0.6 mm pixels (half-length 1.2 mm), so the estimate
    # vanishes one 2.5 mm slice away: "mark" keeps the key slice only
    out = data["root"] / "out"
    argv = ["evaluate", "--3d", "--pred", str(data["pred"]), "--ref", str(data["sample"]), "--sidecar",
            str(data["sidecar"]), "-o", str(out), "--postprocess", "none", "mark"]
    assert main(argv) == 0
    assert "post-processing none, mark: slice by slice" in capsys.readouterr().out
    t = {(r["pred_name"], r["case"]): r for r in read_rows(out / "metrics3d.csv")}
    assert float(t[("round1 [none]", "A")]["dice_3d"]) == pytest.approx(120 / 136)  # as without --postprocess
    assert float(t[("round1 [none]", "B")]["dice_3d"]) == pytest.approx(1.0)
    a, b = t[("round1 [mark]", "A")], t[("round1 [mark]", "B")]
    assert a["postprocess"] == "mark" and t[("round1 [none]", "A")]["postprocess_stops"] == ""
    assert a["postprocess_stops"] == "up:recist_estimate_vanished;down:recist_estimate_vanished"
    # A: the key slice's 36 px of 76 true voxels in 9..13; B: 4 of 20
    assert (int(a["tp_voxels"]), int(a["fp_voxels"]), int(a["fn_voxels"])) == (36, 0, 40)
    assert float(a["dice_3d"]) == pytest.approx(72 / 112)
    assert float(b["dice_3d"]) == pytest.approx(8 / 24)
    summary = json.loads((out / "summary3d.json").read_text())
    assert summary["settings"]["postprocess"] == ["none", "mark"]
    # with 1 mm slices the estimate reaches +-1 (d = 1 mm < 1.2 mm): its axes, 2.2 px long about the
    # crossing point crop (4, 4), cover crop pixels x 3..5 of row 4 and y 3..5 of column 4.  B's 2 x 2
    # box (crop rows/columns 4..5) crosses them on -1 and +1; A's predictions there (crop rows 0..3,
    # columns 0..3 and 0..1) do not, so A ends at its key slice
    fine = data["root"] / "fine.csv"
    write_sidecar(fine, [row("A", 2, 1, spacing_z=1.0), row("B", 3, 2, spacing_z=1.0)])
    result = evaluate_3d([data["pred"]], data["sample"], fine, out, postprocess="mark", progress=False)
    r = {rec["case"]: rec for rec in result.records}
    assert (r["A"]["tp_voxels"], r["A"]["fp_voxels"]) == (36, 0)
    assert r["A"]["postprocess_stops"] == "up:empty_prediction;down:empty_prediction"
    assert (r["B"]["tp_voxels"], r["B"]["fn_voxels"]) == (12, 8)
    assert r["B"]["postprocess_stops"] == "up:recist_estimate_vanished;down:recist_estimate_vanished"
    # the walk starts at the key slice: a folder without it is an error naming its slices.csv
    rows = [s for s in read_slices(data["pred"] / "slices.csv") if not (s.key_case == "A" and s.offset == 0)]
    nokey = data["root"] / "nokey.csv"
    write_slices(nokey, rows)
    with pytest.raises(ValueError, match=r"nokey\.csv: key case 'A' has no prediction of its key slice"):
        evaluate_3d([data["pred"]], data["sample"], data["sidecar"], out, slices=[nokey], postprocess="mark",
                    progress=False)


def sphere_sample(root, radius_mm=6.0, spacing=(1.0, 1.0, 2.0)):
    """A sphere of ``radius_mm`` about slice pixel (x 24, y 24) of the key slice: voxel centres inside it."""
    sx, sy, sz = spacing
    y, x = np.indices((SIZE, SIZE), dtype=np.float64)
    per = {}
    for index in range(FIRST, LAST + 1):
        d = (index - KEY) * sz
        m = ((x - 24) * sx) ** 2 + ((y - 24) * sy) ** 2 + d ** 2 <= radius_mm ** 2
        if m.any():
            per[index] = m
    return write_sample(root, [("000001_01_01", per)], spacing), per


def test_ellipse_baseline_follows_the_3d_recist_estimate_on_a_sphere(tmp_path, capsys):
    r = 6.0
    sample, truth = sphere_sample(tmp_path / "sample", r)
    # scale 2: the 16 px box from slice pixel 15.5 is a 32 px crop; the key mark spans +-6 px = +-6 mm
    mark_slice = (18.0, 24.0, 30.0, 24.0, 24.0, 18.0, 24.0, 30.0)
    mark_crop = tuple((v - 15.5) * 2 - 0.5 for v in mark_slice)
    key = row("S", 2, 1, crop_x0=15.5, crop_y0=15.5, crop_side=16.0, crop_size=32, scale=2.0, spacing_x=1.0,
              spacing_y=1.0, spacing_z=2.0, recist_slice=mark_slice, recist_crop=mark_crop, long_mm=12.0,
              short_mm=12.0)
    sidecar = tmp_path / "lesions.csv"
    write_sidecar(sidecar, [key])
    template = tmp_path / "template.csv"
    write_slices(template, [SliceRow(slice_case_name("S", k), "S", k, k * 2.0, KEY + k, "test", "none")
                            for k in range(-3, 4)])
    out = tmp_path / "ellipse"
    written = write_ellipse_predictions(template, sidecar, out, progress=False)
    assert [s.offset for s in written] == list(range(-3, 4)) and {s.label_status for s in written} == {"ellipse"}
    assert [s.case for s in read_slices(out / "slices.csv")] == [s.case for s in written]
    from nnunet_ulseg.evaluation.label_io import read_crop_mask

    for k in range(-3, 4):
        crop = read_crop_mask(out / f"{slice_case_name('S', k)}.mha")
        assert crop.shape == (32, 32) and set(np.unique(crop)) <= {0, 1}
        rho = math.sqrt(max(0.0, r ** 2 - (2.0 * k) ** 2))  # Pythagoras: the section's radius in mm
        # a crop pixel is 0.5 mm: area in mm² = pixels / 4; |k| = 3 is 6 mm away, the estimate has vanished
        assert crop.sum() / 4 == pytest.approx(math.pi * rho ** 2, rel=0.08, abs=0.5)
        assert crop[crop.shape[0] // 2, crop.shape[1] // 2] == (1 if rho > 0 else 0)
    # scored by the same code: the --ellipse row equals the folder written above, and it is close to the sphere
    pred = tmp_path / "round0"  # a model that predicts nothing, on the template's slices
    pred.mkdir()
    for s in read_slices(template):
        cv2.imwrite(str(pred / f"{s.case}.png"), np.zeros((32, 32), np.uint8))
    write_slices(pred / "slices.csv", read_slices(template))
    result = evaluate_3d([pred], sample, sidecar, tmp_path / "eval", ellipse=True, reach=3, progress=False)
    direct = evaluate_3d([out], sample, sidecar, tmp_path / "eval2", reach=3, progress=False)
    by = {rec["pred_name"]: rec for rec in result.records}
    assert by["ellipse"]["dice_3d"] == pytest.approx(direct.records[0]["dice_3d"])
    assert by["round0"]["dice_3d"] == 0.0
    assert by["ellipse"]["dice_3d"] > 0.85
    assert by["ellipse"]["ref_volume_mm3"] == pytest.approx(sum(m.sum() for m in truth.values()) * 2.0)
    assert "ellipse" in result.table.splitlines()[2]  # the ellipse row first


def test_volume_reference_scores_like_the_sample(data):
    """The same truth as label volumes named by their slice range: per-lesion file and a shared series volume."""
    import SimpleITK as sitk

    ref = data["root"] / "volumes"
    ref.mkdir()
    a = np.stack([data["a"].get(i, np.zeros((SIZE, SIZE), bool)) for i in range(FIRST, LAST + 1)]).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(a), str(ref / f"A_{FIRST}-{LAST}.nii.gz"))
    b = np.zeros_like(a)
    b[1:7, 24:26, 14:16] = 3  # lesion B as instance 3 of its series' shared volume, slices 9..14
    b[2, 0:2, 0:2] = 5  # another lesion of that series, elsewhere
    sitk.WriteImage(sitk.GetImageFromArray(b), str(ref / f"000002_01_01_{FIRST}-{LAST}.nii.gz"))
    kw = dict(progress=False)
    from_sample = evaluate_3d([data["pred"]], data["sample"], data["sidecar"], data["root"] / "s", **kw)
    from_volume = evaluate_3d([data["pred"]], ref, data["sidecar"], data["root"] / "v", ref_format="auto", **kw)
    assert from_volume.summary["reference"]["kind"] == "volume"
    for x, y in zip(from_sample.records, from_volume.records):
        assert x["case"] == y["case"] and x["dice_3d"] == pytest.approx(y["dice_3d"])
        assert x["ref_volume_total_mm3"] == pytest.approx(y["ref_volume_total_mm3"]) and x["complete"] == y["complete"]
    assert "instance 3" in from_volume.records[1]["ref_source"]
