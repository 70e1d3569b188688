"""Processes that do a flow's CPU work: a pool of plain worker processes, and the rule that every
child dies with its parent.

Shard tasks are threads of the flow's process under Prefect's thread runner; pure-Python codec work
there runs on one core (the GIL). :func:`run_in_pool` runs such a function in a process pool of
``spawn``-ed workers that import only what the function needs: ingest's shard work imports
``sim2real.storage`` (no Prefect, no torch; ~60 MB each), translate's on CPU imports torch and keeps
the engines it built for the rest of the run (both flows stop the workers at their end). Every worker
watches the process that started the pool and exits when it is gone
(``storage.process_lifetime.exit_with_owner``), so a flow killed with ``kill -9`` leaves no worker
behind; a worker killed on its own (the OOM killer) breaks the pool, which is dropped so that the
task's retry runs on a fresh one, or, when the pool broke before any call returned (its workers cannot
start), in the caller's thread for the rest of the run.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from sim2real.storage.process_lifetime import exit_with_owner

T = TypeVar("T")
PR_SET_PDEATHSIG = 1
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_pool_worked = False  # a call returned from the current pool
_start_failed = False  # a pool broke before any call returned: work in the caller until shutdown_pool()
# Resolved now, not in a freshly forked child (``preexec_fn``), where loading a library is unsafe.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).

    A no-op elsewhere. Call it in the child (a ``preexec_fn`` or a pool initializer).
    """
    if _LIBC is None:
        return
    _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def run_in_pool(workers: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in the shared pool of ``workers`` processes (in this thread when ``workers``
    is 1). ``function`` and its arguments must pickle; the pool is started on first use and resized
    when ``workers`` changes.

    A pool that breaks before any of its calls returned means its workers cannot start here (a script
    that runs a flow at module level without ``if __name__ == "__main__":`` makes each spawn-ed worker
    run that flow again while it imports the script): the caller sees that failure, and every later call
    until :func:`shutdown_pool` runs in this thread instead, with a warning, so that a retry completes.
    """
    global _start_failed
    if workers <= 1 or _start_failed:
        return function(*args)
    pool = _get_pool(workers)
    try:
        result = pool.submit(_call_in_worker, function, *args).result()
    except BrokenProcessPool:
        # A worker died (the OOM killer, kill -9): this pool takes no more work. Drop it, so that the
        # task's retry (and every later call) starts a fresh one, and let the caller see the failure.
        with _lock:  # decided once, by the first call that sees this pool break
            never_worked = pool is _pool and not _pool_worked and not _start_failed
            _start_failed = _start_failed or never_worked
        if never_worked:
            logging.getLogger(__name__).warning(
                "worker processes broke before finishing any work (a script that starts a flow at module "
                "level needs `if __name__ == '__main__':`); the rest of this run works in this process"
            )
        _discard(pool)
        raise
    except Exception:
        _mark_worked(pool)  # the call ran in a worker and raised: the workers do start
        raise
    _mark_worked(pool)
    return result


def refuse_in_starting_worker(flow: str) -> None:
    """Raise ``RuntimeError`` when this process is a worker that Python's ``spawn`` started and that is
    still importing its parent's main script: a flow started there (a script without
    ``if __name__ == "__main__":``) would start workers of its own and fail slowly, shard by shard."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # the flag spawn itself checks
        raise RuntimeError(
            f"the {flow} flow was started by a worker process importing its parent's script: "
            "put the script's flow call under `if __name__ == '__main__':`"
        )


def _mark_worked(pool: ProcessPoolExecutor) -> None:
    global _pool_worked
    with _lock:
        if pool is _pool:
            _pool_worked = True


def _call_in_worker(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker, its exception made safe to send back: one that does not survive
    pickling (webdataset's ``ReadError`` holds an open file) would come back as a pickling error that
    names neither the file nor the reason, or break the pool."""
    try:
        return function(*args)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_size, _pool_worked
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_owner,
                # this process's pid, not the worker's parent at start: a worker that starts after its
                # owner was killed would otherwise watch init (pid 1) and outlive it
                initargs=(os.getpid(),),
            )
            _pool_size = workers
            _pool_worked = False
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget ``pool`` if it is still the shared one (its surviving workers are stopped, not awaited)."""
    global _pool, _pool_size
    with _lock:
        if _pool is pool:
            _pool, _pool_size = None, 0
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown_pool() -> None:
    """Stop the pool's workers (the flow calls this when its shard tasks are done); the next call of
    :func:`run_in_pool` tries worker processes again."""
    global _pool, _pool_size, _pool_worked, _start_failed
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size, _pool_worked, _start_failed = None, 0, False, False


atexit.register(shutdown_pool)
