"""The version-created event: payload, resource labels, and the caller-evaluates switch."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker

from sim2real.flows import events


def fake_version(kind: str = "translate") -> SimpleNamespace:
    return SimpleNamespace(
        name="sim-tr",
        version="abc123",
        info={"kind": kind, "samples": 4},
        ref="sim-tr@abc123",
        path="/data/datasets/sim-tr/abc123",
        num_samples=4,
        store=SimpleNamespace(root_url="/data"),
    )


@pytest.fixture
def asserting_events_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[EventsWorker]:
    """Capture emitted events in memory (Prefect's own asserting client), no API needed."""
    monkeypatch.setattr("prefect.events.utilities.should_emit_events", lambda: True)
    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    yield worker
    worker.drain()


def emitted(worker: EventsWorker) -> list:
    worker.drain()
    return list(AssertingEventsClient.last.events) if AssertingEventsClient.last else []


def test_payload_names_the_version_and_root() -> None:
    payload = events.version_created_payload(fake_version(), "s3://bucket/root")
    assert payload["ref"] == "sim-tr@abc123"
    assert payload["root"] == "s3://bucket/root"
    assert payload["kind"] == "translate"


def test_emit_labels_who_evaluates(asserting_events_worker) -> None:
    events.emit_version_created(fake_version())
    with events.evaluation_by_caller():
        events.emit_version_created(fake_version())
    sent = emitted(asserting_events_worker)
    assert [e.event for e in sent] == [events.VERSION_CREATED] * 2
    assert sent[0].resource.id == "sim2real.dataset.sim-tr.abc123"
    assert [e.resource[events.EVALUATE_LABEL] for e in sent] == ["trigger", "caller"]
    assert sent[0].payload["root"] == "/data"


def test_caller_label_reaches_a_subflow(prefect_harness, asserting_events_worker) -> None:
    """The nightly flow wraps its translate subflow: the event emitted inside still says `caller`."""
    from prefect import flow

    @flow
    def child() -> None:
        events.emit_version_created(fake_version())

    @flow
    def parent() -> None:
        child()
        with events.evaluation_by_caller():
            child()

    parent()
    sent = [e for e in emitted(asserting_events_worker) if e.event == events.VERSION_CREATED]
    assert [e.resource[events.EVALUATE_LABEL] for e in sent] == ["trigger", "caller"]
