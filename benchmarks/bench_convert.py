"""Benchmark the DeepLesion -> nnU-Net conversion against its PNG decode floor.

    python benchmarks/bench_convert.py --lesions 200 --np 2 [--context K] [--sample DIR]

Generates ``--lesions`` lesions with :func:`nnunet_ulseg.demo.corpus.make_sample` in a
temporary folder (or uses ``--sample DIR``), then times

* the full conversion (:func:`convert_deeplesion`, parsing to dataset.json), and
* the decode floor: decoding exactly the PNGs the conversion decodes (key slices and
  context neighbours, each once), with the same worker count and the same pool
  mechanism (:func:`task_results` over the same per-series work units),

each ``--repeat`` times alternately (best time kept; files are in the page cache for
both).  Prints lesions/s, floor lesions/s, their ratio (goal >= 0.70), peak RSS of the
parent and of the largest worker, and the parent-side time and memory to parse and plan
a DL_info.csv of real size (32,735 rows, the sample's rows repeated under new patient ids).

Measurements run in a fresh child process (this script re-invoked with ``--sample``) so
that the corpus generator's memory does not show in the peak RSS figures.
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from nnunet_ulseg.cli_args import help_text
from nnunet_ulseg.conversion.deeplesion import build_tasks, convert_deeplesion, task_results
from nnunet_ulseg.conversion.dl_info import read_dl_info
from nnunet_ulseg.conversion.io import read_png
from nnunet_ulseg.conversion.splits import resolve_patient_splits

REAL_ROWS = 32735


def decode_task(task) -> int:
    """Decode every PNG a conversion work unit decodes; return the lesion count."""
    for path in task.png_paths():
        read_png(path)
    return task.n_lesions


def time_floor(dl: Path, np_: int, context: int) -> tuple[float, int]:
    info = read_dl_info(dl / "DL_info.csv")
    assigned, _ = resolve_patient_splits(info.patient_splits)
    tasks, _ = build_tasks(info.records, assigned, dl / "Images_png", Path("unused"), context)
    n_png = sum(len(t.png_paths()) for t in tasks)
    t0 = time.perf_counter()
    with task_results(decode_task, tasks, np_) as results:
        n = sum(results)
    assert n == len(info.records)
    return time.perf_counter() - t0, n_png


def time_conversion(dl: Path, out: Path, np_: int, context: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = convert_deeplesion(dl, out, num_processes=np_, context=context, progress=False)
    seconds = time.perf_counter() - t0
    return seconds, len(result.rows)


def time_parse(dl: Path, work: Path, rows: int) -> dict:
    """Parent-side cost at real size: read a DL_info.csv of ``rows`` rows (sample rows repeated
    under new patient ids) and plan the work units; seconds and peak traced MB."""
    with open(dl / "DL_info.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        sample = list(reader)
    big = work / "DL_info.csv"
    with open(big, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(rows):
            row = list(sample[i % len(sample)])
            patient = int(row[1]) + 10000 * (i // len(sample))
            row[1] = str(patient)
            row[0] = f"{patient:06d}" + row[0][6:]
            w.writerow(row)

    def run():
        t0 = time.perf_counter()
        info = read_dl_info(big)
        t1 = time.perf_counter()
        assigned, _ = resolve_patient_splits(info.patient_splits)
        tasks, planned = build_tasks(info.records, assigned, dl / "Images_png", work / "out")
        assert len(planned) == rows, (len(info.records), info.issues[:3])
        return t1 - t0, time.perf_counter() - t1

    gc.collect()
    parse_s, plan_s = run()
    gc.collect()
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"parse_rows": rows, "parse_s": parse_s, "plan_s": plan_s, "parse_plan_peak_mb": peak}


def measure(args) -> dict:
    dl = Path(args.sample).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir))
    try:
        conv, floor = [], []
        n_lesions = n_png = 0
        for rep in range(args.repeat):
            t, n_png = time_floor(dl, args.np, args.context)
            floor.append(t)
            out = work / f"run{rep}" / "Dataset501_DeepLesion"
            t, n_lesions = time_conversion(dl, out, args.np, args.context)
            conv.append(t)
            shutil.rmtree(out.parent)
        rss_parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        parse = time_parse(dl, work, args.parse_rows) if args.parse_rows else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**parse,
        "lesions": n_lesions, "pngs": n_png, "np": args.np, "context": args.context,
        "conversion_s": min(conv), "floor_s": min(floor),
        "lesions_per_s": n_lesions / min(conv), "floor_lesions_per_s": n_lesions / min(floor),
        "ratio": min(floor) / min(conv),
        "all_conversion_s": conv, "all_floor_s": floor,
        "peak_rss_parent_mb": rss_parent, "peak_rss_worker_mb": rss_worker,
    }


def report(m: dict) -> str:
    parse = [] if "parse_s" not in m else [
        f"DL_info.csv at real size: {m['parse_rows']} rows parsed in {m['parse_s']:.2f} s "
        f"({m['parse_rows'] / m['parse_s']:.0f} rows/s), planned in {m['plan_s']:.2f} s; "
        f"peak Python allocations {m['parse_plan_peak_mb']:.0f} MB "
        f"({m['parse_plan_peak_mb'] * 2**20 / m['parse_rows']:.0f} B/row; memory grows linearly with the rows)"]
    return "\n".join([
        f"lesions {m['lesions']}, PNGs decoded {m['pngs']}, processes {m['np']}, context {m['context']}",
        f"conversion   {m['conversion_s']:7.3f} s  {m['lesions_per_s']:8.1f} lesions/s"
        f"  (runs: {', '.join(f'{t:.3f}' for t in m['all_conversion_s'])})",
        f"decode floor {m['floor_s']:7.3f} s  {m['floor_lesions_per_s']:8.1f} lesions/s"
        f"  (runs: {', '.join(f'{t:.3f}' for t in m['all_floor_s'])})",
        f"ratio conversion/floor throughput: {m['ratio']:.2f} (goal >= 0.70)",
        f"peak RSS: parent {m['peak_rss_parent_mb']:.0f} MB, largest worker {m['peak_rss_worker_mb']:.0f} MB "
        "(getrusage self / children, measured before the DL_info size test)",
        *parse,
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=help_text(__doc__.split("\n\n")[0]))
    p.add_argument("--lesions", type=int, default=200, help="lesions to generate (default 200)")
    p.add_argument("--np", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--context", type=int, default=0, help="context slices per side (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each, best kept (default 3)")
    p.add_argument("--parse-rows", type=int, default=REAL_ROWS, help="rows of the parse benchmark (0: skip)")
    p.add_argument("--sample", help="use this existing DeepLesion-format folder instead of generating one")
    p.add_argument("--workdir", help="folder for the generated sample and the outputs (default: system temp dir)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON too")
    args = p.parse_args(argv)
    if args.sample:
        m = measure(args)
        print(report(m))
        if args.json:
            print(json.dumps(m))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_sample_", dir=args.workdir))
    try:
        sample = tmp / "DeepLesion"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from nnunet_ulseg.demo.corpus import make_sample; "
                        "make_sample(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]), progress=False)",
                        str(sample), str(args.lesions), str(args.seed)], check=True)
        print(f"generated {args.lesions} lesions with make_sample in {time.perf_counter() - t0:.0f} s", flush=True)
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        return subprocess.run([sys.executable, __file__, *rest, "--sample", str(sample)]).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
