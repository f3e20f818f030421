"""``ulseg refine`` orchestration on hand-made datasets with a fake nnU-Net backend (no nnU-Net runs)."""
from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from nnunet_ulseg.refine import rounds as rounds_module
from nnunet_ulseg.refine.backend import transfer_plans
from nnunet_ulseg.refine.manifest import ManifestConflict, stable_view
from nnunet_ulseg.refine.parts import WaitTimeout
from nnunet_ulseg.refine.report import format_report
from nnunet_ulseg.refine.rounds import (RefineConfig, RefineError, Refinement, paths_from_environ, refine,
                                        work_dir_name)
from nnunet_ulseg.workflow.nnunet import NNUNetPaths

from refine_support import FakeBackend, Killed, read_checkpoint, read_image, write_checkpoint, write_tiny_dataset

TRAINER = "nnUNetTrainerFake"


def setup(tmp_path, **kwargs):
    paths = NNUNetPaths.under(tmp_path).create()
    write_tiny_dataset(paths.raw, **kwargs)
    return paths, FakeBackend(paths, TRAINER)


def run(paths, backend, echo=None, **options):
    return refine(501, TRAINER, paths=paths, backend=backend, echo=echo, device="cpu", **options)


def work(paths, fold=0, cross_val=False):
    return paths.results / "Dataset501_Tiny" / work_dir_name(TRAINER, "nnUNetPlans", "2d", fold, cross_val)


def manifest(paths, **kw) -> dict:
    return json.loads((work(paths, **kw) / "manifest.json").read_text())


def kinds(calls):
    return [(c[0], c[1]) + ((c[2],) if c[0] == "train" else ()) for c in calls]


def test_three_rounds_plan_train_predict_build_preprocess(tmp_path):
    paths, backend = setup(tmp_path)
    lines = []
    result = run(paths, backend, echo=lines.append, rounds=3)
    r2, r3 = "Dataset601_Tiny_round2", "Dataset701_Tiny_round3"
    assert kinds(backend.calls) == [
        ("plan_and_preprocess", "Dataset501_Tiny"), ("train", "Dataset501_Tiny", 0),
        ("predict", "Dataset501_Tiny"), ("preprocess", r2), ("train", r2, 0), ("predict", r2),
        ("preprocess", r3), ("train", r3, 0)]
    m = manifest(paths)
    assert list(m["steps"]) == ["prepare_1", "train_1", "predict_1", "build_2", "preprocess_2", "train_2",
                                "predict_2", "build_3", "preprocess_3", "train_3"]
    assert m["in_progress"] is None
    assert m["rounds"] == {"1": {"dataset_id": 501, "dataset_name": "Dataset501_Tiny"},
                           "2": {"dataset_id": 601, "dataset_name": r2}, "3": {"dataset_id": 701, "dataset_name": r3}}
    # every training case (train and val of the split) was predicted, by fold 0's model
    predict = [c for c in backend.calls if c[0] == "predict"][0]
    assert predict[2] == (0,) and len(predict[6]) == 12 and predict[3] == "imagesTr"
    # round 2: plans of round 1 (only the dataset name differs), round 1's fingerprint and split
    pre1, pre2 = paths.preprocessed / "Dataset501_Tiny", paths.preprocessed / r2
    plans1, plans2 = (json.loads((p / "nnUNetPlans.json").read_text()) for p in (pre1, pre2))
    assert plans2.pop("dataset_name") == r2 and plans1.pop("dataset_name") == "Dataset501_Tiny"
    assert plans1 == plans2
    for name in ("dataset_fingerprint.json", "splits_final.json"):
        assert (pre2 / name).read_text() == (pre1 / name).read_text()
    assert json.loads((pre2 / "dataset.json").read_text())["name"] == r2
    assert json.loads((paths.raw / r2 / "splits_final.json").read_text()) == \
        json.loads((pre1 / "splits_final.json").read_text())
    # labels: round 3 from round 2's prediction (shifted block), always against round 1's ellipse
    lab3 = read_image(paths.raw / r3 / "labelsTr" / "P0L0.mha")
    e = read_image(paths.raw / "Dataset501_Tiny" / "labelsTr" / "P0L0.mha").astype(bool)
    p = np.zeros_like(e)
    p[4:12, 7:15] = True
    np.testing.assert_array_equal(lab3 == 1, p & e)
    # report
    report = result.report
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    assert report["rounds"][0]["ignore_fraction"] == 0 and report["rounds"][0]["label_change"] is None
    assert report["rounds"][1]["ignore_fraction"] > 0 and report["rounds"][2]["label_change"] > 0
    assert report["rounds"][1]["fallback_cases"] == 1  # the fake model misses P5L1
    assert json.loads((work(paths) / "refine_report.json").read_text()) == report
    assert "Dataset701_Tiny_round3" in lines[-1] and "round" in lines[-1]


def test_finished_run_only_reports_and_rounds_can_grow(tmp_path):
    paths, backend = setup(tmp_path)
    run(paths, backend, rounds=2)
    before = manifest(paths)
    backend.calls.clear()
    again = run(paths, backend, rounds=2)
    assert backend.calls == [] and manifest(paths) == before
    assert len(again.report["rounds"]) == 2
    run(paths, backend, rounds=3)
    assert kinds(backend.calls) == [("predict", "Dataset601_Tiny_round2"), ("preprocess", "Dataset701_Tiny_round3"),
                                    ("train", "Dataset701_Tiny_round3", 0)]
    with pytest.raises(ManifestConflict, match="rounds can only grow"):
        run(paths, backend, rounds=2)
    with pytest.raises(ManifestConflict, match="init_from_previous"):
        run(paths, backend, rounds=3, init_from_previous=True)


STEP_CALL = {"train_1": ("train", "Dataset501_Tiny"), "predict_1": ("predict", "Dataset501_Tiny"),
             "preprocess_2": ("preprocess", "Dataset601_Tiny_round2"),
             "train_2": ("train", "Dataset601_Tiny_round2")}


@pytest.mark.parametrize("killed_in", ["train_1", "predict_1", "build_2", "preprocess_2", "train_2"])
def test_resume_after_a_kill_redoes_only_the_interrupted_step(tmp_path, monkeypatch, killed_in):
    reference_paths, reference = setup(tmp_path / "a")
    run(reference_paths, reference, rounds=2)

    paths, backend = setup(tmp_path / "b")
    if killed_in == "build_2":
        real = rounds_module.build_round_dataset

        def build_and_die(round1, previous, target, *a, **k):
            partial = Path(target).with_name(f".{Path(target).name}.partial")
            (partial / "labelsTr").mkdir(parents=True)
            (partial / "labelsTr" / "half.mha").write_text("")
            raise Killed

        monkeypatch.setattr(rounds_module, "build_round_dataset", build_and_die)
    else:
        def hook(call):
            if call[:2] == STEP_CALL[killed_in]:
                raise Killed

        backend.hook = hook
    with pytest.raises(Killed):
        run(paths, backend, rounds=2)
    interrupted = manifest(paths)
    assert interrupted["in_progress"]["step"] == killed_in
    done_before = list(interrupted["steps"])
    assert killed_in not in done_before

    if killed_in == "build_2":
        monkeypatch.setattr(rounds_module, "build_round_dataset", real)
    backend.hook = None
    backend.calls.clear()
    lines = []
    run(paths, backend, echo=lines.append, rounds=2)
    assert any(f"[{killed_in}]" in line and "after an interruption" in line for line in lines)
    # steps finished before the kill were not run again
    redone = {("train", "Dataset501_Tiny"): "train_1", ("predict", "Dataset501_Tiny"): "predict_1",
              ("preprocess", "Dataset601_Tiny_round2"): "preprocess_2", ("train", "Dataset601_Tiny_round2"): "train_2",
              ("predict", "Dataset601_Tiny_round2"): "predict_2"}
    assert not {redone[c[:2]] for c in backend.calls} & set(done_before)
    assert stable_view(manifest(paths)) == stable_view(manifest(reference_paths))
    for case in ("P0L0", "P5L1"):
        for ds in ("Dataset601_Tiny_round2",):
            np.testing.assert_array_equal(read_image(paths.raw / ds / "labelsTr" / f"{case}.mha"),
                                          read_image(reference_paths.raw / ds / "labelsTr" / f"{case}.mha"))
    assert not list(paths.raw.glob(".*partial"))


def test_round1_training_of_the_user_is_reused_or_protected(tmp_path):
    paths, backend = setup(tmp_path)
    backend.plan_and_preprocess("Dataset501_Tiny")
    fold = backend.fold_dir("Dataset501_Tiny", 0)
    fold.mkdir(parents=True)
    (fold / "training_log.txt").write_text("someone's unfinished training")
    backend.calls.clear()
    with pytest.raises(RefineError, match="exists without checkpoint_final.pth.*--c"):
        run(paths, backend, rounds=1)
    assert (fold / "training_log.txt").exists()  # never deleted: we did not start it
    users = write_checkpoint(fold / "checkpoint_final.pth", TRAINER, note="trained by the user").read_bytes()
    run(paths, backend, rounds=2)
    m = manifest(paths)
    assert m["steps"]["train_1"]["preexisting"] is True
    assert (fold / "checkpoint_final.pth").read_bytes() == users
    assert ("train", "Dataset501_Tiny", 0, None) not in backend.calls
    assert not [c for c in backend.calls if c[0] == "plan_and_preprocess"]


def test_round1_preprocessing_only_when_missing(tmp_path):
    paths, backend = setup(tmp_path / "complete")
    backend.plan_and_preprocess("Dataset501_Tiny")
    backend.calls.clear()
    run(paths, backend, rounds=1)
    assert kinds(backend.calls) == [("train", "Dataset501_Tiny", 0)]

    paths, backend = setup(tmp_path / "partial")
    backend.plan_and_preprocess("Dataset501_Tiny")
    data = paths.preprocessed / "Dataset501_Tiny" / "nnUNetPlans_2d"
    (data / "P3L1.pkl").unlink()  # one case missing: preprocessing was cut short
    backend.calls.clear()
    run(paths, backend, rounds=1)
    assert kinds(backend.calls) == [("preprocess", "Dataset501_Tiny"), ("train", "Dataset501_Tiny", 0)]
    assert manifest(paths)["steps"]["prepare_1"]["preprocessed"] is True


def test_prepare_interrupted_after_planning_preprocesses_again(tmp_path):
    paths, backend = setup(tmp_path)

    def hook(call):
        if call[0] == "plan_and_preprocess":
            raise Killed  # plans written, preprocessing not finished

    backend.hook = hook
    with pytest.raises(Killed):
        run(paths, backend, rounds=1)
    backend.hook = None
    backend.calls.clear()
    run(paths, backend, rounds=1)
    assert kinds(backend.calls) == [("preprocess", "Dataset501_Tiny"), ("train", "Dataset501_Tiny", 0)]


def test_build_refuses_a_recorded_id_taken_by_another_dataset(tmp_path):
    paths, backend = setup(tmp_path)

    def hook(call):
        if call[:2] == ("preprocess", "Dataset601_Tiny_round2"):
            raise Killed

    backend.hook = hook
    with pytest.raises(Killed):
        run(paths, backend, rounds=2)
    # between the runs, build_2 is undone by hand and someone else takes id 601
    m = manifest(paths)
    del m["steps"]["build_2"]
    (work(paths) / "manifest.json").write_text(json.dumps(m))
    (paths.preprocessed / "Dataset601_Other").mkdir()
    backend.hook = None
    with pytest.raises(RefineError, match="dataset id 601.*Dataset601_Other"):
        run(paths, backend, rounds=2)


def test_init_from_previous_passes_round_r_checkpoint(tmp_path):
    paths, backend = setup(tmp_path)
    run(paths, backend, rounds=2, init_from_previous=True)
    trains = [c for c in backend.calls if c[0] == "train"]
    assert trains == [("train", "Dataset501_Tiny", 0, None),
                      ("train", "Dataset601_Tiny_round2", 0, "checkpoint_final.pth")]
    ckpt = read_checkpoint(backend.fold_dir("Dataset601_Tiny_round2", 0) / "checkpoint_final.pth")["init_args"]
    assert ckpt["pretrained"] == str(backend.fold_dir("Dataset501_Tiny", 0) / "checkpoint_final.pth")
    expected = f"Dataset501_Tiny/{TRAINER}__nnUNetPlans__2d/fold_0/checkpoint_final.pth"
    assert manifest(paths)["steps"]["train_2"]["pretrained_weights"] == expected


def test_fold_other_than_zero_gets_its_own_work_folder(tmp_path):
    paths, backend = setup(tmp_path)
    run(paths, backend, rounds=2, fold=1)
    assert (work(paths, fold=1) / "manifest.json").exists()
    assert [c[2] for c in backend.calls if c[0] == "train"] == [1, 1]
    assert [c[2] for c in backend.calls if c[0] == "predict"] == [(1,)]


def test_cross_val_writes_a_patient_split_and_predicts_each_case_out_of_fold(tmp_path):
    paths, backend = setup(tmp_path, n_patients=6)
    pre = paths.preprocessed / "Dataset501_Tiny"
    pre.mkdir(parents=True)
    official = (paths.raw / "Dataset501_Tiny" / "splits_final.json").read_text()
    (pre / "splits_final.json").write_text(official)
    run(paths, backend, rounds=2, cross_val=True)
    splits = json.loads((pre / "splits_final.json").read_text())
    assert len(splits) == 5 and (pre / "splits_final.before_ulseg_crossval.json").read_text() == official
    trains = [c[1:3] for c in backend.calls if c[0] == "train"]
    assert trains == [("Dataset501_Tiny", k) for k in range(5)] + [("Dataset601_Tiny_round2", k) for k in range(5)]
    predicts = [c for c in backend.calls if c[0] == "predict"]
    assert [c[2] for c in predicts] == [(k,) for k in range(5)]
    for k, call in enumerate(predicts):
        assert sorted(call[6]) == splits[k]["val"]  # fold k predicts exactly the cases it did not train on
        assert not set(call[6]) & set(splits[k]["train"])
    assert sorted(c for call in predicts for c in call[6]) == sorted(c for f in splits for c in f["val"])
    m = manifest(paths, fold=None, cross_val=True)
    assert "train_1_fold4" in m["steps"] and m["arguments"]["fold"] is None
    assert json.loads((paths.preprocessed / "Dataset601_Tiny_round2" / "splits_final.json").read_text()) == splits
    with pytest.raises(ValueError, match="do not pass a fold"):
        run(paths, backend, rounds=2, cross_val=True, fold=0)


def test_cross_val_refuses_to_replace_a_split_folds_were_trained_on(tmp_path):
    paths, backend = setup(tmp_path)
    (backend.fold_dir("Dataset501_Tiny", 0)).mkdir(parents=True)
    pre = paths.preprocessed / "Dataset501_Tiny"
    pre.mkdir(parents=True)
    (pre / "splits_final.json").write_text((paths.raw / "Dataset501_Tiny" / "splits_final.json").read_text())
    with pytest.raises(RefineError, match=r"fold\(s\) \[0\].*already trained"):
        run(paths, backend, rounds=2, cross_val=True)
    assert len(json.loads((pre / "splits_final.json").read_text())) == 1


def test_cross_val_needs_patients(tmp_path):
    paths, backend = setup(tmp_path, sidecar=False)
    with pytest.raises(RefineError, match="lesions.csv is missing"):
        run(paths, backend, rounds=2, cross_val=True)


def test_parts_coordinate_through_markers(tmp_path):
    paths, backend = setup(tmp_path)
    fast = {"wait_timeout": 0.3, "poll_interval": 0.05}
    # part 1 started first: it waits for part 0's manifest and gives up after the timeout
    with pytest.raises(WaitTimeout, match="part 0 to create"):
        run(paths, backend, rounds=2, num_parts=2, part_id=1, **fast)
    # part 0 trains round 1, predicts its half, then waits for part 1 in vain
    with pytest.raises(WaitTimeout, match="parts 1-1 of round 1"):
        run(paths, backend, rounds=2, num_parts=2, part_id=0, **fast)
    m = manifest(paths)
    assert m["in_progress"]["step"] == "predict_1" and "train_1" in m["steps"]
    job = work(paths) / "round1" / "predictions" / "fold0"
    assert (job / "part0of2" / "DONE.json").exists() and not (job / "part1of2").exists()
    # part 1 now predicts its half (the odd cases), writes its marker and exits
    backend.calls.clear()
    part = run(paths, backend, rounds=2, num_parts=2, part_id=1, **fast)
    assert part.role == "part" and part.predicted_rounds == [1] and part.report is None
    (call,) = backend.calls
    assert call[0] == "predict" and call[4:6] == (2, 1) and len(call[6]) == 6
    assert json.loads((job / "part1of2" / "DONE.json").read_text())["cases"] == list(call[6])
    assert manifest(paths) == m  # parts never write the manifest
    # part 0 again: its own half is not predicted again; it builds round 2 and trains it
    backend.calls.clear()
    done = run(paths, backend, rounds=2, num_parts=2, part_id=0, **fast)
    assert kinds(backend.calls) == [("preprocess", "Dataset601_Tiny_round2"), ("train", "Dataset601_Tiny_round2", 0)]
    assert manifest(paths)["steps"]["predict_1"]["num_parts"] == 2
    assert len(done.report["rounds"]) == 2
    # with the same labels as a single-process run
    single_paths, single = setup(tmp_path / "single")
    run(single_paths, single, rounds=2)
    for case in ("P0L0", "P0L1", "P5L1"):
        np.testing.assert_array_equal(
            read_image(paths.raw / "Dataset601_Tiny_round2" / "labelsTr" / f"{case}.mha"),
            read_image(single_paths.raw / "Dataset601_Tiny_round2" / "labelsTr" / f"{case}.mha"))
    # nothing left for a part
    backend.calls.clear()
    assert run(paths, backend, rounds=2, num_parts=2, part_id=1, **fast).predicted_rounds == []
    assert backend.calls == []


def test_parts_running_together_with_follow(tmp_path):
    paths, backend = setup(tmp_path)
    opts = {"rounds": 3, "num_parts": 3, "wait_timeout": 30, "poll_interval": 0.02}
    results, errors = {}, []

    def part(i):
        try:
            results[i] = run(paths, backend, part_id=i, follow=True, **opts)
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=part, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    coordinator = run(paths, backend, part_id=0, **opts)
    for t in threads:
        t.join(60)
    assert not errors
    assert results[1].predicted_rounds == results[2].predicted_rounds == [1, 2]
    assert len(coordinator.report["rounds"]) == 3
    predicts = [c for c in backend.calls if c[0] == "predict"]
    assert sorted((c[1], c[5]) for c in predicts) == sorted(
        (ds, i) for ds in ("Dataset501_Tiny", "Dataset601_Tiny_round2") for i in range(3))


def test_paths_from_environ_needs_the_three_variables(tmp_path):
    with pytest.raises(RefineError, match="set nnUNet_preprocessed, nnUNet_results"):
        paths_from_environ({"nnUNet_raw": str(tmp_path)})
    p = paths_from_environ({v: str(tmp_path / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    assert p.results == tmp_path / "nnUNet_results" and p.raw == tmp_path / "nnUNet_raw"


def test_refine_uses_the_environment_when_no_paths_are_given(tmp_path, monkeypatch):
    paths, backend = setup(tmp_path)
    for name, value in (("nnUNet_raw", paths.raw), ("nnUNet_preprocessed", paths.preprocessed),
                        ("nnUNet_results", paths.results)):
        monkeypatch.setenv(name, str(value))
    refine("Dataset501_Tiny", TRAINER, backend=backend, echo=None, rounds=1, device="cpu")
    assert (work(paths) / "manifest.json").exists()


def test_config_validation(tmp_path):
    for bad, message in (({"rounds": 0}, "at least 1"), ({"num_parts": 2, "part_id": 2}, "part id 2"),
                         ({"fold": -1}, "fold must be"), ({"truth": tmp_path}, "masks.csv"),
                         ({"num_gpus": 0}, "num_gpus")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            RefineConfig(dataset=1, trainer="T", **bad).validate()
    assert RefineConfig(dataset=1, trainer="T").folds == [0]
    assert RefineConfig(dataset=1, trainer="T", cross_val=True).folds == [0, 1, 2, 3, 4]
    assert RefineConfig(dataset=1, trainer="T", fold=2).manifest_arguments("D")["fold"] == 2


def test_steps_list_follows_the_options(tmp_path):
    paths, backend = setup(tmp_path)
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "masks.csv").write_text("")
    r = Refinement(paths, RefineConfig(dataset=501, trainer=TRAINER, rounds=2, truth=sample, device="cpu"),
                   backend=backend, echo=None)
    assert [s.name for s in r.steps()] == ["prepare_1", "train_1", "test_1", "predict_1", "build_2",
                                           "preprocess_2", "train_2", "test_2"]


def test_transfer_plans_matches_nnunet_move_plans(tmp_path, monkeypatch):
    from nnunetv2.experiment_planning.plans_for_pretraining import move_plans_between_datasets as nn

    paths, backend = setup(tmp_path)
    backend.plan_and_preprocess("Dataset501_Tiny")
    target = "Dataset601_Tiny_round2"
    write_tiny_dataset(paths.raw, dataset_id=601, name="Tiny_round2")
    (paths.preprocessed / target).mkdir()
    monkeypatch.setattr(nn, "nnUNet_preprocessed", str(paths.preprocessed))
    monkeypatch.setattr(nn, "nnUNet_raw", str(paths.raw))
    nn.move_plans_between_datasets("Dataset501_Tiny", target, "nnUNetPlans", "nnUNetPlans")
    theirs = json.loads((paths.preprocessed / target / "nnUNetPlans.json").read_text())
    out = transfer_plans(paths.preprocessed, "Dataset501_Tiny", target)
    ours = json.loads(out.read_text())
    # nnU-Net re-detects the reader with allow_nonmatching_filename=True, which picks NaturalImage2DIO
    # (spacing 999, 1, 1) for our .mha files; we keep round 1's reader, everything else is identical
    source = json.loads((paths.preprocessed / "Dataset501_Tiny" / "nnUNetPlans.json").read_text())
    assert ours.pop("image_reader_writer") == source["image_reader_writer"] == "SimpleITKIO"
    theirs.pop("image_reader_writer")
    assert ours == theirs and ours["dataset_name"] == target
    with pytest.raises(FileNotFoundError, match="plan and preprocess Dataset502_X"):
        transfer_plans(paths.preprocessed, "Dataset502_X", target)


def test_report_table_and_truth_scores(tmp_path):
    report = {"dataset": "Dataset501_X", "work_dir": "/w", "truth": "/s",
              "arguments": {"trainer": "T", "cross_val": False, "fold": 0, "configuration": "2d"},
              "ellipse_test_dice": {"mean": 0.7},
              "rounds": [{"round": 1, "dataset": "Dataset501_X", "dataset_id": 501, "cases": 9, "ignore_fraction": 0.0,
                          "label_change": None, "fallback_cases": 0, "trained": True,
                          "pseudo_mask_dice": {"mean": 0.81}, "pseudo_mask_dice_labelled": {"mean": 0.81},
                          "test_dice": {"mean": 0.52}},
                         {"round": 2, "dataset": "Dataset601_X_round2", "dataset_id": 601, "cases": 9, "ignore_fraction": 0.1234,
                          "label_change": 0.05, "fallback_cases": 1, "trained": False,
                          "pseudo_mask_dice": {"mean": 0.85}, "pseudo_mask_dice_labelled": {"mean": 0.9}}]}
    text = format_report(report)
    assert "ignore %" in text and "pseudo Dice" in text
    row1, row2 = [line for line in text.splitlines() if line.split()[0].isdigit()]
    assert row1.split()[:6] == ["1", "Dataset501_X", "9", "0.00", "-", "0"] and row1.split()[6:] == ["0.8100", "0.8100", "0.5200"]
    assert row2.split()[3:9] == ["12.34", "5.00", "1", "0.8500", "0.9000", "-"] and "(not trained yet)" in row2
    assert "RECIST ellipses on the test split: Dice 0.7000" in text
    report.pop("truth")
    assert "pseudo Dice" not in format_report(report)


def test_cli_parses_and_maps_timeouts_to_status_3(monkeypatch):
    from nnunet_ulseg.refine import cli

    parser = argparse.ArgumentParser()
    cli.add_refine_parser(parser.add_subparsers())
    seen = {}

    def fake_refine(dataset, trainer, **options):
        seen.update(options, dataset=dataset, trainer=trainer)

    monkeypatch.setattr(rounds_module, "refine", fake_refine)
    args = parser.parse_args(["refine", "-d", "501", "-tr", "T", "--rounds", "2", "--num-parts", "4", "--part-id", "3",
                              "--disable-tta", "-np", "1", "--init-from-previous", "--cross-val", "-num_gpus", "2"])
    assert args.func(args) == 0
    assert seen["dataset"] == "501" and seen["trainer"] == "T" and seen["rounds"] == 2
    assert (seen["num_parts"], seen["part_id"], seen["tta"], seen["num_processes"]) == (4, 3, False, 1)
    assert seen["init_from_previous"] and seen["cross_val"] and seen["fold"] is None and seen["configuration"] == "2d"
    assert seen["num_gpus"] == 2
    assert parser.parse_args(["refine", "-d", "1", "-tr", "T"]).tta is True  # nnUNetv2_predict's default

    def timeout(*_a, **_k):
        raise WaitTimeout("gave up")

    monkeypatch.setattr(rounds_module, "refine", timeout)
    assert args.func(args) == 3


def test_nnunet_backend_command_lines(tmp_path, monkeypatch):
    from nnunet_ulseg.refine import backend as backend_module
    from nnunet_ulseg.refine.backend import NNUNetBackend

    seen = []
    monkeypatch.setattr(backend_module, "console_script", lambda name: name)
    monkeypatch.setattr(backend_module, "run_command", lambda args, env, log, echo: seen.append((args, env)))
    monkeypatch.delenv("nnUNet_def_n_proc", raising=False)
    paths = NNUNetPaths.under(tmp_path)
    b = NNUNetBackend(paths, "2d", "T", "P", "cpu", 1, tmp_path / "log", tta=False)
    b.plan_and_preprocess("Dataset501_X")
    b.preprocess("Dataset601_X_round2")
    b.train("Dataset601_X_round2", 0, pretrained=Path("/m/checkpoint_final.pth"))
    b.train("Dataset501_X", 3)
    NNUNetBackend(paths, "2d", "T", "P", "cuda", 1, tmp_path / "log", num_gpus=2).train("Dataset501_X", 0)
    ddp = seen.pop()[0]
    assert ddp[-2:] == ["-num_gpus", "2"]
    b.predict("Dataset501_X", [0], Path("/in"), Path("/out"))
    b.predict("Dataset501_X", [0, 1, 2, 3, 4], Path("/in"), Path("/out"), num_parts=4, part_id=3)
    args = [" ".join(a) for a, _ in seen]
    assert args[0] == "nnUNetv2_plan_and_preprocess -d 501 -c 2d -np 1 -npfp 1 --verify_dataset_integrity"
    assert args[1] == "nnUNetv2_preprocess -d 601 -plans_name P -c 2d -np 1"
    assert args[2] == "nnUNetv2_train 601 2d 0 -tr T -p P -device cpu -pretrained_weights /m/checkpoint_final.pth"
    assert args[3] == "nnUNetv2_train 501 2d 3 -tr T -p P -device cpu"
    assert args[4] == ("nnUNetv2_predict -i /in -o /out -d 501 -c 2d -f 0 -tr T -p P -chk checkpoint_final.pth "
                       "-device cpu -npp 1 -nps 1 --disable_tta")
    assert args[5].startswith("nnUNetv2_predict -i /in -o /out -d 501 -c 2d -f 0 1 2 3 4 -tr T")
    assert args[5].endswith("--disable_tta -num_parts 4 -part_id 3")
    env = seen[0][1]
    assert env["nnUNet_def_n_proc"] == "1" and env["nnUNet_results"] == str(paths.results)
    # TTA: on by default on every device (nnUNetv2_predict's default); a user's nnUNet_def_n_proc wins
    monkeypatch.setenv("nnUNet_def_n_proc", "6")
    for device in ("cuda", "cpu"):
        NNUNetBackend(paths, "2d", "T", "P", device, 2, tmp_path / "log").predict(
            "Dataset501_X", [0], Path("/i"), Path("/o"))
    assert "--disable_tta" not in seen[-2][0] and "--disable_tta" not in seen[-1][0]
    assert seen[-1][1]["nnUNet_def_n_proc"] == "6"
