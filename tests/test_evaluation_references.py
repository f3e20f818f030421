"""``ulseg evaluate`` against every kind of reference, scored in key-slice geometry.

A generated sample (true masks known) is converted; its true masks are written as each
kind of reference a user has: the ``Masks_png`` instance-map tree, flat binary 0/255 PNGs
named by ``File_name`` (several lesions on one slice), per-lesion NIfTI key slices and a
DeepLesion slice-range sub-volume, crop-geometry ``.mha`` files; and a ULS23-format VOI
(float32, trailing singleton, one labelled slice) with a sidecar written here.  The CLI's
per-lesion Dice must equal an independent numpy Dice between the prediction pasted back
once (``sidecar.paste_back``) and the reference file read here with other readers (OpenCV,
nibabel) in slice geometry.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.cli import main
from nnunet_ulseg.conversion.geometry import crop_box, slice_to_crop_mask
from nnunet_ulseg.conversion.io import write_mha
from nnunet_ulseg.conversion.sidecar import LesionRow, paste_back, read_sidecar, write_sidecar
from nnunet_ulseg.evaluation.label_io import read_crop_mask
from nnunet_ulseg.evaluation.references import (
    TrueMasks,
    detect_format,
    lesion_in_slice,
    open_reference,
    write_reference_crops,
)
from nnunet_ulseg.recist import Recist

PACKAGE = Path(__file__).resolve().parents[1] / "nnunet_ulseg"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    root = tmp_path_factory.mktemp("references")
    sample = make_sample(root / "sample", n_lesions=8, seed=0, progress=False)
    raw = root / "raw" / "Dataset992_RefTest"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("nnUNet_preprocessed", raising=False)
        convert_deeplesion(sample, raw, num_processes=1, progress=False)
    rows = read_sidecar(raw / "lesions.csv")
    truth = TrueMasks(sample)
    true = {r.case: truth.mask(r.dl_row, r.File_name) for r in rows}
    # predictions: the RECIST-ellipse pseudo masks (test split) and labels (train/val), one folder
    pred = root / "pred"
    pred.mkdir()
    for r in rows:
        src = raw / ("pseudolabelsTs" if r.split == "test" else "labelsTr") / f"{r.case}.mha"
        shutil.copy2(src, pred / f"{r.case}.mha")
    by_slice: dict[str, list[LesionRow]] = {}
    for r in rows:
        by_slice.setdefault(r.File_name, []).append(r)
    shared = [f for f, rs in by_slice.items() if len(rs) > 1]
    assert shared, "the sample needs a key slice with several lesions"
    # flat binary 0/255 PNGs named by File_name: the union of the slice's lesions
    flat = root / "flat255"
    flat.mkdir()
    for name, rs in by_slice.items():
        union = np.zeros_like(true[rs[0].case])
        for r in rs:
            union |= true[r.case]
        cv2.imwrite(str(flat / name), (union * 255).astype(np.uint8))
    # NIfTI: a 2D key slice per lesion (<case>.nii.gz)
    nifti = root / "nifti"
    nifti.mkdir()
    for r in rows:
        sitk.WriteImage(sitk.GetImageFromArray(true[r.case].astype(np.uint8)), str(nifti / f"{r.case}.nii.gz"))
    return {"root": root, "sample": sample, "raw": raw, "sidecar": raw / "lesions.csv", "rows": rows, "true": true,
            "pred": pred, "by_slice": by_slice, "shared": shared, "flat": flat, "nifti": nifti}


def run_evaluate(data, ref, out, *extra) -> tuple[dict, dict]:
    """``ulseg evaluate`` through the CLI on every split; returns (metrics rows by case, summary.json)."""
    rc = main(["evaluate", "--pred", str(data["pred"]), "--ref", str(ref), "--sidecar", str(data["sidecar"]),
               "-o", str(out), "--split", "all", "--no-plots", *extra])
    assert rc == 0
    with open(out / "metrics.csv", newline="") as f:
        table = {t["case"]: t for t in csv.DictReader(f)}
    return table, json.loads((out / "summary.json").read_text())


def pasted_prediction(data, row) -> np.ndarray:
    return paste_back(read_crop_mask(data["pred"] / f"{row.case}.mha") == 1, row)


def test_instance_png_tree_dice_equals_independent_slice_dice(data, tmp_path, capsys):
    tree = data["sample"] / "Masks_png"  # <patient>_<study>_<series>/<slice>.png instance maps
    table, summary = run_evaluate(data, tree, tmp_path / "o")
    assert "reference: png (key-slice geometry, read directly)" in capsys.readouterr().out
    assert summary["reference"]["kind"] == "png" and summary["reference"]["geometry"] == "slice"
    assert summary["settings"]["ref_format"] == "auto" and "key slice" in summary["geometry"]
    with open(data["sample"] / "masks.csv", newline="") as f:
        masks = list(csv.DictReader(f))
    assert len(table) == len(data["rows"])
    for r in data["rows"]:
        png = cv2.imread(str(tree / f"{r.patient:06d}_{r.study:02d}_{r.series:02d}" / f"{r.key_slice:03d}.png"),
                         cv2.IMREAD_UNCHANGED)
        instance = int(masks[r.dl_row - 2]["lesion_instance"])
        ref = png == instance
        assert float(table[r.case]["dice"]) == pytest.approx(dice(pasted_prediction(data, r), ref), abs=1e-12)
        # a slice with one lesion is a plain binary mask; several lesions make it an instance map
        several = np.unique(png[png > 0]).size > 1
        assert table[r.case]["ref_source"].endswith(f"(instance {instance})" if several else "under the mark)")
    assert sum("(instance" in t["ref_source"] for t in table.values()) >= 2  # the shared slice's lesions


def test_binary_255_png_several_lesions_on_one_slice(data, tmp_path):
    table, summary = run_evaluate(data, data["flat"], tmp_path / "o")
    assert summary["reference"]["kind"] == "png" and summary["n_without_reference"] == 0
    for name in data["shared"]:
        rs = data["by_slice"][name]
        png = cv2.imread(str(data["flat"] / name), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(png)) == {0, 255}
        for r in rs:
            # each lesion of the shared slice gets its own component, which is its true mask
            ref = open_reference(data["flat"], "png").get(r).mask
            np.testing.assert_array_equal(ref, data["true"][r.case])
            assert ref.sum() < (png > 0).sum()
    for r in data["rows"]:
        assert float(table[r.case]["dice"]) == pytest.approx(dice(pasted_prediction(data, r), data["true"][r.case]),
                                                              abs=1e-12)


def test_lesion_not_in_the_binary_mask_has_no_reference(data, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(data["flat"], flat)
    name = data["shared"][0]
    gone, kept = data["by_slice"][name][:2]
    cv2.imwrite(str(flat / name), (data["true"][kept.case] * 255).astype(np.uint8))
    table, summary = run_evaluate(data, flat, tmp_path / "o")
    assert gone.case not in table and kept.case in table
    assert summary["cases_without_reference"] == [gone.case]
    assert "crosses no lesion" in summary["without_reference_reasons"][gone.case]


def test_nifti_key_slices_and_slice_range_volume(data, tmp_path):
    table, summary = run_evaluate(data, data["nifti"], tmp_path / "o")
    assert summary["reference"]["kind"] == "volume"
    for r in data["rows"]:
        ref = np.asarray(nib.load(str(data["nifti"] / f"{r.case}.nii.gz")).dataobj).T > 0  # nibabel: [x, y]
        assert float(table[r.case]["dice"]) == pytest.approx(dice(pasted_prediction(data, r), ref), abs=1e-12)
    # a DeepLesion sub-volume named by its slice range, shared by the lesions of a slice: z = key_slice - first
    name = data["shared"][0]
    rs = data["by_slice"][name]
    r0 = rs[0]
    volume = np.zeros((3, r0.image_height, r0.image_width), np.uint8)
    for i, r in enumerate(rs):
        volume[1][data["true"][r.case]] = i + 1  # instance map on the middle slice
    volume[0][:] = volume[2][:] = 9  # neighbours: never the key slice
    vol_dir = tmp_path / "vol"
    vol_dir.mkdir()
    path = vol_dir / f"{r0.patient:06d}_{r0.study:02d}_{r0.series:02d}_{r0.key_slice - 1}-{r0.key_slice + 1}.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))
    ref = open_reference(vol_dir, "volume")
    for i, r in enumerate(rs):
        got = ref.get(r)
        np.testing.assert_array_equal(got.mask, data["true"][r.case])
        assert got.source == f"{path} z=1 (instance {i + 1})"
    assert detect_format(vol_dir, rs) == "volume"
    # a 3D <case> volume for a DeepLesion row: key_slice is a PNG slice number, not a z index, so no guess
    per_case = tmp_path / "per_case"
    per_case.mkdir()
    big = np.zeros((r0.key_slice + 5, r0.image_height, r0.image_width), np.uint8)
    big[r0.key_slice][data["true"][r0.case]] = 1
    sitk.WriteImage(sitk.GetImageFromArray(big), str(per_case / f"{r0.case}.nii.gz"))
    with pytest.raises(ValueError, match=f"{r0.case}.nii.gz.*DeepLesion key slice.*slice range in the name"):
        open_reference(per_case, "volume").get(r0)


def test_shape_mismatch_is_an_error_naming_the_file(data, tmp_path):
    r = data["rows"][0]
    bad = tmp_path / "bad"
    bad.mkdir()
    cv2.imwrite(str(bad / r.File_name), np.zeros((r.image_height, r.image_width + 3), np.uint8))
    with pytest.raises(ValueError, match=f"{r.File_name}.*does not match case {r.case}'s key slice"):
        open_reference(bad, "png").get(r)
    assert main(["evaluate", "--pred", str(data["pred"]), "--ref", str(bad), "--sidecar", str(data["sidecar"]),
                 "-o", str(tmp_path / "o"), "--split", "all", "--no-plots"]) == 2
    nii = tmp_path / "nii"
    nii.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, r.image_width, r.image_height + 1), np.uint8)),
                    str(nii / f"{r.case}.nii.gz"))
    with pytest.raises(ValueError, match=f"{r.case}.nii.gz.*DeepLesion key slice"):
        open_reference(nii, "volume").get(r)  # a PNG slice number is no z index
    voi_row = dataclasses.replace(r, File_name=f"{r.case}.nii.gz")  # a ULS23-style row: key_slice is z
    with pytest.raises(ValueError, match=f"{r.case}.nii.gz.*z = {r.key_slice}, outside"):
        open_reference(nii, "volume").get(voi_row)
    ct = tmp_path / "ct"
    ct.mkdir()
    values = np.arange(r.image_height * r.image_width, dtype=np.uint32) % 4000 + 30000
    cv2.imwrite(str(ct / r.File_name), values.reshape(r.image_height, r.image_width).astype(np.uint16))
    with pytest.raises(ValueError, match="looks like a CT slice"):
        open_reference(ct, "png").get(r)


def test_crop_references_still_work_and_are_named_lossy(data, tmp_path, capsys):
    crops = tmp_path / "crops"
    write_reference_crops(data["sample"], data["sidecar"], crops, split="all")
    table, summary = run_evaluate(data, crops, tmp_path / "o")
    assert summary["reference"]["kind"] == "crop" and summary["reference"]["geometry"] == "crop"
    assert "lossy" in summary["geometry"] and "lossy" in capsys.readouterr().out
    for r in data["rows"]:
        ref = paste_back(read_crop_mask(crops / f"{r.case}.mha") == 1, r)
        assert float(table[r.case]["dice"]) == pytest.approx(dice(pasted_prediction(data, r), ref), abs=1e-12)


def test_sample_reference_and_explicit_format(data, tmp_path):
    table, summary = run_evaluate(data, data["sample"], tmp_path / "o", "--ref-format", "sample")
    assert summary["reference"]["kind"] == "sample" and summary["settings"]["ref_format"] == "sample"
    for r in data["rows"]:
        assert float(table[r.case]["dice"]) == pytest.approx(dice(pasted_prediction(data, r), data["true"][r.case]),
                                                              abs=1e-12)
    assert detect_format(data["sample"], data["rows"]) == "sample"
    with pytest.raises(FileNotFoundError, match="no reference file found"):
        detect_format(tmp_path, data["rows"])


# -- ULS23 ------------------------------------------------------------------------------------------------------

def uls23_sample(tmp_path: Path) -> dict:
    """A ULS23-format VOI (x, y, z, 1) float32 with an ellipsoid labelled on one slice, and its sidecar row."""
    nx, ny, nz, z_key = 64, 48, 16, 9  # x != y, so a transposed read cannot pass
    xx, yy, zz = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    ellipsoid = ((xx - 30.0) / 11) ** 2 + ((yy - 22.0) / 7) ** 2 + ((zz - z_key) / 4) ** 2 <= 1
    label = np.zeros((nx, ny, nz, 1), np.float32)
    label[:, :, z_key, 0] = ellipsoid[:, :, z_key]  # partially annotated: only the key slice is labelled
    refs = tmp_path / "uls23"
    refs.mkdir()
    name = "MIX_00012_lesion01.nii.gz"
    nib.save(nib.Nifti1Image(label, np.diag([0.8, 0.8, 2.5, 1.0])), str(refs / name))
    # RECIST mark of the slice's ellipse (x semi-axis 11, y semi-axis 7), 0-based slice pixels
    recist = Recist.from_points(np.array([[19.0, 22.0], [41.0, 22.0], [30.0, 15.0], [30.0, 29.0]]))
    box = crop_box(recist, min_crop=16, scale_policy="lesion", size_range=(40, 40))
    row = LesionRow(case="ULS_0001", split="test", dl_row=2, File_name=name, patient=12, study=1, series=1,
                    key_slice=z_key, crop_x0=box.x0, crop_y0=box.y0, crop_side=box.side, crop_size=box.size,
                    scale=box.scale, spacing_x=0.8, spacing_y=0.8, spacing_z=2.5,
                    recist_slice=tuple(recist.points.ravel().tolist()), recist_crop=(0.0,) * 8, long_mm=17.6, short_mm=11.2,
                    lesion_type=None, possibly_noisy=None, window_min=-175.0, window_max=275.0, image_width=nx,
                    image_height=ny, context_slices=(z_key,))
    write_sidecar(tmp_path / "lesions.csv", [row])
    # prediction: the true slice shifted one pixel right and cut to the crop (a perturbed true mask)
    true_slice = ellipsoid[:, :, z_key].T
    pred = tmp_path / "pred"
    pred.mkdir()
    write_mha(str(pred / "ULS_0001.mha"), slice_to_crop_mask(np.roll(true_slice, 1, axis=1), box), (1.0, 1.0))
    return {"refs": refs, "name": name, "row": row, "pred": pred, "sidecar": tmp_path / "lesions.csv",
            "z": z_key, "true_slice": true_slice}


def test_uls23_voi_float_trailing_singleton(tmp_path, capsys):
    s = uls23_sample(tmp_path)
    rc = main(["evaluate", "--pred", str(s["pred"]), "--ref", str(s["refs"]), "--sidecar", str(s["sidecar"]),
               "-o", str(tmp_path / "o"), "--no-plots"])
    assert rc == 0 and "reference: uls23" in capsys.readouterr().out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["reference"]["kind"] == "uls23"
    with open(tmp_path / "o" / "metrics.csv", newline="") as f:
        (got,) = list(csv.DictReader(f))
    # independent: nibabel's [x, y, z, 1] array, slice z transposed to [y, x], > 0.5
    ref = np.asarray(nib.load(str(s["refs"] / s["name"])).dataobj)[:, :, s["z"], 0].T > 0.5
    np.testing.assert_array_equal(ref, s["true_slice"])
    pred = paste_back(read_crop_mask(s["pred"] / "ULS_0001.mha") == 1, s["row"])
    assert float(got["dice"]) == pytest.approx(dice(pred, ref), abs=1e-12)
    assert 0.8 < float(got["dice"]) < 1.0
    assert got["ref_source"] == f"{s['refs'] / s['name']} z={s['z']}"
    # the converter's referencesTs copies (squeezed uint8) read the same
    squeezed = tmp_path / "squeezed"
    squeezed.mkdir()
    array = (np.asarray(nib.load(str(s["refs"] / s["name"])).dataobj)[..., 0] > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(squeezed / s["name"]))
    np.testing.assert_array_equal(open_reference(squeezed, "auto", [s["row"]]).get(s["row"]).mask, ref)
    # a key slice outside the VOI names the file
    bad = dataclasses.replace(s["row"], key_slice=16)
    with pytest.raises(ValueError, match=f"{s['name']}.*outside the volume's 16 slices"):
        open_reference(s["refs"], "uls23").get(bad)


def test_reference_pixels_outside_the_crop_box_are_scored(tmp_path):
    """A reference read in slice geometry may reach past the crop box (here a second labelled
    component of the ULS23 slice, far from the mark): its pixels are false negatives, not dropped."""
    s = uls23_sample(tmp_path)
    img = nib.load(str(s["refs"] / s["name"]))
    label = np.asarray(img.dataobj).copy()
    label[57:63, 2:8, s["z"], 0] = 1.0  # x 57..62, y 2..7: outside the crop box around the ellipse
    nib.save(nib.Nifti1Image(label, img.affine), str(s["refs"] / s["name"]))
    row = s["row"]
    assert 57 >= row.crop_x0 + row.crop_side + 2  # really outside the old scoring window
    rc = main(["evaluate", "--pred", str(s["pred"]), "--ref", str(s["refs"]), "--sidecar", str(s["sidecar"]),
               "-o", str(tmp_path / "o"), "--no-plots"])
    assert rc == 0
    with open(tmp_path / "o" / "metrics.csv", newline="") as f:
        (got,) = list(csv.DictReader(f))
    ref = label[:, :, s["z"], 0].T > 0.5  # the whole key slice, independently
    pred = paste_back(read_crop_mask(s["pred"] / "ULS_0001.mha") == 1, row)
    assert float(got["dice"]) == pytest.approx(dice(pred, ref), abs=1e-12)
    assert float(got["dice"]) < dice(pred, s["true_slice"]) - 0.05  # the extra component costs Dice


def test_marks_are_compared_under_the_datasets_recist_convention(tmp_path):
    """A ULS23 import's marks are pixel-centre lengths: evaluate compares the masks' axes with them under
    ULS23's convention when the dataset.json beside the sidecar says so (auto), under edge otherwise."""
    from nnunet_ulseg.conversion.sidecar import recist_convention
    from nnunet_ulseg.recist import mask_axes

    s = uls23_sample(tmp_path)
    assert recist_convention(s["sidecar"]) == "edge"  # no dataset.json: DeepLesion's default
    (tmp_path / "dataset.json").write_text(json.dumps({"recist_convention": "uls23"}))
    assert recist_convention(s["sidecar"]) == "uls23" and recist_convention(s["sidecar"], "edge") == "edge"
    got = {}
    for convention in ("auto", "edge"):
        out = tmp_path / f"o_{convention}"
        assert main(["evaluate", "--pred", str(s["pred"]), "--ref", str(s["refs"]), "--sidecar", str(s["sidecar"]),
                     "-o", str(out), "--no-plots", "--recist-convention", convention]) == 0
        with open(out / "metrics.csv", newline="") as f:
            (got[convention],) = list(csv.DictReader(f))
        settings = json.loads((out / "summary.json").read_text())["settings"]
        assert settings["recist_convention"] == ("uls23" if convention == "auto" else "edge")
    ref = s["true_slice"]
    row = s["row"]
    for convention, key in (("uls23", "auto"), ("edge", "edge")):
        axes = mask_axes(ref, (row.spacing_x, row.spacing_y), convention=convention)
        expect = abs(axes.long_mm - row.long_mm) / (axes.long_mm + row.long_mm)
        assert float(got[key]["ref_long_err_recist"]) == pytest.approx(expect, abs=1e-9)
    assert got["auto"]["ref_long_err_recist"] != got["edge"]["ref_long_err_recist"]
    (tmp_path / "dataset.json").write_text(json.dumps({"recist_convention": "corners"}))
    with pytest.raises(ValueError, match="dataset.json: recist_convention must be one of"):
        recist_convention(s["sidecar"])


# -- the slice rule and the floors ----------------------------------------------------------------------------

def test_lesion_in_slice_rules():
    base = LesionRow(
        case="c", split="test", dl_row=2, File_name="f.png", patient=1, study=1, series=1, key_slice=1,
        crop_x0=0.0, crop_y0=0.0, crop_side=20.0, crop_size=20, scale=1.0, spacing_x=1.0, spacing_y=1.0,
        spacing_z=1.0, recist_slice=(2.0, 3.0, 6.0, 3.0, 4.0, 2.0, 4.0, 4.0), recist_crop=(0.0,) * 8, long_mm=4.0,
        short_mm=2.0, lesion_type=None, possibly_noisy=None, window_min=-175.0, window_max=275.0, image_width=20,
        image_height=10, context_slices=(1,))
    inst = np.zeros((10, 20), np.uint8)
    inst[1:6, 1:8] = 3  # under the mark
    inst[1:6, 12:18] = 5  # another lesion
    got = lesion_in_slice(inst, base, "m.png")
    np.testing.assert_array_equal(got.mask, inst == 3)
    assert got.source == "m.png (instance 3)"
    binary = (inst > 0).astype(np.uint8) * 255
    np.testing.assert_array_equal(lesion_in_slice(binary, base, "b.png").mask, inst == 3)
    np.testing.assert_array_equal(lesion_in_slice(binary, base, "b.png", "whole").mask, inst > 0)
    # an anti-aliased 0/255 mask (edge values 1..254) is binary, not 200 "instances": its lesion keeps its rim
    from nnunet_ulseg.evaluation.references.base import looks_like_instance_map

    aliased = binary.copy()
    aliased[1, 1:8] = [37, 90, 128, 128, 128, 90, 37]
    aliased[5, 1:8] = 128
    assert not looks_like_instance_map(aliased) and looks_like_instance_map(inst)
    np.testing.assert_array_equal(lesion_in_slice(aliased, base, "a.png").mask, inst == 3)
    far = dataclasses.replace(base, recist_slice=(10.0, 8.0, 11.0, 8.0, 10.5, 7.5, 10.5, 8.5))
    assert lesion_in_slice(binary, far, "b.png").mask is None
    floats = np.where(inst > 0, 0.9, 0.2).astype(np.float32)  # float: > 0.5 is lesion, binary rule
    np.testing.assert_array_equal(lesion_in_slice(floats, base, "f.nii").mask, inst == 3)
    with pytest.raises(ValueError, match="slice rule"):
        lesion_in_slice(inst, base, "m.png", "nope")


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
    return names


def test_evaluation_imports_nothing_from_workflow_or_refine():
    assert imported_modules("from ...workflow.slice_scores import x\nimport nnunet_ulseg.refine.rounds\n"
                            "from . import base", "nnunet_ulseg.evaluation.references") == {
        "nnunet_ulseg.workflow.slice_scores", "nnunet_ulseg.refine.rounds", "nnunet_ulseg.evaluation.references"}
    files = sorted((PACKAGE / "evaluation").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
        bad = {m for m in imported_modules(path.read_text(), package)
               if m.startswith(("nnunet_ulseg.workflow", "nnunet_ulseg.refine"))}
        assert not bad, f"{path} imports {bad} (DESIGN floors: evaluation/ is below workflow/ and refine/)"
