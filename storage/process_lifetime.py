"""Worker processes that end with the process that owns them.

A pool worker whose owner is killed with ``kill -9`` (as the OOM killer would) is otherwise left
running. ``PR_SET_PDEATHSIG`` does not cover pool workers: the kernel sends its signal when the *thread*
that started the child ends, and pool workers are started from whichever thread submits first. Nor does
watching the parent: a ``forkserver`` worker's parent is the fork server, which outlives a killed owner.
So each worker polls its owner's pid.
"""

from __future__ import annotations

import os
import threading
import time


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(") ")[2][:1] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def exit_with_owner(owner_pid: int | None = None, poll_s: float = 1.0) -> None:
    """Exit this process (``os._exit(1)``) within ``poll_s`` seconds of its owner's death.

    ``owner_pid`` defaults to the parent. A daemon thread polls it; use this as a pool's
    ``initializer`` (with ``initargs=(os.getpid(),)`` for ``forkserver`` pools).
    """
    owner = os.getppid() if owner_pid is None else owner_pid

    def watch() -> None:
        while process_alive(owner):
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()
