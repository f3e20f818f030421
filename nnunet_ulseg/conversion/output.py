"""The converters' output folder: what they may write, replace and delete there (issue 12, cases 1-2).

Both converters (:mod:`.deeplesion`, :mod:`.uls23`) write an nnU-Net raw dataset folder
through one :class:`OutputFolder`, which enforces the README's promise that nothing is lost
and the input is only read:

* **Never a file the converter did not create.**  Every case file and every top-level
  file is created with ``O_CREAT | O_EXCL`` (:func:`create_new_file`), which fails on an
  existing file and on any symbolic link, dangling or not; so a write can neither replace
  a user's file nor go through a link to the input or elsewhere.  Before anything is
  written, :meth:`OutputFolder.check` refuses a folder that holds any of the converter's
  file names, a non-empty case folder, or a link in place of one of its folders/files, so
  a run fails at the start with one clear error, not half-way.  Empty case folders are
  used as they are.
* **``overwrite`` removes only what a run of this converter recorded.**  Each run keeps
  :data:`MANIFEST` (``conversion_manifest.json``): the converter's name and every file it
  may write, written *before* the first case file (so an interrupted run is recorded too)
  and rewritten at the end with the files actually written.  With ``overwrite`` the
  manifest must exist and name the same converter; if ``dataset.json`` is there its
  ``converted_by`` must agree; every existing entry of the converter's folders and files
  must be recorded and a regular file.  Otherwise the run is refused and nothing is
  deleted: a dataset another tool made, a dataset of the other converter, a file a user
  added to ``imagesTr`` (it would become a stray case), or a folder from before manifests
  existed.  There is deliberately no option to delete those: the user moves them away or
  chooses another output folder (the error says so).
* **Completion.**  ``dataset.json`` stays the last dataset file written (its presence marks
  a complete conversion, as before), whole or not at all (:meth:`OutputFolder.write_new`:
  written aside, then hard-linked in place); the manifest's ``state`` goes from ``converting`` to
  ``complete`` right after it.  Without ``overwrite`` a folder with case files but no
  ``dataset.json`` is refused as an interrupted run.

Choice: a link *is* refused even when it points inside the output folder; the converter
never makes links, so one there was put by someone else.  The output folder itself may be
a link (the user named it); it is resolved by the caller before these checks, and
:func:`check_inputs_outside` compares resolved paths.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from nnunet_ulseg.nnunet_layout import DATASET_JSON

#: The record of what a conversion wrote, in the output folder.
MANIFEST = "conversion_manifest.json"
MANIFEST_FORMAT = 1
#: At most this many paths are named in an error.
_SHOWN = 5

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def create_new_file(path: str | os.PathLike) -> str:
    """Create ``path`` as a new empty regular file and return it (as ``str``).

    ``O_CREAT | O_EXCL``: fails with ``FileExistsError`` on an existing file and on a
    symbolic link (never followed).  Writers then open the file this call created.
    """
    path = os.fspath(path)
    try:
        os.close(os.open(path, _CREATE_FLAGS, 0o666))
    except FileExistsError:
        kind = "a symbolic link" if os.path.islink(path) else "a file"
        raise FileExistsError(f"{path} already exists ({kind}): the converter only writes files it "
                              "creates") from None
    return path


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def check_inputs_outside(out: Path, inputs: Mapping[str, Path], case_dirs: Sequence[str]) -> None:
    """Refuse an output folder inside an input folder, or an input folder inside an output case folder.

    ``inputs`` maps a name used in the message (``"DeepLesion"``) to the resolved folder.
    """
    for what, d in inputs.items():
        if out == d or d in out.parents:
            raise ValueError(f"output folder {out} is inside the {what} folder {d}, which is never written to")
        if any(out / c == d or out / c in d.parents for c in case_dirs):
            raise ValueError(f"the {what} folder {d} is inside an output case folder of {out}")


def read_manifest(out: str | os.PathLike) -> dict:
    """The manifest of the output folder ``out`` (``converted_by``, ``state``, ``files``)."""
    path = Path(out) / MANIFEST
    record = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(record, dict) and isinstance(record.get("converted_by"), str)
            and isinstance(record.get("files"), list) and all(isinstance(f, str) for f in record["files"])):
        raise ValueError(f"{path}: not a conversion manifest (expected converted_by and a files list)")
    return record


class OutputFolder:
    """The output folder ``root`` of converter ``converted_by``, which writes ``dirs`` (case folders) and ``files``.

    Use: :meth:`check` (before reading the input, nothing written), :meth:`clear` (only with
    overwrite, once the input is known good), :meth:`start` (folders + manifest),
    :meth:`new_file` before each top-level file (:meth:`write_new` for ``dataset.json``), :meth:`finish`
    after ``dataset.json``.
    """

    def __init__(self, root: Path, converted_by: str, dirs: Sequence[str], files: Sequence[str]):
        self.root = Path(root)
        self.converted_by = converted_by
        self.dirs = tuple(dirs)
        self.files = tuple(dict.fromkeys((*files, MANIFEST)))
        self._remove: list[str] = []

    # -- before anything is written ------------------------------------------------------------------------------
    def _present(self) -> tuple[list[str], list[str], list[str]]:
        """Existing entries among the converter's names: (files, links, others), relative posix paths."""
        found, links, odd = [], [], []
        for name in self.files:
            p = self.root / name
            if p.is_symlink():
                links.append(f"{name} -> {os.readlink(p)}")
            elif p.exists():
                (found if p.is_file() else odd).append(name)
        for name in self.dirs:
            p = self.root / name
            if p.is_symlink():
                links.append(f"{name} -> {os.readlink(p)}")
                continue
            if not p.exists():
                continue
            if not p.is_dir():
                odd.append(name)
                continue
            for dirpath, dirnames, filenames in os.walk(p):  # os.walk does not follow links to folders
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for n in sorted(dirnames + filenames):
                    q = os.path.join(dirpath, n)
                    entry = f"{rel}/{n}"
                    st = os.lstat(q)
                    if stat.S_ISLNK(st.st_mode):
                        links.append(f"{entry} -> {os.readlink(q)}")
                    elif stat.S_ISREG(st.st_mode):
                        found.append(entry)
                    elif not stat.S_ISDIR(st.st_mode):
                        odd.append(entry)
                    else:
                        odd.append(entry + "/")  # the converter makes no sub-folders
        return found, links, odd

    def _dataset_json_author(self) -> str | None:
        try:
            record = json.loads((self.root / DATASET_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        by = record.get("converted_by") if isinstance(record, dict) else None
        return by if isinstance(by, str) else None

    def check(self, overwrite: bool) -> None:
        """Refuse (``FileExistsError``) an output folder this run may not write; nothing is written or deleted.

        See the module docstring for the rules.  With ``overwrite``, remembers the recorded
        files that :meth:`clear` will remove.
        """
        root = self.root
        self._remove = []
        if not root.exists():
            return
        if not root.is_dir():
            raise NotADirectoryError(f"output folder {root} exists and is not a folder")
        found, links, odd = self._present()
        if links:
            raise FileExistsError(
                f"{root} holds {_names(links)}: a symbolic link where this converter writes; it never writes "
                "through links (the target could be the input or another dataset): remove the link or choose "
                "another output folder")
        if odd:
            raise FileExistsError(f"{root} holds {_names(odd)}, which this converter would never write there: "
                                  "move it away or choose another output folder")
        if not found:
            return
        in_dirs = [f for f in found if "/" in f]
        if not overwrite:
            if DATASET_JSON in found:
                raise FileExistsError(f"{root} already holds a converted dataset (dataset.json); "
                                      "use overwrite=True / --overwrite to replace it")
            if in_dirs:
                busy = sorted({f.split("/")[0] for f in in_dirs})
                raise FileExistsError(f"{root} holds files in {', '.join(busy)} from an earlier (interrupted?) run; "
                                      "use overwrite=True / --overwrite to replace them")
            raise FileExistsError(
                f"{root} already holds {_names(found)}, which this converter would write; it never replaces a file "
                f"it did not create: move it away, or use overwrite=True / --overwrite if an earlier run of "
                f"{self.converted_by} wrote it")
        self._remove = self._recorded(found)

    def _recorded(self, found: list[str]) -> list[str]:
        """The files to remove for ``overwrite``: all of ``found``, once the manifest shows they are ours."""
        root, me = self.root, self.converted_by
        author = self._dataset_json_author() if DATASET_JSON in found else None
        if MANIFEST not in found:
            if DATASET_JSON in found and author != me:
                raise FileExistsError(
                    f"{root} holds a dataset another tool made (dataset.json converted_by: {author!r}); overwrite "
                    f"only removes what a run of {me} recorded in {MANIFEST}: choose another output folder, or "
                    "remove that dataset yourself")
            raise FileExistsError(
                f"{root} holds {_names(found)}, not written by {me} (no {MANIFEST} records them); they are kept: "
                "move them away or choose another output folder")
        try:
            record = read_manifest(root)
        except ValueError as e:
            raise FileExistsError(f"{root}: {MANIFEST} is not written by {me} ({e}); nothing was removed: move "
                                  "the folder's files away or choose another output folder") from None
        if record["converted_by"] != me:
            raise FileExistsError(f"{root} was written by {record['converted_by']}, not {me}; overwrite only "
                                  f"replaces a run of {me}: choose another output folder")
        if DATASET_JSON in found and author != me:
            raise FileExistsError(f"{root}: dataset.json was written by another tool (converted_by: {author!r}), "
                                  f"not {me}; nothing was removed: choose another output folder")
        recorded = set(record["files"]) | {MANIFEST}
        extra = [f for f in found if f not in recorded]
        if extra:
            raise FileExistsError(
                f"{root} holds {_names(extra)}, not written by {me} ({MANIFEST} does not record them); overwrite "
                "would leave them among the new cases, so nothing was removed: move them away and run again")
        return sorted(found, key=lambda f: f == MANIFEST)  # the manifest last: a killed clear stays recorded

    def clear(self) -> None:
        """Remove the files :meth:`check` found recorded (regular files only; the manifest last)."""
        for rel in self._remove:
            p = self.root / rel
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise FileExistsError(f"{p} changed since the output folder was checked (no longer a regular "
                                      "file); it is kept")
            os.unlink(p)
        self._remove = []

    # -- writing ---------------------------------------------------------------------------------------------------
    def start(self, planned: Iterable[str | os.PathLike]) -> None:
        """Create the case folders and record ``planned`` (case files, absolute or relative) + the top-level files."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d in self.dirs:
            p = self.root / d
            p.mkdir(exist_ok=True)
            if p.is_symlink() or not p.is_dir():
                raise FileExistsError(f"{p} is not a folder this converter made (a link or a file appeared)")
        self._write_manifest("converting", planned)

    def new_file(self, name: str) -> Path:
        """``root/name`` created new (:func:`create_new_file`), for a writer to open next."""
        return Path(create_new_file(self.root / name))

    def write_new(self, name: str, write_into: Callable[[Path], None]) -> Path:
        """Write ``root/name`` whole or not at all: ``write_into(folder)`` writes ``folder/name`` in a private
        temporary folder inside ``root``, which is then linked in place (``os.link`` fails on any existing entry,
        link or file, and never follows one).  For ``dataset.json``, whose presence marks a complete conversion:
        a run killed while writing it leaves none."""
        target = self.root / name
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".partial."))
        try:
            write_into(tmp)
            try:
                os.link(tmp / name, target)
            except FileExistsError:
                create_new_file(target)  # raises the converter's message
            except OSError:  # a file system without hard links: the same check, then a rename
                if os.path.lexists(target):
                    create_new_file(target)
                os.rename(tmp / name, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def finish(self, written: Iterable[str | os.PathLike]) -> None:
        """Record the case files actually ``written`` (the top-level files are added): the run is complete."""
        self._write_manifest("complete", written)

    def _write_manifest(self, state: str, case_files: Iterable[str | os.PathLike]) -> None:
        files = {Path(p).relative_to(self.root).as_posix() if Path(p).is_absolute() else Path(p).as_posix()
                 for p in case_files}
        files.update(f for f in self.files if f != MANIFEST)
        record = {"converted_by": self.converted_by, "format": MANIFEST_FORMAT, "state": state,
                  "files": sorted(files)}
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{MANIFEST}.", suffix=".partial")  # O_EXCL, own name
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, self.root / MANIFEST)  # replaces a link itself, never its target
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise


__all__ = ["MANIFEST", "OutputFolder", "check_inputs_outside", "create_new_file", "read_manifest"]
