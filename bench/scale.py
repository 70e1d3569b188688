"""Ingest at scale: 10⁵ and 10⁶ frames against ``tar cf`` of the same files, memory and bytes read.

For each size, a 32×64 toy export is made of hard-linked copies of a small rendered one, then, in the
same run:

* ``tar cf`` of the export folder (the baseline: reads every byte once, writes one archive);
* ``sim2real ingest`` as a user runs it (a subprocess, with a ``sim2real server`` this benchmark starts
  in a temporary ``PREFECT_HOME``), its process tree sampled from ``/proc`` every 0.2 s: peak RSS
  summed over all its processes, and ``rchar`` (bytes read by ``read`` calls, page cache included)
  of every process;
* the same for a 1-frame export: the fixed cost (imports, API traffic) subtracted from ``rchar``.

``--translate N M`` translates N and M frames with the tiny translator (random weights, CPU): peak RSS
of each, summed over the command's processes, and their ratio. ``--big F`` adds a Cityscapes-size case
(F frames of 1024×2048, labels converted through a non-identity ``classes.json``): frames/s of the
ingest with 1 and 2 workers against the label decode/convert/encode work alone (PIL decode, lookup
table, PIL encode of ``seg.png``) on one core.

    python bench/scale.py --frames 100000 1000000 --big 48 --translate 10000 100000
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
    command: list[str], env: dict[str, str], interval_s: float = 0.2, limit_s: float | None = None
) -> tuple[float, TreeSample, str]:
    """Run ``command``; wall seconds, the tree's samples, stdout. Raises on a non-zero exit. With
    ``limit_s``, the command is killed (SIGKILL) after that long and stdout is empty."""
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
    try:
        stdout, stderr = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        process.kill()  # its workers exit with it
        process.communicate()
        done.set()
        thread.join()
        return time.perf_counter() - start, sample, ""
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
    sizes = {(role, name): (base / role / name).stat().st_size for role in ROLES for name in entries[role]}
    made = 0
    copy = 0
    while made < frames:
        for index in range(min(len(entries["rgb"]), frames - made)):
            for role in ROLES:
                name = entries[role][index]
                stem, ext = os.path.splitext(name)
                os.link(base / role / name, dest / role / f"{stem}-c{copy:04d}{ext}")
                size += sizes[role, name]
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


def scale_case(
    frames: int, base: Path, work: Path, env: dict[str, str], fixed_rchar: int, limit_s: float | None = None
) -> dict:
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
    rchar = sum(sample.rchar.values())
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
        "ingest_cpu_s": round(sum(sample.cpu_s.values()), 1),
        "ingest_cpu_ms_per_frame": round(sum(sample.cpu_s.values()) / done * 1e3, 3),
        "peak_rss_MB": round(sample.peak_rss / 2**20),
        "processes": len(sample.processes),
        "rchar_MB": round(rchar / 1e6, 1),
        "rchar_over_export": round(rchar / export_bytes_done, 3),
        "rchar_less_fixed_over_export": round((rchar - fixed_rchar) / export_bytes_done, 3),
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
        cpu_per_frame = (sum(sample.cpu_s.values()) - fixed_cpu_s) / frames
        row[f"ingest_cpu_s_per_frame_{workers}workers"] = round(cpu_per_frame, 4)
        row[f"ingest_over_label_work_cpu_{workers}workers"] = round(cpu_per_frame / alone_s, 2)
        shutil.rmtree(root)
    row["ingest_1worker_over_label_work_time"] = round(
        row["label_work_alone_frames_per_s_1core"] / row["ingest_frames_per_s_1workers"], 2
    )
    shutil.rmtree(export)
    print(json.dumps(row), file=sys.stderr)
    return row


def tiny_translator(root: Path) -> str:
    """A fresh tiny translator (random weights) saved in ``root``'s registry; its id."""
    import torch

    from sim2real.models.translator.checkpoint import translator_weights
    from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
    from sim2real.models.translator.model import build_translator
    from sim2real.storage.registry import TranslatorRegistry

    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    torch.manual_seed(0)
    weights = translator_weights(build_translator(config))
    return TranslatorRegistry(str(root)).save(weights, {"config": config.model_dump(mode="json")})


def translate_case(
    frames: int, base: Path, work: Path, env: dict[str, str], limit_s: float | None = None
) -> dict:
    """Ingest ``frames`` frames (untimed), then translate them with the tiny translator, sampled."""
    export = work / f"export-tr-{frames}"
    root = work / f"root-tr-{frames}"
    linked_export(base, export, frames)
    _, _, ingested = ingest(export, root, "trsrc", env, [])
    shutil.rmtree(export)
    translator = tiny_translator(root)
    ref = f"{ingested['name']}@{ingested['version']}"
    command = [*CLI, "translate", ref, "--translator", translator, "--root", str(root), "--device", "cpu"]
    wall, sample, stdout = run_sampled([*command, "--json"], env, limit_s=limit_s)
    if stdout:
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["samples"] == frames, result
    else:  # stopped at the limit: count the finished shards
        parts = list(root.glob("datasets/trsrc-translated/*/_parts/*.json"))
        done = sum(json.loads(p.read_text())["shard"]["nsamples"] for p in parts)
        result = {"samples": done, "shards": len(parts), "stopped_at_s": round(wall)}
    shutil.rmtree(root)
    row = {
        "frames": frames,
        "translate_s": round(wall, 1),
        "stopped_after_limit": "stopped_at_s" in result,
        "frames_done": result["samples"],
        "translate_frames_per_s": round(result["samples"] / wall),
        "peak_rss_MB": round(sample.peak_rss / 2**20),
        "processes": len(sample.processes),
        "shards": result["shards"],
    }
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
                "cpu_s": round(sum(sample.cpu_s.values()), 2),
                "peak_rss_MB": round(sample.peak_rss / 2**20),
                "rchar": sum(sample.rchar.values()),
                "load_avg_1min": round(os.getloadavg()[0], 1),
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
    parser.add_argument("--translate", type=int, nargs="*", default=[], help="frames to translate")
    parser.add_argument("--limit-s", type=float, default=None, help="stop each ingest after this long")
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
        report["one_frame_with_server"] = one_frame(args.out, work, env)
        base = base_export(args.out, 1000, (32, 64))
        if args.big:
            report["big"] = big_case(args.out, work, env, args.big, report["one_frame_with_server"]["cpu_s"])
        if args.translate:
            report["translate"] = [translate_case(n, base, work, env, args.limit_s) for n in args.translate]
            low, high = report["translate"][0], report["translate"][-1]
            report["translate_rss_ratio"] = round(high["peak_rss_MB"] / low["peak_rss_MB"], 3)
        report["scale"] = []
        for frames in args.frames:
            report["scale"].append(
                scale_case(frames, base, work, env, report["one_frame_with_server"]["rchar"], args.limit_s)
            )
        if len(report["scale"]) > 1:
            low, high = report["scale"][0], report["scale"][-1]
            report["ingest_rss_ratio"] = round(high["peak_rss_MB"] / low["peak_rss_MB"], 3)
        report["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(report, indent=1))
    finally:
        subprocess.run([*CLI, "server", "stop"], env=env)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
