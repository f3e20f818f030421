"""Convert LiTS into the nnU-Net raw datasets ``Dataset511_LiTSLiver`` and ``Dataset512_LiTSTumour`` (E²Net's two stages).

Thin wrapper over :func:`nnunet_ulseg.conversion.lits.convert_lits`; the same options as
``ulseg convert-lits`` (``-i`` the LiTS folder, ``-o`` the nnU-Net raw root, default
``$nnUNet_raw``; ``-d`` (default 511, stage 2 gets 512), ``--normalisation window|ct``,
``--crop-size PX`` (stage-2 crop side, a multiple of 32; default 256, the paper's: a smaller
one is a CPU budget choice), ``--test-fraction``, ``--seed``, ``--strict``).
``splits_final.json`` is also copied to ``$nnUNet_preprocessed/<dataset>/`` when that
variable is set.

    python dataset_conversion/Dataset511_LiTS.py -i LiTS/ -d 511
"""
import sys

from nnunet_ulseg.cli_args import ArgumentParser, help_text
from nnunet_ulseg.conversion.lits_cli import add_lits_arguments, run_lits


def main(argv=None) -> int:
    parser = ArgumentParser(description=help_text(__doc__.split("\n\n")[0]))
    add_lits_arguments(parser)
    return run_lits(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
