"""Operations commands: ``nightly``, ``promote``, ``promote-translator``, ``gate``.

They run in-process (embedded Prefect unless ``PREFECT_API_URL`` points at a server), like the other
commands; deployments on a server run the same flows (deploy/prefect.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from sim2real.flows.cli import emit
from sim2real.storage.versions import default_root

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")
ROOT_OPT = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data).")


def load_nightly_config(path: Path | None) -> dict[str, Any]:
    """The ``NightlyParams`` fields of a YAML file (``{}`` without one); unknown keys fail later, by name."""
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of nightly parameters, got {type(data).__name__}")
    return data


def nightly(
    source_dir: Path = typer.Option(
        None, "--source-dir", help="Simulator export folder (new frames appended)."
    ),
    real: str = typer.Option(None, "--real", help="Real training version, e.g. real@production."),
    val: str = typer.Option(None, "--val", help="Real validation version, e.g. real-val@production."),
    source_name: str = typer.Option(
        None, "--source-name", help="Dataset name of the sim frames (default sim)."
    ),
    translator: str = typer.Option(None, "--translator", help="Translator id or alias (default production)."),
    profile: str = typer.Option(None, "--profile", help="Evaluate profile: tiny, demo, full or a YAML path."),
    config: Path = typer.Option(
        None, "--config", exists=True, dir_okay=False, help="YAML of nightly parameters."
    ),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Run tonight's pipeline: ingest new frames → translate → gate → retrain/evaluate → promote."""
    from pydantic import ValidationError

    from sim2real.flows.nightly import NightlyParams, check_inputs, nightly_flow
    from sim2real.flows.runtime import run_quietly

    options = {
        "source_dir": str(source_dir.resolve()) if source_dir else None,
        "real": real,
        "val": val,
        "source_name": source_name,
        "translator": translator,
        "profile": profile,
        "root": root,
    }
    fields = {**load_nightly_config(config), **{k: v for k, v in options.items() if v is not None}}
    fields.setdefault("root", default_root())
    try:
        params = NightlyParams.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(f"nightly parameters{f' in {config}' if config else ''}: {exc}") from None
    check_inputs(params, params.root or default_root())  # before any flow starts: one clear error line
    result = run_quietly(nightly_flow, params=params)
    human = f"nightly: {result['status']}, {result['new_frames']} new frame(s)"
    if result.get("translated"):
        human += f", {result['translated']}"
    if result.get("promoted"):
        human += f" → {result['promoted']}"
    if result.get("reasons"):
        human += f"; not promoted: {'; '.join(result['reasons'])}"
    emit(result, as_json, human)


def promote(
    ref: str = typer.Argument(..., help="Version to promote, NAME@VERSION."),
    alias: str = typer.Option("production", "--alias", help="Alias to point at it."),
    force: bool = typer.Option(False, "--force", help="Promote even if its quality gate failed."),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Point NAME@ALIAS at a version (refuses one that failed its gate unless --force)."""
    from sim2real.flows.promotion import promote_flow
    from sim2real.flows.runtime import run_quietly

    result = run_quietly(promote_flow, ref=ref, alias=alias, force=force, root=root or default_root())
    emit(result, as_json, f"{result['alias']} → {result['ref']} (was {result['previous']})")


def promote_translator_command(
    translator_id: str = typer.Argument(
        ..., help="Translator id in the registry (see `sim2real translators`)."
    ),
    alias: str = typer.Option("production", "--alias", help="Alias the nightly flow translates with."),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Make a registry translator the promoted one (what `nightly --translator production` uses)."""
    from sim2real.storage.registry import TranslatorRegistry

    registry = TranslatorRegistry(root or default_root())
    result = registry.set_alias(alias, registry.resolve(translator_id))
    emit(result, as_json, f"translator {alias} → {result['id']}")


def gate(
    ref: str = typer.Argument(..., help="Translated version, NAME@VERSION."),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show the recorded quality-gate decision of a version."""
    from sim2real.storage.promotion import read_gate

    record = read_gate(root or default_root(), ref)
    if record is None:
        raise LookupError(f"{ref}: no gate decision recorded (it was not made by the nightly flow)")
    lines = [f"{record['ref']}: {'passed' if record['passed'] else 'FAILED'}"]
    lines += [
        f"  {c['check']:<24} {c['value']!s:>8} {c['bound']:<10} {'ok' if c['passed'] else 'FAIL'}"
        for c in record["checks"]
    ]
    emit(record, as_json, "\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add the operations commands to the CLI."""
    app.command()(nightly)
    app.command()(promote)
    app.command(name="promote-translator")(promote_translator_command)
    app.command()(gate)
