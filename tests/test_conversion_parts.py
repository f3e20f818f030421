"""Context channel planning, splits, reports and the lesions.csv sidecar (small conversion modules)."""
import json
from collections import Counter

import numpy as np
import pytest

from nnunet_ulseg.conversion.context import (
    channel_names, channel_offsets, check_context_mm, in_range, resolve_slice, slice_offsets,
)
from nnunet_ulseg.conversion.geometry import CropBox, crop_box, slice_to_crop
from nnunet_ulseg.conversion.report import (
    REASONS, ConversionError, Issue, IssueLog, LesionError, format_summary, read_report, write_report,
)
from nnunet_ulseg.conversion.sidecar import SIDECAR_COLUMNS, LesionRow, paste_back, read_sidecar, write_sidecar
from nnunet_ulseg.conversion.splits import make_splits, resolve_patient_splits, write_splits
from nnunet_ulseg.recist import Recist, ellipse_mask


# --- context -------------------------------------------------------------------------------------------------------
def test_channel_offsets_key_first_then_below_then_above():
    assert channel_offsets(0) == [0]
    assert channel_offsets(2) == [0, -2, -1, 1, 2]
    assert channel_names(1) == ["key", "key-1", "key+1"]
    with pytest.raises(ValueError):
        channel_offsets(-1)


def test_resolve_slice_walks_toward_the_key():
    have = {8, 10, 11}.__contains__
    assert resolve_slice(10, -2, have) == 8
    assert resolve_slice(10, -1, have) == 10  # 9 missing -> key
    assert resolve_slice(10, 3, have) == 11   # 13, 12 missing -> 11
    assert resolve_slice(10, 0, have) == 10
    assert in_range((8, 12), 8) and in_range((8, 12), 12) and not in_range((8, 12), 13) and in_range(None, 99)


def test_slice_offsets_by_distance_round_half_away_from_the_key():
    assert slice_offsets(2) == (0, -2, -1, 1, 2)
    assert slice_offsets(1, 5.0, 1.0) == (0, -5, 5)
    assert slice_offsets(1, 5.0, 2.0) == (0, -3, 3)      # 2.5 slices -> 3
    assert slice_offsets(2, 1.0, 5.0) == (0, 0, 0, 0, 0)  # under half a slice interval: the key slice
    assert slice_offsets(2, 2.5, 5.0) == (0, -1, -1, 1, 1)
    assert slice_offsets(1, 2.1, 1.4) == (0, -2, 2)      # 1.5 despite float noise
    assert slice_offsets(1, 5.0, 1.0) is slice_offsets(1, 5.0, 1.0)  # shared by rows of one interval
    assert channel_names(2, 2.5) == ["key", "key-5mm", "key-2.5mm", "key+2.5mm", "key+5mm"]
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="context_mm"):
            check_context_mm(1, bad)
    with pytest.raises(ValueError, match="context >= 1"):
        check_context_mm(0, 5.0)
    with pytest.raises(ValueError, match="slice_interval"):
        slice_offsets(1, 5.0, 0.0)


# --- splits --------------------------------------------------------------------------------------------------------
def test_patient_with_conflicting_splits_goes_to_highest_and_is_logged(caplog):
    assigned, moves = resolve_patient_splits({1: {1}, 2: {2}, 3: {1, 3}, 4: {1, 2}})
    assert assigned == {1: 1, 2: 2, 3: 3, 4: 2}
    assert [(m.patient, m.values, m.assigned) for m in moves] == [(3, (1, 3), 3), (4, (1, 2), 2)]
    assert "patient 3" in caplog.text and "test" in caplog.text


def test_make_and_write_splits(tmp_path):
    splits = make_splits([("b", 1), ("a", 1), ("c", 2), ("t", 3)])
    assert splits == [{"train": ["a", "b"], "val": ["c"]}]
    out = tmp_path / "raw" / "Dataset501_DeepLesion"
    out.mkdir(parents=True)
    written = write_splits(splits, out, str(tmp_path / "pre"))
    assert json.loads((tmp_path / "pre" / "Dataset501_DeepLesion" / "splits_final.json").read_text()) == splits
    assert json.loads((out / "splits_final.json").read_text()) == splits and len(written) == 2
    odd = tmp_path / "not_a_dataset"
    odd.mkdir()
    assert len(write_splits(splits, odd, str(tmp_path / "pre"))) == 1


# --- report --------------------------------------------------------------------------------------------------------
def test_issue_log_counts_and_strict_raises(tmp_path):
    log = IssueLog()
    log.add(Issue(3, "a.png", "x", "missing_png", "file does not exist"))
    log.add(Issue(2, "b.png", "y", "nan_coordinates", "nan"))
    assert log.counts() == Counter({"missing_png": 1, "nan_coordinates": 1})
    write_report(tmp_path / "r.csv", log.issues)
    assert [i.dl_row for i in read_report(tmp_path / "r.csv")] == [2, 3]
    assert read_report(tmp_path / "r.csv")[1] == log.issues[0]
    with pytest.raises(ConversionError, match="line 3 .*missing_png") as e:
        IssueLog(strict=True).add(log.issues[0])
    assert e.value.issue == log.issues[0]


def test_an_exclusion_is_reported_but_never_raised_in_strict_mode():
    log = IssueLog(strict=True)
    log.add(Issue(4, "a.png", "x", "possibly_noisy", "Possibly_noisy is 1"))
    assert log.counts() == Counter({"possibly_noisy": 1})
    with pytest.raises(ConversionError):
        log.add(Issue(5, "b.png", "x", "bad_encoding", "byte 0xff"))


def test_lesion_error_and_summary():
    e = LesionError("corrupt_png", "bad", "/p.png")
    assert Issue.from_error(5, "f.png", e) == Issue(5, "f.png", "/p.png", "corrupt_png", "bad")
    with pytest.raises(AssertionError):
        LesionError("no_such_reason", "x")
    assert "missing_png" in REASONS
    text = format_summary({"train": 3, "val": 1, "test": 0}, Counter({"missing_png": 2}), {"moved": 1, "zero": 0})
    assert "converted 4 lesions: train 3, val 1, test 0" in text and "missing_png: 2" in text
    assert "moved: 1" in text and "zero" not in text


# --- sidecar -------------------------------------------------------------------------------------------------------
def make_row(recist: Recist, shape=(200, 220)) -> LesionRow:
    box = crop_box(recist)
    rc = recist.mapped(lambda p: slice_to_crop(p, box))
    return LesionRow(
        case="DL_000001_01_01_010_0", split="train", dl_row=2, File_name="000001_01_01_010.png", patient=1, study=1,
        series=1, key_slice=10, crop_x0=box.x0, crop_y0=box.y0, crop_side=box.side, crop_size=box.size,
        scale=box.scale, spacing_x=0.7, spacing_y=0.8, spacing_z=5.0,
        recist_slice=tuple(recist.points.ravel().tolist()), recist_crop=tuple(rc.points.ravel().tolist()),
        long_mm=1.0 / 3, short_mm=2.0, lesion_type=None, possibly_noisy=0, window_min=float("nan"),
        window_max=275.0, image_width=shape[1], image_height=shape[0], context_slices=(10, 9, 11),
    )


def test_sidecar_round_trip_is_exact(tmp_path):
    row = make_row(Recist.from_points([[50.1, 60.3], [80.7, 71.9], [66.0, 58.0], [63.0, 75.0]]))
    write_sidecar(tmp_path / "lesions.csv", [row, row])
    back = read_sidecar(tmp_path / "lesions.csv")
    assert len(back) == 2
    b = back[0]
    for name in SIDECAR_COLUMNS:
        if name != "window_min":
            assert getattr(b, name) == getattr(row, name), name
    assert np.isnan(b.window_min)
    assert b.box == CropBox(row.crop_x0, row.crop_y0, row.crop_side, row.crop_size)
    np.testing.assert_array_equal(b.recist_crop_points, np.asarray(row.recist_crop).reshape(4, 2))
    header = (tmp_path / "lesions.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["case", "split", "dl_row", "File_name", "patient", "study"]


def test_read_sidecar_rejects_other_csv(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_sidecar(tmp_path / "x.csv")


def test_paste_back_uses_the_row_geometry():
    recist = Recist.from_points([[50.1, 60.3], [90.7, 71.9], [72.0, 52.0], [68.0, 80.0]])
    row = make_row(recist)
    crop_label = ellipse_mask(row_recist_crop := Recist.from_points(row.recist_crop_points), (row.crop_size,) * 2)
    assert row_recist_crop.long_length == pytest.approx(recist.long_length * row.scale)
    back = paste_back(crop_label, row)
    truth = ellipse_mask(Recist.from_points(row.recist_slice_points), (row.image_height, row.image_width))
    assert back.shape == (200, 220)
    assert 2 * (back & truth).sum() / (back.sum() + truth.sum()) > 0.95


# --- small helpers -------------------------------------------------------------------------------------------------
def test_default_num_processes_and_env_helpers(monkeypatch):
    import os

    from nnunet_ulseg.conversion.deeplesion import default_num_processes
    from nnunet_ulseg.conversion.splits import preprocessed_root_from_env
    from nnunet_ulseg.conversion.worker import output_paths

    assert 1 <= default_num_processes() <= min(8, os.cpu_count())
    monkeypatch.setenv("nnUNet_preprocessed", "")
    assert preprocessed_root_from_env() is None
    monkeypatch.setenv("nnUNet_preprocessed", "/x")
    assert preprocessed_root_from_env() == "/x"
    images, label = output_paths("/o", "DL_1", 2, test=True)
    assert images == ["/o/imagesTs/DL_1_0000.mha", "/o/imagesTs/DL_1_0001.mha"] and label == "/o/pseudolabelsTs/DL_1.mha"
    images, label = output_paths("/o", "DL_1", 1, test=False)
    assert images == ["/o/imagesTr/DL_1_0000.mha"] and label == "/o/labelsTr/DL_1.mha"
