"""E²Net Table 3 at an equal CPU budget: the two-stage liver/tumour rows on a generated LiTS sample.

The paper's Table 3 (Sec. 3, "Ablation Study") scores, on LiTS validation volumes, the first
stage alone and the second-stage configurations Baseline (R2UNet), + edge, + dist, + edge +
DCFF and + dist + DCFF (= E²Net), as liver and tumour Dice per case.  Here:

1. a LiTS-format sample is generated (``--cases``, ``--seed``, ``--image-size``;
   :func:`nnunet_ulseg.demo.lits.make_lits_sample`) and converted by ``ulseg convert-lits``
   with each ``--normalisation`` asked for (``window``, the paper's HU window, and/or ``ct``,
   nnU-Net's CT normalisation: two dataset pairs, measured side by side) and ``--crop-size``
   (the stage-2 crop side, default 256, the paper's);
2. ``nnUNetv2_plan_and_preprocess`` plans both datasets; stage 1 is trained once per
   normalisation, then every stage-2 row, plus nnU-Net's own default trainer
   (``nnUNetTrainerULSeg_10epochs``: ``nnUNetTrainer`` with region labels, Dice + BCE, its
   own U-Net, only the schedule shortened) on the same stage-2 dataset;
3. every trainer runs the same schedule, ``--epochs`` x ``--iterations`` (the environment
   variables ``ULSEG_SHORT_EPOCHS`` / ``ULSEG_SHORT_ITERATIONS`` that every ``_Nepochs``
   trainer obeys, as ``bench_weak.py`` does), so the rows differ in network and loss only;
4. ``ulseg liver-tumour`` (the stage-1 model of the same normalisation, then the row's stage-2
   model) segments the sample's test volumes, in their own geometry, and
   :func:`nnunet_ulseg.evaluation.lits.evaluate_lits_folder` scores them against the
   converter's ``referencesTs`` with the LiTS protocol: liver and tumour Dice per case and
   global, tumour burden RMSE.  The "1st stage" row is stage 1's liver alone (largest
   component, written by ``liver-tumour --save-stage1``): liver only, as in the paper.

5. ``--held-out-cases N`` (optional) scores every row again on a second generated sample of
   ``N`` cases drawn with another seed (``--held-out-seed``), all of them test volumes that no
   model, split or setting saw.  The converter's test split of a 24-case sample is 5 volumes,
   too few for a tumour metric (most generated tumours are small or low-contrast); the
   held-out sample gives the tumour columns cases to stand on without changing what the
   models train on.  Its rows are saved under their own keys (the sample's seed and size in
   the key), so a saved run can be scored on a held-out sample later without retraining.

The table prints each row with its differences from the Baseline row (which rows beat it, by
how much) and its ratios to nnU-Net's default (Dice: row / default, higher is better; RMSE:
row / default, lower is better).  Rows are saved to ``bench_e2net.json`` as soon as each is
scored; re-running with the same ``--keep`` folder and settings continues where a stopped run
ended (trained models and predictions are reused).  Backbone: the ``Lite`` trainers
(``res2net_lite``, networks/res2net.py), since the full Res2Net-50 rows do not train on a CPU in
a benchmark's time; all rows use the same backbone.  Stage 1 is shared by every row, so ``--stage1-epochs`` (default: ``--epochs``) may give
it its own budget; the rows' schedule, which is what the table compares, stays ``--epochs``.
Crop size: ``--crop-size`` (default 256,
the paper's) is passed to ``convert-lits --crop-size``; the CPU table (2 cores) is run with
``--crop-size 128``, a budget choice, not the paper's: a quarter of the pixels per slice, so six
rows fit one equal budget; every row of one table uses the same crops.  Long: run it by hand,
not in CI::

    python benchmarks/bench_e2net.py --cases 24 --epochs 20 --iterations 25 --crop-size 128 --normalisation window ct

Smoke run (end to end in a few minutes): ``--cases 3 --epochs 1 --iterations 2 --image-size 96``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _nnunet_setup import temp_root
from nnunet_ulseg.cli_args import help_text

STAGE1 = ("1st stage", "nnUNetTrainerR2UNetLiverLite_10epochs")
#: Table 3's second-stage rows (the paper's names) -> trainer; then nnU-Net's default for the ratios.
ROWS = {
    "Baseline (2nd stage)": "nnUNetTrainerE2NetBaselineLite_10epochs",
    "Baseline + edge": "nnUNetTrainerE2NetEdgeLite_10epochs",
    "Baseline + dist": "nnUNetTrainerE2NetDistLite_10epochs",
    "Baseline + edge + DCFF": "nnUNetTrainerE2NetEdgeDCFFLite_10epochs",
    "Baseline + dist + DCFF (E2Net)": "nnUNetTrainerE2NetLite_10epochs",
}
DEFAULT_ROW = ("nnU-Net default (nnUNetTrainer)", "nnUNetTrainerULSeg_10epochs")
BASELINE = "Baseline (2nd stage)"
DATASET_ID = 931
SETTINGS = ("cases", "seed", "image_size", "crop_size", "epochs", "stage1_epochs", "iterations", "pad", "test_pad",
            "tta")
#: the crop side of a saved run from before --crop-size existed (it was always the paper's 256)
CROP_SIZE_BEFORE_THE_OPTION = 256
METRICS = (("liver", "dice_per_case"), ("tumour", "dice_per_case"), ("liver", "dice_global"),
           ("tumour", "dice_global"))


def _run(args, env, what: str) -> str:
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


class Results:
    """Rows scored so far, saved after each one; a rerun with other settings in the same folder is refused."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings, self.rows = path, settings, {}
        if path.exists():
            saved = json.loads(path.read_text())
            if isinstance(saved.get("settings"), dict) and "crop_size" in settings:
                saved["settings"].setdefault("crop_size", CROP_SIZE_BEFORE_THE_OPTION)
            if isinstance(saved.get("settings"), dict) and "stage1_epochs" in settings:
                saved["settings"].setdefault("stage1_epochs", saved["settings"].get("epochs"))
            if saved.get("settings") != settings:
                raise SystemExit(f"{path} holds a run with settings {saved.get('settings')}, not {settings}; "
                                 "use another --keep folder")
            self.rows = saved["rows"]

    def add(self, key: str, score) -> dict:
        if key not in self.rows:
            t = time.perf_counter()
            row = score()
            row["seconds"] = row.get("seconds", time.perf_counter() - t)
            self.rows[key] = row
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": self.settings, "rows": self.rows}, indent=1))
            tmp.replace(self.path)
        print(f"  scored {key}: " + ", ".join(f"{o} {m} {_pct(self.rows[key].get(o, {}).get(m))}" for o, m in METRICS)
              + f", burden RMSE {_num(self.rows[key].get('tumour_burden_rmse'))}", flush=True)
        return self.rows[key]


def _pct(v) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"


def _num(v) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.4f}"


def _ratio(a, b) -> str:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or not b or math.isnan(b):
        return "  n/a"
    return f"{a / b:5.2f}"


class Pipeline:
    """One normalisation's datasets, trained models and two-stage predictions under the work folder."""

    def __init__(self, root: Path, sample: Path, normalisation: str, dataset_id: int, args, env: dict):
        from nnunet_ulseg.conversion.lits import stage_folders
        from nnunet_ulseg.nnunet_layout import NNUNetPaths

        self.root, self.sample, self.normalisation, self.args, self.env = root, sample, normalisation, args, env
        self.paths = NNUNetPaths.under(root)
        self.id1, self.id2 = dataset_id, dataset_id + 1
        self.name = f"Bench{normalisation.capitalize()}"
        self.d1, self.d2 = stage_folders(self.paths.raw, dataset_id, self.name)
        self.ulseg = [sys.executable, "-m", "nnunet_ulseg.cli"]

    def prepare(self) -> None:
        """Convert (once) and plan/preprocess (once) both datasets of this normalisation."""
        if not (self.d2 / "dataset.json").is_file():
            _run([*self.ulseg, "convert-lits", "-i", self.sample, "-o", self.paths.raw, "-d", self.id1, "--name",
                  self.name, "--normalisation", self.normalisation, "--crop-size", self.args.crop_size, "--pad",
                  *self.args.pad, "--test-pad", self.args.test_pad, "--seed", self.args.seed, "--quiet", "-np",
                  self.args.np], self.env, "convert-lits")
        if not (self.paths.preprocessed / self.d2.name / "nnUNetPlans.json").is_file() or \
                not (self.paths.preprocessed / self.d1.name / "nnUNetPlans.json").is_file():
            _run([self._script("nnUNetv2_plan_and_preprocess"), "-d", self.id1, self.id2, "-c", "2d", "-np",
                  self.args.np], self.env, "nnUNetv2_plan_and_preprocess")
        tests = self.root / f"test_volumes_{self.normalisation}"
        tests.mkdir(exist_ok=True)
        for ref in sorted((self.d1 / "referencesTs").glob("*.mha")):
            number = int(ref.name[: -len(".mha")].split("_")[-1])
            link = tests / f"volume-{number}.nii"
            if not link.exists():
                link.symlink_to(self.sample / f"volume-{number}.nii")
        self.tests = TestSet(tests, self.d1 / "referencesTs")

    @staticmethod
    def _script(name: str) -> str:
        from nnunet_ulseg.workflow.nnunet import console_script

        return console_script(name)

    def train(self, dataset_id: int, trainer: str) -> float:
        """Train fold 0 unless its final checkpoint exists; the seconds it took (0 when reused)."""
        name = self.d1.name if dataset_id == self.id1 else self.d2.name
        if (self.paths.results / name / f"{trainer}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").is_file():
            return 0.0
        t = time.perf_counter()
        cmd = [self._script("nnUNetv2_train"), dataset_id, "2d", "0", "-tr", trainer]
        if self.args.device:
            cmd += ["-device", self.args.device]
        env = self.env
        if dataset_id == self.id1:  # stage 1 is shared by every row: its own budget (--stage1-epochs)
            env = {**self.env, "ULSEG_SHORT_EPOCHS": str(self.args.stage1_epochs)}
        _run(cmd, env, f"nnUNetv2_train {trainer}")
        return time.perf_counter() - t

    def predict(self, trainer2: str, tests: "TestSet | None" = None) -> Path:
        """``ulseg liver-tumour`` on ``tests`` (default: the converter's test volumes) with stage 1 and
        ``trainer2``; the output folder."""
        tests = tests or self.tests
        out = self.root / f"pred_{self.normalisation}{tests.suffix}_{trainer2}"
        if not (out / "liver_tumour_cases.csv").is_file():
            cmd = [*self.ulseg, "liver-tumour", "-i", tests.volumes, "-o", out, "--stage1", self.id1, "--stage2",
                   self.id2, "-tr1", STAGE1[1], "-tr2", trainer2, "-f", "0", "--save-stage1", "--quiet"]
            if self.args.device:
                cmd += ["-device", self.args.device]
            if not self.args.tta:
                cmd.append("--disable_tta")
            _run(cmd, self.env, f"ulseg liver-tumour ({trainer2})")
        return out

    @staticmethod
    def score(pred: Path, tests: "TestSet") -> dict:
        from nnunet_ulseg.evaluation.lits import evaluate_lits_folder

        _, summary = evaluate_lits_folder(pred, tests.references, pred / "lits_eval", progress=False)
        return summary


@dataclass
class TestSet:
    """Volumes to segment and their LiTS references; ``suffix`` tells its prediction folders apart."""

    volumes: Path
    references: Path
    suffix: str = ""


def held_out_set(root: Path, n_cases: int, seed: int, image_size: int) -> TestSet:
    """A second generated sample (other seed), every case a test volume: ``volume-N.nii`` are the
    inputs and a folder of links to its ``segmentation-N.nii`` the references (the sample folder
    itself holds both, so it cannot be the reference folder)."""
    from nnunet_ulseg.demo.lits import make_lits_sample, segmentation_name

    sample = root / f"lits_held_out_s{seed}_n{n_cases}"
    if not (sample / "lits_sample_cases.csv").is_file():
        if sample.exists():
            import shutil

            shutil.rmtree(sample)  # a sample stopped half-way
        make_lits_sample(sample, n_cases=n_cases, seed=seed, image_size=image_size)
    refs = root / f"{sample.name}_references"
    refs.mkdir(exist_ok=True)
    for i in range(n_cases):
        link = refs / segmentation_name(i)
        if not link.exists():
            link.symlink_to(sample / segmentation_name(i))
    return TestSet(sample, refs, f"_held_out_s{seed}_n{n_cases}")


def _row(pipe: Pipeline, trainer: str, stage1: bool = False, tests: TestSet | None = None) -> dict:
    seconds = pipe.train(pipe.id2, trainer)
    t = time.perf_counter()
    tests = tests or pipe.tests
    pred = pipe.predict(trainer, tests)
    summary = pipe.score(pred / "stage1" if stage1 else pred, tests)
    if stage1:  # stage 1 predicts no tumour: only its liver is a Table 3 entry
        summary["tumour"] = {"dice_per_case": None, "dice_global": None}
        summary["tumour_burden_rmse"] = None
    summary["seconds"] = seconds + time.perf_counter() - t
    summary["trainer"] = trainer
    return summary


def print_table(results: Results, normalisations, part: str = "") -> None:
    """The Table 3 rows of each normalisation; ``part`` names a held-out sample's rows ("" = the test split)."""
    head = (f"{'Table 3 row':34s} {'liver/case':>10s} {'tumour/case':>11s} {'liver glob':>10s} {'tumour glob':>11s} "
            f"{'burden RMSE':>11s} {'seconds':>8s}   {'vs Baseline (Dice points, liver/tumour per case)':s}   "
            f"{'ratio to nnU-Net default (liver, tumour, RMSE)'}")
    for norm in normalisations:
        prefix = f"{norm}|{part}|" if part else f"{norm}|"
        rows = {k[len(prefix):]: v for k, v in results.rows.items()
                if k.startswith(prefix) and "|" not in k[len(prefix):]}  # not a held-out row in the test table
        if not rows:
            continue
        where = part or "the converter's test split"
        n = {r.get("n_cases") for r in rows.values()} - {None}
        print(f"\nnormalisation: {norm}; scored on {where}" + (f" ({', '.join(map(str, sorted(n)))} volumes)" if n else "")
              + f"\n{head}")
        base, default = rows.get(BASELINE), rows.get(DEFAULT_ROW[0])
        for name in (STAGE1[0], *ROWS, DEFAULT_ROW[0]):
            r = rows.get(name)
            if r is None:
                continue
            cells = " ".join(f"{_pct(r[o][m]):>{w}s}" for (o, m), w in zip(METRICS, (10, 11, 10, 11)))
            delta = ""
            if base is not None and name not in (BASELINE, STAGE1[0]):
                d = [(r[o]["dice_per_case"] - base[o]["dice_per_case"]) * 100
                     if r[o]["dice_per_case"] is not None and base[o]["dice_per_case"] is not None else math.nan
                     for o in ("liver", "tumour")]
                better = [o for o, v in zip(("liver", "tumour"), d) if v > 0]
                delta = f"{d[0]:+6.2f} / {d[1]:+6.2f}" + (f" (beats it: {', '.join(better)})" if better else "")
            ratio = ""
            if default is not None:
                ratio = ", ".join(_ratio(r[o]["dice_per_case"], default[o]["dice_per_case"]) for o in ("liver", "tumour"))
                ratio += ", " + _ratio(r.get("tumour_burden_rmse"), default.get("tumour_burden_rmse"))
            print(f"{name:34s} {cells} {_num(r.get('tumour_burden_rmse')):>11s} {r['seconds']:8.0f}   "
                  f"{delta:48s}   {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=24, help="generated LiTS-format cases (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="sample, split and pad seed (default 0)")
    parser.add_argument("--image-size", type=int, default=128, help="slice size of the sample in px (default 128)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every trainer (ULSEG_SHORT_EPOCHS)")
    parser.add_argument("--iterations", type=int, default=25, help="iterations per epoch (ULSEG_SHORT_ITERATIONS)")
    parser.add_argument("--normalisation", nargs="+", choices=("window", "ct"), default=["window"],
                        help="convert-lits --normalisation; several = one dataset pair and table each (default window)")
    parser.add_argument("--crop-size", type=int, default=256, metavar="PX",
                        help="convert-lits --crop-size: the stage-2 crop side, a multiple of 32 (default 256, the "
                             "paper's; the 2-core CPU table uses 128, a budget choice)")
    parser.add_argument("--pad", nargs=2, type=int, default=None, metavar=("LO", "HI"),
                        help="convert-lits --pad for training crops (default: the paper's 10-60 px scaled to the "
                             "sample's slice size, image-size / 512)")
    parser.add_argument("--test-pad", type=int, default=None,
                        help="convert-lits --test-pad (default: the middle of --pad)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="the stage-2 rows to run (default: all five)")
    parser.add_argument("-device", "--device", dest="device", choices=("cpu", "cuda", "mps"), default=None,
                        help="torch device (default: cuda if available, else cpu; nnUNetv2_train's own default is cuda)")
    parser.add_argument("--tta", action="store_true", help="mirroring TTA in liver-tumour (default off: the budget "
                                                          "is the training's)")
    parser.add_argument("-np", "--np", dest="np", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="ULSEG_NUM_THREADS for trainings on cpu")
    parser.add_argument("--stage1-epochs", type=int, default=None,
                        help="epochs of the stage-1 liver trainer, shared by every row (default: --epochs)")
    parser.add_argument("--held-out-cases", type=int, default=0, metavar="N",
                        help="also score every row on N cases of a second generated sample, all test volumes "
                             "(default 0: the converter's test split only)")
    parser.add_argument("--held-out-seed", type=int, default=None,
                        help="seed of the held-out sample (default: --seed + 1000; must differ from --seed)")
    parser.add_argument("--keep", default=None, help="work folder to keep and resume from (default: a temp folder)")
    args = parser.parse_args()
    if args.device is None:  # nnUNetv2_train defaults to cuda, which fails on a CPU-only machine
        from nnunet_ulseg.workflow.nnunet import default_device

        args.device = default_device()
    if args.pad is None:
        scale = args.image_size / 512
        args.pad = [max(1, round(10 * scale)), max(1, round(60 * scale))]
    if args.test_pad is None:
        args.test_pad = (args.pad[0] + args.pad[1]) // 2
    if args.stage1_epochs is None:
        args.stage1_epochs = args.epochs
    if args.held_out_seed is None:
        args.held_out_seed = args.seed + 1000
    if args.held_out_cases < 0:
        raise SystemExit("--held-out-cases must be 0 or more")
    if args.held_out_cases and args.held_out_seed == args.seed:
        raise SystemExit("--held-out-seed must differ from --seed: the held-out cases would be the training cases")
    if args.cases < 3:
        raise SystemExit("--cases must be at least 3 (train, validation and test cases)")
    from nnunet_ulseg.conversion.lits import check_crop_size

    try:
        check_crop_size(args.crop_size)
    except ValueError as e:
        raise SystemExit(f"--crop-size: {e}") from None

    from nnunet_ulseg.demo.lits import make_lits_sample
    from nnunet_ulseg.nnunet_layout import NNUNetPaths

    root = temp_root(args.keep)
    print(f"work folder: {root}", flush=True)
    env = NNUNetPaths.under(root).create().environ(num_processes=args.np)
    env.update(ULSEG_SHORT_EPOCHS=str(args.epochs), ULSEG_SHORT_ITERATIONS=str(args.iterations))
    if args.threads:
        env["ULSEG_NUM_THREADS"] = str(args.threads)
    results = Results(root / "bench_e2net.json", {k: getattr(args, k) for k in SETTINGS})
    sample = root / "lits"
    if not (sample / "lits_sample_cases.csv").is_file():
        if sample.exists():
            import shutil

            shutil.rmtree(sample)  # a sample stopped half-way
        make_lits_sample(sample, n_cases=args.cases, seed=args.seed, image_size=args.image_size)
    held_out, part = None, ""
    if args.held_out_cases:
        print(f"held-out sample: {args.held_out_cases} cases, seed {args.held_out_seed}", flush=True)
        held_out = held_out_set(root, args.held_out_cases, args.held_out_seed, args.image_size)
        part = f"held-out sample (seed {args.held_out_seed}, {args.held_out_cases} cases)"
    t0 = time.perf_counter()
    for k, norm in enumerate(args.normalisation):
        pipe = Pipeline(root, sample, norm, DATASET_ID + 2 * ("window", "ct").index(norm), args, env)
        print(f"[{norm}] convert + plan/preprocess", flush=True)
        pipe.prepare()
        print(f"[{norm}] stage 1: {STAGE1[1]}", flush=True)
        stage1_seconds = pipe.train(pipe.id1, STAGE1[1])
        for name, trainer in [(n, ROWS[n]) for n in args.rows] + [DEFAULT_ROW]:
            print(f"[{norm}] {name}: {trainer}", flush=True)
            results.add(f"{norm}|{name}", lambda trainer=trainer: _row(pipe, trainer))
        first = ROWS[args.rows[0]]
        results.add(f"{norm}|{STAGE1[0]}", lambda: {**_row(pipe, first, stage1=True), "seconds": stage1_seconds})
        if held_out is not None:
            # seconds: the two-stage prediction only (the models are trained); the 1st stage row reuses
            # the first row's prediction, as on the test split
            for name, trainer in [(n, ROWS[n]) for n in args.rows] + [DEFAULT_ROW] + [(STAGE1[0], first)]:
                print(f"[{norm}] {part}: {name}", flush=True)
                results.add(f"{norm}|{part}|{name}", lambda trainer=trainer, name=name: _row(
                    pipe, trainer, stage1=name == STAGE1[0], tests=held_out))
    print_table(results, args.normalisation)
    if held_out is not None:
        print_table(results, args.normalisation, part)
    print(f"\nsettings: {results.settings}; total {time.perf_counter() - t0:.0f} s (this run); rows in "
          f"{results.path}")


if __name__ == "__main__":
    main()
