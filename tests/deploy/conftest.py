"""A real Prefect server on a free loopback port, deployed from deploy/prefect.yaml, with one process worker.

The session fixture ``deployed`` does what an operator does (README, "Operating sim2real"): start the server,
create pools and limits with ``deploy/create_pools.sh --deploy``, start a worker, run the translate
deployment. Its event triggers retrain-and-evaluate, which the same worker runs. Tests then check the
state through the Prefect client and the UI. Everything runs on 127.0.0.1; the server and worker are
processes this fixture started, stopped by their process group at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
SERVER_START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 180


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running ``prefect server start`` and the environment that points a CLI or client at it."""

    url: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    tmp: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def cli(self, *args: str, timeout_s: int = 120) -> subprocess.CompletedProcess:
        """Run a command with this server's environment from the repository root; fail with its output."""
        done = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def spawn(self, *args: str, log_name: str) -> subprocess.Popen:
        """Start a background process in its own process group, output to ``tmp/log_name``."""
        log = open(self.tmp / log_name, "wb")  # noqa: SIM115 - closed with the process at teardown
        process = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def client(self) -> Any:
        """A sync Prefect client bound to this server (not to the in-process test harness)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def stop(self) -> None:
        """Stop what this fixture started: SIGTERM to each process group, SIGKILL after 15 s."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def server_env(tmp: Path, api_url: str) -> dict[str, str]:
    """This process's environment with Prefect pointed at the test server and a private PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
        PREFECT_CLI_COLORS="false",
        PREFECT_CLI_WRAP_LINES="false",
        SIM2REAL_ROOT=str(tmp / "root"),
        PYTHONUNBUFFERED="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # this venv's prefect
    )
    return env


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``prefect server start`` on 127.0.0.1 and a free port, SQLite under the test's tmp dir."""
    if shutil.which(PREFECT) is None:
        pytest.skip(f"prefect CLI not found next to {sys.executable}")
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(url, server_env(tmp, f"{url}/api"), tmp)
    process = server.spawn(
        PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), log_name="server.log"
    )
    try:
        wait_for(
            lambda: healthy(server.api_url) or process.poll() is not None,
            SERVER_START_TIMEOUT_S,
            f"prefect server on {url} (log: {tmp / 'server.log'})",
            interval_s=0.5,
        )
        if process.poll() is not None:
            raise AssertionError(
                f"prefect server exited {process.returncode}: {(tmp / 'server.log').read_text()}"
            )
        yield server
    finally:
        server.stop()


def flow_run_state(server: Server, flow_run_id: UUID) -> Any:
    with server.client() as client:
        return client.read_flow_run(flow_run_id).state


def finished(server: Server, flow_run_id: UUID, log_name: str) -> Any:
    """The flow run's state once final; fails with the worker log when it did not complete."""
    state = flow_run_state(server, flow_run_id)
    if state is not None and state.is_final():
        if not state.is_completed():
            log = (server.tmp / log_name).read_text(errors="replace")[-6000:]
            raise AssertionError(f"flow run {flow_run_id} ended {state.type.value}: {state.message}\n{log}")
        return state
    return None


def prepare_root(root: Path, tmp: Path) -> dict[str, str]:
    """Toy sim/real/val versions and a tiny registered translator (in-process, embedded harness)."""
    import torch

    from sim2real.flows.ingest import ingest_flow
    from sim2real.models.translator.checkpoint import translator_weights
    from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
    from sim2real.models.translator.model import build_translator
    from sim2real.storage.registry import TranslatorRegistry
    from sim2real.storage.sources.toysim import ToySimConfig, write_export

    refs = {}
    for name, style, seed, frames in (
        ("sim", "sim", 3, 6),
        ("real", "real", 11, 8),
        ("real-val", "real", 12, 4),
    ):
        write_export(
            tmp / f"export-{name}", ToySimConfig(style=style, height=32, width=64, seed=seed), frames
        )
        result = ingest_flow(str(tmp / f"export-{name}"), name, root=str(root))
        refs[name] = f"{name}@{result['version']}"
    torch.manual_seed(0)
    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    model = build_translator(config)
    refs["translator"] = TranslatorRegistry(str(root)).save(
        translator_weights(model), {"config": config.model_dump(mode="json")}
    )
    return refs


@pytest.fixture(scope="session")
def deployed(prefect_server: Server, prefect_harness: None) -> dict[str, Any]:
    """Pools + deployments from deploy/, a process worker on `gpu`, translate run → triggered evaluate run."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter

    server = prefect_server
    root = server.tmp / "root"
    refs = prepare_root(root, server.tmp)
    started = time.monotonic()
    server.cli(
        "bash",
        "deploy/create_pools.sh",
        "--gpu-type",
        "process",
        "--gpu-slots",
        "1",
        "--deploy",
        timeout_s=240,
    )
    setup_s = time.monotonic() - started
    with server.client() as client:
        evaluate = client.read_deployment_by_name("retrain-and-evaluate/retrain-and-evaluate")
        # What an operator sets in the UI's deployment form: which real data, the profile, the tasks.
        client.update_deployment(
            evaluate.id,
            DeploymentUpdate(
                parameters={
                    **evaluate.parameters,
                    "real": refs["real"],
                    "val": refs["real-val"],
                    "profile": "tiny",
                    "tasks": ["segmentation"],
                }
            ),
        )
        translate = client.read_deployment_by_name("translate/translate")
    server.spawn(
        PREFECT,
        "worker",
        "start",
        "--pool",
        "gpu",
        "--type",
        "process",
        "--limit",
        "1",
        "--name",
        "test-gpu-worker",
        log_name="worker.log",
    )
    parameters = {
        "source": refs["sim"],
        "translator": refs["translator"],
        "root": str(root),
        "config": {"pipeline": {"batch_size": 4, "decode_workers": 0}, "engine": {"device": "cpu"}},
    }
    with server.client() as client:
        translate_run = client.create_flow_run_from_deployment(translate.id, parameters=parameters)
    wait_for(lambda: finished(server, translate_run.id, "worker.log"), RUN_TIMEOUT_S, "translate flow run")

    def triggered() -> Any:
        with server.client() as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[evaluate.id])),
                flow_run_filter=FlowRunFilter(),
            )
        return runs[0] if runs else None

    evaluate_run = wait_for(
        triggered, 60, "the sim2real.version.created trigger to start retrain-and-evaluate"
    )
    wait_for(
        lambda: finished(server, evaluate_run.id, "worker.log"), RUN_TIMEOUT_S, "retrain-and-evaluate run"
    )
    with server.client() as client:
        translate_result = client.read_flow_run(translate_run.id)
        evaluate_run = client.read_flow_run(evaluate_run.id)
    return {
        "refs": refs,
        "root": str(root),
        "translate_run": translate_result,
        "evaluate_run": evaluate_run,
        "evaluate_deployment_id": evaluate.id,
        "setup_s": setup_s,
        "total_s": time.monotonic() - started,
    }
