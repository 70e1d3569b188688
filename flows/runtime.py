"""Running flows from the CLI: quiet, embedded by default, no shutdown noise for a clean run."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

# Loggers that report the temporary server's and the event pipeline's own teardown; in a clean CLI
# run their messages are noise (failures of our work are raised, not logged, so nothing is hidden).
_SHUTDOWN_LOGGERS = (
    "prefect.server",
    "prefect._internal",
    "prefect.events",
    "uvicorn",
    "uvicorn.error",
    "httpx",
    "prefect.client",
    "docket",
    "prefect.task_runs.runtime",
)


def tune_cpu_threads() -> None:
    """Let idle OpenMP threads sleep instead of spinning (set before torch is imported).

    Spinning threads of several processes or thread pools (Prefect tasks, DataLoader workers) fight
    for the same cores; measured on a busy 2-core machine, 20 detector steps took 177 s spinning and
    13 s passive.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def quiet_prefect() -> None:
    """Defaults for CLI use: warnings only from Prefect's own machinery."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The embedded server's telemetry heartbeat races its own SQLite migrations ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A GPU task that finds the 'gpu' tag limit's slots taken retries after at most this many seconds
    # (Prefect's default 10: a GPU idle for most of a shard); read by the embedded server.
    os.environ.setdefault("PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS", "1")
    # On a busy machine the embedded server can take longer than the default to come up.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    for name in _SHUTDOWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def embedded_run_settings() -> Iterator[None]:
    """Flow runs in this block send no heartbeats when the API is the embedded server.

    Heartbeats let a real server mark a flow run whose process died as crashed. The embedded server
    lives and dies with this process, so nobody reads them; yet each flow run joins its heartbeat
    thread on exit, which sleeps in 1-s steps: a 0.3-s flow run took 1.06 s with heartbeats and 0.38 s
    without. With ``PREFECT_API_URL`` set (a real server) heartbeats stay on.

    In both cases the console copies of failed flow/task-run logs are held back while the block runs
    and dropped when it ends in a user error, which the CLI reports in one line
    (``flows/cli_errors.py``); any other failure prints them as they were.
    """
    from prefect.settings import get_current_settings, temporary_settings

    from sim2real.flows.cli_errors import held_back_failure_logs

    if get_current_settings().api.url:
        with held_back_failure_logs():
            yield
        return
    with temporary_settings(updates={"flows.heartbeat_frequency": None}), held_back_failure_logs():
        yield


def use_running_server() -> str | None:
    """Point Prefect at ``PREFECT_API_URL`` or the server ``sim2real server start`` left running.

    Call before Prefect is imported (the CLI's entry point does); returns the API URL, or None when
    commands will fall back to the embedded server.
    """
    from sim2real.flows.server import running_api_url

    url = running_api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
    return url


def run_quietly(flow: Callable[..., T], **params: Any) -> T:
    """Run ``flow(**params)`` in-process: on the configured or shared server, else on the embedded
    server, started here (call from the main thread) so that it dies with this process.

    Call :func:`quiet_prefect` before Prefect is imported (the CLI does) for the settings to apply.
    """
    quiet_prefect()
    start_embedded_server_unless_configured()
    with embedded_run_settings():
        return flow(**params)


def start_embedded_server_unless_configured() -> None:
    """Without ``PREFECT_API_URL`` (set by :func:`use_running_server`), start Prefect's embedded server
    now, from this (main) thread, so that it dies with this process even by kill -9; else do nothing."""
    if not os.environ.get("PREFECT_API_URL"):
        from sim2real.flows.server import start_embedded_server

        start_embedded_server()
