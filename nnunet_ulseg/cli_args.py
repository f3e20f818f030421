"""nnU-Net's command-line dialect for every ``ulseg`` command (floor 1: argparse only).

nnU-Net v2 spells its options with one dash and a full word (``-device``, ``-tr``,
``-num_parts``; nnunetv2/run/run_training.py, inference/predict_from_raw_data.py),
``--disable_tta``/``--chill`` with two dashes and underscores, and folds as ``-f 0 1 2 3 4``
or ``all``.  This module holds

* :class:`ArgumentParser`, the parser class of the ``ulseg`` root parser (its sub-parsers
  inherit it: ``add_subparsers`` defaults ``parser_class`` to the type of the parser it is
  called on).  It closes argparse's trap for single-dash words: stock argparse reads an
  undefined ``-device=cpu`` as ``-d`` with the attached value ``evice=cpu`` (and, on Python
  3.11, prefix-matches ``-dev`` to ``-device`` even with ``allow_abbrev=False``).  Here a
  single-dash argument is an option only when it is spelled exactly as one, or as one
  followed by ``=value``; anything else is the error "unrecognized option".
* ``add_*`` helpers that add one nnU-Net option with nnU-Net's spelling, ``dest`` and meaning,
  plus the long spellings ``ulseg`` used before as aliases, so that every command spells
  the same thing the same way.

Choices that nnU-Net leaves open or makes differently, and why:

* ``-device`` defaults to None, resolved by the command to ``cuda`` when torch sees a GPU,
  else ``cpu`` (nnU-Net's default is always ``cuda``, which fails on a CPU-only machine).
* Test-time mirroring is on unless ``--disable_tta`` (as ``nnUNetv2_predict``); ``--tta``
  stays accepted and changes nothing.
* ``-np`` is one number for every worker pool of a command (conversion, preprocessing,
  prediction's ``-npp``/``-nps``): the commands drive several nnU-Net steps at once.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import re

#: reST roles (``:func:`x```, ``:class:`~a.b```) and literals (````x````) in docstrings shown by --help
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def help_text(doc: str | None) -> str:
    """A docstring as plain text for ``--help``: reST roles and double-backtick literals unwrapped.

    ``:func:`~pkg.mod.name``` becomes ``pkg.mod.name`` and ````-o```` becomes ``-o``; the rest
    (line breaks included, for ``RawDescriptionHelpFormatter``) is kept as written.
    """
    text = _ROLE.sub(lambda m: m.group(1), doc or "")
    return _LITERAL.sub(lambda m: m.group(1), text)


DEVICES = ("cpu", "cuda", "mps")
#: nnU-Net's 5-fold cross-validation, as ``-f 0 1 2 3 4``.
CROSS_VALIDATION_FOLDS = (0, 1, 2, 3, 4)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that never splits a single-dash word into a short option and a value.

    ``allow_abbrev`` defaults to False (no prefix matching of long options); a single-dash
    argument that is not exactly a defined option (or ``<option>=value``) is left unmatched,
    so :meth:`parse_args` reports it as "unrecognized option".  Short options still take
    their value as the next argument (``-d 501``); ``-d501`` is rejected, as nnU-Net's users
    never need it and it is what makes ``-device=cpu`` ambiguous.  Negative numbers stay
    values (``--x -1``), as in argparse.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _get_option_tuples(self, option_string: str):
        # Called by argparse only for arguments that are neither a defined option nor
        # "<defined option>=value".  For a single-dash word the stock method returns "short
        # option + attached value" or a prefix match; here there is no interpretation.  When
        # the word looks like one of this parser's options (its first two characters are one,
        # or it is the start of one) it is an error right away, so the user reads about the
        # misspelt option and not about a required option it seemed to give.
        if len(option_string) > 1 and option_string[0] in self.prefix_chars \
                and option_string[1] not in self.prefix_chars:
            word = option_string.split("=", 1)[0]
            if any(o == word[:2] or o.startswith(word) for o in self._option_string_actions):
                self.error(_unrecognized([option_string], self.prog))
            return []
        return super()._get_option_tuples(option_string)

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            options = [a for a in extras if a[:1] in self.prefix_chars and len(a) > 1]
            command = getattr(parsed, "command", None)
            if options:
                self.error(_unrecognized(options, f"{self.prog} {command}" if command else self.prog))
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _unrecognized(options: Sequence[str], prog: str) -> str:
    return (f"unrecognized option{'s' if len(options) > 1 else ''} {' '.join(options)} (single-dash options are "
            f"nnU-Net's full words, with the value after a space or '=', e.g. -device cpu; see '{prog} -h')")


def fold(value: str) -> int | str:
    """One ``-f`` value: a fold number >= 0 or ``all`` (nnU-Net's fold trained on every case)."""
    if value == "all":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fold must be a number or 'all', got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"fold must be >= 0, got {number}")
    return number


def add_dataset(p: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    """``-d DATASET``: dataset name or id (nnUNetv2_train's positional, nnUNetv2_predict's ``-d``)."""
    p.add_argument("-d", dest="dataset", required=required, metavar="DATASET",
                   help=help or "dataset name or id (e.g. 501)")


def add_configuration(p: argparse.ArgumentParser, default: str = "2d") -> None:
    """``-c CONFIGURATION`` (nnU-Net's configuration name)."""
    p.add_argument("-c", dest="configuration", default=default,
                   help=f"nnU-Net configuration (default: {default})")


def add_trainer(p: argparse.ArgumentParser, required: bool = False, default: str | None = None,
                aliases: Sequence[str] = (), help: str | None = None) -> None:
    """``-tr TRAINER`` (nnUNetv2_train/predict), plus ``aliases`` (e.g. ``--trainer``)."""
    p.add_argument("-tr", *aliases, dest="trainer", required=required, default=default, metavar="TRAINER",
                   help=help or ("nnU-Net trainer class" + (f" (default: {default})" if default else "")))


def add_plans(p: argparse.ArgumentParser, default: str = "nnUNetPlans") -> None:
    """``-p PLANS``: plans identifier (nnUNetv2_train/predict)."""
    p.add_argument("-p", dest="plans", default=default, metavar="PLANS",
                   help=f"plans identifier (default: {default})")


def add_folds(p: argparse.ArgumentParser, default: Sequence[int | str] | None = None, help: str | None = None) -> None:
    """``-f F [F ...]``: fold numbers or ``all``, nargs='+' (nnUNetv2_predict's ``-f``); dest ``folds``."""
    p.add_argument("-f", dest="folds", nargs="+", type=fold, default=None if default is None else list(default),
                   metavar="FOLD", help=help or "folds of the model: numbers (e.g. 0 1 2 3 4) or all")


def add_checkpoint(p: argparse.ArgumentParser, default: str = "checkpoint_final.pth") -> None:
    """``-chk NAME``: checkpoint used for predictions (nnUNetv2_predict)."""
    p.add_argument("-chk", dest="checkpoint", default=default,
                   help=f"checkpoint used for predictions (default: {default})")


def add_device(p: argparse.ArgumentParser) -> None:
    """``-device`` (alias ``--device``): cpu, cuda or mps; default None = cuda if torch sees a GPU, else cpu."""
    p.add_argument("-device", "--device", dest="device", choices=DEVICES, default=None,
                   help="torch device: cpu, cuda or mps (default: cuda if available, else cpu). As in nnU-Net, "
                        "choose the GPU with CUDA_VISIBLE_DEVICES, not here")


def add_num_processes(p: argparse.ArgumentParser, default: int | None = 2, help: str | None = None) -> None:
    """``-np N`` (alias ``--np``), dest ``num_processes``."""
    p.add_argument("-np", "--np", dest="num_processes", type=int, default=default, metavar="N",
                   help=help or f"worker processes (default: {default})")


def add_parts(p: argparse.ArgumentParser, help_num_parts: str | None = None, help_part_id: str | None = None) -> None:
    """``-num_parts N -part_id I`` (aliases ``--num-parts``/``--part-id``), as nnUNetv2_predict."""
    p.add_argument("-num_parts", "--num-parts", dest="num_parts", type=int, default=1, metavar="N",
                   help=help_num_parts or "split the predictions over this many processes/machines (default: 1)")
    p.add_argument("-part_id", "--part-id", dest="part_id", type=int, default=0, metavar="I",
                   help=help_part_id or "which part this process is, 0..num_parts-1 (default: 0)")


def add_tta(p: argparse.ArgumentParser) -> None:
    """``--disable_tta`` (alias ``--disable-tta``): mirroring TTA is on by default, as in nnUNetv2_predict.

    ``--tta`` stays accepted (explicitly on) for the command lines written before; dest ``tta``.
    """
    group = p.add_mutually_exclusive_group()
    group.add_argument("--disable_tta", "--disable-tta", dest="tta", action="store_false",
                       help="no mirroring test-time augmentation: faster, slightly less accurate (default: mirroring "
                            "on, as nnUNetv2_predict)")
    group.add_argument("--tta", dest="tta", action="store_true", help="mirroring TTA on (the default; kept for old "
                                                                     "command lines)")
    p.set_defaults(tta=True)


def add_output_folder(p: argparse.ArgumentParser, required: bool = True, default: Path | None = None,
                      dest: str = "out", help: str = "output folder (created)") -> None:
    """``-o DIR`` (alias ``--out``): always a folder, as nnUNetv2_predict's ``-o``."""
    p.add_argument("-o", "--out", dest=dest, type=Path, required=required, default=default, metavar="OUT_DIR",
                   help=help)


def add_input_folder(p: argparse.ArgumentParser, dest: str, aliases: Sequence[str] = (), required: bool = True,
                     metavar: str = "DIR", help: str = "input folder") -> None:
    """``-i DIR`` plus ``aliases`` (e.g. ``--deeplesion``), as nnU-Net's converters and nnUNetv2_predict."""
    p.add_argument("-i", *aliases, dest=dest, required=required, metavar=metavar, help=help)


def add_chill(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--chill`` (alias ``--allow-missing``): nnUNetv2_evaluate_folder's "don't crash on missing predictions"."""
    p.add_argument("--chill", "--allow-missing", dest="allow_missing", action="store_true",
                   help=help or "count cases without a prediction file as missing instead of stopping with an error "
                                "(nnUNetv2_evaluate_folder --chill)")


def check_output_folder(path: Path, option: str = "-o") -> Path:
    """``path`` if it can be a folder; a ``ValueError`` for an existing file or a ``.csv`` name.

    ``--out`` once meant a CSV file in ``ulseg measure``; such a path now gets a clear error
    instead of a folder named ``x.csv``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file; {option} is an output folder")
    if path.suffix.lower() == ".csv" and not path.is_dir():
        raise ValueError(f"{option} {path}: {option} is an output folder now (the CSV is written inside it); "
                         f"give a folder, e.g. {path.with_suffix('')}")
    return path
