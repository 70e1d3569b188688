"""Custom Prefect events: ``sim2real.version.created`` announces a committed dataset version.

The translate flow calls :func:`emit_version_created` once its version is committed. A deployment
trigger in ``deploy/prefect.yaml`` matches the event and starts retrain-and-evaluate with the version
taken from the payload (``{{ event.payload.ref }}``).

A caller that evaluates the version itself (the nightly flow) wraps its translate step in
:func:`evaluation_by_caller`; the event is still emitted (it is a fact, and operators see it in the
event feed) but its resource is labelled ``sim2real.evaluate: caller`` so the trigger, which matches
``sim2real.evaluate: trigger``, does not start a second evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from prefect.events import emit_event

VERSION_CREATED = "sim2real.version.created"
EVALUATE_LABEL = "sim2real.evaluate"

_evaluated_by_caller: ContextVar[bool] = ContextVar("sim2real_evaluated_by_caller", default=False)


class VersionLike(Protocol):
    """What the event needs of a committed version (``storage.versions.Version`` satisfies it)."""

    name: str
    version: str
    info: dict[str, Any]

    @property
    def ref(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def num_samples(self) -> int: ...


@contextmanager
def evaluation_by_caller() -> Iterator[None]:
    """Within this block, version events say the caller evaluates (the trigger leaves them alone)."""
    token = _evaluated_by_caller.set(True)
    try:
        yield
    finally:
        _evaluated_by_caller.reset(token)


def resource_id(name: str, version: str) -> str:
    """The event resource id of a dataset version: ``sim2real.dataset.NAME.VERSION``."""
    return f"sim2real.dataset.{name}.{version}"


def version_created_payload(version: VersionLike, root: str) -> dict[str, Any]:
    """The event payload: enough for a triggered deployment to open the version."""
    return {
        "name": version.name,
        "version": version.version,
        "ref": version.ref,
        "root": root,
        "path": version.path,
        "samples": version.num_samples,
        "kind": str(version.info.get("kind", "")),
        "source": str(version.info.get("source", "")),
    }


def emit_version_created(version: VersionLike, root: str | None = None) -> dict[str, Any]:
    """Emit ``sim2real.version.created`` for ``version``; return the payload sent.

    ``root`` defaults to the version's own store root URL. With no events backend (e.g. outside any
    Prefect API) nothing is sent and the payload is still returned.
    """
    store = getattr(version, "store", None)
    root = root or getattr(store, "root_url", None) or version.path.rsplit("/datasets/", 1)[0]
    payload = version_created_payload(version, root)
    emit_event(
        event=VERSION_CREATED,
        resource={
            "prefect.resource.id": resource_id(version.name, version.version),
            "prefect.resource.name": version.ref,
            "sim2real.dataset": version.name,
            "sim2real.kind": payload["kind"] or "unknown",
            EVALUATE_LABEL: "caller" if _evaluated_by_caller.get() else "trigger",
        },
        payload=payload,
    )
    return payload
