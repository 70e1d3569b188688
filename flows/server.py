"""A local Prefect server that CLI commands share (``sim2real server start|status|stop``).

``start`` launches ``prefect server start`` on a free loopback port in its own process group (its
state, the SQLite database, under ``PREFECT_HOME``) and records it in
``$PREFECT_HOME/sim2real-server.json`` (pid, process group, URL). ``start`` and ``stop`` hold an
exclusive lock on ``$PREFECT_HOME/sim2real-server.lock`` (``flock``: released by the kernel when its
holder dies, even by ``kill -9``), so two concurrent starts make one server: the second waits and
finds the first one's server running. Every command then finds it through
:func:`running_api_url` and uses it instead of starting Prefect's embedded server (~13 s of start-up
on a busy 2-core machine). ``stop`` ends the whole process group.

Without a running server (and without ``PREFECT_API_URL``), commands fall back to Prefect's
embedded server, started by :func:`start_embedded_server` in the main thread so that the kernel kills
it when the command dies, even by ``kill -9`` (``PR_SET_PDEATHSIG``): no orphaned server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sim2real.tasks.workers import die_with_parent

STATE_FILE = "sim2real-server.json"
LOCK_FILE = "sim2real-server.lock"
HOST = "127.0.0.1"


def prefect_home() -> Path:
    """``PREFECT_HOME`` (default ``~/.prefect``), without importing Prefect."""
    return Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()


def state_path() -> Path:
    """Where the running server is recorded."""
    return prefect_home() / STATE_FILE


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on at ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the Prefect API at ``url`` (``http://host:port``) answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state() -> dict[str, Any] | None:
    """The recorded server (``pid``, ``pgid``, ``url``, ``log``) if its process is alive, else None."""
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(int(state["pid"])) else None


def running_api_url() -> str | None:
    """The API URL commands should use: ``PREFECT_API_URL`` when set, else a healthy server started by
    ``sim2real server start``, else None (the embedded server)."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured
    state = read_state()
    if state and healthy(state["url"], timeout_s=1.0):
        return f"{state['url']}/api"
    return None


@contextlib.contextmanager
def _server_lock() -> Iterator[None]:
    """Hold the exclusive lock that serialises ``start`` and ``stop`` under this ``PREFECT_HOME``."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for a concurrent start or stop to finish
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start(port: int | None = None, timeout_s: float = 180.0) -> dict[str, Any]:
    """Start the shared server (or return the one already running, waiting for a concurrent start to
    finish); raises ``RuntimeError`` with the log tail when it does not come up within ``timeout_s``."""
    with _server_lock():
        return _start(port, timeout_s)


def _start(port: int | None, timeout_s: float) -> dict[str, Any]:
    state = read_state()
    if state and healthy(state["url"]):
        return {**state, "started": False}
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    log = home / "sim2real-server.log"
    with open(log, "ab") as log_handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop ends uvicorn and services together
            env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": ""},
        )
    state = {"pid": process.pid, "pgid": process.pid, "url": url, "log": str(log), "home": str(home)}
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_path())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if healthy(url):
            return {**state, "started": True}
        time.sleep(0.5)
    _stop(timeout_s=20.0)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(
        f"Prefect server did not come up on {url} within {timeout_s:.0f} s; log {log}:\n{tail}"
    )


def stop(timeout_s: float = 20.0) -> dict[str, Any] | None:
    """Stop the recorded server's whole process group (TERM, then KILL); None when none was running."""
    with _server_lock():
        return _stop(timeout_s)


def _stop(timeout_s: float) -> dict[str, Any] | None:
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pgid = int(state["pgid"])
    if not _runs_prefect_server(pgid):  # a stale record: the pid may belong to someone else now
        path.unlink(missing_ok=True)
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _group_alive(pgid):
            _reap(int(state["pid"]))
            time.sleep(0.2)
        if not _group_alive(pgid):
            break
    path.unlink(missing_ok=True)
    return state


def _runs_prefect_server(pgid: int) -> bool:
    """Whether a live process of group ``pgid`` runs ``prefect server`` (what ``start`` launched)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and b"prefect" in argv and b"server" in argv:
            return True
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # members may be zombies of a parent that is gone; count only live ones
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return not Path("/proc").is_dir()


class _PopenDyingWithParent:
    """``subprocess`` as Prefect's embedded server module sees it: children die with this process."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:  # noqa: N802 - mirrors subprocess
        kwargs.setdefault("preexec_fn", die_with_parent)
        return subprocess.Popen(*args, **kwargs)


def start_embedded_server() -> None:
    """Start Prefect's embedded (ephemeral) server now, from this thread, so that it dies with this process.

    The kernel sends the death signal when the *thread* that started the child ends: call this from
    the main thread. Prefect later finds the same running instance and does not start another.
    """
    from prefect.server.api import server

    server.subprocess = _PopenDyingWithParent()  # type: ignore[assignment]
    server.SubprocessASGIServer().start()
