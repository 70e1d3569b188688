"""Promotion records of dataset versions: quality-gate decisions and ``NAME@ALIAS`` pointers.

    {root}/datasets/{name}/aliases/{alias}.json        → {"version": ..., "set_at": ...}
    {root}/datasets/{name}/gates/{version}.json        the gate decision: checks, reasons, metrics

A failing version stays committed (it can be inspected, evaluated or promoted by hand later); its
decision, with the reasons, is recorded beside the aliases. Translator aliases live in the registry
(:meth:`sim2real.storage.registry.TranslatorRegistry.set_alias`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sim2real.storage.versions import DatasetStore

DEFAULT_ALIAS = "production"


def gate_path(store: DatasetStore, name: str, version: str) -> str:
    """Where the gate decision of ``name@version`` is recorded."""
    return f"{store.root}/datasets/{name}/gates/{version}.json"


def record_gate(
    root: str, ref: str, decision: Mapping[str, Any], quality: Mapping[str, Any]
) -> dict[str, Any]:
    """Write the gate ``decision`` (``passed``, ``reasons``, ``checks``) and the ``quality`` numbers it read
    for ``ref`` (``name@version``) atomically; return what was written."""
    store = DatasetStore(root)
    version = store.open(ref)
    record = {
        "ref": version.ref,
        "passed": bool(decision["passed"]),
        "reasons": list(decision["reasons"]),
        "checks": list(decision["checks"]),
        "quality": dict(quality),
        "decided_at": time.time(),
    }
    store.write_json(gate_path(store, version.name, version.version), record)
    return record


def read_gate(root: str, ref: str) -> dict[str, Any] | None:
    """The recorded gate decision of ``ref`` (None when it was never gated)."""
    store = DatasetStore(root)
    version = store.open(ref)
    path = gate_path(store, version.name, version.version)
    return store.read_json(path) if store.fs.exists(path) else None


def promote_version(root: str, ref: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Point ``NAME@alias`` at the version ``ref`` resolves to; returns the previous and new version."""
    store = DatasetStore(root)
    version = store.open(ref)
    try:
        previous: str | None = store.open(f"{version.name}@{alias}").version
    except LookupError:
        previous = None
    store.set_alias(version.name, alias, version.version)
    return {"ref": version.ref, "alias": f"{version.name}@{alias}", "previous": previous}
