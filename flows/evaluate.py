"""The retrain-and-evaluate flow: does adding (translated) simulator data make real perception better?

For every task (detection, segmentation) and every seed it trains the arms real-only and real+EXTRA
for each extra version — the extra samples are *added* to the same real samples (see
``models.perception_train``) — evaluates all of them on the same validation version, appends one row
per version × arm × seed × task × class × metric to ``{root}/metrics/metrics.parquet`` and publishes
tables of the mean ± std over seeds with each arm's paired difference to real-only, plus a markdown
report with per-class bars. Arms are cached by content hash (seed included) under
``{root}/models/perception/{arm_id}/``: a rerun with the same inputs and config trains nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim2real.flows.evaluate_report import display_rows, markdown_report, task_tables
from sim2real.flows.reporting import artifact_key, progress_line, table
from sim2real.models.device import resolve_device
from sim2real.models.perception_train import (
    TASK_NAMES,
    ArmRun,
    DataOptions,
    TrainConfig,
    get_task,
)
from sim2real.storage.versions import default_root
from sim2real.tasks import evaluate as evaluate_tasks

PROFILE_DIR = Path(__file__).parent / "profiles"
TaskName = Literal["detection", "segmentation"]
REF_PATTERN = r"^[a-z0-9][a-z0-9_-]*(@[A-Za-z0-9_-]+)?$"


class DataProfile(BaseModel):
    """Frame preparation shared by every arm (see ``DataOptions``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    image_height: int | None = Field(default=None, ge=16)
    image_width: int | None = Field(default=None, ge=16)
    shuffle_buffer: int = Field(default=64, ge=0)
    eval_batch_size: int = Field(default=4, ge=1)
    max_val_samples: int | None = Field(default=None, ge=1)
    min_box_px: float = Field(default=1.0, ge=1.0)
    eval_min_box_px: float = Field(default=0.0, ge=0.0)

    def options(self) -> DataOptions:
        size = (self.image_height, self.image_width) if self.image_height and self.image_width else None
        return DataOptions(size, self.shuffle_buffer, self.eval_batch_size, self.max_val_samples,
                           self.min_box_px, self.eval_min_box_px)


class TaskProfile(BaseModel):
    """One task's network (``model``: DetectorConfig/SegmenterConfig keys) and optimisation (``train``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class EvaluateProfile(BaseModel):
    """A retrain-and-evaluate profile (``flows/profiles/evaluate_{tiny,demo,full}.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    seed: int = Field(default=0, ge=0)
    seeds: int = Field(default=1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    protocol: Literal["added", "pretrain-finetune"] = "added"  # see models.perception_train.PROTOCOLS
    extra_per_real: float = Field(default=1.0, gt=0.0)
    data: DataProfile = DataProfile()
    detection: TaskProfile = TaskProfile()
    segmentation: TaskProfile = TaskProfile()

    @model_validator(mode="after")
    def _typed_sections_parse(self) -> EvaluateProfile:
        for task in TASK_NAMES:
            self.model_for(task)
            self.train_for(task)
        return self

    def model_for(self, task: str) -> Any:
        """The typed network config of ``task`` (unknown keys rejected)."""
        return get_task(task).config_type.from_dict(getattr(self, task).model)

    def train_for(self, task: str) -> TrainConfig:
        """The typed training config of ``task`` (unknown keys rejected)."""
        return TrainConfig.from_dict(getattr(self, task).train)


class EvaluateRequest(BaseModel):
    """What to compare: the real training version, the extras, the validation version, the tasks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    real: str = Field(pattern=REF_PATTERN)
    val: str = Field(pattern=REF_PATTERN)
    extras: list[str] = Field(default_factory=list)
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASK_NAMES), min_length=1)
    profile: str = "demo"
    seeds: int | None = Field(default=None, ge=1)  # None: the profile's
    backbone_weights: str | None = None  # both tasks' backbone (file or torchvision name); None: profile's
    root: str | None = None


def load_profile(profile: str) -> EvaluateProfile:
    """A profile by name (``tiny``, ``demo``, ``full``) or by YAML path; ``FileNotFoundError`` names it."""
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else PROFILE_DIR / f"evaluate_{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluate profile {profile!r}")
    data = yaml.safe_load(path.read_text()) or {}
    return EvaluateProfile.model_validate({"name": path.stem.removeprefix("evaluate_"), **data})


def plan_arms(profile: EvaluateProfile, request: EvaluateRequest, resolved: dict[str, str]) -> list[ArmRun]:
    """real-only plus real+EXTRA for each extra, for each task and seed, fully configured.

    Seeds are ``profile.seed, profile.seed + 1, …``; arms of one seed share initialisation, real
    samples, their order and flips.
    """
    real, val = resolved[request.real], resolved[request.val]
    mixes: list[tuple[str, tuple[tuple[str, float], ...]]] = [("real-only", ((real, 1.0),))]
    for extra in request.extras:
        ref = resolved[extra]
        mixes.append((f"real+{ref.split('@')[0]}", ((real, 1.0), (ref, profile.extra_per_real))))
    count = request.seeds or profile.seeds
    models = task_models(profile, request.tasks, request.backbone_weights)
    return [
        ArmRun(task, label, train, val, models[task], profile.train_for(task),
               profile.data.options(), seed, profile.protocol)
        for seed in range(profile.seed, profile.seed + count)
        for task in request.tasks
        for label, train in mixes
    ]


def task_models(
    profile: EvaluateProfile, tasks: Sequence[str], backbone_weights: str | None
) -> dict[str, Any]:
    """Each task's network config; ``backbone_weights`` (when given) replaces the profile's for both."""
    models = {task: profile.model_for(task) for task in tasks}
    if backbone_weights:
        models = {task: replace(m, backbone_weights=backbone_weights) for task, m in models.items()}
    return models


def check_backbone_weights(models: dict[str, Any]) -> None:
    """Build each task's model once when it starts from a weights file, so a missing or wrong file
    fails before any training (``BackboneWeightsError``, a ``ValueError``, names the file)."""
    for task, config in models.items():
        if config.backbone_weights:
            get_task(task).build(config)


@flow(name="retrain-and-evaluate", flow_run_name="evaluate-{real}")
def retrain_and_evaluate(
    real: str,
    val: str,
    extras: list[str] | None = None,
    tasks: list[TaskName] | None = None,
    profile: str = "demo",
    root: str | None = None,
    seeds: int | None = None,
    backbone_weights: str | None = None,
) -> dict[str, Any]:
    """Train real-only and real+each-extra arms per task and seed, evaluate on ``val``, store and report
    metrics (``seeds``: how many seeds, default the profile's; ``backbone_weights``: a state-dict file
    or torchvision weights name in the local hub cache for both tasks' backbones)."""
    started = time.perf_counter()
    request = EvaluateRequest(real=real, val=val, extras=extras or [], tasks=tasks or list(TASK_NAMES),
                              profile=profile, seeds=seeds, backbone_weights=backbone_weights, root=root)
    config = load_profile(request.profile)
    root = request.root or default_root()
    resolved = evaluate_tasks.resolve_versions(root, [request.real, *request.extras, request.val])
    device = str(resolve_device(config.device))
    check_backbone_weights(task_models(config, request.tasks, request.backbone_weights))
    arms = plan_arms(config, request, resolved)
    results = []
    for run in arms:
        result = evaluate_tasks.train_evaluate_arm(root, run, device)
        done = "cached" if result["cached"] else f"trained in {result['train_seconds']:.0f}s"
        progress_line(f"{run.task} {run.label} seed {run.seed}: {result['metrics']['summary']} ({done})")
        results.append(result)
    run_id = str(flow_run.get_id() or "local")
    added = evaluate_tasks.append_metrics(root, results, run_id, config.name)
    tables = task_tables(results)
    for task, rows in tables.items():
        table(artifact_key("evaluate", task), display_rows(rows),
              f"{task}: per-class mean ± std over seeds on {resolved[request.val]}; Δ = paired difference")
    create_markdown_artifact(markdown_report(results), key=artifact_key("evaluate", "report"),
                             description="Per-class bars and deltas against real-only")
    return {
        "run_id": run_id,
        "profile": config.name,
        "device": device,
        "rows_added": added,
        "tables": tables,
        "arms": [_arm_summary(r) for r in results],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _arm_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": result["task"],
        "arm": result["label"],
        "seed": result["seeds"]["seed"],
        "protocol": result["protocol"],
        "real_samples_seen": result["real_samples_seen"],
        "extra_samples_seen": result["extra_samples_seen"],
        "arm_id": result["arm_id"],
        "cached": result["cached"],
        "train_seconds": result["train_seconds"],
        "eval_seconds": result["eval_seconds"],
        "summary": result["metrics"]["summary"],
    }
