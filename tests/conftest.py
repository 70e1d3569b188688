"""Shared fixtures: a Prefect test harness for the whole session, CPU-only torch, small thread counts."""

from __future__ import annotations

import os

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
