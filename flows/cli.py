"""The ``sim2real`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import json
import sys
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
    "sim2real.flows.cli_server",
)


def emit(result: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print a command's result: a human line, and with ``--json`` one JSON object as the last line."""
    if human:
        typer.echo(human, err=as_json)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: an expected error prints one clear line (and with ``--json``
    a JSON error object as the last stdout line) and exits with 2; see ``flows/cli_errors.py``."""
    from sim2real.flows.cli_errors import USER_ERROR_EXIT_CODE, click_exceptions, is_user_error, report
    from sim2real.flows.runtime import quiet_prefect, tune_cpu_threads, use_running_server

    tune_cpu_threads()  # before anything imports torch
    quiet_prefect()  # before anything imports Prefect
    use_running_server()  # PREFECT_API_URL, else `sim2real server start`'s server, else embedded
    args = sys.argv[1:] if argv is None else list(argv)
    if not app.registered_commands:
        for module in _COMMAND_MODULES:
            importlib.import_module(module).register(app)
    as_json = "--json" in args
    try:
        exit_code = app(args=args, prog_name="sim2real", standalone_mode=False)
        if isinstance(exit_code, int) and exit_code:  # typer.Exit(n) comes back as a return value
            raise SystemExit(exit_code)
    except click_exceptions.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        raise SystemExit(0) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        raise SystemExit(1) from None
    except Exception as exc:
        if not is_user_error(exc):
            if as_json:
                report(exc, as_json=True, exit_code=1)
            raise
        report(exc, as_json)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
