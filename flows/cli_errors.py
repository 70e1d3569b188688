"""How the CLI reports failures: an expected user error is one line, never a traceback.

An *expected* error is one the user can fix: a missing folder or file, a wrong layout, an unknown
format, version, option or profile, a version with nothing in it (:func:`is_user_error`). The CLI
prints ``error: <message>`` (one line, naming the file and the reason) on stderr and exits with 2;
with ``--json`` the last stdout line is ``{"error": "...", "type": "...", "exit_code": 2}``.

Prefect logs a failing flow or task run at ERROR, with its traceback, to the console before the
exception reaches the CLI. :func:`held_back_failure_logs` holds those console records back while a
flow runs: they are dropped when the run ends in a user error (the one line says it all) and printed
as they were for anything else, so a bug still shows its tracebacks. The records still reach the
Prefect API (the UI keeps them); only the console copy is held.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

USER_ERROR_EXIT_CODE = 2
#: Exception types that mean "the input or the request is wrong"; KeyError/IndexError are code bugs.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    LookupError,
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
_BUG_ERRORS: tuple[type[BaseException], ...] = (KeyError, IndexError)
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an expected user error (reported in one line, exit code 2)."""
    if isinstance(exc, click_exceptions.UsageError):
        return True
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            return True
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        pass
    return isinstance(exc, _USER_ERRORS) and not isinstance(exc, _BUG_ERRORS)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (a usage error's own text; other messages with newlines joined)."""
    message = exc.format_message() if isinstance(exc, click_exceptions.ClickException) else str(exc)
    if isinstance(exc, click_exceptions.UsageError) and exc.ctx is not None:
        message = f"{exc.ctx.command_path}: {message}"
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text or type(exc).__name__


def report(exc: BaseException, as_json: bool, exit_code: int = USER_ERROR_EXIT_CODE) -> None:
    """Print ``error: ...`` on stderr and, with ``as_json``, the JSON error object as the last stdout line."""
    message = one_line(exc)
    typer.echo(f"error: {message}", err=True)
    if as_json:
        payload: dict[str, Any] = {"error": message, "type": type(exc).__name__, "exit_code": exit_code}
        typer.echo(json.dumps(payload, sort_keys=True))


class _HoldBack(logging.Filter):
    """Keeps a console handler's ERROR records of flow/task runs instead of letting them through."""

    def __init__(self) -> None:
        super().__init__("sim2real-hold-back")
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self.handler: logging.Handler | None = None  # None: let records through
        self.target: logging.Handler | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith(_RUN_LOGGERS) and self.handler:
            self.held.append((self.handler, record))
            return False
        return True


def _console_handlers() -> list[logging.Handler]:
    """The handlers that write to the terminal (stream handlers on the root or ``prefect`` logger)."""
    handlers = logging.getLogger().handlers + logging.getLogger("prefect").handlers
    return [h for h in handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextmanager
def held_back_failure_logs() -> Iterator[None]:
    """Hold back the console copies of flow/task-run ERROR records while a flow runs (module docstring)."""
    filters = []
    for handler in _console_handlers():
        hold = _HoldBack()
        hold.handler = hold.target = handler
        handler.addFilter(hold)
        filters.append(hold)
    try:
        yield
    except BaseException as exc:
        if not is_user_error(exc):
            _release(filters)
        _remove(filters)
        raise
    _release(filters)
    _remove(filters)


def _release(filters: list[_HoldBack]) -> None:
    for hold in filters:
        hold.handler = None  # let the records pass this time
        for handler, record in hold.held:
            handler.handle(record)
        hold.held.clear()


def _remove(filters: list[_HoldBack]) -> None:
    for hold in filters:
        if hold.target is not None:
            hold.target.removeFilter(hold)
