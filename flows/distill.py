"""The distill flow: a registered translator (the teacher) and a sim version in, a registered student out.

Segments of ``checkpoint_every`` steps run as tasks; after each one the flow publishes the loss table and
the progress as keyed artifacts. At the end it publishes the student-vs-teacher metrics table. A rerun
with the same inputs resumes from the last checkpoint, or returns the registered result when the run
had finished.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger

from sim2real.flows.reporting import artifact_key, table
from sim2real.flows.train_translator import train_in_segments
from sim2real.models.translator.distill import DistillConfig
from sim2real.storage.versions import default_root
from sim2real.tasks import distill as distill_tasks
from sim2real.tasks import translator as translator_tasks
from sim2real.tasks import translator_eval

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILES: tuple[str, ...] = ("tiny", "demo", "full")
TABLE_COLUMNS = ("step", "total", "l1", "edge", "sem", "hf")


def load_distill_profile(name: str, steps: int | None = None) -> DistillConfig:
    """Student profile ``tiny``/``demo``/``full`` (or a YAML path), validated, unknown keys rejected;
    ``steps`` overrides the step count (checkpoint and log intervals shrink to fit)."""
    path = PROFILE_DIR / f"student_{name}.yaml" if name in PROFILES else Path(name)
    if not path.is_file():
        raise ValueError(f"student profile {name!r}: not one of {PROFILES} and no file {path}")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if steps is not None and isinstance(data.get("train"), dict):
        train = data["train"]
        train["steps"] = steps
        train["checkpoint_every"] = min(train.get("checkpoint_every", steps), steps)
        train["log_every"] = min(train.get("log_every", 1), train["checkpoint_every"])
        while train["checkpoint_every"] % train["log_every"]:
            train["log_every"] -= 1
    try:
        return DistillConfig.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


@flow(name="distill", flow_run_name="distill-{teacher}-on-{source}")
def distill_flow(
    teacher: str,
    source: str,
    root: str | None = None,
    profile: str = "tiny",
    steps: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Distil registry translator ``teacher`` into a student on sim version ``source`` and register it."""
    logger = get_run_logger()
    root = root or default_root()
    config = load_distill_profile(profile, steps)
    run = distill_tasks.plan_run(root, teacher, source, profile, config, device)
    done = translator_tasks.finished_result(run)
    if done is not None:
        logger.info("run %s already registered student %s; nothing to do", run.run_id, done["translator"])
        return done
    key = artifact_key("student", run.run_id)
    start = translator_tasks.checkpoint_step(run)
    title = f"losses of distill run {run.run_id} (teacher {teacher})"
    segment = functools.partial(distill_tasks.train_segment, run)
    train_in_segments(key, "distill", start, config.train, segment, TABLE_COLUMNS, title)
    segmenter_url = translator_eval.reference_segmenter(run.teacher_run)
    metrics = translator_eval.evaluate_distilled(run, segmenter_url)
    table(
        f"{key}-vs-teacher",
        [{"name": name, **values} for name, values in metrics["vs_teacher"].items()],
        f"student vs teacher {teacher} on the teacher's held-out frames",
    )
    result = distill_tasks.register(run, metrics)
    logger.info("registered student %s of teacher %s: %s", result["translator"], teacher, result["metrics"])
    return result
