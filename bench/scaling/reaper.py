"""Run a command and report exactly what its whole process tree read, wrote and spent in CPU.

    python bench/scaling/reaper.py RESULT.json -- COMMAND ...

Linux folds the I/O counters (``/proc/<pid>/io``) and CPU times of a child into its parent's when the
parent reaps it. So this process (which reads nothing itself while it waits) makes itself the
*subreaper* of everything the command starts (``PR_SET_CHILD_SUBREAPER``: orphans come back to it),
waits for the command, reaps whatever outlived it, and writes the difference of its own counters
before and after: the sum over every process the command ever had, short-lived ones included, each
counted once. A sampler that adds up ``/proc/<pid>/io`` per pid instead counts a reaped child twice
(in its own last sample and again in its parent's).

``RESULT.json``: ``{"rchar", "wchar", "read_bytes", "write_bytes", "syscr", "cpu_s", "returncode",
"left_running"}`` (bytes, counts, seconds; ``left_running``: descendants still alive 30 s after the
command ended, whose counters are then missing).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
ORPHAN_WAIT_S = 30.0


def io_counters() -> dict[str, int]:
    """This process's ``/proc/self/io`` counters (reaped descendants included)."""
    with open("/proc/self/io") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle.read().splitlines())}


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    result_path, separator, *command = sys.argv[1:]
    assert separator == "--" and command, __doc__
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    before, cpu_before = io_counters(), _cpu_of_children()
    returncode = subprocess.call(command)  # stdout/stderr inherited: this process reads nothing
    deadline = time.monotonic() + ORPHAN_WAIT_S
    left_running = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                left_running = 1
                break
            time.sleep(0.05)
    after = io_counters()
    report = {
        key: after[key] - before[key] for key in ("rchar", "wchar", "read_bytes", "write_bytes", "syscr")
    }
    report |= {
        "cpu_s": round(_cpu_of_children() - cpu_before, 3),
        "returncode": returncode,
        "left_running": left_running,
    }
    with open(result_path, "w") as handle:
        json.dump(report, handle)
    sys.exit(returncode)


if __name__ == "__main__":
    main()
