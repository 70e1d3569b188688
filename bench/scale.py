"""Ingest at scale: 10⁵ and 10⁶ frames against ``tar cf`` of the same files, memory and bytes read.

For each size, a 32×64 toy export is made of hard-linked copies of a small rendered one, then, in the
same run:

* ``tar cf`` of the export folder (the baseline: reads every byte once, writes one archive);
* ``sim2real ingest`` as a user runs it (a subprocess, with a ``sim2real server`` this benchmark starts
  in a temporary ``PREFECT_HOME``), its process tree sampled from ``/proc`` every 0.2 s: peak RSS
  summed over all its processes, and ``rchar`` (bytes read by ``read`` calls, page cache included)
  of every process;
* the same for a 1-frame export: the fixed cost (imports, API traffic) subtracted from ``rchar``.

``--big`` adds a Cityscapes-size case (1024×2048, labels converted through a non-identity
``classes.json``): frames/s of the ingest against the label decode/convert/encode work alone (PIL
decode, lookup table, PIL encode of ``seg.png``) in one process. ``--translate N`` adds translate of
N frames with the tiny translator at two sizes (flatness of its memory).

    python bench/scale.py --frames 100000 1000000 --big
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sim2real.storage.sources.toysim import ToySimConfig, write_export

ROLES = ("rgb", "seg", "inst", "boxes", "depth", "meta")
TICKS = os.sysconf("SC_CLK_TCK")
CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]


@dataclass
class TreeSample:
    """What the /proc sampler saw of a process tree."""

    peak_rss: int = 0  # bytes, summed over the tree at one instant
    rchar: dict[int, int] = field(default_factory=dict)  # last seen per pid
    read_bytes: dict[int, int] = field(default_factory=dict)
    cpu_s: dict[int, float] = field(default_factory=dict)  # user + system, last seen per pid
    processes: set[int] = field(default_factory=set)
    kinds: dict[int, str] = field(default_factory=dict)  # pid -> what it is (ingest CLI, worker, ...)

    def rchar_by_kind(self) -> dict[str, int]:
        """MB read (rchar) by process kind."""
        totals: dict[str, int] = {}
        for pid, value in self.rchar.items():
            kind = self.kinds.get(pid, "?")
            totals[kind] = totals.get(kind, 0) + value
        return {kind: round(value / 1e6, 1) for kind, value in totals.items()}


def _proc_tree(root_pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def _kind(cmdline: str) -> str:
    for marker, kind in (
        ("multiprocessing.spawn", "worker"),
        ("resource_tracker", "tracker"),
        ("main()", "cli"),
    ):
        if marker in cmdline:
            return kind
    return cmdline.split("\0")[0].rsplit("/", 1)[-1]


def _sample(pid: int, out: TreeSample) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for member in _proc_tree(pid):
        try:
            with open(f"/proc/{member}/statm") as handle:
                total += int(handle.read().split()[1]) * page
            with open(f"/proc/{member}/stat") as handle:
                stat = handle.read().rsplit(")", 1)[1].split()
            out.cpu_s[member] = (int(stat[11]) + int(stat[12])) / TICKS
            with open(f"/proc/{member}/io") as handle:
                fields = dict(line.split(": ") for line in handle.read().splitlines())
            out.rchar[member] = int(fields["rchar"])
            if member not in out.kinds:
                with open(f"/proc/{member}/cmdline", "rb") as handle:
                    out.kinds[member] = _kind(handle.read().decode(errors="replace"))
            out.read_bytes[member] = int(fields["read_bytes"])
            out.processes.add(member)
        except (OSError, ValueError):
            continue
    out.peak_rss = max(out.peak_rss, total)


def run_sampled(
    command: list[str], env: dict[str, str], interval_s: float = 0.2
) -> tuple[float, TreeSample, str]:
    """Run ``command``; wall seconds, the tree's samples, stdout. Raises on a non-zero exit."""
    sample = TreeSample()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            _sample(process.pid, sample)
            done.wait(interval_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    thread.join()
    if process.returncode:
        raise RuntimeError(f"{command[3:]} failed ({process.returncode}):\n{stderr[-3000:]}")
    return wall, sample, stdout


def base_export(out: Path, frames: int, size: tuple[int, int]) -> Path:
    """A rendered toy export, reused across runs."""
    path = out / f"base-{frames}-{size[0]}x{size[1]}"
    if not (path / "classes.json").exists():
        tmp = path.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_export(tmp, ToySimConfig(style="sim", height=size[0], width=size[1], seed=7), frames)
        tmp.rename(path)
    return path


def linked_export(base: Path, dest: Path, frames: int) -> int:
    """``frames`` frames as hard links to ``base``'s files (keys ``{key}-c{copy}``); its size in bytes."""
    shutil.rmtree(dest, ignore_errors=True)
    for role in ROLES:
        (dest / role).mkdir(parents=True)
    shutil.copy(base / "classes.json", dest / "classes.json")
    size = (dest / "classes.json").stat().st_size
    entries = {role: sorted(os.listdir(base / role)) for role in ROLES}
    made = 0
    copy = 0
    while made < frames:
        for index in range(min(len(entries["rgb"]), frames - made)):
            for role in ROLES:
                name = entries[role][index]
                stem, ext = os.path.splitext(name)
                os.link(base / role / name, dest / role / f"{stem}-c{copy:04d}{ext}")
                size += (base / role / name).stat().st_size
            made += 1
        copy += 1
    return size


def tar_baseline(export: Path, work: Path) -> float:
    """Seconds for ``tar cf`` of the export folder into one archive on the same disk."""
    archive = work / "export.tar"
    start = time.perf_counter()
    subprocess.run(["tar", "cf", str(archive), "-C", str(export), "."], check=True)
    wall = time.perf_counter() - start
    archive.unlink()
    return wall


def ingest(
    export: Path, root: Path, name: str, env: dict[str, str], extra: list[str]
) -> tuple[float, TreeSample, dict]:
    wall, sample, stdout = run_sampled(
        [*CLI, "ingest", str(export), "--name", name, "--root", str(root), "--json", *extra], env
    )
    return wall, sample, json.loads(stdout.strip().splitlines()[-1])


def scale_case(frames: int, base: Path, work: Path, env: dict[str, str], fixed_rchar: int) -> dict:
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
    wall, sample, result = ingest(export, root, f"scale{frames}", env, [])
    assert result["samples"] == frames, result
    rchar = sum(sample.rchar.values())
    row = {
        "frames": frames,
        "export_MB": round(export_bytes / 1e6, 1),
        "tar_s": round(tar_s, 2),
        "tar_frames_per_s": round(frames / tar_s),
        "tar_MB_per_s": round(export_bytes / 1e6 / tar_s, 1),
        "ingest_s": round(wall, 2),
        "ingest_frames_per_s": round(frames / wall),
        "ingest_MB_per_s": round(export_bytes / 1e6 / wall, 1),
        "ingest_over_tar_time": round(wall / tar_s, 2),
        "ingest_cpu_s": round(sum(sample.cpu_s.values()), 1),
        "ingest_cpu_ms_per_frame": round(sum(sample.cpu_s.values()) / frames * 1e3, 3),
        "peak_rss_MB": round(sample.peak_rss / 2**20),
        "processes": len(sample.processes),
        "rchar_MB": round(rchar / 1e6, 1),
        "rchar_over_export": round(rchar / export_bytes, 3),
        "rchar_less_fixed_over_export": round((rchar - fixed_rchar) / export_bytes, 3),
        "rchar_MB_by_process": sample.rchar_by_kind(),
        "shards": result["shards"],
    }
    shutil.rmtree(export)
    shutil.rmtree(root)
    print(json.dumps(row), file=sys.stderr)
    return row


def label_work_alone(base: Path, repeats: int) -> float:
    """Seconds per frame of decoding, converting (lookup table) and encoding ``seg.png``, one process."""
    lut = _non_identity_lut()
    files = sorted((base / "seg").iterdir())
    start = time.process_time()
    for _ in range(repeats):
        for path in files:
            ids = np.asarray(Image.open(io.BytesIO(path.read_bytes())))
            buffer = io.BytesIO()
            Image.fromarray(lut[ids].astype(np.uint8), mode="L").save(buffer, format="PNG")
    return (time.process_time() - start) / (repeats * len(files))


def _non_identity_lut() -> np.ndarray:
    lut = np.arange(256, dtype=np.int16)
    lut[:19] = (np.arange(19) + 1) % 19  # what a classes.json numbering ids i -> trainId (i+1) % 19 does
    return lut


def convert_classes(export: Path) -> None:
    """Renumber classes.json so that seg.png must be converted (id i is the class of trainId (i+1) % 19)."""
    spec = json.loads((export / "classes.json").read_text())
    by_id = {c["id"]: c["name"] for c in spec["classes"]}
    spec["classes"] = [{"id": i, "name": by_id[(i + 1) % 19]} for i in range(19) if (i + 1) % 19 in by_id]
    (export / "classes.json").write_text(json.dumps(spec))


def big_case(out: Path, work: Path, env: dict[str, str], frames: int) -> dict:
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
    }
    for workers in (1, 2):
        root = work / f"root-big-{workers}"
        wall, sample, result = ingest(export, root, "big", env, ["--workers", str(workers)])
        assert result["samples"] == frames, result
        row[f"ingest_frames_per_s_{workers}workers"] = round(frames / wall, 2)
        row[f"peak_rss_MB_{workers}workers"] = round(sample.peak_rss / 2**20)
        shutil.rmtree(root)
    row["ingest_1worker_over_label_work_time"] = round(
        row["label_work_alone_frames_per_s_1core"] / row["ingest_frames_per_s_1workers"], 2
    )
    shutil.rmtree(export)
    print(json.dumps(row), file=sys.stderr)
    return row


def one_frame(out: Path, work: Path, env: dict[str, str]) -> dict:
    base = base_export(out, 1, (32, 64))
    root = work / "root-one"
    rows = []
    for _attempt in range(2):
        shutil.rmtree(root, ignore_errors=True)
        wall, sample, result = ingest(base, root, "one", env, [])
        rows.append(
            {
                "wall_s": round(wall, 2),
                "peak_rss_MB": round(sample.peak_rss / 2**20),
                "rchar": sum(sample.rchar.values()),
            }
        )
    shutil.rmtree(root)
    best = min(rows, key=lambda r: r["wall_s"])
    print(json.dumps({"one_frame": rows}), file=sys.stderr)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="*", default=[100_000])
    parser.add_argument("--big", type=int, default=0, help="frames of the 1024x2048 case (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/scale"))
    parser.add_argument("--keep-server", action="store_true", help="leave PREFECT_API_URL's server as it is")
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
        report["one_frame_with_server"] = one_frame(args.out, work, env)
        base = base_export(args.out, 1000, (32, 64))
        report["scale"] = [
            scale_case(n, base, work, env, report["one_frame_with_server"]["rchar"]) for n in args.frames
        ]
        if args.big:
            report["big"] = big_case(args.out, work, env, args.big)
        report["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(report, indent=1))
    finally:
        subprocess.run([*CLI, "server", "stop"], env=env)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
