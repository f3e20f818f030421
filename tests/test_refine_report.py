"""The refinement report against true masks, on a generated sample (fake nnU-Net backend)."""
from __future__ import annotations

import pytest

from nnunet_ulseg.evaluation.overlap import summarize
from nnunet_ulseg.refine.report import build_report, format_report, score_training_labels, step_round
from nnunet_ulseg.refine.rounds import refine
from nnunet_ulseg.workflow.nnunet import NNUNetPaths
from nnunet_ulseg.workflow.slice_scores import score_folder

from refine_support import FakeBackend

TRAINER = "nnUNetTrainerFake"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    root = tmp_path_factory.mktemp("refine_report")
    sample = make_sample(root / "deeplesion", n_lesions=12, seed=0, progress=False)
    paths = NNUNetPaths.under(root).create()
    convert_deeplesion(sample, paths.raw / "Dataset501_Sample", num_processes=1, progress=False)
    backend = FakeBackend(paths, TRAINER)
    result = refine(501, TRAINER, paths=paths, backend=backend, echo=None, rounds=2, truth=sample, device="cpu")
    return {"paths": paths, "sample": sample, "result": result, "backend": backend}


def test_score_training_labels_covers_train_and_val_cases(sample_run):
    raw = sample_run["paths"].raw / "Dataset501_Sample"
    got, labelled = score_training_labels(raw / "labelsTr", raw / "lesions.csv", sample_run["sample"])
    parts = [score_folder(raw / "labelsTr", raw / "lesions.csv", sample_run["sample"], split)["per_lesion"]
             for split in ("train", "val")]
    assert got == summarize([r["dice"] for p in parts for r in p])
    assert got["n"] == len(list((raw / "labelsTr").glob("*.mha"))) and 0.3 < got["mean"] <= 1
    # round 1's labels are ellipses without ignore pixels: both Dice agree
    assert labelled == got


def test_labelled_dice_leaves_ignore_pixels_out(sample_run, tmp_path):
    """A label whose upper half of the lesion is ignore: ``dice`` counts it as missed, ``dice_labelled`` leaves it out."""
    import shutil

    import numpy as np
    import SimpleITK as sitk

    from nnunet_ulseg.conversion.sidecar import paste_back, read_sidecar
    from nnunet_ulseg.evaluation.overlap import Overlap
    from nnunet_ulseg.workflow.slice_scores import TrueMasks

    raw = sample_run["paths"].raw / "Dataset501_Sample"
    for label in (raw / "labelsTr").glob("*.mha"):
        shutil.copy2(label, tmp_path / label.name)
    row = next(r for r in read_sidecar(raw / "lesions.csv") if r.split == "train")
    image = sitk.ReadImage(str(raw / "labelsTr" / f"{row.case}.mha"))
    label = sitk.GetArrayFromImage(image)
    lesion = label == 1
    upper = lesion & (np.arange(label.shape[-2])[:, None] < np.nonzero(lesion)[-2].mean())
    label[upper.reshape(label.shape)] = 2
    out = sitk.GetImageFromArray(label)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(tmp_path / f"{row.case}.mha"))

    scores = score_folder(tmp_path, raw / "lesions.csv", sample_run["sample"], "train")
    (got,) = [r for r in scores["per_lesion"] if r["case"] == row.case]
    crop = label.reshape(label.shape[-2:])
    truth = TrueMasks(sample_run["sample"]).mask(row.dl_row, row.File_name)
    pred, ignored = paste_back(crop == 1, row), paste_back(crop == 2, row)
    assert got["dice"] == Overlap.of(pred, truth).dice
    assert got["dice_labelled"] == Overlap.of(pred & ~ignored, truth & ~ignored).dice
    assert got["dice"] < 0.75 < got["dice_labelled"]
    # every other case has no ignore pixel: both Dice agree there
    assert all(r["dice"] == r["dice_labelled"] for r in scores["per_lesion"] if r["case"] != row.case)
    assert scores["summary_labelled"]["mean"] > scores["summary"]["mean"]


def test_report_with_truth_scores_pseudo_masks_and_models(sample_run):
    report = sample_run["result"].report
    paths = sample_run["paths"]
    r1, r2 = report["rounds"]
    assert r1["pseudo_mask_dice"]["n"] == r2["pseudo_mask_dice"]["n"] == r1["cases"]
    # round 1's pseudo masks are the ellipses; the fake model's blocks change them
    assert r1["pseudo_mask_dice"] != r2["pseudo_mask_dice"]
    n_test = len(list((paths.raw / "Dataset501_Sample" / "imagesTs").glob("*_0000.mha")))
    assert r1["test_dice"]["n"] == r2["test_dice"]["n"] == n_test > 0
    assert report["ellipse_test_dice"]["n"] == n_test
    tests = [c for c in sample_run["backend"].calls if c[0] == "predict" and c[3] == "imagesTs"]
    assert [c[1] for c in tests] == ["Dataset501_Sample", "Dataset601_Sample_round2"]
    # the report is rebuilt from the manifest alone, and without truth it carries no scores
    import json

    manifest = json.loads(sample_run["result"].manifest.read_text())
    again = build_report(manifest, paths.raw, sample_run["result"].work_dir, sample_run["sample"])
    assert again == report
    plain = build_report(manifest, paths.raw, sample_run["result"].work_dir)
    assert "pseudo_mask_dice" not in plain["rounds"][0] and "ellipse_test_dice" not in plain
    assert [r["ignore_fraction"] for r in plain["rounds"]] == [r1["ignore_fraction"], r2["ignore_fraction"]]


def test_step_round_and_seconds_per_round(sample_run):
    assert [step_round(s) for s in ("prepare_1", "train_2", "train_12_fold3", "predict_1", "test_2")] == [1, 2, 12, 1, 2]
    assert step_round("done") is None
    import json

    steps = json.loads(sample_run["result"].manifest.read_text())["steps"]
    r1, r2 = sample_run["result"].report["rounds"]
    by_hand = {1: ("prepare_1", "train_1", "test_1", "predict_1"), 2: ("build_2", "preprocess_2", "train_2", "test_2")}
    for row in (r1, r2):
        assert set(by_hand[row["round"]]) <= set(steps)
        assert row["seconds"] == pytest.approx(sum(steps[k]["seconds"] for k in by_hand[row["round"]]))


def test_report_against_png_references_equals_the_sample_truth(sample_run, tmp_path):
    """``--truth`` with key-slice PNGs: the Masks_png instance tree scores as the sample; test-only PNGs leave
    the training labels unscored (n = 0) but still score the test split."""
    import json
    import shutil

    from nnunet_ulseg.conversion.sidecar import read_sidecar
    from nnunet_ulseg.refine.rounds import RefineConfig

    paths, result = sample_run["paths"], sample_run["result"]
    manifest = json.loads(result.manifest.read_text())
    tree = sample_run["sample"] / "Masks_png"
    png = build_report(manifest, paths.raw, result.work_dir, tree, "png")
    assert png["reference"]["kind"] == "png" and png["reference"]["geometry"] == "slice"
    assert "truth: png reference (slice geometry)" in format_report(png)
    for a, b in zip(png["rounds"], result.report["rounds"]):
        for key in ("pseudo_mask_dice", "pseudo_mask_dice_labelled", "test_dice"):
            assert a[key] == pytest.approx(b[key])
    assert png["ellipse_test_dice"] == pytest.approx(result.report["ellipse_test_dice"])
    # references for the test lesions only, flat File_name PNGs
    test_rows = [r for r in read_sidecar(paths.raw / "Dataset501_Sample" / "lesions.csv") if r.split == "test"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for r in test_rows:
        folder = f"{r.patient:06d}_{r.study:02d}_{r.series:02d}"
        shutil.copy2(tree / folder / f"{r.key_slice:03d}.png", flat / r.File_name)
    partial = build_report(manifest, paths.raw, result.work_dir, flat)
    assert partial["reference"]["kind"] == "png"
    assert partial["rounds"][0]["pseudo_mask_dice"]["n"] == 0
    assert partial["rounds"][0]["test_dice"] == pytest.approx(result.report["rounds"][0]["test_dice"])
    with pytest.raises(ValueError, match="reference format"):
        RefineConfig(dataset=1, trainer="T", truth=flat, ref_format="dicom").validate()
    with pytest.raises(FileNotFoundError, match="masks.csv"):
        RefineConfig(dataset=1, trainer="T", truth=flat, ref_format="sample").validate()


def test_report_names_the_final_round_and_its_predict_command(sample_run):
    """The model to predict with is the last trained round's, found by that round's own dataset id."""
    from nnunet_ulseg.refine.report import final_model_line

    report = sample_run["result"].report
    line = final_model_line(report)
    assert "round 2, dataset 601 (Dataset601_Sample_round2)" in line
    assert f"nnUNetv2_predict -i IMAGES -o OUT -d 601 -c 2d -f 0 -tr {TRAINER}" in line
    assert line in format_report(report)
    untrained = {**report, "rounds": [{**r, "trained": False} for r in report["rounds"]]}
    assert final_model_line(untrained) == ""
    first_only = {**report, "rounds": [report["rounds"][0], {**report["rounds"][1], "trained": False}]}
    assert "-d 501 " in final_model_line(first_only)
