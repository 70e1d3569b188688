"""``sim2real server`` start/status/stop, commands that reuse it, and no orphaned embedded server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]


def cli(*args: str, env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_gone(pids: list[int], timeout_s: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**clean, "PREFECT_HOME": str(tmp_path / "prefect-home"), "SIM2REAL_ROOT": str(tmp_path / "data")}


def test_server_start_status_stop_leaves_no_process(env: dict[str, str], tmp_path: Path):
    started = cli("server", "start", "--json", env=env)
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads(started.stdout.strip().splitlines()[-1])
        assert state["url"].startswith("http://127.0.0.1:") and "UI http://127.0.0.1:" in started.stderr
        group = [state["pid"], *children(state["pid"])]
        status = cli("server", "status", "--json", env=env)
        assert status.returncode == 0 and json.loads(status.stdout.splitlines()[-1])["running"] is True
        again = cli("server", "start", "--json", env=env)  # a second start reuses the running one
        assert json.loads(again.stdout.splitlines()[-1])["pid"] == state["pid"]

        # a command uses it: the flow run is recorded by that server
        from sim2real.storage.sources.toysim import ToySimConfig, write_export

        write_export(tmp_path / "export", ToySimConfig(style="sim", height=24, width=40, seed=1), 2)
        ingested = cli("ingest", str(tmp_path / "export"), "--name", "toy", "--json", env=env)
        assert ingested.returncode == 0, ingested.stderr
        query = subprocess.run(
            [
                sys.executable,
                "-c",
                "from prefect.client.orchestration import get_client\n"
                "with get_client(sync_client=True) as c: print(len(c.read_flow_runs()))",
            ],
            capture_output=True,
            text=True,
            env={**env, "PREFECT_API_URL": f"{state['url']}/api"},
            timeout=120,
        )
        assert query.stdout.strip() == "1", query.stderr
    finally:
        stopped = cli("server", "stop", "--json", env=env)
    assert json.loads(stopped.stdout.splitlines()[-1])["stopped"] is True
    assert wait_gone(group) == []
    assert cli("server", "status", env=env).returncode == 1


def test_two_concurrent_starts_make_one_server(env: dict[str, str]):
    starts = [
        subprocess.Popen([*CLI, "server", "start", "--json"], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    try:
        states = [json.loads(p.communicate(timeout=400)[0].strip().splitlines()[-1]) for p in starts]
        assert all(p.returncode == 0 for p in starts)
        assert states[0]["pid"] == states[1]["pid"]  # the second waited for the first and reused it
        assert sorted(s["started"] for s in states) == [False, True]
        group = [states[0]["pid"], *children(states[0]["pid"])]
    finally:
        stopped = cli("server", "stop", "--json", env=env)
    assert json.loads(stopped.stdout.splitlines()[-1])["stopped"] is True
    assert wait_gone(group) == []


def test_embedded_server_dies_with_a_killed_command(env: dict[str, str]):
    script = (
        "from sim2real.flows.runtime import quiet_prefect\nquiet_prefect()\n"
        "from sim2real.flows.server import start_embedded_server\nstart_embedded_server()\n"
        "print('up', flush=True)\nimport time\ntime.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "up"
        servers = children(process.pid)
        assert servers, "the embedded server should be a child process"
        process.send_signal(signal.SIGKILL)  # as the OOM killer would
        process.wait(timeout=30)
        assert wait_gone(servers) == []
    finally:
        process.kill()


def test_status_exits_1_and_stop_says_so_when_no_server_runs(env: dict[str, str]):
    status = cli("server", "status", env=env, timeout=120)
    assert status.returncode == 1 and "no server running" in status.stdout
    stopped = cli("server", "stop", "--json", env=env, timeout=120)
    assert stopped.returncode == 0 and json.loads(stopped.stdout.splitlines()[-1]) == {"stopped": False}


def test_stop_with_a_stale_state_file_leaves_an_unrelated_process_alone(env: dict[str, str]):
    # the recorded server died long ago; its pid (and process group) now belongs to someone else
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        home = Path(env["PREFECT_HOME"])
        home.mkdir(parents=True)
        state = {"pid": bystander.pid, "pgid": bystander.pid, "url": "http://127.0.0.1:9", "log": "x"}
        (home / "sim2real-server.json").write_text(json.dumps(state))
        assert cli("server", "status", env=env, timeout=120).returncode == 1
        stopped = cli("server", "stop", "--json", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert alive(bystander.pid), "server stop killed a process that is not a Prefect server"
        assert json.loads(stopped.stdout.splitlines()[-1]) == {"stopped": False}
        assert not (home / "sim2real-server.json").exists()  # the stale record is cleared
    finally:
        bystander.kill()
        bystander.wait()
