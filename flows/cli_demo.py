"""``sim2real demo``: the whole pipeline on toy data (what ``make demo`` runs)."""

from __future__ import annotations

import typer

from sim2real.flows.cli import emit
from sim2real.storage.versions import default_root


def demo(
    frames_scale: float = typer.Option(1.0, "--scale", min=0.05, help="Scale the number of frames."),
    translator_profile: str = typer.Option("demo", "--translator-profile"),
    evaluate_profile: str = typer.Option("demo", "--evaluate-profile"),
    size: str = typer.Option("128x256", "--size", help="Frame size HxW."),
    root: str = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line."),
) -> None:
    """Render toy sim and real data, ingest, train the translator, translate, retrain and evaluate."""
    from sim2real.flows.cli_data import parse_size
    from sim2real.flows.cli_evaluate import _human_tables
    from sim2real.flows.demo import DemoConfig, demo_flow
    from sim2real.flows.runtime import run_quietly

    height, width = parse_size(size)
    base = DemoConfig()
    config = DemoConfig(
        height=height,
        width=width,
        sim_frames=max(4, round(base.sim_frames * frames_scale)),
        real_frames=max(4, round(base.real_frames * frames_scale)),
        val_frames=max(4, round(base.val_frames * frames_scale)),
        translator_profile=translator_profile,
        evaluate_profile=evaluate_profile,
    )
    root = root or default_root()
    typer.echo(f"sim2real demo: data under {root}; this takes a while on CPU", err=True)
    result = run_quietly(demo_flow, config=config, root=root)
    versions = "\n".join(f"  {ref}" for ref in result["versions"].values())
    steps = "\n".join(f"  {step:<22} {seconds:>7.1f}s" for step, seconds in result["seconds"].items())
    human = (
        f"dataset versions:\n{versions}\ntranslator: {result['translator']}\n\n"
        f"{_human_tables(result['tables'])}\n\ntimings:\n{steps}\n\n"
        f"Look around: sim2real versions | sim2real metrics | sim2real translators (root {root})"
    )
    emit(result, as_json, human)


def register(app: typer.Typer) -> None:
    """Add the demo command to the CLI."""
    app.command()(demo)
