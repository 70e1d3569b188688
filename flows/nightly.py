"""The nightly flow: new simulator frames → translated, gated, evaluated and (if good) promoted data.

    ingest (only frames no version holds yet) → translate with the promoted translator
    → quality gate (label fidelity, detail retention, realism) → retrain and evaluate → promote

Each step is a subflow (``ingest``, ``translate``, ``retrain-and-evaluate``) or a task, so the UI shows
them apart and each can be rerun on its own. A version that fails the gate stays committed, is not
evaluated and not promoted; the run's summary artifact and ``gates/{version}.json`` say why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from sim2real.flows.evaluate import TaskName, retrain_and_evaluate
from sim2real.flows.events import evaluation_by_caller
from sim2real.flows.ingest import ingest_flow
from sim2real.flows.reporting import artifact_key, table
from sim2real.flows.translate import TranslateConfig, translate_flow
from sim2real.models.device import resolve_device
from sim2real.models.metrics.gate import GateConfig, QualityReport
from sim2real.models.metrics.translation import ReferenceSegmenterConfig, TranslationMetricsConfig
from sim2real.storage.promotion import DEFAULT_ALIAS
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.versions import DatasetStore, default_root
from sim2real.tasks.promotion import find_new_frames, gate_version, promote_version_task, retrain_gain_task
from sim2real.tasks.quality import measure_quality


class NightlyParams(BaseModel):
    """What a night processes and the bar its data must clear (the deployment's parameter form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_dir: str = Field(description="simulator export folder; new frames are appended to it")
    source_name: str = Field("sim", description="dataset name of the ingested simulator frames")
    source_format: str = Field("folder", description="importer of the export (folder, carla, ...)")
    real: str = Field(description="real training version, e.g. real@production")
    val: str = Field(description="real validation version, e.g. real-val@production")
    translator: str = Field(
        DEFAULT_ALIAS, description="translator id or alias (production = the promoted one)"
    )
    translated_name: str | None = Field(None, description="dataset name of translations (SOURCE-translated)")
    alias: str = Field(DEFAULT_ALIAS, description="alias pointed at a version that passes")
    profile: str = Field("demo", description="retrain-and-evaluate profile: tiny, demo, full or a YAML path")
    tasks: list[TaskName] = Field(default_factory=lambda: ["detection", "segmentation"], min_length=1)
    gate: GateConfig = Field(default_factory=GateConfig)
    quality: TranslationMetricsConfig = Field(
        default_factory=lambda: TranslationMetricsConfig(
            frames=32, segmenter=ReferenceSegmenterConfig(steps=200)
        ),
        description="frames scored for the gate and the reference segmenter's training budget",
    )
    translate: TranslateConfig = Field(default_factory=TranslateConfig)
    max_shard_samples: int = Field(1000, ge=1)
    root: str | None = Field(None, description="storage root URL (default $SIM2REAL_ROOT or ./data)")


def check_inputs(params: NightlyParams, root: str) -> str:
    """Fail fast, naming what is missing: the export folder, the real versions, the translator.

    Returns the translator id the night will use.
    """
    if not Path(params.source_dir).is_dir():
        raise FileNotFoundError(f"{params.source_dir}: simulator export folder not found")
    store = DatasetStore(root)
    for ref in (params.real, params.val):
        store.open(ref)  # VersionNotFound (a LookupError) names the ref and the root
    return TranslatorRegistry(root).resolve(params.translator)


def publish_summary(result: dict[str, Any]) -> None:
    """The night's outcome as a markdown artifact: what was made, the gate's checks and the decision."""
    lines = [f"## Nightly {result['status']}", ""]
    for label in ("ingested", "translated", "promoted"):
        if result.get(label):
            lines.append(f"- **{label}**: `{result[label]}`")
    if result.get("reasons"):
        lines += ["", "**Not promoted because:** " + "; ".join(result["reasons"])]
    create_markdown_artifact(
        "\n".join(lines), key=artifact_key("nightly", "summary"), description="Nightly outcome"
    )


def gate_evaluate_promote(params: NightlyParams, root: str, translated_ref: str) -> dict[str, Any]:
    """Score the version, gate it, retrain/evaluate what passed, promote what still passes."""
    logger = get_run_logger()
    device = str(resolve_device(params.translate.engine.device))
    metrics = measure_quality(root, translated_ref, params.real, params.val, params.quality, device)
    report = QualityReport.from_translation_metrics(metrics)
    decision = gate_version(root, translated_ref, report, params.gate)  # recorded; redone after retraining
    outcome: dict[str, Any] = {"promoted": None}
    if decision.passed:  # a failing version is not worth the GPU hours of retraining
        evaluation = retrain_and_evaluate(
            params.real,
            params.val,
            extras=[translated_ref],
            tasks=params.tasks,
            profile=params.profile,
            root=root,
        )
        outcome["gain_points"] = retrain_gain_task(evaluation, f"real+{translated_ref.partition('@')[0]}")
        decision = gate_version(root, translated_ref, report, params.gate, outcome["gain_points"])
    table(artifact_key("nightly", "gate"), decision.checks, f"Quality gate of {translated_ref}")
    outcome.update(gate={"passed": decision.passed, "checks": decision.checks}, reasons=decision.reasons)
    if not decision.passed:
        logger.warning("%s kept but not promoted: %s", translated_ref, decision.explain())
        return {**outcome, "status": "not-promoted"}
    promoted = promote_version_task(root, translated_ref, params.alias)
    logger.info("promoted %s → %s", promoted["alias"], translated_ref)
    return {**outcome, "status": "promoted", "promoted": promoted["alias"], "previous": promoted["previous"]}


@flow(name="nightly", flow_run_name="nightly-{params.source_name}")
def nightly_flow(params: NightlyParams) -> dict[str, Any]:
    """Ingest tonight's new frames, translate, gate, retrain/evaluate and promote (see module doc)."""
    logger = get_run_logger()
    root = params.root or default_root()
    translator_id = check_inputs(params, root)
    new = find_new_frames(root, params.source_dir, params.source_name, params.source_format)
    if not new["new_frames"]:
        logger.info("no new frames in %s: nothing to do", params.source_dir)
        result: dict[str, Any] = {"status": "no-new-frames", "new_frames": 0, "promoted": None, "reasons": []}
        publish_summary(result)
        return result
    ingested = ingest_flow(
        params.source_dir,
        params.source_name,
        root=root,
        format=params.source_format,
        max_shard_samples=params.max_shard_samples,
        exclude_versions=new["versions"],
    )
    source_ref = f"{ingested['name']}@{ingested['version']}"
    logger.info("%s: %d new frames; translating with %s", source_ref, ingested["samples"], translator_id)
    with evaluation_by_caller():  # this flow evaluates the version itself: the event trigger stands down
        translated = translate_flow(
            source_ref, translator_id, out_name=params.translated_name, root=root, config=params.translate
        )
    translated_ref = f"{translated['name']}@{translated['version']}"
    result = {
        "new_frames": ingested["samples"],
        "ingested": source_ref,
        "translated": translated_ref,
        "translator": translator_id,
        **gate_evaluate_promote(params, root, translated_ref),
    }
    publish_summary(result)
    return result
