"""The ingest cases of the scale benchmark: ``sim2real ingest`` as a user runs it, measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scaling.exports import linked_export, tar_baseline
from scaling.proc_tree import REAPER, TreeSample, run_sampled

CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]


def ingest(
    export: Path, root: Path, name: str, env: dict[str, str], extra: list[str], limit_s: float | None = None
) -> tuple[float, TreeSample, dict]:
    """Run ``sim2real ingest``; with ``limit_s``, stop it then and count the frames of finished shards."""
    command = [*CLI, "ingest", str(export), "--name", name, "--root", str(root), "--json", *extra]
    wall, sample, stdout = run_sampled(command, env, limit_s=limit_s)
    if stdout:
        return wall, sample, json.loads(stdout.strip().splitlines()[-1])
    parts = list(root.glob(f"datasets/{name}/_staging/*/_parts/*.json"))
    done = sum(json.loads(p.read_text())["shard"]["nsamples"] for p in parts)
    return wall, sample, {"samples": done, "shards": len(parts), "stopped_at_s": round(wall)}


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: (size, mtime in ns), to tell whether a command wrote there."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            path = os.path.join(folder, entry)
            info = os.lstat(path)
            state[path] = (info.st_size, info.st_mtime_ns)
    info = os.lstat(root)
    state[str(root)] = (info.st_size, info.st_mtime_ns)
    return state


def worker_import_rchar(env: dict[str, str]) -> int:
    """Bytes a shard worker reads to start (its imports), measured like the ingest itself."""
    result = Path(env["PREFECT_HOME"]).parent / "worker-import.json"
    # what a shard worker loads before its first frame: the ingest code, and pandas, which pyarrow
    # imports on its first array when it is installed
    code = "import sim2real.storage.ingest, multiprocessing.spawn, pyarrow; pyarrow.array([1])"
    subprocess.run(
        [sys.executable, REAPER, str(result), "--", sys.executable, "-c", code], env=env, check=True
    )
    return int(json.loads(result.read_text())["rchar"])


def scale_case(
    frames: int, base: Path, work: Path, env: dict[str, str], fixed: dict, limit_s: float | None = None
) -> dict:
    """Ingest ``frames`` hard-linked frames against ``tar cf`` of them; then the same export again.

    ``fixed``: bytes read whatever the size (``cli``: a 1-frame ingest; ``worker``: a worker's imports).
    """
    export = work / f"export-{frames}"
    root = work / f"root-{frames}"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    export_bytes = linked_export(base, export, frames)
    print(
        f"[{frames}] linked export: {export_bytes / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    tar_s = tar_baseline(export, work)
    wall, sample, result = ingest(export, root, f"scale{frames}", env, [], limit_s)
    partial = "stopped_at_s" in result
    assert partial or result["samples"] == frames, result
    done = result["samples"]  # frames in finished shards (all of them unless stopped)
    export_bytes_done = export_bytes * done / frames
    rchar = sample.total["rchar"]
    workers = sum(1 for kind in sample.kinds.values() if kind == "worker")
    fixed_rchar = fixed["cli"] + workers * fixed["worker"]
    row = {
        "frames": frames,
        "export_MB": round(export_bytes / 1e6, 1),
        "tar_s": round(tar_s, 2),
        "tar_frames_per_s": round(frames / tar_s),
        "tar_MB_per_s": round(export_bytes / 1e6 / tar_s, 1),
        "ingest_s": round(wall, 2),
        "stopped_after_limit": partial,
        "frames_done": done,
        "ingest_frames_per_s": round(done / wall),
        "ingest_MB_per_s": round(export_bytes_done / 1e6 / wall, 1),
        "ingest_over_tar_time_per_frame": round((wall / done) / (tar_s / frames), 2),
        "ingest_cpu_s": sample.total["cpu_s"],
        "ingest_cpu_ms_per_frame": round(sample.total["cpu_s"] / done * 1e3, 3),
        "peak_rss_MB": round(sample.peak_rss / 2**20),
        "peak_rss_MB_by_process": {k: round(v / 2**20) for k, v in sorted(sample.peak_rss_by_kind.items())},
        "processes": sample.processes,
        "rchar_MB": round(rchar / 1e6, 1),
        "rchar_over_export": round(rchar / export_bytes_done, 3),
        "fixed_rchar_MB": round(fixed_rchar / 1e6, 1),
        "rchar_less_fixed_over_export": round((rchar - fixed_rchar) / export_bytes_done, 3),
        "rchar_MB_by_process": sample.rchar_by_kind(),
        "read_bytes_MB": round(sample.total["read_bytes"] / 1e6, 1),  # from the disk (page cache misses)
        "wchar_MB": round(sample.total["wchar"] / 1e6, 1),
        "shards": result["shards"],
    }
    if not partial:
        row["repeat"] = repeat_ingest(export, root, f"scale{frames}", env, result["version"])
    shutil.rmtree(export)
    shutil.rmtree(root)
    print(json.dumps(row), file=sys.stderr)
    return row


def repeat_ingest(export: Path, root: Path, name: str, env: dict[str, str], version: str) -> dict:
    """The same export again: the same version, and whether anything under the root changed."""
    before = tree_state(root)
    wall, sample, result = ingest(export, root, name, env, [])
    assert result["version"] == version and not result["created"], result
    after = tree_state(root)
    changed = sorted(set(before.items()) ^ set(after.items()))
    return {
        "wall_s": round(wall, 2),
        "cpu_s": sample.total["cpu_s"],
        "peak_rss_MB": round(sample.peak_rss / 2**20),
        "rchar_MB": round(sample.total["rchar"] / 1e6, 1),
        "wchar_MB": round(sample.total["wchar"] / 1e6, 2),  # API and log traffic included
        "root_entries_changed": len(changed),
        "same_version": True,
    }


def one_frame(base: Path, work: Path, env: dict[str, str]) -> dict:
    """A 1-frame ingest, twice (the first pays cold caches): the fixed cost of a command."""
    root = work / "root-one"
    rows = []
    for _attempt in range(2):
        shutil.rmtree(root, ignore_errors=True)
        wall, sample, _ = ingest(base, root, "one", env, [])
        rows.append(
            {
                "wall_s": round(wall, 2),
                "cpu_s": sample.total["cpu_s"],
                "peak_rss_MB": round(sample.peak_rss / 2**20),
                "rchar": int(sample.total["rchar"]),
                "load_avg_1min": round(os.getloadavg()[0], 1),
            }
        )
    shutil.rmtree(root)
    print(json.dumps({"one_frame": rows}), file=sys.stderr)
    return min(rows, key=lambda r: r["wall_s"])
