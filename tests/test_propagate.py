"""``ulseg propagate`` (WSSS Algorithm 1) without nnU-Net: off-key crops against the converter's, the round
datasets and their slices.csv, skips at the series' ends, and resume after a kill at every backend call.

The nnU-Net commands are replaced by ``refine_support.FakeBackend`` (the one refine's fault tests use),
extended here to write ``--save_probabilities`` files; the real commands run in
``test_propagate_integration.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
from nnunet_ulseg.conversion.sidecar import read_sidecar
from nnunet_ulseg.conversion.slices import read_slices, slice_case_name
from nnunet_ulseg.nnunet_layout import NNUNetPaths, case_from_filename, image_filename
from nnunet_ulseg.propagate.crops import CropOptions, cut_slices
from nnunet_ulseg.propagate.labels import extended_splits
from nnunet_ulseg.propagate.rounds import propagate
from nnunet_ulseg.refine.manifest import stable_view
from refine_support import FakeBackend, Killed, read_image, write_image

BASE = "Dataset501_Prop"
TRAINER = "nnUNetTrainerFake"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A 6-lesion generated corpus converted with one context slice on each side (3 channels)."""
    from nnunet_ulseg.demo import make_sample

    root = tmp_path_factory.mktemp("prop")
    sample = make_sample(root / "deeplesion", n_lesions=6, seed=3, image_size=128, progress=False)
    raw = root / "nnUNet_raw" / BASE
    convert_deeplesion(sample, raw, num_processes=1, progress=False, context=1)
    return sample, raw


def test_offset_zero_is_the_converters_crop_bit_for_bit_and_offsets_shift_the_channels(converted, tmp_path):
    _, raw = converted
    rows = read_sidecar(raw / "lesions.csv")
    result = cut_slices(rows, {r.case: [-1, 0, 1] for r in rows}, CropOptions.from_dataset(raw), tmp_path / "s")
    assert len(result.rows) == 3 * len(rows) and not result.skipped
    for row in rows:
        images = "imagesTs" if row.split == "test" else "imagesTr"
        for ch in range(3):  # offset 0: the converter's own files
            name = image_filename(row.case, ".mha", ch)
            assert (tmp_path / "s" / images / name).read_bytes() == (raw / images / name).read_bytes()
        key = read_image(raw / images / image_filename(row.case, ".mha", 0))
        below = read_image(raw / images / image_filename(row.case, ".mha", 1))
        plus = [read_image(tmp_path / "s" / images / image_filename(slice_case_name(row.case, 1), ".mha", c))
                for c in range(3)]
        minus = [read_image(tmp_path / "s" / images / image_filename(slice_case_name(row.case, -1), ".mha", c))
                 for c in range(3)]
        # channels [s, s-1, s+1] centred on the new slice s
        assert np.array_equal(plus[1], key) and np.array_equal(minus[2], key) and np.array_equal(minus[0], below)
        assert not np.array_equal(plus[0], key)
    table = {r.case: r for r in read_slices(tmp_path / "s" / "slices.csv")}
    r0 = rows[0]
    got = table[slice_case_name(r0.case, -1)]
    assert (got.key_case, got.offset, got.slice_index, got.split, got.label_status) == \
        (r0.case, -1, r0.key_slice - 1, r0.split, "none")
    assert got.offset_mm == pytest.approx(-r0.spacing_z)
    assert not (tmp_path / "s" / "labelsTr").exists()


def test_slices_beyond_the_slice_range_or_without_png_are_skipped_and_counted(converted, tmp_path):
    sample, raw = converted
    rows = read_sidecar(raw / "lesions.csv")
    # the demo writes 3 neighbours on each side: ±4 lies outside every Slice_range
    result = cut_slices(rows, {r.case: [-4, 3, 4] for r in rows}, CropOptions.from_dataset(raw), tmp_path / "a")
    assert result.skipped == {"outside_slice_range": 2 * len(rows)}
    assert dict(result.skipped_per_offset) == {-4: len(rows), 4: len(rows)}
    assert [r.offset for r in result.rows] == [3] * len(rows)
    # a missing PNG inside the range (copy of the corpus, one slice removed)
    import shutil

    copy = tmp_path / "dl"
    shutil.copytree(sample, copy)
    r0 = rows[0]
    (copy / "Images_png" / "_".join(r0.File_name.split("_")[:3]) / f"{r0.key_slice + 2:03d}.png").unlink()
    options = CropOptions.from_dataset(raw)
    options = type(options)(**{**options.__dict__, "source_dir": copy})
    result = cut_slices(rows, {r0.case: [1, 2]}, options, tmp_path / "b")
    assert result.skipped == {"missing_png": 1} and [r.offset for r in result.rows] == [1]


def test_extended_splits_put_each_slice_beside_its_key_case():
    splits = [{"train": ["a", "b"], "val": ["c"]}]
    got = extended_splits(splits, {"a_zp1": "a", "c_zm1": "c", "c_zp1": "c"})
    assert got == [{"train": ["a", "a_zp1", "b"], "val": ["c", "c_zm1", "c_zp1"]}]


class ProbBackend(FakeBackend):
    """FakeBackend whose predictions also write nnU-Net's ``--save_probabilities`` ``.npz``: a centred disk
    of probability 0.9 (radius a quarter of the crop) on 0.05 elsewhere."""

    def predict(self, dataset, folds, input_dir, output_dir, num_parts=1, part_id=0, save_probabilities=False):
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        cases = sorted({case_from_filename(p.name, ".mha") for p in Path(input_dir).glob("*_0000.mha")})
        mine = cases[part_id::num_parts]
        self._called("predict", dataset, Path(input_dir).name, num_parts, part_id, len(mine), save_probabilities)
        for case in mine:
            h, w = read_image(Path(input_dir) / image_filename(case, ".mha")).shape[-2:]
            yy, xx = np.mgrid[:h, :w]
            p = np.where((yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (h / 4) ** 2, 0.9, 0.05).astype(np.float32)
            write_image(output_dir / f"{case}.mha", (p > 0.5).astype(np.uint8))
            if save_probabilities:
                np.savez_compressed(output_dir / f"{case}.npz", probabilities=np.stack([1 - p, p])[:, None])


def _paths(root) -> NNUNetPaths:
    return NNUNetPaths.under(root).create()


def _setup(converted, root) -> NNUNetPaths:
    import shutil

    paths = _paths(root)
    shutil.copytree(converted[1], paths.raw / BASE, symlinks=True)
    return paths


def test_propagation_builds_each_models_dataset_and_test_predictions(converted, tmp_path):
    paths = _setup(converted, tmp_path)
    backend = ProbBackend(paths, TRAINER)
    result = propagate(501, TRAINER, paths=paths, backend=backend, K=2, device="cpu", echo=None)
    work = result.work_dir
    assert work.name == f"ulseg_propagate_{TRAINER}__nnUNetPlans__2d_fold0"
    rows = {r.case: r for r in read_sidecar(paths.raw / BASE / "lesions.csv")}
    train = sorted(c for c, r in rows.items() if r.split != "test")
    test = sorted(c for c, r in rows.items() if r.split == "test")
    for m in (1, 2):
        name = json.loads(result.manifest.read_text())["rounds"][str(m)]["dataset_name"]
        raw = paths.raw / name
        table = read_slices(raw / "slices.csv")
        key_rows = [r for r in table if r.offset == 0]
        assert sorted(r.case for r in key_rows) == train and {r.label_status for r in key_rows} == {"key"}
        off = [r for r in table if r.offset != 0]
        assert off and {abs(r.offset) for r in off} <= set(range(1, m + 1))
        assert {abs(r.offset) for r in off} == set(range(1, m + 1))
        for r in off:  # every off-key case is a labelled 3-channel case of the dataset
            assert r.label_status != "none" and r.key_case in train
            assert all((raw / "imagesTr" / image_filename(r.case, ".mha", c)).exists() for c in range(3))
            label = read_image(raw / "labelsTr" / f"{r.case}.mha")
            assert set(np.unique(label)) <= {0, 1, 2} and (label == 1).any()
        for case in train:  # key cases keep model 0's labels
            assert (raw / "labelsTr" / f"{case}.mha").read_bytes() == \
                (paths.raw / BASE / "labelsTr" / f"{case}.mha").read_bytes()
        splits = json.loads((paths.splits_file(name)).read_text())
        base_split = json.loads(paths.splits_file(BASE).read_text())
        assert splits == extended_splits(base_split, {r.case: r.key_case for r in off})
        dj = json.loads((raw / "dataset.json").read_text())
        assert dj["numTraining"] == len(train) + len(off) and dj["ulseg_propagate"]["model"] == m
    for m in (0, 1, 2):
        out = work / f"round{m}" / "test_predictions"
        table = read_slices(out / "slices.csv")
        assert {r.key_case for r in table} == set(test)
        assert sorted({r.offset for r in table}) == [-2, -1, 0, 1, 2]
        assert all((out / f"{r.case}.mha").exists() for r in table)
        assert {r.label_status for r in table if r.offset == 0} == {"key"}
        assert {r.label_status for r in table if r.offset != 0} == {"none"}
    report = json.loads((work / "propagate_report.json").read_text())
    assert [m["model"] for m in report["models"]] == [0, 1, 2] and report == result.report
    assert report["models"][2]["per_offset"]["0"] == len(train)
    # model k predicted with probabilities and trained from model k-1
    predicts = [c for c in backend.calls if c[0] == "predict" and c[-1]]
    assert [c[2] for c in predicts] == ["predict_reach1", "predict_reach2"]
    trains = [c for c in backend.calls if c[0] == "train"]
    assert [c[3] for c in trains] == [None, "checkpoint_final.pth", "checkpoint_final.pth"]


def _outputs(paths: NNUNetPaths, work: Path) -> dict:
    manifest = stable_view(json.loads((work / "manifest.json").read_text()))
    for what in ("planned", "preprocessed"):  # a redone prepare_0 preprocesses the plans its first try wrote
        manifest["steps"]["prepare_0"].pop(what, None)
    out = {"manifest": manifest}
    for folder in sorted(paths.raw.glob("Dataset*")):
        for f in sorted(folder.rglob("*")):
            if f.name == "dataset.json":  # its provenance records when it was built
                data = json.loads(f.read_text())
                data.get("ulseg_propagate", {}).pop("created", None)
                out[str(f.relative_to(paths.raw))] = data
            elif f.is_file():
                out[str(f.relative_to(paths.raw))] = f.read_bytes()
    for f in sorted(work.rglob("*")):
        if f.is_file() and f.suffix in (".mha", ".csv"):
            out[str(f.relative_to(work))] = f.read_bytes()
    return out


def test_a_propagation_killed_at_any_backend_call_resumes_to_the_same_outputs(converted, tmp_path):
    clean_paths = _setup(converted, tmp_path / "clean")
    clean = ProbBackend(clean_paths, TRAINER)
    result = propagate(501, TRAINER, paths=clean_paths, backend=clean, K=1, device="cpu", echo=None)
    expected = _outputs(clean_paths, result.work_dir)
    n_calls = len(clean.calls)
    for kill_at in range(n_calls):
        paths = _setup(converted, tmp_path / f"kill{kill_at}")
        seen = []

        def hook(call, seen=seen, kill_at=kill_at):
            seen.append(call)
            if len(seen) == kill_at + 1:
                raise Killed(call)

        with pytest.raises(Killed):
            propagate(501, TRAINER, paths=paths, backend=ProbBackend(paths, TRAINER, hook=hook), K=1,
                      device="cpu", echo=None)
        work = paths.results / BASE / result.work_dir.name
        done_before = dict(json.loads((work / "manifest.json").read_text())["steps"])
        assert not (work / "coordinator.lock").exists()  # the coordinator released it on the way out
        again = ProbBackend(paths, TRAINER)
        propagate(501, TRAINER, paths=paths, backend=again, K=1, device="cpu", echo=None)
        assert _outputs(paths, work) == expected, f"killed at call {kill_at}: {seen[-1]}"
        steps = json.loads((work / "manifest.json").read_text())["steps"]
        assert all(steps[s] == done_before[s] for s in done_before)  # finished steps are not redone
        assert len(again.calls) + len(seen) - 1 <= n_calls + 1


def test_cli_spells_nnunet_flags_and_passes_them_on(converted, tmp_path, monkeypatch):
    import argparse

    from nnunet_ulseg.propagate import cli

    parser = argparse.ArgumentParser()
    cli.add_propagate_parser(parser.add_subparsers())
    args = parser.parse_args(["propagate", "-d", "501", "-tr", "T", "-K", "2", "--eval-reach", "1", "--from-scratch",
                              "-f", "0", "-device", "cpu", "--num-parts", "2", "--part-id", "1"])
    got = {}
    monkeypatch.setattr("nnunet_ulseg.propagate.rounds.propagate", lambda d, t, **kw: got.update(d=d, t=t, **kw))
    assert args.func(args) == 0
    assert (got["d"], got["t"], got["K"], got["eval_reach"], got["fold"], got["init_from_previous"],
            got["num_parts"], got["part_id"], got["device"]) == ("501", "T", 2, 1, 0, False, 2, 1, "cpu")
    with pytest.raises(ValueError, match="K must be at least 1"):
        propagate(501, TRAINER, paths=_setup(converted, tmp_path), backend=ProbBackend(None, TRAINER), K=0,
                  echo=None)


def test_a_resumed_run_must_keep_k_and_the_eval_reach(converted, tmp_path):
    from nnunet_ulseg.refine.manifest import ManifestConflict

    paths = _setup(converted, tmp_path)
    propagate(501, TRAINER, paths=paths, backend=ProbBackend(paths, TRAINER), K=1, device="cpu", echo=None)
    for options in ({"K": 2}, {"K": 1, "eval_reach": 2}):
        backend = ProbBackend(paths, TRAINER)
        with pytest.raises(ManifestConflict, match="K|eval_reach"):
            propagate(501, TRAINER, paths=paths, backend=backend, device="cpu", echo=None, **options)
        assert backend.calls == []
    again = ProbBackend(paths, TRAINER)  # the same arguments: finished, nothing runs
    propagate(501, TRAINER, paths=paths, backend=again, K=1, device="cpu", echo=None)
    assert again.calls == []


def test_truth_scores_each_models_labels_and_test_slices_per_offset(converted, tmp_path):
    from nnunet_ulseg.conversion.geometry import slice_to_crop_mask
    from nnunet_ulseg.propagate.truth import SliceTruth, slice_dice

    sample, raw = converted
    truth = SliceTruth(sample)
    row = next(r for r in read_sidecar(raw / "lesions.csv") if truth.mask(r, 1) is not None and truth.mask(r, 1).any())
    true_crop = slice_to_crop_mask(truth.mask(row, 1), row.box)
    assert slice_dice(true_crop, row, 1, truth) > 0.9  # the truth cut to the crop and pasted back
    assert slice_dice(np.zeros_like(true_crop), row, 1, truth) == 0.0
    assert slice_dice(np.full_like(true_crop, 2), row, 1, truth) is None  # all ignore: nothing to score
    assert slice_dice(true_crop, row, 99, truth) is None  # outside the sub-volume

    paths = _setup(converted, tmp_path)
    result = propagate(501, TRAINER, paths=paths, backend=ProbBackend(paths, TRAINER), K=1, device="cpu", echo=None,
                       truth=sample)
    m0, m1 = result.report["models"]
    assert m0["label_dice_per_offset"] is None and set(m1["label_dice_per_offset"]) <= {"-1", "1"}
    for curve in (m0["test_dice_per_offset"], m1["test_dice_per_offset"], m1["label_dice_per_offset"]):
        assert curve and all(0 <= v["dice"] <= 1 and v["slices"] >= 1 for v in curve.values())
    assert set(m0["test_dice_per_offset"]) <= {"-1", "0", "1"}
    with pytest.raises(ValueError, match="masks3d.csv"):
        propagate(501, TRAINER, paths=paths, backend=ProbBackend(paths, TRAINER), K=1, echo=None, truth=tmp_path)
