"""Per-round report of ``ulseg refine``: how the pseudo masks evolve, and (with true masks) how good they are.

The paper reports that "the training has converged after three rounds" (AHRNet Sec. 2.3)
without saying how convergence was judged.  We report, per round r:

* ``ignore_fraction``: pixels labelled ignore (2) / all pixels of round r's training labels
  (0 for round 1, whose labels are the ellipses);
* ``label_change``: pixels whose label differs from round r-1's / all pixels (none for
  round 1); it falls towards 0 as the rounds converge;
* ``seconds``: the manifest's seconds of round r's steps (``build_r``, ``preprocess_r``,
  ``train_r``, ``test_r``, ``predict_r``, ...), finished ones only;
* ``fallback_cases``: cases whose prediction missed the ellipse entirely, so that the
  ellipse was kept as foreground (:func:`~nnunet_ulseg.pseudo_masks.update.update_pseudo_mask`);
* with ``truth`` (a reference folder of any kind ``ulseg evaluate`` reads, ``ref_format``
  as ``--ref-format``: a generated sample's ``masks.csv``, key-slice PNGs, NIfTI/MHA, ULS23
  VOIs, crops; :mod:`nnunet_ulseg.evaluation.references`), in the original slice geometry:
  ``pseudo_mask_dice``, Dice of round r's training labels (``== 1``) on all training cases
  (train and val of the split); ``pseudo_mask_dice_labelled``, the same Dice over the pixels
  that are *not* ignore, i.e. of what the labels actually teach (equal in round 1; the
  plain Dice falls as soon as ignore pixels appear, because they count as missed lesion);
  and ``test_dice``, Dice of round r's model on the test
  split, both by :func:`nnunet_ulseg.workflow.slice_scores.score_folder`; and once,
  ``ellipse_test_dice``, the test split's RECIST ellipses as a baseline.  Lesions without a
  reference are left out of these scores (real references cover part of the lesions,
  often the test split only: then the pseudo-mask Dice has ``n = 0``); ``reference`` says
  which kind, geometry and folder were used.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from nnunet_ulseg.conversion.sidecar import read_sidecar
from nnunet_ulseg.evaluation.overlap import summarize
from nnunet_ulseg.evaluation.references import open_reference
from nnunet_ulseg.nnunet_layout import RawDataset
from nnunet_ulseg.refine.manifest import read_json, write_json_atomic
from nnunet_ulseg.workflow.slice_scores import score_folder


def build_report(manifest: dict, raw_root: str | os.PathLike, work_dir: str | os.PathLike,
                 truth: str | os.PathLike | None = None, ref_format: str = "auto") -> dict:
    """The report of a refinement run from its manifest data (and the files it names).

    ``truth``: reference folder, read as ``ref_format`` (module docstring).
    """
    raw_root, work_dir = Path(raw_root), Path(work_dir)
    args, steps = manifest["arguments"], manifest["steps"]
    base = manifest["rounds"]["1"]["dataset_name"]
    sidecar = raw_root / base / "lesions.csv"
    ending = RawDataset(raw_root / base).file_ending
    rows = []
    for r in range(1, args["rounds"] + 1):
        entry = manifest["rounds"].get(str(r))
        label_step = steps.get("prepare_1" if r == 1 else f"build_{r}")
        if entry is None or label_step is None:
            break
        labels = label_step["labels"]
        train_steps = [k for k in steps if k.startswith("train_") and step_round(k) == r]
        row = {"round": r, "dataset": entry["dataset_name"], "dataset_id": entry["dataset_id"],
               "trained": bool(train_steps), "checkpoints": [steps[k]["checkpoint"] for k in train_steps],
               "cases": labels["cases"], "ignore_fraction": labels["ignore_fraction"],
               "label_change": labels["label_change"], "fallback_cases": labels["fallback_cases"],
               "seconds": sum(info.get("seconds", 0.0) for name, info in steps.items() if step_round(name) == r)}
        if truth is not None:
            row["pseudo_mask_dice"], row["pseudo_mask_dice_labelled"] = score_training_labels(
                raw_root / entry["dataset_name"] / "labelsTr", sidecar, truth, ending, ref_format)
            if f"test_{r}" in steps:
                row["test_dice"] = score_folder(work_dir / steps[f"test_{r}"]["predictions"], sidecar, truth,
                                                "test", ending, ref_format=ref_format)["summary"]
        rows.append(row)
    report = {"dataset": base, "arguments": args, "work_dir": str(work_dir), "rounds": rows}
    if truth is not None:
        report["truth"] = str(truth)
        report["reference"] = open_reference(truth, ref_format, read_sidecar(sidecar), ending).describe()
        if (raw_root / base / "pseudolabelsTs").is_dir():
            report["ellipse_test_dice"] = score_folder(raw_root / base / "pseudolabelsTs", sidecar, truth, "test",
                                                       ending, ref_format=ref_format)["summary"]
    return report


def step_round(step: str) -> int | None:
    """The round a manifest step belongs to: ``train_2_fold0`` -> 2, ``prepare_1`` -> 1."""
    m = re.match(r"[a-z]+_(\d+)", step)
    return int(m.group(1)) if m else None


def score_training_labels(label_dir: str | os.PathLike, sidecar: str | os.PathLike,
                          truth: str | os.PathLike, file_ending: str = ".mha",
                          ref_format: str = "auto") -> tuple[dict, dict]:
    """Dice summaries of the lesion label (== 1) of every training case (every non-test sidecar split).

    Cases without a reference in ``truth`` (read as ``ref_format``) are left out.

    Returns ``(plain, labelled)``: Dice with ignore pixels counted as not-lesion, and Dice
    over the non-ignore pixels only (see :func:`~nnunet_ulseg.workflow.slice_scores.score_folder`).
    """
    splits = sorted({row.split for row in read_sidecar(sidecar) if row.split != "test"})
    lesions = []
    for split in splits:
        lesions += score_folder(label_dir, sidecar, truth, split, file_ending, ref_format=ref_format)["per_lesion"]
    return summarize([r["dice"] for r in lesions]), summarize([r["dice_labelled"] for r in lesions])


def format_report(report: dict) -> str:
    """The per-round table printed at the end of ``ulseg refine``."""
    truth = "truth" in report
    head = f"  {'round':>5s}  {'dataset':36s} {'cases':>5s} {'ignore %':>8s} {'change %':>8s} {'fallback':>8s}"
    if truth:
        head += f" {'pseudo Dice':>11s} {'labelled':>8s} {'test Dice':>9s}"
    args = report["arguments"]
    folds = "5-fold cross-validation" if args["cross_val"] else f"fold {args['fold']}"
    lines = [f"ulseg refine: {report['dataset']}, {args['trainer']}, {folds}", head]
    for row in report["rounds"]:
        change = "-" if row["label_change"] is None else f"{100 * row['label_change']:.2f}"
        line = (f"  {row['round']:5d}  {row['dataset']:36s} {row['cases']:5d} {100 * row['ignore_fraction']:8.2f} "
                f"{change:>8s} {row['fallback_cases']:8d}")
        if truth:
            test = row.get("test_dice")
            line += (f" {row['pseudo_mask_dice']['mean']:11.4f} {row['pseudo_mask_dice_labelled']['mean']:8.4f} "
                     + (f"{test['mean']:9.4f}" if test else f"{'-':>9s}"))
        if not row["trained"]:
            line += "  (not trained yet)"
        lines.append(line)
    if "ellipse_test_dice" in report:
        lines.append(f"  RECIST ellipses on the test split: Dice {report['ellipse_test_dice']['mean']:.4f}")
    if truth:
        lines.append("  pseudo Dice: lesion label vs truth, ignore counted as not-lesion; labelled: the same over "
                     "the non-ignore pixels (what the labels teach)")
        ref = report.get("reference")
        if ref:
            lines.append(f"  truth: {ref['kind']} reference ({ref['geometry']} geometry) in {ref['folder']}; "
                         "scored in key-slice geometry")
    final = final_model_line(report)
    if final:
        lines.append(final)
    lines.append(f"  report: {Path(report['work_dir']) / 'refine_report.json'}")
    return "\n".join(lines)


def final_model_line(report: dict) -> str:
    """How to predict with the last trained round: its dataset id and the ``nnUNetv2_predict`` command.

    Each round is its own nnU-Net dataset (the manifest's ``rounds``), so the final model is
    found by that round's dataset id, not round 1's.  Empty when no round is trained yet.
    """
    trained = [row for row in report["rounds"] if row["trained"]]
    if not trained:
        return ""
    last, args = trained[-1], report["arguments"]
    folds = "0 1 2 3 4" if args["cross_val"] else str(args["fold"])
    plans = "" if args.get("plans", "nnUNetPlans") == "nnUNetPlans" else f" -p {args['plans']}"
    return (f"  final model: round {last['round']}, dataset {last['dataset_id']} ({last['dataset']}); predict with\n"
            f"    nnUNetv2_predict -i IMAGES -o OUT -d {last['dataset_id']} -c {args['configuration']} -f {folds} "
            f"-tr {args['trainer']}{plans}")


def write_report(report: dict, path: str | os.PathLike) -> None:
    """Write ``refine_report.json``."""
    write_json_atomic(path, report)
