"""Issue 12, case 5: label values that are not 0/1/2 in the files ``evaluate``, ``measure``, ``postprocess`` read.

Before the fix a 0/255 prediction, a probability map or a label 3 was read as "label 1 =
lesion, everything else background": every lesion scored Dice 0 and the command exited 0.
Now any value outside {0, 1, 2} is an error naming the file and the values found, unless
``--lesion-label N`` (the lesion value, e.g. 255) or ``--threshold T`` (lesion where
value >= T) says how to read it.  The label 2 (ignore) stays background.

Every case is a 32 x 32 crop that is its own key slice (scale 1, crop pixel = slice
pixel), with PNG key-slice references (0/255 there is documented and fine: value > 0 is
lesion), so the expected Dice is exact.
"""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.conversion.sidecar import LesionRow, write_sidecar
from nnunet_ulseg.evaluation.label_io import LabelRule, lesion_and_ignore

SIZE = 32
MARK = (6.0, 10.0, 14.0, 10.0, 10.0, 7.0, 10.0, 13.0)  # long axis y = 10, x 6..14; short axis x = 10


def disk(cx, cy, r):
    yy, xx = np.indices((SIZE, SIZE))
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


LESIONS = {"a": disk(10, 10, 4.5), "b": disk(10, 10, 3.5)}


def row(case: str, key_slice: int) -> LesionRow:
    return LesionRow(case=case, split="test", dl_row=1 + key_slice, File_name=f"000001_01_01_{key_slice:03d}.png",
                     patient=1, study=1, series=1, key_slice=key_slice, crop_x0=-0.5, crop_y0=-0.5,
                     crop_side=float(SIZE), crop_size=SIZE, scale=1.0, spacing_x=0.7, spacing_y=0.7, spacing_z=5.0,
                     recist_slice=MARK, recist_crop=MARK, long_mm=5.6, short_mm=4.2, lesion_type=4,
                     possibly_noisy=0, window_min=-175.0, window_max=275.0, image_width=SIZE, image_height=SIZE,
                     context_slices=(key_slice,))


def write_image(path, array) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array)), str(path), False)


@pytest.fixture
def case(tmp_path):
    """Sidecar, 0/255 PNG references of both lesions, and ``preds(name, encode)`` writing a prediction folder."""
    rows = [row("a", 1), row("b", 2)]
    write_sidecar(tmp_path / "lesions.csv", rows)
    ref = tmp_path / "ref"
    ref.mkdir()
    for r in rows:
        cv2.imwrite(str(ref / r.File_name), LESIONS[r.case].astype(np.uint8) * 255)

    def preds(name, encode):
        folder = tmp_path / name
        folder.mkdir()
        for r in rows:
            write_image(folder / f"{r.case}.mha", encode(LESIONS[r.case]))
        return folder

    return {"root": tmp_path, "sidecar": tmp_path / "lesions.csv", "ref": ref, "preds": preds}


def ulseg(argv):
    from nnunet_ulseg.cli import main

    return main([str(a) for a in argv])


def evaluate(case, pred, *options, out="out", plots=False):
    return ulseg(["evaluate", "--pred", pred, "--ref", case["ref"], "--ref-format", "png", "--sidecar",
                  case["sidecar"], "-o", case["root"] / out, *([] if plots else ["--no-plots"]), *options])


def dice_of(case, out="out"):
    with open(case["root"] / out / "metrics.csv", newline="") as f:
        return {r["case"]: float(r["dice"]) for r in csv.DictReader(f)}


def as_255(m):
    return m.astype(np.uint8) * 255


def as_probability(m):
    """A float32 probability map: 0.9 on the lesion, 0.05..0.2 elsewhere (never exactly 0 or 1)."""
    return np.where(m, 0.9, 0.05 + 0.15 * np.indices(m.shape)[1] / SIZE).astype(np.float32)


def as_label3(m):
    return m.astype(np.uint8) * 3


# -- ulseg evaluate --------------------------------------------------------------------------------
def test_a_0_1_prediction_scores_dice_1(case):
    """The control: the same masks as 0/1 score Dice 1, so the cases below test only the values."""
    assert evaluate(case, case["preds"]("p01", lambda m: m.astype(np.uint8))) == 0
    assert dice_of(case) == {"a": 1.0, "b": 1.0}


@pytest.mark.parametrize("encode, shown, option", [
    (as_255, "255", "--lesion-label"),
    (as_probability, "0.05", "--threshold"),
    (as_label3, "3", "--lesion-label"),
    (lambda m: m.astype(np.int16) - 1, "-1", "--lesion-label"),
])
def test_evaluate_refuses_values_outside_0_1_2_naming_the_file_and_values(case, capsys, encode, shown, option):
    pred = case["preds"]("pred", encode)
    assert evaluate(case, pred) == 2  # before the fix: exit 0, Dice 0 for every lesion
    err = capsys.readouterr().err
    assert f"{pred / 'a.mha'}: label values" in err and shown in err and option in err
    assert err.count(str(pred / "a.mha")) == 1
    assert not (case["root"] / "out").exists()  # nothing written


def test_lesion_label_and_threshold_read_the_masks(case):
    # the gallery reads the predictions again, by the same rule
    assert evaluate(case, case["preds"]("p255", as_255), "--lesion-label", 255, out="o255", plots=True) == 0
    assert dice_of(case, "o255") == {"a": 1.0, "b": 1.0} and (case["root"] / "o255" / "gallery.png").is_file()
    assert evaluate(case, case["preds"]("prob", as_probability), "--threshold", 0.5, out="oprob") == 0
    assert dice_of(case, "oprob") == {"a": 1.0, "b": 1.0}
    summary = json.loads((case["root"] / "oprob" / "summary.json").read_text())
    assert summary["settings"]["threshold"] == 0.5 and summary["settings"]["lesion_label"] is None
    assert "value >= 0.5" in summary["definitions"]["labels"]
    # a threshold above the lesion's probability leaves nothing: Dice 0, as it should be
    assert evaluate(case, case["root"] / "prob", "--threshold", 0.95, out="ohigh") == 0
    assert dice_of(case, "ohigh") == {"a": 0.0, "b": 0.0}


def test_ignore_label_2_is_background_and_integral_floats_are_labels(case):
    band = disk(10, 10, 7.5)
    assert evaluate(case, case["preds"]("p2", lambda m: np.where(m, 1, np.where(band, 2, 0)).astype(np.uint8))) == 0
    assert dice_of(case) == {"a": 1.0, "b": 1.0}
    assert evaluate(case, case["preds"]("pf", lambda m: m.astype(np.float32)), out="of") == 0  # 0.0 / 1.0
    assert dice_of(case, "of") == {"a": 1.0, "b": 1.0}


def test_a_wrong_lesion_label_still_names_the_values(case, capsys):
    pred = case["preds"]("p255", as_255)
    assert evaluate(case, pred, "--lesion-label", 3) == 2
    err = capsys.readouterr().err
    assert "255" in err and "3 (lesion, --lesion-label)" in err


def test_a_crop_reference_with_other_values_names_the_reference(case, capsys):
    ref = case["root"] / "crops"
    ref.mkdir()
    for name, m in LESIONS.items():
        write_image(ref / f"{name}.mha", as_255(m))
    pred = case["preds"]("p01", lambda m: m.astype(np.uint8))
    assert ulseg(["evaluate", "--pred", pred, "--ref", ref, "--ref-format", "crop", "--sidecar", case["sidecar"],
                  "-o", case["root"] / "out", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert f"{ref / 'a.mha'}: label values" in err and "255" in err and "reference" in err


def test_options_are_checked_when_parsed(case, capsys):
    pred = case["preds"]("p", lambda m: m.astype(np.uint8))
    for bad in (["--threshold", "0"], ["--threshold", "nan"], ["--lesion-label", "0"],
                ["--lesion-label", "255", "--threshold", "0.5"]):
        with pytest.raises(SystemExit) as exc:
            evaluate(case, pred, *bad)
        assert exc.value.code == 2
    capsys.readouterr()
    with pytest.raises(ValueError, match="not both"):
        LabelRule(lesion_label=255, threshold=0.5)


# -- ulseg measure ---------------------------------------------------------------------------------
def measure(case, pred, *options, out="m"):
    return ulseg(["measure", "--pred", pred, "--sidecar", case["sidecar"], "-o", case["root"] / out, *options])


def areas(case, out="m"):
    with open(case["root"] / out / "measurements.csv", newline="") as f:
        return {r["case"]: float(r["area_mm2"]) for r in csv.DictReader(f)}


@pytest.mark.parametrize("encode, shown", [(as_255, "255"), (as_probability, "0.9"), (as_label3, "3")])
def test_measure_refuses_other_values(case, capsys, encode, shown):
    pred = case["preds"]("pred", encode)
    assert measure(case, pred) == 2  # before the fix: exit 0, area 0, 0 components
    err = capsys.readouterr().err
    assert f"{pred / 'a.mha'}: label values" in err and shown in err
    assert not (case["root"] / "m").exists()


def test_measure_with_the_options_gives_the_areas_of_the_0_1_masks(case):
    assert measure(case, case["preds"]("p01", lambda m: m.astype(np.uint8)), out="m01") == 0
    expected = areas(case, "m01")
    assert expected["a"] == pytest.approx(LESIONS["a"].sum() * 0.49)
    assert measure(case, case["preds"]("p255", as_255), "--lesion-label", 255, out="m255") == 0
    assert areas(case, "m255") == expected
    assert measure(case, case["preds"]("prob", as_probability), "--threshold", 0.5, out="mprob") == 0
    assert areas(case, "mprob") == expected


# -- ulseg postprocess ----------------------------------------------------------------------------
def postprocess(case, pred, out, *options):
    return ulseg(["postprocess", "-i", pred, "-o", case["root"] / out, "--sidecar", case["sidecar"],
                  "--no-progress", *options])


def read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetPixelID()


def test_postprocess_refuses_other_values_and_reads_them_with_the_options(case, capsys):
    pred = case["preds"]("p255", as_255)
    assert postprocess(case, pred, "o") == 2  # before the fix: every case "fallback_ellipse", exit 0
    assert f"{pred / 'a.mha'}: label values" in capsys.readouterr().err and not (case["root"] / "o").exists()
    assert postprocess(case, pred, "o255", "--lesion-label", 255) == 0
    array, pixel = read(case["root"] / "o255" / "a.mha")
    assert pixel == sitk.sitkUInt8 and set(np.unique(array)) == {0, 255}  # the user's encoding is kept
    np.testing.assert_array_equal(array == 255, LESIONS["a"])  # marked, nothing to remove, no holes
    record = json.loads((case["root"] / "o255" / "postprocessing.json").read_text())
    assert record["status"] == {"a": "marked", "b": "marked"} and "255" in record["labels"]

    prob = case["preds"]("prob", as_probability)
    assert postprocess(case, prob, "oprob") == 2
    assert "--threshold" in capsys.readouterr().err
    assert postprocess(case, prob, "oprob", "--threshold", 0.5) == 0
    array, pixel = read(case["root"] / "oprob" / "b.mha")
    assert pixel == sitk.sitkUInt8  # a probability map becomes a 0/1 segmentation
    np.testing.assert_array_equal(array, LESIONS["b"].astype(np.uint8))


# -- score_folder (refine --truth, benchmarks) -----------------------------------------------------
def test_score_folder_refuses_other_values_and_takes_the_options(case):
    from nnunet_ulseg.workflow.slice_scores import score_folder

    pred = case["preds"]("p255", as_255)
    with pytest.raises(ValueError, match=r"a\.mha: label values .*255"):
        score_folder(pred, case["sidecar"], case["ref"], "test", ref_format="png")
    got = score_folder(pred, case["sidecar"], case["ref"], "test", ref_format="png", lesion_label=255)
    assert [r["dice"] for r in got["per_lesion"]] == [1.0, 1.0]
    prob = case["preds"]("prob", as_probability)
    got = score_folder(prob, case["sidecar"], case["ref"], "test", ref_format="png", threshold=0.5)
    assert [r["dice"] for r in got["per_lesion"]] == [1.0, 1.0]


# -- the rule itself -------------------------------------------------------------------------------
def test_lesion_and_ignore_by_hand():
    labels = np.array([[0, 1, 2], [1, 0, 2]], np.uint8)
    lesion, ignore = lesion_and_ignore(labels, "x.mha")
    np.testing.assert_array_equal(lesion, labels == 1)
    np.testing.assert_array_equal(ignore, labels == 2)
    lesion, ignore = lesion_and_ignore(np.where(labels == 1, 100, labels), "x.mha", LabelRule(lesion_label=100))
    np.testing.assert_array_equal(lesion, labels == 1)
    np.testing.assert_array_equal(ignore, labels == 2)
    with pytest.raises(ValueError, match=r"x\.mha: label values 1 \(1 value outside 0 \(background\), 100"):
        lesion_and_ignore(labels, "x.mha", LabelRule(lesion_label=100))
    prob = np.array([[0.1, 0.5], [0.49, 1.0]], np.float32)
    lesion, ignore = lesion_and_ignore(prob, "p.mha", LabelRule(threshold=0.5))
    np.testing.assert_array_equal(lesion, [[False, True], [False, True]])
    assert not ignore.any()
    with pytest.raises(ValueError, match=r"p\.mha: label values.*not finite"):
        lesion_and_ignore(np.array([[0.0, np.nan]]), "p.mha", LabelRule(threshold=0.5))
    many = np.arange(40, dtype=np.int32).reshape(4, 10)
    with pytest.raises(ValueError, match=r"m\.mha: label values 3, 4, 5, 6, 7, 8, \.\.\. \(37 values outside"):
        lesion_and_ignore(many, "m.mha")
