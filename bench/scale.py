"""Ingest at scale: 10⁵ and 10⁶ frames against ``tar cf`` of the same files, memory and bytes read.

For each size, a 32×64 toy export is made of hard-linked copies of a small rendered one, then, in the
same run:

* ``tar cf`` of the export folder (the baseline: reads every byte once, writes one archive);
* ``sim2real ingest`` as a user runs it (a subprocess, with a ``sim2real server`` this benchmark starts
  in a temporary ``PREFECT_HOME``), measured by ``scaling/proc_tree.py``: peak RSS summed over the
  command's processes at one instant (sampled every 0.2 s), and bytes read (``rchar``: ``read`` calls,
  page cache included) and written, CPU, summed exactly over every process the command had (each
  counted once), with a breakdown by kind of process;
* the same ingest again (same version, and whether anything under the data root changed);
* a 1-frame export: the fixed cost of a command (its imports, API traffic), subtracted from ``rchar``
  with each shard worker's imports.

``--translate N M`` translates N and M frames with the tiny translator (random weights, CPU): peak RSS
of each, summed over the command's processes, their ratio, and bytes read against the source shards.
``--big F`` adds a Cityscapes-size case (F frames of 1024×2048, labels converted through a
non-identity ``classes.json``): frames/s of the ingest with 1 and 2 workers against the label
decode/convert/encode work alone (PIL decode, lookup table, PIL encode of ``seg.png``) on one core.

    python bench/scale.py --frames 100000 1000000 --big 48 --translate 10000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaling.exports import base_export, convert_classes, label_work_alone, linked_export
from scaling.ingest_case import CLI, ingest, one_frame, scale_case, worker_import_rchar
from scaling.translate_case import translate_case


def big_case(out: Path, work: Path, env: dict[str, str], frames: int, fixed_cpu_s: float) -> dict:
    """Frames/s of ingest at 1024x2048 (labels converted) and, load-independent, its CPU per frame (less
    the fixed cost of a 1-frame ingest) over the CPU per frame of the label work alone."""
    base = base_export(out, 6, (1024, 2048))
    export = work / "export-big"
    linked_export(base, export, frames)
    (export / "classes.json").unlink()
    shutil.copy(base / "classes.json", export / "classes.json")
    convert_classes(export)
    alone_s = label_work_alone(base, repeats=2)
    row: dict = {
        "frames": frames,
        "size": "1024x2048",
        "label_work_alone_frames_per_s_1core": round(1 / alone_s, 2),
        "label_work_alone_cpu_s_per_frame": round(alone_s, 4),
    }
    for workers in (1, 2):
        root = work / f"root-big-{workers}"
        wall, sample, result = ingest(export, root, "big", env, ["--workers", str(workers)])
        assert result["samples"] == frames, result
        row[f"ingest_frames_per_s_{workers}workers"] = round(frames / wall, 2)
        row[f"peak_rss_MB_{workers}workers"] = round(sample.peak_rss / 2**20)
        cpu_per_frame = (sample.total["cpu_s"] - fixed_cpu_s) / frames
        row[f"ingest_cpu_s_per_frame_{workers}workers"] = round(cpu_per_frame, 4)
        row[f"ingest_over_label_work_cpu_{workers}workers"] = round(cpu_per_frame / alone_s, 2)
        shutil.rmtree(root)
    row["ingest_1worker_over_label_work_time"] = round(
        row["label_work_alone_frames_per_s_1core"] / row["ingest_frames_per_s_1workers"], 2
    )
    shutil.rmtree(export)
    print(json.dumps(row), file=sys.stderr)
    return row


def marginal(low: dict, high: dict, input_key: str) -> float | None:
    """Bytes read per input byte between two sizes of one run (fixed costs such as imports cancel);
    None when either run was stopped early."""
    if low["stopped_after_limit"] or high["stopped_after_limit"]:
        return None
    return round((high["rchar_MB"] - low["rchar_MB"]) / (high[input_key] - low[input_key]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="*", default=[100_000])
    parser.add_argument("--big", type=int, default=0, help="frames of the 1024x2048 case (0: skip)")
    parser.add_argument("--translate", type=int, nargs="*", default=[], help="frames to translate")
    parser.add_argument("--limit-s", type=float, default=None, help="stop each command after this long")
    parser.add_argument("--out", type=Path, default=Path("bench/out/scale"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.out))
    home = work / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(home)
    started = time.perf_counter()
    subprocess.run([*CLI, "server", "start"], env=env, check=True)
    print(f"server up in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    try:
        report: dict = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
        one = one_frame(base_export(args.out, 1, (32, 64)), work, env)
        report["one_frame_with_server"] = one
        base = base_export(args.out, 1000, (32, 64))
        if args.big:
            report["big"] = big_case(args.out, work, env, args.big, one["cpu_s"])
        if args.translate:
            report["translate"] = [translate_case(n, base, work, env, args.limit_s) for n in args.translate]
            low, high = report["translate"][0], report["translate"][-1]
            report["translate_rss_ratio"] = round(high["peak_rss_MB"] / low["peak_rss_MB"], 3)
            report["translate_marginal_rchar_over_source"] = marginal(low, high, "source_shards_MB")
        fixed = {"cli": one["rchar"], "worker": worker_import_rchar(env)}
        report["fixed_rchar_MB"] = {kind: round(value / 1e6, 1) for kind, value in fixed.items()}
        report["scale"] = [scale_case(n, base, work, env, fixed, args.limit_s) for n in args.frames]
        if len(report["scale"]) > 1:
            low, high = report["scale"][0], report["scale"][-1]
            report["ingest_rss_ratio"] = round(high["peak_rss_MB"] / low["peak_rss_MB"], 3)
            report["ingest_marginal_rchar_over_export"] = marginal(low, high, "export_MB")
        report["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(report, indent=1))
    finally:
        subprocess.run([*CLI, "server", "stop"], env=env)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
