"""Shared fixtures: a Prefect test harness for the whole session, CPU-only torch, small thread counts,
and a watcher of every change under a folder tree."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Iterator

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported; see flows/runtime.py
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The harness server's telemetry heartbeat races its own SQLite setup ("database is locked").
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    """A real (temporary, in-process) Prefect API for flow tests."""
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # No flow-run heartbeats, as for the CLI's embedded server (flows/runtime.py): each flow run would
    # otherwise wait ~0.7 s on exit for its heartbeat thread's 1-s sleep.
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings(updates={"flows.heartbeat_frequency": None}),
    ):
        yield


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# inotify(7): a file or folder created, written, closed after writing, removed, renamed, or its
# attributes changed (mode, mtime); reads and atime updates are not changes.
_IN_CHANGES = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
_IN_NONBLOCK = 0o4000


@contextlib.contextmanager
def _changes_under(root: os.PathLike[str] | str) -> Iterator[list[tuple[str, int]]]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(_IN_NONBLOCK) if hasattr(libc, "inotify_init1") else -1
    if fd < 0:
        pytest.skip("no inotify on this system")
    folders = {}
    for folder, _, _ in os.walk(root):
        folders[libc.inotify_add_watch(fd, os.fsencode(folder), _IN_CHANGES)] = folder
    changes: list[tuple[str, int]] = []
    try:
        yield changes
    finally:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode(errors="replace")
                changes.append((os.path.join(folders.get(wd, "?"), name), mask))
                offset += 16 + length
        os.close(fd)


@pytest.fixture
def changes_under():
    """``with changes_under(folder) as changes:`` lists (path, inotify mask) of every change made
    under ``folder`` while the block ran, even one undone before it ended (a temporary file written
    and removed). The list is filled when the block exits."""
    return _changes_under


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny convolutions gain nothing from intra-op threads, and on a
    shared CPU OpenMP barriers waiting for a descheduled thread made such tests 10-30x slower (a test
    that compares with a subprocess run at ``OMP_NUM_THREADS=1`` also needs the same floats)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
