"""``ulseg response``: RECIST 1.1 categories from a baseline and follow-up measurement CSVs.

``ulseg response baseline.csv followup1.csv [followup2.csv ...] [-o response.csv]`` reads
the measurement CSVs (``ulseg segment`` writes them; any CSV with ``lesion_id`` and the
axis columns of :data:`nnunet_ulseg.evaluation.response.SOURCES` works), and prints for
each follow-up the sum of diameters, its change from baseline and from the nadir, and the
category, from the marks and from the masks side by side
(:func:`nnunet_ulseg.evaluation.response.response_table`).  ``-o`` also writes them as
CSV, one row per (source, follow-up).  A source whose columns a file lacks is an error
naming the file unless ``--source`` leaves it out.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from nnunet_ulseg.cli_args import help_text

SOURCE_CHOICES = ("marks", "masks")
COLUMNS = ("source", "time_point", "sum_mm", "change_from_baseline_pct", "nadir_mm", "change_from_nadir_mm",
           "category", "reason")


def add_response_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("response", help="RECIST 1.1 response category from baseline and follow-up measurements",
                              description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", type=Path, help="baseline measurement CSV")
    p.add_argument("follow_ups", type=Path, nargs="+", help="follow-up measurement CSVs in chronological order")
    p.add_argument("--source", nargs="+", choices=SOURCE_CHOICES, default=list(SOURCE_CHOICES),
                   help="which measurements to categorise (default: marks and masks)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the table as CSV here")
    p.set_defaults(func=run_response)
    return p


def _fmt(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _short(path: str, width: int = 40) -> str:
    """A time point's path for the table: the parent folder and name (follow-ups are often all
    ``measurements.csv``), cut from the left to ``width`` characters."""
    p = Path(path)
    text = f"{p.parent.name}/{p.name}" if p.parent.name else p.name
    return text if len(text) <= width else "…" + text[-(width - 1):]


def rows(table) -> list[dict]:
    out = []
    for source, points in table.items():
        for t in points:
            out.append({"source": source, "time_point": t.name, "sum_mm": _fmt(t.sum_mm, 2),
                        "change_from_baseline_pct": _fmt(None if t.change_from_baseline is None
                                                         else 100 * t.change_from_baseline, 2),
                        "nadir_mm": _fmt(t.nadir_mm, 2), "change_from_nadir_mm": _fmt(t.change_from_nadir_mm, 2),
                        "category": t.category, "reason": t.reason})
    return out


def run_response(args: argparse.Namespace) -> int:
    from nnunet_ulseg.evaluation.response import response_table

    table = response_table([args.baseline, *args.follow_ups], sources=args.source)
    result = rows(table)
    header = f"{'source':<6} {'time point':<40} {'sum mm':>8} {'vs base':>8} {'nadir':>8} category"
    print(header)
    for r in result:
        pct = f"{float(r['change_from_baseline_pct']):+.1f}%" if r["change_from_baseline_pct"] else "-"
        print(f"{r['source']:<6} {_short(r['time_point']):<40} {r['sum_mm'] or '-':>8} {pct:>8} "
              f"{r['nadir_mm']:>8} {r['category']}  ({r['reason']})")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(result)
        print(f"wrote {args.output}")
    return 0
