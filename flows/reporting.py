"""Operator-facing reporting shared by the flows: keyed Prefect artifacts and a CLI progress bar."""

from __future__ import annotations

import inspect
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from tqdm import tqdm

T = TypeVar("T")

_line_sink: ContextVar[Callable[[str], None] | None] = ContextVar("sim2real_progress_lines", default=None)


@contextmanager
def progress_lines(sink: Callable[[str], None]) -> Iterator[None]:
    """Hand every :func:`progress_line` of the flows run inside this block (subflows included) to
    ``sink``: how ``sim2real demo`` prints a line per trained arm or translator segment on stdout
    while Prefect's own INFO logs stay quiet on the console."""
    token = _line_sink.set(sink)
    try:
        yield
    finally:
        _line_sink.reset(token)


def progress_line(message: str) -> None:
    """Log ``message`` on the run logger (the Prefect UI) and pass it to the caller's sink, if any."""
    get_run_logger().info(message)
    sink = _line_sink.get()
    if sink is not None:
        sink(message)


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from free-form parts."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


class Progress:
    """A Prefect progress artifact plus a terminal bar (on stderr, only when it is a TTY).

    The artifact is updated at most every ``min_interval`` seconds, and always at 100 % and on
    :meth:`close`: each update is a server request (~8 ms of the embedded server's CPU, a third of what
    a task run costs it), and a run of many short shards would otherwise send one per shard.
    """

    def __init__(self, key: str, total: int, description: str, min_interval: float = 1.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.description = description
        self.min_interval = min_interval
        artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
        assert not inspect.isawaitable(artifact_id), "Progress is used from synchronous flows only"
        self.artifact_id = artifact_id
        self._published = (0, time.monotonic())  # (units done, when) as last sent to the server
        self.bar = tqdm(
            total=total,
            desc=description,
            unit="shard",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            leave=False,
        )

    def step(self, count: int = 1) -> None:
        """Advance by ``count`` units."""
        self.done += count
        self.bar.update(count)
        if self.done >= self.total or time.monotonic() - self._published[1] >= self.min_interval:
            self._publish()

    def close(self) -> None:
        self.bar.close()
        if self.done != self._published[0]:
            self._publish()

    def _publish(self) -> None:
        update_progress_artifact(self.artifact_id, progress=100.0 * min(self.done, self.total) / self.total)
        self._published = (self.done, time.monotonic())


def completed(futures: Iterable[PrefectFuture[T]], progress: Progress) -> Iterator[PrefectFuture[T]]:
    """Yield futures as they finish, advancing ``progress``; results are read by the caller."""
    try:
        for future in as_completed(list(futures)):
            progress.step()
            yield future
    finally:
        progress.close()


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """Publish a keyed table artifact."""
    create_table_artifact(rows, key=key, description=description)
