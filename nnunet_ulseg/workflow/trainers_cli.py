"""``ulseg trainers-path``: the folder to put into ``nnUNet_extTrainer``.

nnU-Net finds trainers outside its own tree only through ``nnUNet_extTrainer``
(nnunetv2/utilities/find_objects.py); after ``pip install nnunet-ulseg`` our trainers lie
inside the installed package, at a path no user should have to guess, so::

    export nnUNet_extTrainer=$(ulseg trainers-path)

makes ``nnUNetv2_train``/``nnUNetv2_predict -tr nnUNetTrainerAHRNetRLS`` work.  The folder
printed is the one ``ulseg`` itself uses (:func:`nnunet_ulseg.nnunet_layout.trainers_dir`);
``--installed`` ignores the environment and prints the copy that came with this package.
"""
from __future__ import annotations

import argparse


def add_trainers_path_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "trainers-path",
        help="print the trainers folder for nnUNet_extTrainer",
        description="Print the folder holding nnunet-ulseg's nnU-Net trainers, for "
                    "`export nnUNet_extTrainer=$(ulseg trainers-path)`.  Without --installed it is the folder "
                    "ulseg itself uses: $ULSEG_TRAINERS_DIR, else the folder of $nnUNet_extTrainer that holds "
                    "our trainers, else the source tree's trainers/, else the copy installed with the package.",
    )
    p.add_argument("--installed", action="store_true",
                   help="ignore ULSEG_TRAINERS_DIR and nnUNet_extTrainer: the source tree's or the package's copy")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from nnunet_ulseg.nnunet_layout import trainers_dir

    print(trainers_dir({} if args.installed else None))
    return 0
