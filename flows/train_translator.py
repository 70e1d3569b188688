"""The train-translator flow: source and target versions in, a registered translator out.

Segments of ``checkpoint_every`` steps run as tasks; after each one the flow publishes the loss table,
the progress and a before/after grid as keyed artifacts. A rerun with the same inputs resumes from
the last checkpoint, or returns the registered result when the run had finished.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import fsspec
import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from sim2real.flows.reporting import artifact_key, progress_line, table
from sim2real.models.translator.config import TrainConfig
from sim2real.models.translator.distill import DistillTrainConfig
from sim2real.models.translator.runs import TranslatorProfile
from sim2real.storage.versions import default_root
from sim2real.tasks import translator as translator_tasks
from sim2real.tasks import translator_eval

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILES: tuple[str, ...] = ("tiny", "demo", "full")
TABLE_COLUMNS = (
    "step",
    "gen_total",
    "dis_total",
    "adv",
    "recon_x",
    "recon_c",
    "recon_s",
    "sem",
    "sem_translated",
    "sem_real",
    "hf",
)


def load_profile(name: str) -> TranslatorProfile:
    """Profile ``tiny``/``demo``/``full`` (or a path to a YAML file), validated; unknown keys are errors."""
    path = PROFILE_DIR / f"translator_{name}.yaml" if name in PROFILES else Path(name)
    if not path.is_file():
        raise ValueError(f"translator profile {name!r}: not one of {PROFILES} and no file {path}")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    try:
        return TranslatorProfile.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def with_overrides(profile: TranslatorProfile, steps: int | None, label_aware: bool) -> TranslatorProfile:
    """The profile with another step count and/or both label-aware losses switched off."""
    data = profile.model_dump()
    if steps is not None:
        data["train"]["steps"] = steps
        data["train"]["checkpoint_every"] = min(data["train"]["checkpoint_every"], steps)
        data["train"]["log_every"] = min(data["train"]["log_every"], data["train"]["checkpoint_every"])
        while data["train"]["checkpoint_every"] % data["train"]["log_every"]:
            data["train"]["log_every"] -= 1
    if not label_aware:
        data["loss"]["semantic"]["enabled"] = False
        data["loss"]["high_frequency"]["enabled"] = False
    return TranslatorProfile.model_validate(data)


def segment_stops(start: int, total: int, every: int) -> list[int]:
    """The steps at which segments end: multiples of ``every`` after ``start``, and ``total``."""
    stops = list(range((start // every + 1) * every, total, every))
    return [s for s in stops if s > start] + ([total] if total > start else [])


def publish_preview(key: str, url: str, step: int) -> None:
    """A markdown artifact with the before/after grid embedded as a PNG data URI."""
    with fsspec.open(url, "rb") as handle:
        data = base64.b64encode(handle.read()).decode()
    markdown = (
        f"### Step {step}: sim (left) → translated (right)\n\n![preview](data:image/png;base64,{data})\n"
    )
    create_markdown_artifact(markdown, key=key, description=f"translator preview at step {step}")


def train_in_segments(
    key: str,
    what: str,
    start: int,
    train: TrainConfig | DistillTrainConfig,
    train_segment: Callable[[int], dict[str, Any]],
    columns: Sequence[str],
    title: str,
) -> None:
    """Run ``train_segment(stop)`` for each :func:`segment_stops` from ``start`` (a checkpoint's step)
    to ``train.steps``, publishing the loss table (``columns``), the progress and a log line after each."""
    logger, total = get_run_logger(), train.steps
    if start:
        logger.info("%s: resuming from the checkpoint at step %d", what, start)
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call in a sync flow
        100.0 * start / total, key=f"{key}-progress", description=what
    )
    rows: list[dict[str, Any]] = []
    for stop in segment_stops(start, total, train.checkpoint_every):
        segment = train_segment(stop)
        rows += [{c: round(r[c], 4) for c in columns if c in r} for r in segment["rows"]]
        table(f"{key}-losses", rows, title)
        update_progress_artifact(progress, 100.0 * segment["step"] / total)
        progress_line(f"{what}: step {segment['step']}/{total}: {rows[-1] if rows else {}}")


@flow(name="train-translator", flow_run_name="train-translator-{source}-to-{target}")
def train_translator_flow(
    source: str,
    target: str,
    root: str | None = None,
    profile: str = "tiny",
    steps: int | None = None,
    label_aware: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Train a label-aware translator from ``source`` (sim) to ``target`` (real) and register it."""
    logger = get_run_logger()
    root = root or default_root()
    config = with_overrides(load_profile(profile), steps, label_aware)
    run = translator_tasks.plan_run(root, source, target, profile, config, device)
    done = translator_tasks.finished_result(run)
    if done is not None:
        logger.info("run %s already registered translator %s; nothing to do", run.run_id, done["translator"])
        return done
    key = artifact_key("translator", run.run_id)

    def train_segment(stop: int) -> dict[str, Any]:
        segment = translator_tasks.train_segment(run, stop)
        publish_preview(f"{key}-preview", segment["preview"], segment["step"])
        return segment

    start = translator_tasks.checkpoint_step(run)
    title = f"losses of translator run {run.run_id} ({run.source} → {run.target})"
    train_in_segments(key, "train-translator", start, config.train, train_segment, TABLE_COLUMNS, title)
    segmenter_url = translator_eval.reference_segmenter(run)
    metrics = translator_eval.evaluate(run, segmenter_url)
    table(
        f"{key}-metrics",
        [{"name": k, "value": v} for k, v in metrics["summary"].items()],
        "translated vs raw sim",
    )
    result = translator_tasks.register(run, metrics)
    logger.info("registered translator %s: %s", result["translator"], result["metrics"])
    return result
