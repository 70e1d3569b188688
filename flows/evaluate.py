"""The retrain-and-evaluate flow: does adding (translated) simulator data make real perception better?

For every task (detection, segmentation) it trains the arms real-only and real+EXTRA for each extra
version, evaluates all of them on the same validation version, appends one row per version × arm × task
× class × metric to ``{root}/metrics/metrics.parquet`` and publishes the seed-style tables plus a
markdown report with per-class bars and deltas against real-only. Arms are cached by content hash
under ``{root}/models/perception/{arm_id}/``: a rerun with the same inputs and config trains nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim2real.flows.evaluate_report import markdown_report, task_tables
from sim2real.flows.reporting import artifact_key, table
from sim2real.models.perception_train import TASK_NAMES, ArmRun, DataOptions, TrainConfig, get_task
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
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    extra_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
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
    root: str | None = None


def load_profile(profile: str) -> EvaluateProfile:
    """A profile by name (``tiny``, ``demo``, ``full``) or by YAML path; ``FileNotFoundError`` names it."""
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else PROFILE_DIR / f"evaluate_{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluate profile {profile!r}")
    data = yaml.safe_load(path.read_text()) or {}
    return EvaluateProfile.model_validate({"name": path.stem.removeprefix("evaluate_"), **data})


def plan_arms(profile: EvaluateProfile, request: EvaluateRequest, resolved: dict[str, str]) -> list[ArmRun]:
    """real-only plus real+EXTRA for each extra, for each task, fully configured."""
    real, val = resolved[request.real], resolved[request.val]
    mixes: list[tuple[str, tuple[tuple[str, float], ...]]] = [("real-only", ((real, 1.0),))]
    share = profile.extra_fraction
    for extra in request.extras:
        ref = resolved[extra]
        mixes.append((f"real+{ref.split('@')[0]}", ((real, 1.0 - share), (ref, share))))
    return [
        ArmRun(task, label, train, val, profile.model_for(task), profile.train_for(task),
               profile.data.options(), profile.seed)
        for task in request.tasks
        for label, train in mixes
    ]


def pick_device(choice: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("evaluate profile asks for device 'cuda' but CUDA is not available")
    return choice


@flow(name="retrain-and-evaluate", flow_run_name="evaluate-{real}")
def retrain_and_evaluate(
    real: str,
    val: str,
    extras: list[str] | None = None,
    tasks: list[TaskName] | None = None,
    profile: str = "demo",
    root: str | None = None,
) -> dict[str, Any]:
    """Train real-only and real+each-extra arms per task, evaluate on ``val``, store and report metrics."""
    logger = get_run_logger()
    started = time.perf_counter()
    request = EvaluateRequest(real=real, val=val, extras=extras or [], tasks=tasks or list(TASK_NAMES),
                              profile=profile, root=root)
    config = load_profile(request.profile)
    root = request.root or default_root()
    resolved = evaluate_tasks.resolve_versions(root, [request.real, *request.extras, request.val])
    device = pick_device(config.device)
    results = []
    for run in plan_arms(config, request, resolved):
        result = evaluate_tasks.train_evaluate_arm(root, run, device)
        logger.info("%s %s: %s (%s)", run.task, run.label, result["metrics"]["summary"],
                    "cached" if result["cached"] else f"trained in {result['train_seconds']:.0f}s")
        results.append(result)
    run_id = str(flow_run.get_id() or "local")
    added = evaluate_tasks.append_metrics(root, results, run_id, config.name)
    tables = task_tables(results)
    for task, rows in tables.items():
        table(artifact_key("evaluate", task), rows, f"{task}: per-class metrics on {resolved[request.val]}")
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
        "arm_id": result["arm_id"],
        "cached": result["cached"],
        "train_seconds": result["train_seconds"],
        "eval_seconds": result["eval_seconds"],
        "summary": result["metrics"]["summary"],
    }
