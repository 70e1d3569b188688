"""The ``sim2real`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import threading
from typing import Any, NoReturn

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
    a JSON error object as the last stdout line) and exits with 2; see ``flows/cli_errors.py``.

    Called with ``argv`` (tests, other Python code) it is a function: it returns, or raises
    ``SystemExit``. Called without (the ``sim2real`` script, ``python -c "...main()"``) it owns the
    process and ends it through :func:`end_process`, which skips CPython's final teardown: pyarrow's
    thread pools abort at that teardown now and then ("terminate called without an active exception",
    exit -6 after a command had printed its result; apache/arrow#34314)."""
    if argv is not None:
        _run(list(argv))
        return
    try:
        _run(sys.argv[1:])
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except Exception:  # an unexpected error: its traceback, as Python would print it, and exit 1
        sys.excepthook(*sys.exc_info())
        status = 1
    end_process(status)


def _exit_status(code: object) -> int:
    """The process exit status for ``SystemExit(code)``, as the interpreter maps it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("message") prints the message and exits 1
    return 1


def end_process(status: int) -> NoReturn:
    """End the process with ``status`` after everything a normal exit does for Python code, in the
    interpreter's order: stop the executors' threads and wait for non-daemon threads; run the ``atexit``
    hooks (Prefect, logging, multiprocessing, ``weakref.finalize``, our worker pool); flush stdout and
    stderr. What it skips is the interpreter's final teardown and the C++ static destructors that
    pyarrow's thread pools race with."""
    threading._shutdown()  # type: ignore[attr-defined]  # executors' exit hooks, then joins threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the process was started with that descriptor closed
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(status)


def _run(args: list[str]) -> None:
    """Run one command line; expected errors become one line and ``SystemExit(2)``."""
    from sim2real.flows.cli_errors import USER_ERROR_EXIT_CODE, click_exceptions, is_user_error, report
    from sim2real.flows.runtime import quiet_prefect, tune_cpu_threads, use_running_server

    tune_cpu_threads()  # before anything imports torch
    quiet_prefect()  # before anything imports Prefect
    use_running_server()  # PREFECT_API_URL, else `sim2real server start`'s server, else embedded
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
