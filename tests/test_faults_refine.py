"""Issue 12, cases 6 and 7: ``ulseg refine`` under concurrency and after a killed training.

Case 6: coordinators of two folds of one dataset run at the same time and must not share
a round dataset id; a stale coordinator lock is taken over by exactly one process, and a
coordinator removes only its own lock.  Case 7: a truncated checkpoint left by a killed
training never counts as a trained model.  The fake nnU-Net backend
(``refine_support.FakeBackend``) stands in for nnU-Net's commands; everything else is
the real orchestration, run in real threads or processes started together.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from nnunet_ulseg.refine import rounds as rounds_module
from nnunet_ulseg.refine.backend import checkpoint_problem
from nnunet_ulseg.refine.labels import claim_dataset_id, read_reservation, reserve_round_dataset_id
from nnunet_ulseg.refine.rounds import RefineError, coordinator_lock, refine, work_dir_name
from nnunet_ulseg.workflow.nnunet import NNUNetPaths

from refine_support import FakeBackend, Killed, read_checkpoint, truncate, write_checkpoint, write_tiny_dataset

TRAINER = "nnUNetTrainerFake"
BASE = "Dataset501_Tiny"


def setup(tmp_path, planned=True):
    paths = NNUNetPaths.under(tmp_path).create()
    write_tiny_dataset(paths.raw)
    if planned:
        FakeBackend(paths, TRAINER).plan_and_preprocess(BASE)  # the user planned round 1 before starting
    return paths


def run(paths, backend, fold=0, **options):
    return refine(501, TRAINER, paths=paths, backend=backend, echo=None, device="cpu", fold=fold, **options)


def work(paths, fold=0):
    return paths.results / BASE / work_dir_name(TRAINER, "nnUNetPlans", "2d", fold, False)


def manifest(paths, fold=0) -> dict:
    return json.loads((work(paths, fold) / "manifest.json").read_text())


def dead_pid() -> int:
    """The pid of a process that has exited (on this host)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


# -- case 6: two folds at once -------------------------------------------------------------
def test_two_fold_coordinators_in_build_together_get_distinct_round_datasets(tmp_path, monkeypatch):
    """Both coordinators reach ``build_2`` at the same moment, each with its id already chosen.

    The barrier sits where the dataset is written, after the id is recorded: on the old
    code both had taken 601 (the first id free when either looked) and wrote one dataset.
    """
    paths = setup(tmp_path)
    real = rounds_module.build_round_dataset
    together = threading.Barrier(2, timeout=15)

    def build_together(*args, **kwargs):
        together.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "build_round_dataset", build_together)
    backends = {k: FakeBackend(paths, TRAINER) for k in (0, 1)}
    errors = []

    def coordinator(fold):
        try:
            run(paths, backends[fold], fold=fold, rounds=2)
        except Exception as exc:  # shown by the assertion below
            errors.append((fold, repr(exc)))

    threads = [threading.Thread(target=coordinator, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    r2 = {k: manifest(paths, k)["rounds"]["2"] for k in (0, 1)}
    assert r2[0]["dataset_id"] != r2[1]["dataset_id"]
    for k in (0, 1):
        name = r2[k]["dataset_name"]
        provenance = json.loads((paths.raw / name / "dataset.json").read_text())["ulseg_refine"]
        assert provenance["predicted_by"]["folds"] == [k]  # each fold's round 2 is built from its own model
        assert ("train", name, k, None) in backends[k].calls
    # a re-run of either finds its own round done and rebuilds nothing
    for k in (0, 1):
        backends[k].calls.clear()
        run(paths, backends[k], fold=k, rounds=2)
        assert backends[k].calls == []


def _fold_process(root: str, fold: int, start, queue) -> None:
    """One ``ulseg refine -f FOLD`` coordinator in its own process (fork), released by ``start``."""
    paths = NNUNetPaths.under(Path(root))
    backend = FakeBackend(paths, TRAINER)
    start.wait(30)
    try:
        run(paths, backend, fold=fold, rounds=2)
        queue.put((fold, None, backend.calls))
    except BaseException as exc:
        queue.put((fold, f"{exc!r}\n{traceback.format_exc()}", backend.calls))


def test_two_fold_coordinators_as_processes_started_together(tmp_path):
    """``ulseg refine -f 0`` and ``-f 1`` as two real processes released at the same instant.

    Round 1 is not planned yet: one plans it while the other waits, then each builds its own round 2.
    """
    paths = setup(tmp_path, planned=False)
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_fold_process, args=(str(tmp_path), k, start, queue)) for k in (0, 1)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert {fold: error for fold, error, _ in outcomes} == {0: None, 1: None}
    calls = [call for _, _, fold_calls in outcomes for call in fold_calls]
    assert [call[:2] for call in calls if call[0] in ("plan_and_preprocess", "preprocess") and call[1] == BASE] == [
        ("plan_and_preprocess", BASE)]
    ids = {manifest(paths, k)["rounds"]["2"]["dataset_id"] for k in (0, 1)}
    assert len(ids) == 2
    for k in (0, 1):
        name = manifest(paths, k)["rounds"]["2"]["dataset_name"]
        assert json.loads((paths.raw / name / "dataset.json").read_text())["ulseg_refine"]["predicted_by"][
            "folds"] == [k]


def test_a_second_coordinator_waits_while_the_first_prepares_round1(tmp_path):
    """Fold 1 starts while fold 0 is inside ``nnUNetv2_plan_and_preprocess`` (plans written, data not yet).

    It waits, then finds round 1 prepared; before, it preprocessed the data under fold 0's feet.
    """
    paths = setup(tmp_path, planned=False)
    planning = threading.Event()
    first, second = FakeBackend(paths, TRAINER), FakeBackend(paths, TRAINER)

    def slow_planning(call):
        if call[0] == "plan_and_preprocess":
            planning.set()
            time.sleep(0.5)

    first.hook = slow_planning
    errors, said = [], []
    fold0 = threading.Thread(target=lambda: run(paths, first, fold=0, rounds=1))
    fold0.start()
    assert planning.wait(20)
    try:
        refine(501, TRAINER, paths=paths, backend=second, echo=said.append, device="cpu", fold=1, rounds=1)
    except Exception as exc:  # shown by the assertion below
        errors.append(repr(exc))
    fold0.join(30)
    assert not errors
    assert [c[0] for c in first.calls] == ["plan_and_preprocess", "train"]
    assert [c[0] for c in second.calls] == ["train"]
    assert any("waiting for another ulseg refine run preparing" in line for line in said)


def test_a_run_whose_recorded_round_id_belongs_to_another_run_stops(tmp_path, monkeypatch):
    """What the old race left behind: fold 1's manifest records fold 0's round-2 id.

    Re-running fold 1 used to delete and rebuild fold 0's finished round-2 dataset; now it
    stops, names the run that owns the id, and leaves that dataset as it is.
    """
    paths = setup(tmp_path)
    run(paths, FakeBackend(paths, TRAINER), fold=0, rounds=2)
    owned = manifest(paths, 0)["rounds"]["2"]
    theirs = paths.raw / owned["dataset_name"]
    before = {p.relative_to(theirs).as_posix(): p.stat().st_mtime_ns for p in theirs.rglob("*")}

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(rounds_module, "build_round_dataset", killed)
    with pytest.raises(Killed):
        run(paths, FakeBackend(paths, TRAINER), fold=1, rounds=2)
    monkeypatch.undo()
    m1 = manifest(paths, 1)
    assert m1["in_progress"]["step"] == "build_2"
    m1["rounds"]["2"] = dict(owned)  # as the old allocation recorded it
    (work(paths, 1) / "manifest.json").write_text(json.dumps(m1))
    with pytest.raises(RefineError, match=rf"dataset id {owned['dataset_id']}.*another ulseg refine run.*fold0"):
        run(paths, FakeBackend(paths, TRAINER), fold=1, rounds=2)
    after = {p.relative_to(theirs).as_posix(): p.stat().st_mtime_ns for p in theirs.rglob("*")}
    assert after == before
    assert json.loads((theirs / "dataset.json").read_text())["ulseg_refine"]["predicted_by"]["folds"] == [0]


def test_concurrent_reservations_never_share_an_id(tmp_path):
    """Eight runs reserve round-2 ids of one base at once: eight different ids, each recorded for its owner."""
    raw = tmp_path / "raw"
    (raw / "Dataset601_Someone").mkdir(parents=True)  # a dataset of another tool: skipped
    go, got, lock = threading.Barrier(8, timeout=10), {}, threading.Lock()

    def reserve(i):
        go.wait()
        owner = {"work_dir": f"D/run{i}", "round": 2}
        dataset_id = reserve_round_dataset_id(raw, [raw], 501, 1, owner)
        with lock:
            got[i] = dataset_id

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got.values()) == list(range(602, 610))
    for i, dataset_id in got.items():
        assert read_reservation(raw, dataset_id)["work_dir"] == f"D/run{i}"
    # the same owner gets its own id back (a run killed after reserving, before recording);
    # another owner does not
    assert reserve_round_dataset_id(raw, [raw], 501, 1, {"work_dir": "D/run3", "round": 2}) == got[3]
    assert not claim_dataset_id(raw, got[3], {"work_dir": "D/run4", "round": 2})
    assert not [p for p in (raw / ".ulseg_dataset_ids").iterdir() if p.name.endswith(".tmp")]


# -- case 6: the coordinator lock ------------------------------------------------------------
def test_simultaneous_takeover_of_a_stale_lock_has_exactly_one_winner(tmp_path, monkeypatch):
    """Two contenders read the same dead holder's lock; the second decides a moment later.

    The patched liveness check makes that schedule certain: both have read the stale
    lock before either acts, and the second acts after the first holds the lock.  On the
    old code the second deleted the first's fresh lock and both ran.
    """
    lock = tmp_path / "coordinator.lock"
    stale = dead_pid()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": stale, "started": "x"}))
    real_alive = rounds_module._alive
    seen, guard, both_read = [], threading.Lock(), threading.Barrier(2, timeout=10)

    def alive(pid):
        if pid != stale:
            return real_alive(pid)
        with guard:
            seen.append(pid)
            n = len(seen)
        if n <= 2:
            both_read.wait()
            if n == 2:
                time.sleep(0.3)
        return False

    monkeypatch.setattr(rounds_module, "_alive", alive)
    holders, refused = [], []

    def contender(i):
        try:
            with coordinator_lock(lock):
                holders.append(i)
                time.sleep(1.0)
        except RefineError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=contender, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(holders) == 1 and len(refused) == 1
    assert "another ulseg refine coordinator" in refused[0]
    assert not lock.exists()  # the winner released its own lock


def test_cleanup_leaves_a_lock_that_is_not_its_own(tmp_path):
    """While a coordinator runs, its lock is replaced (a user deleted it, another run took it).

    On exit the first coordinator used to delete the second one's lock, letting a third start
    beside the second.
    """
    lock = tmp_path / "coordinator.lock"
    other = {"host": socket.gethostname(), "pid": os.getppid(), "started": "later", "token": "someone-else"}
    with coordinator_lock(lock):
        lock.unlink()
        lock.write_text(json.dumps(other))
    assert json.loads(lock.read_text()) == other
    with pytest.raises(RefineError, match="another ulseg refine coordinator"):
        with coordinator_lock(lock):
            pass


def test_lock_records_a_token_and_a_failed_attempt_keeps_the_holders_lock(tmp_path):
    lock = tmp_path / "coordinator.lock"
    with coordinator_lock(lock):
        mine = json.loads(lock.read_text())
        assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname() and mine["token"]
        with pytest.raises(RefineError):
            with coordinator_lock(lock):
                pass
        assert json.loads(lock.read_text()) == mine
    assert not lock.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- case 7: checkpoints of killed trainings ----------------------------------------------------
def test_checkpoint_problem_names_what_the_predictor_would_miss(tmp_path):
    good = write_checkpoint(tmp_path / "good.pth", TRAINER)
    assert checkpoint_problem(good) is None
    cut = write_checkpoint(tmp_path / "cut.pth", TRAINER)
    truncate(cut)
    assert "cannot be loaded" in checkpoint_problem(cut)
    import torch

    torch.save({"network_weights": {}, "init_args": {"configuration": "2d"}}, tmp_path / "partial.pth")
    assert "trainer_name" in checkpoint_problem(tmp_path / "partial.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    assert "cannot be loaded" in checkpoint_problem(tmp_path / "text.pth")


@pytest.mark.parametrize("killed_round, dataset", [(1, BASE), (2, "Dataset601_Tiny_round2")])
def test_truncated_final_checkpoint_of_a_killed_training_is_set_aside_and_retrained(tmp_path, killed_round,
                                                                                      dataset):
    """nnU-Net was killed while ``torch.save`` wrote ``checkpoint_final.pth`` (round 1, or a later round)."""
    paths = setup(tmp_path)
    backend = FakeBackend(paths, TRAINER)
    cut = {}

    def killed_while_saving(call):
        if call[:2] == ("train", dataset):
            final = write_checkpoint(backend.fold_dir(call[1], call[2]) / "checkpoint_final.pth", TRAINER)
            cut["bytes"] = truncate(final)
            raise Killed

    backend.hook = killed_while_saving
    with pytest.raises(Killed):
        run(paths, backend, rounds=killed_round)
    assert manifest(paths)["in_progress"]["step"] == f"train_{killed_round}"
    backend.hook = None
    backend.calls.clear()
    lines = []
    refine(501, TRAINER, paths=paths, backend=backend, echo=lines.append, device="cpu", rounds=killed_round)
    step = manifest(paths)["steps"][f"train_{killed_round}"]
    assert "preexisting" not in step
    assert ("train", dataset, 0, None) in backend.calls  # trained again
    final = backend.fold_dir(dataset, 0) / "checkpoint_final.pth"
    assert checkpoint_problem(final) is None and read_checkpoint(final)["init_args"]["dataset"] == dataset
    (kept,) = step["set_aside"]
    assert (paths.results / kept).read_bytes() == cut["bytes"]  # moved aside, not deleted
    assert kept.endswith(f"round{killed_round}/set_aside/fold_0/checkpoint_final.pth.corrupt")
    assert any("cannot be loaded" in line and "checkpoint_final.pth.corrupt" in line for line in lines)


def test_truncated_checkpoint_in_a_users_round1_folder_is_renamed_and_reported(tmp_path):
    """A round-1 training we did not start: its broken final checkpoint is renamed beside it, and we stop."""
    paths = setup(tmp_path)
    backend = FakeBackend(paths, TRAINER)
    fold = backend.fold_dir(BASE, 0)
    fold.mkdir(parents=True)
    write_checkpoint(fold / "checkpoint_latest.pth", TRAINER)
    cut = truncate(write_checkpoint(fold / "checkpoint_final.pth", TRAINER))
    with pytest.raises(RefineError, match=r"checkpoint_final.pth cannot be loaded.*checkpoint_final.pth.corrupt.*--c"):
        run(paths, backend, rounds=1)
    assert (fold / "checkpoint_final.pth.corrupt").read_bytes() == cut
    assert not (fold / "checkpoint_final.pth").exists() and (fold / "checkpoint_latest.pth").exists()
    assert not [c for c in backend.calls if c[0] == "train"]
    assert "train_1" not in manifest(paths)["steps"]


def test_a_training_that_leaves_an_unloadable_checkpoint_is_not_done(tmp_path):
    """``nnUNetv2_train`` exited but its ``checkpoint_final.pth`` is cut short (e.g. a full disk)."""
    paths = setup(tmp_path)
    backend = FakeBackend(paths, TRAINER)
    real_train = backend.train

    def train_and_cut(dataset, fold, pretrained=None):
        real_train(dataset, fold, pretrained)
        truncate(backend.fold_dir(dataset, fold) / "checkpoint_final.pth")

    backend.train = train_and_cut
    with pytest.raises(RefineError, match="checkpoint_final.pth cannot be loaded"):
        run(paths, backend, rounds=1)
    m = manifest(paths)
    assert "train_1" not in m["steps"] and m["in_progress"]["step"] == "train_1"
    backend.train = real_train
    run(paths, backend, rounds=1)
    assert "train_1" in manifest(paths)["steps"]
    assert list(work(paths).rglob("checkpoint_final.pth.corrupt"))
