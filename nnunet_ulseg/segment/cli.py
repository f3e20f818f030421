"""``ulseg segment``: segment marked lesions of a CT volume with a trained model; masks + measurements out.

One scan: ``ulseg segment -i CT -o OUT_DIR (--marks FILE | --recist x1,y1,...,y4 --slice k | --box x1,y1,x2,y2
--slice k) (-m MODEL_FOLDER | -d D -tr T [-c C] [-p P]) [-f F ...] [-chk CHK] [-device D] [--propagate]``.
Batch: ``--manifest CSV`` instead of ``-i`` and the marks (:mod:`.scan`).  Outputs: :mod:`.scan`.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from nnunet_ulseg.cli_args import (add_checkpoint, add_configuration, add_dataset, add_device, add_folds,
                                   add_output_folder, add_plans, add_trainer, add_tta, check_output_folder)

from .dicom_seg import DICOM_SEG
from .volume_io import LABEL_ENDINGS


def add_segment_parser(subparsers) -> argparse.ArgumentParser:
    from nnunet_ulseg.postprocess import MODES

    p = subparsers.add_parser(
        "segment", help="segment RECIST-marked lesions of a CT volume (NIfTI/NRRD/MHA/DICOM) with a trained model",
        description="Cut each marked lesion as the model's converter did, predict with nnU-Net, paste the mask back "
                    "into the scan's geometry, and measure it (RECIST axes, area, volume, QA flag).")
    # World coordinates are often negative: "--recist -120.5,33,..." must read as a value, not as an
    # unknown option.  argparse only takes plain negative numbers ("-120.5") as values; this widens its
    # own rule to comma-separated number lists (no option of this command starts with "-" and a digit).
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.,eE+-]*$")
    src = p.add_argument_group("input")
    src.add_argument("-i", dest="ct", metavar="CT", help="CT volume file or DICOM series folder")
    src.add_argument("--series-uid", dest="series_uid", help="DICOM series to read when the folder holds several")
    src.add_argument("--marks", help="CSV or JSON of marks, one row per lesion (see the module docs)")
    src.add_argument("--recist", help="one mark: x1,y1,x2,y2 (long) x3,y3,x4,y4 (short), 0-based voxel "
                                      "(or 12 numbers x,y,z per point with --space world)")
    src.add_argument("--box", help="one box: x1,y1,x2,y2 (voxel) or two x,y,z corners (world)")
    src.add_argument("--slice", dest="slice_index", type=int, help="slice index k (0-based) of --recist/--box")
    src.add_argument("--space", choices=("voxel", "world"), default="voxel", help="coordinates of --recist/--box")
    src.add_argument("--lesion-id", dest="lesion_id", default="", help="id of the --recist/--box lesion")
    src.add_argument("--lymph-node", dest="lymph_node", action="store_true", help="the --recist lesion is a node")
    src.add_argument("--manifest", help="batch: CSV of scans (ct, marks or inline recist/box, name)")
    src.add_argument("--strict", action="store_true", help="stop at the first bad mark row instead of skipping it")
    model = p.add_argument_group("model (like nnUNetv2_predict)")
    model.add_argument("-m", dest="model", metavar="MODEL_FOLDER", help="trained model folder")
    add_dataset(model, required=False)
    add_trainer(model)
    add_configuration(model)
    add_plans(model)
    add_folds(model, help="folds to ensemble (default: every fold present)")
    add_checkpoint(model)
    add_device(model)
    add_tta(model)
    out = p.add_argument_group("output")
    add_output_folder(out)
    out.add_argument("--name", help="output name of the label volume (default: the CT's file name)")
    out.add_argument("--format", dest="ending", choices=LABEL_ENDINGS + (DICOM_SEG,), default=".nii.gz",
                     help="label volume file ending (default: .nii.gz), or dicom-seg: a DICOM Segmentation "
                          "<name>.dcm referencing the input series (DICOM inputs only; needs highdicom)")
    out.add_argument("--binary", action="store_true", help="every lesion has label 1 (default: lesion n has label n)")
    out.add_argument("--postprocess", choices=MODES, default="mark",
                     help="post-processing of each prediction (nnunet_ulseg.postprocess; default: mark, keep the "
                          "components crossed by the RECIST axes)")
    out.add_argument("--propagate", action="store_true",
                     help="3D: segment slice by slice outwards from the RECIST slice (WSSS Sec. 3.3)")
    out.add_argument("--max-slices", dest="max_slices", type=int, default=None,
                     help="with --propagate, at most this many slices on each side")
    out.add_argument("--qa-threshold", dest="qa_threshold", type=float, default=0.3,
                     help="flag a lesion whose mask axes differ from the mark by more than this symmetric error "
                          "(default: 0.3)")
    p.set_defaults(func=run_segment)
    return p


def _jobs(args):
    from .marks import command_line_row, read_mark_rows
    from .scan import ScanJob, read_manifest, scan_name

    inline = args.recist is not None or args.box is not None
    if args.manifest:
        if args.ct or args.marks or inline:
            raise ValueError("--manifest replaces -i, --marks, --recist and --box")
        return read_manifest(args.manifest)
    if not args.ct:
        raise ValueError("give -i CT (with --marks or --recist/--box) or --manifest")
    if bool(args.marks) == inline:
        raise ValueError("give the marks as --marks FILE or as --recist/--box (one of them)")
    rows = read_mark_rows(args.marks) if args.marks else [
        command_line_row(args.recist, args.box, args.slice_index, args.space, args.lesion_id, args.lymph_node)]
    return [ScanJob(Path(args.ct), rows, args.name or scan_name(args.ct), args.series_uid)]


def run_segment(args) -> int:
    from .predict import SegmentModel, model_folder
    from .scan import segment_scans

    out = check_output_folder(args.out)
    jobs = _jobs(args)
    if args.ending == DICOM_SEG:
        from .dicom_seg import require_highdicom

        require_highdicom()
        for job in jobs:  # before any prediction: a batch must not fail at its last scan
            if not Path(job.ct).is_dir():
                raise ValueError(f"{job.ct}: --format {DICOM_SEG} needs DICOM series folders as input; "
                                 "this is a volume file (use .nii.gz/.mha)")
    folder = model_folder(args.model, args.dataset, args.trainer, args.plans, args.configuration)
    model = SegmentModel.load(folder, args.folds, args.checkpoint, args.device, args.tta)
    result = segment_scans(model, jobs, out, args.propagate, args.postprocess, args.binary, args.ending,
                           args.qa_threshold, args.strict, progress=True, max_slices=args.max_slices)
    for issue in result.issues:
        print(f"skipped {issue}")
    flagged = sum(r["qa_flag"] for r in result.records)
    print(f"segment: {len(result.records)} lesions in {len(jobs)} scans ({len(result.issues)} mark rows skipped, "
          f"{flagged} flagged for review) -> {out}")
    return 0
