"""The ``sim2real`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import json
from typing import Any

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="sim2real: sim-to-real data pipeline.",
)

# Explicit list of modules that define `register(app)`; add one line per area.
_COMMAND_MODULES: tuple[str, ...] = (
    "sim2real.flows.cli_data",
    "sim2real.flows.cli_evaluate",
    "sim2real.flows.cli_translate",
    "sim2real.flows.cli_translator",
    "sim2real.flows.cli_ops",
    "sim2real.flows.cli_demo",
)


def emit(result: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print a command's result: a human line, and with ``--json`` one JSON object as the last line."""
    if human:
        typer.echo(human, err=as_json)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, default=str))


def main() -> None:
    """Entry point of the console script: known failures print one clear line, not a traceback."""
    from sim2real.flows.runtime import quiet_prefect, tune_cpu_threads

    tune_cpu_threads()  # before anything imports torch
    quiet_prefect()  # before anything imports Prefect
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(app)
    try:
        app(standalone_mode=True)
    except (LookupError, FileNotFoundError, ValueError, PermissionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
