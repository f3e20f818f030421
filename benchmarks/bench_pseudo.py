"""Pseudo masks from RECIST against the true key-slice masks: WSSS Table 1's layout.

WSSS (``papers/wsss_self_paced_3d.txt``) Table 1 compares ways of turning a RECIST mark into a
training label by pixel-wise recall, precision and Dice (mean +- std) against manual masks.
This benchmark does the same on a generated sample (:func:`nnunet_ulseg.demo.make_sample`,
true masks known): the sample is converted once (``convert-deeplesion``, ellipse labels);
every maker of :mod:`nnunet_ulseg.pseudo_masks.registry` then runs on each converted
key-slice crop (the crop's HU, the mark in crop pixels, the row's DICOM window: exactly what
``--pseudo NAME`` would write), its mask is pasted back into the key slice
(:func:`nnunet_ulseg.conversion.sidecar.paste_back`) and scored against the lesion's true
mask there (``--ref-format sample``'s :class:`~nnunet_ulseg.evaluation.references.TrueMasks`).
No training.  Printed: the table (plus the worst Dice and its case), the makers' statuses,
GrabCut-R's fallbacks, and the lesions where GrabCut-R loses to the ellipse by more than
``--margin`` Dice, with their type and shape facts.

    python benchmarks/bench_pseudo.py --lesions 160 --seed 23

Seeds looked at while developing the makers: 1 and 2.  Seed 23 is the reported one.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """Pixel-wise recall, precision, Dice (WSSS Sec. 4 "Evaluation"); an empty prediction has precision 0."""
    tp = float(np.logical_and(pred, true).sum())
    p, t = float(pred.sum()), float(true.sum())
    return tp / t if t else 0.0, tp / p if p else 0.0, 2 * tp / (p + t) if p + t else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesions", type=int, default=160)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--makers", nargs="+", default=None, help="registry names (default: all)")
    parser.add_argument("--margin", type=float, default=0.05, help="list lesions where GrabCut-R's Dice is this much "
                                                                     "below the ellipse's (default 0.05)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-lesion scores here")
    args = parser.parse_args()

    import SimpleITK as sitk

    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.conversion.sidecar import paste_back
    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.evaluation.references import TrueMasks
    from nnunet_ulseg.evaluation.metrics import lesion_type_name
    from nnunet_ulseg.nnunet_layout import image_filename
    from nnunet_ulseg.pseudo_masks.grabcut_r import grabcut_r
    from nnunet_ulseg.pseudo_masks.registry import PSEUDO_NAMES, make_pseudo_mask
    from nnunet_ulseg.recist import Recist

    makers = args.makers or list(PSEUDO_NAMES)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_pseudo_"))
    try:
        sample, raw = work / "sample", work / "raw"
        t0 = time.perf_counter()
        if not (sample / "masks.csv").is_file():
            make_sample(sample, n_lesions=args.lesions, seed=args.seed, progress=False)
        if not (raw / "dataset.json").is_file():
            convert_deeplesion(sample, raw, num_processes=1, progress=False, overwrite=raw.exists())
        from nnunet_ulseg.conversion.sidecar import read_sidecar

        rows = read_sidecar(raw / "lesions.csv")
        truth = TrueMasks(sample)
        with open(sample / "masks.csv", newline="") as f:
            true_types = [int(r["true_type"]) for r in csv.DictReader(f)]
        prep = time.perf_counter() - t0
        per: dict[str, list[tuple[float, float, float]]] = {m: [] for m in makers}
        statuses: dict[str, dict[str, int]] = {m: {} for m in makers}
        seconds = {m: 0.0 for m in makers}
        lesions, reasons = [], {}
        for row in rows:
            folder = "imagesTs" if row.split == "test" else "imagesTr"
            crop = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / folder / image_filename(row.case, ".mha", 0))))
            crop = crop.reshape(crop.shape[-2:])
            true = truth.mask(row.dl_row, row.File_name)
            window = (row.window_min, row.window_max)
            entry = {"case": row.case, "type": lesion_type_name(true_types[row.dl_row - 2]),
                     "long_mm": round(row.long_mm, 1), "short_mm": round(row.short_mm, 1)}
            for m in makers:
                t1 = time.perf_counter()
                mask, status = make_pseudo_mask(m, row.recist_crop, crop, crop.shape, window)
                seconds[m] += time.perf_counter() - t1
                statuses[m][status] = statuses[m].get(status, 0) + 1
                s = scores(paste_back(mask, row), true)
                per[m].append(s)
                entry[m] = round(s[2], 4)
                if m == "grabcut":
                    entry["grabcut_status"] = status
            if "grabcut" in makers:
                r = grabcut_r(Recist.from_points(row.recist_crop), crop, window)
                if r.reason:
                    reasons[r.reason] = reasons.get(r.reason, 0) + 1
                    entry["grabcut_reason"] = r.reason
                entry["true_vs_ellipse_area"] = round(float(true.sum()) / max(1, float(paste_back(
                    make_pseudo_mask("ellipse", row.recist_crop, None, crop.shape, window)[0], row).sum())), 3)
            lesions.append(entry)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"seed {args.seed}: {len(rows)} lesions (sample + conversion {prep:.0f} s); scored in key-slice geometry "
          "against the true masks")
    print(f"{'Method':<16}{'Recall':>14}{'Precision':>14}{'Dice':>14}{'worst Dice':>12}  worst case                     s/lesion")
    for m in makers:
        a = np.asarray(per[m])
        worst = int(np.argmin(a[:, 2]))
        cells = "".join(f"{a[:, k].mean():>8.2f}±{a[:, k].std():.2f}" for k in range(3))
        print(f"{m:<16}{cells}{a[worst, 2]:>12.2f}  {lesions[worst]['case']:<31}{seconds[m] / len(rows):.3f}")
    print("statuses: " + "; ".join(f"{m}: " + ", ".join(f"{k} {v}" for k, v in sorted(s.items()))
                                    for m, s in statuses.items()))
    if "grabcut" in makers:
        print("GrabCut-R fallbacks to the ellipse by reason: " + (", ".join(f"{k} {v}" for k, v in
                                                                          sorted(reasons.items())) or "none"))
    if "grabcut" in makers and "ellipse" in makers:
        worse = [e for e in lesions if e["grabcut"] < e["ellipse"] - args.margin]
        better = sum(e["grabcut"] > e["ellipse"] + args.margin for e in lesions)
        print(f"GrabCut-R vs ellipse: better by > {args.margin} Dice on {better}, worse on {len(worse)} of "
              f"{len(lesions)} lesions")
        by_type: dict[str, list[float]] = {}
        for e in lesions:
            by_type.setdefault(e["type"], []).append(e["grabcut"] - e["ellipse"])
        print("mean Dice gain of GrabCut-R over the ellipse by true type: " + ", ".join(
            f"{k} {np.mean(v):+.3f} (n={len(v)})" for k, v in sorted(by_type.items())))
        for e in sorted(worse, key=lambda e: e["grabcut"] - e["ellipse"]):
            print(f"  worse: {e['case']:<28} {e['type']:<12} ellipse {e['ellipse']:.2f} grabcut {e['grabcut']:.2f} "
                  f"status {e.get('grabcut_status')}{'/' + e['grabcut_reason'] if 'grabcut_reason' in e else ''} "
                  f"long {e['long_mm']} mm short {e['short_mm']} mm true/ellipse area {e['true_vs_ellipse_area']}")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "lesions": lesions}, indent=1))


if __name__ == "__main__":
    main()
