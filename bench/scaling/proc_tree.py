"""Measure a command's process tree: peak RSS summed at one instant, CPU, and bytes read and written.

:func:`run_sampled` runs the command under ``reaper.py`` (exact totals over every process the command
ever had, each counted once) and samples the tree from ``/proc`` every 0.2 s (peak RSS summed over
the tree at one instant; each process's last-seen counters, for the breakdown by kind of process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
REAPER = str(Path(__file__).with_name("reaper.py"))


@dataclass
class TreeSample:
    """What was measured of a command's process tree."""

    peak_rss: int = 0  # bytes, summed over the tree (the reaper left out) at one instant
    peak_rss_by_kind: dict[str, int] = field(default_factory=dict)  # the same instant, by kind of process
    total: dict[str, float] = field(default_factory=dict)  # reaper.py's exact totals (rchar, wchar, cpu_s...)
    rchar: dict[int, int] = field(default_factory=dict)  # last seen per pid (reaped children folded in)
    cpu_s: dict[int, float] = field(default_factory=dict)  # user + system, last seen per pid
    kinds: dict[int, str] = field(default_factory=dict)  # pid -> what it is (cli, worker, ...)

    @property
    def processes(self) -> int:
        """Processes seen (the reaper left out)."""
        return len(self.kinds)

    def rchar_by_kind(self) -> dict[str, float]:
        """MB read by kind of process: each kind's last-seen ``rchar`` except the command's own process
        (``cli``), which is the exact total less the others (its last sample also holds the counters of
        the workers it reaped). A process's reads in its last 0.2 s are thus counted as the CLI's."""
        totals: dict[str, int] = {}
        for pid, value in self.rchar.items():
            kind = self.kinds[pid]
            if kind != "cli":
                totals[kind] = totals.get(kind, 0) + value
        totals["cli"] = int(self.total["rchar"]) - sum(totals.values())
        return {kind: round(value / 1e6, 1) for kind, value in sorted(totals.items())}


def proc_tree(root_pid: int) -> list[int]:
    """``root_pid`` and its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
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
        ("multiprocessing.forkserver", "forkserver"),
        ("resource_tracker", "tracker"),
        ("main()", "cli"),
    ):
        if marker in cmdline:
            return kind
    return cmdline.split("\0")[0].rsplit("/", 1)[-1]


def _sample(reaper_pid: int, out: TreeSample) -> None:
    total = 0
    by_kind: dict[str, int] = {}
    for member in proc_tree(reaper_pid)[1:]:
        try:
            with open(f"/proc/{member}/statm") as handle:
                rss = int(handle.read().split()[1]) * PAGE
            with open(f"/proc/{member}/stat") as handle:
                stat = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{member}/io") as handle:
                fields = dict(line.split(": ") for line in handle.read().splitlines())
            if member not in out.kinds:
                with open(f"/proc/{member}/cmdline", "rb") as handle:
                    out.kinds[member] = _kind(handle.read().decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue
        total += rss
        by_kind[out.kinds[member]] = by_kind.get(out.kinds[member], 0) + rss
        out.cpu_s[member] = (int(stat[11]) + int(stat[12])) / TICKS
        out.rchar[member] = int(fields["rchar"])
    if total > out.peak_rss:
        out.peak_rss, out.peak_rss_by_kind = total, by_kind


def run_sampled(
    command: list[str], env: dict[str, str], interval_s: float = 0.2, limit_s: float | None = None
) -> tuple[float, TreeSample, str]:
    """Run ``command``; wall seconds, the tree's measures, stdout. Raises on a non-zero exit. With
    ``limit_s``, the command is killed (SIGKILL, as the OOM killer would) after that long and stdout
    is empty."""
    sample = TreeSample()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as result_file:
        result_path = result_file.name
    start = time.perf_counter()
    reaper = subprocess.Popen(
        [sys.executable, REAPER, result_path, "--", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            _sample(reaper.pid, sample)
            done.wait(interval_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    stopped = False
    try:
        stdout, stderr = reaper.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        stopped = True
        for pid in proc_tree(reaper.pid)[1:2]:  # the command itself: its workers end with it
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = reaper.communicate()
    wall = time.perf_counter() - start
    done.set()
    thread.join()
    sample.total = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    if stopped:
        return wall, sample, ""
    if reaper.returncode:
        raise RuntimeError(f"{command[3:]} failed ({reaper.returncode}):\n{stderr[-3000:]}")
    return wall, sample, stdout
