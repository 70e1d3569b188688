"""The quality gate and alias promotion of translated versions.

A translated version is *promoted* by pointing an alias (``NAME@production`` by default) at it. The
nightly flow promotes only versions that pass the gate; a failing version stays committed (it can be
inspected, evaluated or promoted by hand later) and the decision, with its reasons, is recorded beside
the aliases::

    {root}/datasets/{name}/aliases/{alias}.json        → {"version": ..., "set_at": ...}
    {root}/datasets/{name}/gates/{version}.json        the gate decision: checks, reasons, metrics

Translators are promoted the same way, in the registry's folder:
``{root}/models/translators/aliases/{alias}.json`` → ``{"id": ...}``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from sim2real.flows.reporting import artifact_key
from sim2real.storage.registry import RegistryError, TranslatorRegistry
from sim2real.storage.shards import write_atomic
from sim2real.storage.versions import NAME_PATTERN, DatasetStore, default_root

DEFAULT_ALIAS = "production"


class GateConfig(BaseModel):
    """Thresholds a translated version must meet to be promoted (``None`` switches a check off)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_label_fidelity: float | None = Field(
        0.6,
        ge=0,
        description="translated-frame mIoU of the real-trained reference segmenter ÷ its mIoU on real frames",
    )
    min_detail_retention: float | None = Field(
        0.3, ge=-1, le=1, description="edge agreement (gradient correlation) on signs, lights, lane marks"
    )
    max_realism_ratio: float | None = Field(
        1.0, gt=0, description="realism distance to real frames, translated ÷ raw sim (below 1 = closer)"
    )
    min_gain_points: float | None = Field(
        None, description="retrain gate: real+translated minus real-only mAP/mIoU, points (None: off)"
    )


class QualityReport(BaseModel):
    """The numbers the gate reads for one translated version (``None``: not measured)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label_fidelity: float | None = None
    detail_retention: float | None = None
    realism_ratio: float | None = None
    frames: int = 0
    details: dict[str, Any] = Field(default_factory=dict, description="the raw metrics behind the numbers")

    @classmethod
    def from_translation_metrics(cls, metrics: dict[str, Any]) -> QualityReport:
        """From ``models.metrics.translation_eval.evaluate_translation``'s result."""
        summary = metrics["summary"]
        detail = metrics["translated"].get("detail", {})
        raw_swd = _number(summary.get("realism_swd_raw_sim"))
        translated_swd = _number(summary.get("realism_swd_translated"))
        ratio = translated_swd / raw_swd if translated_swd is not None and raw_swd else None
        return cls(
            label_fidelity=_number(summary.get("fidelity_ratio_translated")),
            detail_retention=_number(detail.get("edge_agreement")),
            realism_ratio=ratio,
            frames=int(metrics.get("frames", {}).get("sim", 0)),
            details={"summary": summary, "detail": detail},
        )


class GateDecision(BaseModel):
    """Whether a version passed, every check made, and in words why not."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    checks: list[dict[str, Any]]
    reasons: list[str]

    def explain(self) -> str:
        """One line for logs and the CLI."""
        return "passed every check" if self.passed else "; ".join(self.reasons)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _check(name: str, value: float | None, bound: float | None, minimum: bool) -> dict[str, Any] | None:
    if bound is None:
        return None
    relation = ">=" if minimum else "<="
    if value is None:
        return {
            "check": name,
            "value": None,
            "bound": f"{relation} {bound}",
            "passed": False,
            "reason": f"{name} was not measured (needs {relation} {bound})",
        }
    passed = value >= bound if minimum else value <= bound
    reason = "" if passed else f"{name} {value:.3f} is not {relation} {bound}"
    return {
        "check": name,
        "value": round(value, 4),
        "bound": f"{relation} {bound}",
        "passed": passed,
        "reason": reason,
    }


def check_gate(report: QualityReport, config: GateConfig, gain_points: float | None = None) -> GateDecision:
    """Apply ``config``'s thresholds to ``report`` (and to the retrain gain when one is given)."""
    checks = [
        _check("label fidelity", report.label_fidelity, config.min_label_fidelity, minimum=True),
        _check("detail retention", report.detail_retention, config.min_detail_retention, minimum=True),
        _check("realism ratio", report.realism_ratio, config.max_realism_ratio, minimum=False),
    ]
    if gain_points is not None or config.min_gain_points is not None:
        checks.append(_check("retrain gain (points)", gain_points, config.min_gain_points, minimum=True))
    made = [c for c in checks if c is not None]
    return GateDecision(
        passed=all(c["passed"] for c in made),
        checks=made,
        reasons=[c["reason"] for c in made if not c["passed"]],
    )


def gate_path(store: DatasetStore, name: str, version: str) -> str:
    """Where the gate decision of ``name@version`` is recorded."""
    return f"{store.root}/datasets/{name}/gates/{version}.json"


def record_gate(root: str, ref: str, report: QualityReport, decision: GateDecision) -> dict[str, Any]:
    """Write the decision for ``ref`` (``name@version``) atomically; return what was written."""
    store = DatasetStore(root)
    version = store.open(ref)
    record = {
        "ref": version.ref,
        "passed": decision.passed,
        "reasons": decision.reasons,
        "checks": decision.checks,
        "quality": report.model_dump(),
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


def translator_alias_path(registry: TranslatorRegistry, alias: str) -> str:
    """Where translator alias ``alias`` lives in the registry's folder."""
    if not NAME_PATTERN.fullmatch(alias):
        raise ValueError(f"translator alias {alias!r}: use lowercase letters, digits, '-' and '_'")
    return f"{registry.base}/aliases/{alias}.json"


def resolve_translator(root: str, ref: str) -> str:
    """A translator id from an id, ``@ALIAS`` / ``ALIAS`` of a promoted one, or ``latest``."""
    registry = TranslatorRegistry(root)
    name = ref.removeprefix("@")
    if name == "latest":
        cards = registry.list()
        if not cards:
            raise RegistryError(f"{registry.base}: no translator under {root}; train one first")
        return str(cards[-1]["id"])
    if NAME_PATTERN.fullmatch(name) and registry.fs.exists(translator_alias_path(registry, name)):
        with registry.fs.open(translator_alias_path(registry, name), "rb") as handle:
            return str(json.loads(handle.read())["id"])
    if registry.exists(name):
        return name
    raise RegistryError(f"{registry.base}: no translator id or alias {ref!r} under {root}")


def promote_translator(root: str, translator_id: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Point translator alias ``alias`` at ``translator_id`` (which must exist)."""
    registry = TranslatorRegistry(root)
    registry.card(translator_id)  # raises RegistryError naming the path when missing
    record = {"id": translator_id, "set_at": time.time()}
    write_atomic(registry.fs, translator_alias_path(registry, alias), json.dumps(record).encode())
    return {"alias": alias, **record}


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


@task(name="promote-version", cache_policy=NO_CACHE)
def promote_version_task(root: str, ref: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Task wrapper of :func:`promote_version`."""
    return promote_version(root, ref, alias)


@flow(name="promote", flow_run_name="promote-{ref}")
def promote_flow(ref: str, alias: str = DEFAULT_ALIAS, force: bool = False, root: str | None = None) -> dict:
    """Promote ``ref`` by hand: refuses a version whose recorded gate failed unless ``force``."""
    logger = get_run_logger()
    root = root or default_root()
    gate = read_gate(root, ref)
    if gate is not None and not gate["passed"] and not force:
        raise PermissionError(
            f"{gate['ref']}: failed the quality gate ({'; '.join(gate['reasons'])}); use force to promote"
        )
    result = promote_version_task(root, ref, alias)
    logger.info("%s → %s (was %s)", result["alias"], result["ref"], result["previous"])
    create_markdown_artifact(
        f"**{result['alias']}** → `{result['ref']}` (was `{result['previous']}`)"
        + (" — forced past a failed gate" if gate is not None and not gate["passed"] else ""),
        key=artifact_key("promote", result["alias"].split("@")[0]),
        description="Alias promotion",
    )
    return {**result, "forced": bool(force and gate is not None and not gate["passed"])}
