"""CLI run settings: no flow-run heartbeats against the embedded server, untouched against a real one."""

from __future__ import annotations

from prefect import flow
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from sim2real.flows.runtime import embedded_run_settings


@flow
def heartbeat_setting() -> int | None:
    return get_current_settings().flows.heartbeat_frequency


def test_heartbeats_off_only_for_the_embedded_server():
    with temporary_settings(restore_defaults={PREFECT_API_URL, "flows.heartbeat_frequency"}):
        assert get_current_settings().api.url is None  # what the CLI runs against by default
        with embedded_run_settings():
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == 180  # restored after the block
    with temporary_settings(
        updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}, restore_defaults={"flows.heartbeat_frequency"}
    ):
        with embedded_run_settings():
            assert get_current_settings().flows.heartbeat_frequency == 180  # a real server reads them


def test_a_flow_run_sees_the_setting(prefect_harness):
    # The engine reads the heartbeat interval from the settings context of the calling thread.
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        assert heartbeat_setting() is None
    with temporary_settings(updates={"flows.heartbeat_frequency": 60}):
        assert heartbeat_setting() == 60
