"""Decode workers end with the process that owns them, even when it is killed with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sim2real.storage.process_lifetime import process_alive as alive

OWNER = """
import sys, time
from sim2real.storage.translate_read import decode_pool
pool = decode_pool(2, sys.argv[1])
print(" ".join(str(pid) for pid in pool._processes), flush=True)
time.sleep(600)
"""


def test_forkserver_decode_workers_exit_when_their_owner_is_killed():
    owner = subprocess.Popen([sys.executable, "-c", OWNER, "forkserver"], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"decode workers {left} outlived their killed owner"
