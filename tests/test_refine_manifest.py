"""The refinement manifest, the coordinator lock, and the multi-part prediction protocol."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nnunet_ulseg.refine.manifest import (Manifest, ManifestConflict, read_json, stable_view,
                                          write_json_atomic)
from nnunet_ulseg.refine.parts import (WaitTimeout, collect_predictions, mark_part_done, missing_parts,
                                       model_fingerprint, part_cases, part_done, part_folder, wait_until)
from nnunet_ulseg.refine.rounds import RefineError, coordinator_lock

ARGS = {"dataset": "Dataset501_X", "configuration": "2d", "trainer": "T", "plans": "nnUNetPlans", "fold": 0,
        "cross_val": False, "init_from_previous": False, "rounds": 2}


def test_write_json_atomic_and_read_json(tmp_path):
    write_json_atomic(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    assert read_json(tmp_path / "sub" / "a.json") == {"x": [1, 2]}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]  # no temporary left behind
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_manifest_records_steps_and_in_progress(tmp_path):
    m = Manifest.open(tmp_path / "m.json", ARGS)
    assert not m.is_done("train_1") and m.in_progress is None
    m.start("train_1")
    on_disk = Manifest.read(tmp_path / "m.json")
    assert on_disk.in_progress["step"] == "train_1" and on_disk.in_progress["pid"] == os.getpid()
    m.finish("train_1", 1.23456, {"checkpoint": "x"})
    m.set_round(2, dataset_id=601, dataset_name="Dataset601_X_round2")
    again = Manifest.open(tmp_path / "m.json", ARGS)
    assert again.is_done("train_1") and again.in_progress is None
    assert again.steps["train_1"]["checkpoint"] == "x" and again.steps["train_1"]["seconds"] == 1.235
    assert again.round(2)["dataset_id"] == 601 and again.round(3) is None


def test_manifest_refuses_conflicting_arguments_but_lets_rounds_grow(tmp_path):
    Manifest.open(tmp_path / "m.json", ARGS)
    with pytest.raises(ManifestConflict, match=r"trainer: manifest has 'T', this command has 'U'") as info:
        Manifest.open(tmp_path / "m.json", {**ARGS, "trainer": "U", "cross_val": True})
    assert "cross_val" in str(info.value)
    with pytest.raises(ManifestConflict, match="rounds can only grow"):
        Manifest.open(tmp_path / "m.json", {**ARGS, "rounds": 1})
    grown = Manifest.open(tmp_path / "m.json", {**ARGS, "rounds": 4})
    assert Manifest.read(tmp_path / "m.json").arguments["rounds"] == 4 == grown.arguments["rounds"]
    (tmp_path / "other.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not an ulseg refine manifest"):
        Manifest.read(tmp_path / "other.json")


def test_stable_view_drops_times_hosts_and_pids():
    data = {"steps": {"a": {"finished": "t", "seconds": 3, "x": 1}}, "in_progress": {"step": "b", "pid": 1},
            "l": [{"started": 1, "y": 2}]}
    assert stable_view(data) == {"steps": {"a": {"x": 1}}, "in_progress": {"step": "b"}, "l": [{"y": 2}]}


def test_coordinator_lock_excludes_live_holders_and_takes_over_dead_ones(tmp_path):
    lock = tmp_path / "coordinator.lock"
    with coordinator_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(RefineError, match="another ulseg refine coordinator"):
            with coordinator_lock(lock):
                pass
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "x"}))
    with coordinator_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "x"}))
    with pytest.raises(RefineError, match="host elsewhere"):
        with coordinator_lock(lock):
            pass


def test_part_cases_follow_nnunet_slicing():
    assert part_cases(["d", "a", "c", "b", "e"], 0, 2) == ["a", "c", "e"]
    assert part_cases(["d", "a", "c", "b", "e"], 1, 2) == ["b", "d"]
    assert part_cases(["a"], 2, 3) == []
    assert part_folder("/x", 1, 3).name == "part1of3"
    with pytest.raises(ValueError, match="not in 0..2"):
        part_folder("/x", 3, 3)


def test_markers_are_tied_to_the_model(tmp_path):
    ckpt = tmp_path / "res" / "D" / "fold_0" / "checkpoint_final.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("v1")
    model = model_fingerprint([ckpt], tmp_path / "res")
    assert model[0]["path"] == "D/fold_0/checkpoint_final.pth" and model[0]["size"] == 2
    job = tmp_path / "job"
    assert missing_parts(job, 2, model) == [0, 1]
    mark_part_done(part_folder(job, 1, 2), 1, 2, ["b"], model)
    assert missing_parts(job, 2, model) == [0] and part_done(part_folder(job, 1, 2), model)
    ckpt.write_text("v2, retrained")
    assert missing_parts(job, 2, model_fingerprint([ckpt], tmp_path / "res")) == [0, 1]
    (part_folder(job, 0, 2) / "DONE.json").parent.mkdir(parents=True)
    (part_folder(job, 0, 2) / "DONE.json").write_text("{broken")
    assert not part_done(part_folder(job, 0, 2), model)


def test_collect_predictions_needs_every_case_once(tmp_path):
    job = tmp_path / "job"
    for i, cases in enumerate((["a", "c"], ["b"])):
        folder = part_folder(job, i, 2)
        folder.mkdir(parents=True)
        for c in cases:
            (folder / f"{c}.mha").write_text(c)
    found = collect_predictions(job, 2, ["a", "b", "c"], ".mha")
    assert {k: v.parent.name for k, v in found.items()} == {"a": "part0of2", "b": "part1of2", "c": "part0of2"}
    with pytest.raises(ValueError, match=r"missing \['d'\]"):
        collect_predictions(job, 2, ["a", "b", "c", "d"], ".mha")
    (part_folder(job, 1, 2) / "a.mha").write_text("a")
    with pytest.raises(ValueError, match=r"predicted twice \['a'\]"):
        collect_predictions(job, 2, ["a", "b", "c"], ".mha")
    # folders of another part count are not looked at
    with pytest.raises(ValueError, match="missing"):
        collect_predictions(job, 3, ["a"], ".mha")


def test_wait_until_polls_and_times_out_with_a_clear_message():
    clock = [0.0]
    sleeps, said = [], []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    ready_at = 25.0
    waited = wait_until(lambda: clock[0] >= ready_at, 100, 10, "part 1", said.append, sleep, lambda: clock[0])
    assert waited == 30.0 and sleeps == [10, 10, 10] and len(said) == 1 and "part 1" in said[0]
    clock[0], sleeps[:] = 0.0, []
    with pytest.raises(WaitTimeout, match="after 25 s waiting for the model.*again to keep waiting"):
        wait_until(lambda: False, 25, 10, "the model", None, sleep, lambda: clock[0])
    assert sleeps == [10, 10, 5]
    assert wait_until(lambda: True, 0, 1, "x") == pytest.approx(0, abs=0.1)
