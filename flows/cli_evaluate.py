"""Evaluation commands: ``evaluate`` (retrain and evaluate the arms) and ``metrics`` (the stored tables)."""

from __future__ import annotations

from typing import Any

import typer

from sim2real.flows.cli import emit
from sim2real.storage.versions import default_root

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")
ROOT_OPT = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data).")


def _human_tables(tables: dict[str, list[dict[str, Any]]]) -> str:
    from sim2real.flows.evaluate_report import TITLES, text_table

    return "\n\n".join(f"{TITLES[task]}\n{text_table(rows)}" for task, rows in tables.items())


def evaluate(
    real: str = typer.Option(..., "--real", help="Real training version NAME@VER (or NAME@latest)."),
    val: str = typer.Option(..., "--val", help="Validation version NAME@VER (or NAME@latest)."),
    extra: list[str] = typer.Option(None, "--extra", help="Version added to real, one arm each; repeat."),
    task: list[str] = typer.Option(None, "--task", help="detection and/or segmentation (default: both)."),
    profile: str = typer.Option("demo", "--profile", help="tiny, demo, full, or a YAML path."),
    seeds: int = typer.Option(None, "--seeds", min=1, help="Train every arm this many times (seeds "
                              "profile.seed, +1, …; default: the profile's `seeds`)."),
    backbone_weights: str = typer.Option(
        None, "--backbone-weights", help="Backbone weights for both tasks: a torchvision state-dict file, "
        "or a torchvision weights name (ResNet18_Weights.IMAGENET1K_V1) in $TORCH_HOME/hub/checkpoints; "
        "never downloaded (default: the profile's, else random)."),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Retrain real-only and real+EXTRA arms, evaluate on VAL, store the metrics and print both tables."""
    from sim2real.flows.evaluate import (
        TASK_NAMES,
        check_backbone_weights,
        load_profile,
        retrain_and_evaluate,
        task_models,
    )
    from sim2real.flows.runtime import run_quietly

    tasks = list(task) if task else list(TASK_NAMES)
    check_backbone_weights(task_models(load_profile(profile), tasks, backbone_weights))  # before any run

    result = run_quietly(
        retrain_and_evaluate,
        real=real,
        val=val,
        extras=list(extra or []),
        tasks=tasks,
        profile=profile,
        root=root or default_root(),
        seeds=seeds,
        backbone_weights=backbone_weights,
    )
    arms = ", ".join(
        f"{a['task']}/{a['arm']}/seed {a['seed']} "
        + ("cached" if a["cached"] else f"trained {a['train_seconds']:.0f}s")
        for a in result["arms"]
    )
    human = f"{_human_tables(result['tables'])}\n\n{arms}\nretrain-and-evaluate took {result['seconds']:.0f}s"
    emit(result, as_json, human)


def metrics(
    version: str = typer.Option(None, "--version", help="Only rows that train or validate on NAME@VER."),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Print the seed-style tables (per-class AP / IoU and mAP / mIoU) from the metrics store."""
    from sim2real.flows.evaluate_report import tables_from_rows
    from sim2real.storage.metrics_store import MetricsStore
    from sim2real.storage.versions import DatasetStore

    if version:
        version = DatasetStore(root or default_root()).open(version).ref
    rows = MetricsStore(root or default_root()).latest_rows(version)
    tables = tables_from_rows(rows)
    emit({"tables": tables, "rows": len(rows)}, as_json, _human_tables(tables) or "no metrics yet")


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the CLI."""
    app.command()(evaluate)
    app.command()(metrics)
