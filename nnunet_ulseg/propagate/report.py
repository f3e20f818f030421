"""``propagate_report.json`` and the printed summary of ``ulseg propagate`` (per model of Algorithm 1).

Built from the manifest only (the steps record their counts), so a finished run prints the
same report again without reading any image.  Per model ``m``: the slices its training set
holds per offset (0 = the key slices), the label statuses of the off-key slices
(``grabcut`` or one of :data:`nnunet_ulseg.pseudo_masks.cnn_trimap.STATUSES`' fallbacks),
the slices beyond the lesion's estimated reach (not added), and its test-prediction folder;
with ``--truth``, the per-offset Dice of its training labels and test predictions (:mod:`.truth`).
"""
from __future__ import annotations


def build_report(manifest: dict) -> dict:
    """The report of a propagation's manifest data (``Manifest.data``)."""
    steps, args = manifest["steps"], manifest["arguments"]
    models = []
    for m in range(int(args["K"]) + 1):
        entry = {"model": m, "dataset": (manifest["rounds"].get(str(m)) or {}).get("dataset_name"),
                 "trained": f"train_{m}" in steps}
        if m == 0:
            labels = (steps.get("prepare_0") or {}).get("labels") or {}
            entry.update(per_offset={"0": labels.get("cases")}, label_status={}, fallbacks=0, beyond_reach=0)
        else:
            labels = (steps.get(f"build_{m}") or {}).get("labels") or {}
            entry.update(per_offset={"0": labels.get("key_cases"), **labels.get("per_offset", {})},
                         label_status=labels.get("label_status", {}), fallbacks=labels.get("fallbacks"),
                         beyond_reach=labels.get("beyond_reach"))
        test = steps.get(f"test_{m}") or {}
        entry["test_predictions"] = test.get("predictions")
        entry["test_dice_per_offset"] = test.get("dice_per_offset")
        entry["label_dice_per_offset"] = labels.get("label_dice_per_offset") if m > 0 else None
        models.append(entry)
    return {"tool": "ulseg propagate", "dataset": args["dataset"], "trainer": args["trainer"], "K": args["K"],
            "eval_reach": args["eval_reach"], "slices": steps.get("slices"), "models": models}


def format_report(report: dict) -> str:
    """A few lines per model: training slices per offset, label statuses, fallbacks, test folder."""
    cut = report.get("slices") or {}
    lines = [f"ulseg propagate {report['dataset']} -tr {report['trainer']} K={report['K']} "
             f"(test reach {report['eval_reach']}): {cut.get('slices', 0)} off-key slices cut, "
             f"skipped {cut.get('skipped', {})}"]
    for m in report["models"]:
        offsets = ", ".join(f"{k}: {v}" for k, v in sorted(m["per_offset"].items(), key=lambda kv: int(kv[0])))
        line = f"  model {m['model']} ({m['dataset']}{'' if m['trained'] else ', not trained'}): slices per offset {{{offsets}}}"
        if m["model"] > 0:
            line += f", status {m['label_status']}, {m['fallbacks']} fallbacks, {m['beyond_reach']} beyond reach"
        lines.append(line + (f"; test predictions {m['test_predictions']}" if m["test_predictions"] else ""))
        for key, what in (("label_dice_per_offset", "training labels"), ("test_dice_per_offset", "test slices")):
            if m.get(key):
                lines.append(f"    Dice of its {what} per offset (--truth): "
                             + ", ".join(f"{k}: {v['dice']:.3f} (n={v['slices']})" for k, v in m[key].items()))
    return "\n".join(lines)
