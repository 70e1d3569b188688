"""Translator commands: ``train-translator``, ``distill`` and ``translators``."""

from __future__ import annotations

from typing import Any

import typer

from sim2real.flows.cli import emit
from sim2real.storage.versions import default_root

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")
ROOT_OPT = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data).")
SOURCE_OPT = typer.Option(..., "--source", help="Sim version NAME@VER (or NAME@latest).")
PROFILE_OPT = typer.Option("tiny", "--profile", help="tiny, demo, full, or a YAML path.")
STEPS_OPT = typer.Option(None, "--steps", min=1, help="Override the profile's step count.")
DEVICE_OPT = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ...")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _summary(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(result["metrics"].items()))


def train_translator(
    source: str = SOURCE_OPT,
    target: str = typer.Option(..., "--target", help="Real version NAME@VER (or NAME@latest)."),
    profile: str = PROFILE_OPT,
    steps: int = STEPS_OPT,
    label_aware: bool = typer.Option(
        True, "--label-aware/--no-label-aware", help="Semantic + detail losses."
    ),
    device: str = DEVICE_OPT,
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Train a label-aware sim→real translator and register it; resumes a crashed run."""
    from sim2real.flows.runtime import run_quietly
    from sim2real.flows.train_translator import train_translator_flow

    result = run_quietly(train_translator_flow, source=source, target=target, root=root or default_root(),
                         profile=profile, steps=steps, label_aware=label_aware, device=device)
    summary = _summary(result)
    emit(result, as_json, f"translator {result['translator']} ({result['steps']} steps): {summary}")


def distill(
    teacher: str = typer.Option(..., "--teacher", help="Registry id of the translator to distil."),
    source: str = SOURCE_OPT,
    profile: str = PROFILE_OPT,
    steps: int = STEPS_OPT,
    device: str = DEVICE_OPT,
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Distil a translator into a small, fast student and register it; resumes a crashed run."""
    from sim2real.flows.distill import distill_flow
    from sim2real.flows.runtime import run_quietly

    result = run_quietly(distill_flow, teacher=teacher, source=source, root=root or default_root(),
                         profile=profile, steps=steps, device=device)
    summary = _summary(result)
    human = (
        f"student {result['translator']} of {result['teacher']} ({result['steps']} steps, "
        f"{result['gflops_per_frame']:.3f} GFLOPs/frame at 256x512): {summary}"
    )
    emit(result, as_json, human)


def _human_row(row: dict[str, Any]) -> str:
    m = row["metrics"]
    lineage = f" of {row['teacher']}" if row["teacher"] else ""
    return (
        f"{row['id']}  {row['kind']}{lineage}  {row['source']} → {row['target']}  "
        f"{row['profile']} {row['steps']} steps  "
        f"{_fmt(row['gflops_per_frame'])} GFLOPs/frame  {row['parameters']} params  "
        f"fidelity {_fmt(m.get('fidelity_ratio_translated'))} "
        f"(raw sim {_fmt(m.get('fidelity_ratio_raw_sim'))})  "
        f"swd {_fmt(m.get('realism_swd_translated'))} (raw sim {_fmt(m.get('realism_swd_raw_sim'))})"
    )


def translators(root: str = ROOT_OPT, as_json: bool = JSON_OPT) -> None:
    """List registered translators (students too) with data versions, cost per frame and metrics.

    ``gflops_per_frame`` is the sim → real path's FLOPs on one 256×512 frame, ``parameters`` that path's.
    """
    from sim2real.models.translator.kinds import footprint
    from sim2real.storage.registry import TranslatorRegistry

    rows = []
    for card in TranslatorRegistry(root or default_root()).list():
        summary = card.get("metrics", {}).get("summary", {})
        rows.append(
            {
                "id": card["id"],
                **footprint(card),
                "teacher": card.get("teacher", {}).get("id"),
                "source": card.get("data", {}).get("source"),
                "target": card.get("data", {}).get("target"),
                "profile": card.get("profile"),
                "steps": card.get("steps"),
                "label_aware": card.get("label_aware"),
                "metrics": summary,
            }
        )
    human = "\n".join(_human_row(r) for r in rows)
    emit({"translators": rows}, as_json, human or "no translators")


def register(app: typer.Typer) -> None:
    """Add the translator commands to the CLI."""
    app.command("train-translator")(train_translator)
    app.command("distill")(distill)
    app.command("translators")(translators)
