"""The label values of every weak-label dataset, defined once (DESIGN "Contracts: Labels").

CONVENTIONS "Files": 0 background, 1 lesion, 2 ignore.  nnU-Net requires the ignore label
to be the largest label (max + 1 of the real classes), so it is 2.  Round 1 pseudo masks
(ellipse, GrabCut-R, ...) contain only 0 and 1; the round update (AHRNet Sec. 2.3) adds 2.
Every module that writes, reads or compares label values imports them from here.
"""
from __future__ import annotations

BACKGROUND = 0
LESION = 1
IGNORE = 2

#: ``labels`` of ``dataset.json`` (a fresh copy each call site should take with ``dict(LABELS)``:
#: nnU-Net's ``generate_dataset_json`` mutates the dict it is given, STYLE.md Sec. 8).
LABELS = {"background": BACKGROUND, "lesion": LESION, "ignore": IGNORE}
