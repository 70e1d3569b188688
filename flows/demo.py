"""The main job on toy data: render → ingest → train translator → translate → retrain and evaluate.

One parent flow whose steps are the product's own flows run as subflows, so an operator sees the whole
DAG in the Prefect UI and every step keeps its own artifacts. Each step is content-addressed, so a
rerun after a crash (or a second ``make demo``) redoes only what is missing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from sim2real.flows.evaluate import retrain_and_evaluate
from sim2real.flows.ingest import ingest_flow
from sim2real.flows.reporting import progress_lines
from sim2real.flows.train_translator import train_translator_flow
from sim2real.flows.translate import translate_flow
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import default_root


class DemoConfig(BaseModel):
    """Sizes of the demo; the defaults take ~3,200 CPU-seconds (about half an hour on 2 idle CPU cores)."""

    height: int = Field(default=128, ge=16, description="frame height in pixels")
    width: int = Field(default=256, ge=16, description="frame width in pixels")
    sim_frames: int = Field(default=240, ge=4, description="simulator frames (the source domain)")
    real_frames: int = Field(default=160, ge=4, description="real training frames (the target domain)")
    val_frames: int = Field(default=60, ge=4, description="real validation frames")
    translator_profile: str = Field(default="demo", description="translator profile (tiny, demo, full)")
    evaluate_profile: str = Field(default="demo", description="evaluate profile (tiny, demo, full)")
    seeds: int | None = Field(default=None, ge=1, description="seeds per arm (None: profile)")
    max_shard_samples: int = Field(default=64, ge=1, description="samples per shard")


EXPORTS = (  # dataset name, toy style, seed, DemoConfig field with the frame count
    ("toy-sim", "sim", 0, "sim_frames"),
    ("toy-real", "real", 1, "real_frames"),
    ("toy-real-val", "real", 2, "val_frames"),
)


@task(name="render-toy-export", task_run_name="render-{name}", cache_policy=NO_CACHE)
def render_export(
    out_dir: str, name: str, style: str, seed: int, frames: int, height: int, width: int
) -> str:
    """Render a toy simulator export folder (deterministic: the same arguments give the same bytes)."""
    write_export(out_dir, ToySimConfig(style=style, height=height, width=width, seed=seed), frames)
    return out_dir


@flow(name="sim2real-demo")
def demo_flow(config: DemoConfig = DemoConfig(), root: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Run every stage of the pipeline on toy data and return the evaluation tables."""
    logger = get_run_logger()
    root = root or default_root()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    refs: dict[str, str] = {}
    for name, style, seed, count_field in EXPORTS:
        t0 = time.perf_counter()
        stage(started, f"render and ingest {name} ({getattr(config, count_field)} frames)")
        out = render_export(
            os.path.join(root, "exports", name),
            name,
            style,
            seed,
            getattr(config, count_field),
            config.height,
            config.width,
        )
        result = ingest_flow(out, name, root=root, max_shard_samples=config.max_shard_samples)
        refs[name] = f"{name}@{result['version']}"
        timings[f"ingest {name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage(started, f"train the translator ({config.translator_profile} profile; the longest step)")
    with progress_lines(lambda line: stage(started, f"  {line}")):  # one line per checkpoint segment
        trained = train_translator_flow(
            refs["toy-sim"], refs["toy-real"], root=root, profile=config.translator_profile
        )
    timings["train translator"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage(started, f"translate {refs['toy-sim']} with translator {trained['translator']}")
    translated = translate_flow(refs["toy-sim"], trained["translator"], root=root)
    refs["toy-sim-translated"] = f"{translated['name']}@{translated['version']}"
    timings["translate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage(started, "retrain and evaluate: real-only, real + sim, real + translated")
    with progress_lines(lambda line: stage(started, f"  {line}")):  # one line per trained arm
        evaluation = retrain_and_evaluate(
            refs["toy-real"],
            refs["toy-real-val"],
            extras=[refs["toy-sim"], refs["toy-sim-translated"]],
            profile=config.evaluate_profile,
            root=root,
            seeds=config.seeds,
        )
    timings["retrain and evaluate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    summary = {
        "versions": refs,
        "translator": trained["translator"],
        "translator_metrics": trained.get("metrics", {}),
        "tables": evaluation["tables"],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    create_markdown_artifact(demo_markdown(summary), key="demo-summary", description="sim2real demo")
    logger.info("demo finished in %.0fs", timings["total"])
    stage(started, "done")
    return summary


def stage(started: float, message: str) -> None:
    """One line per stage on stdout, flushed, so a log of ``make demo > log`` shows progress as it goes."""
    print(f"[sim2real demo {time.perf_counter() - started:6.0f} s] {message}", flush=True)


def demo_markdown(summary: dict[str, Any]) -> str:
    """Versions, translator and step timings as markdown for the Prefect UI."""
    lines = ["# sim2real demo", "", "| dataset | version |", "|---|---|"]
    lines += [f"| {name} | `{ref}` |" for name, ref in summary["versions"].items()]
    lines += ["", f"Translator: `{summary['translator']}`", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds} |" for step, seconds in summary["seconds"].items()]
    return "\n".join(lines)
