"""Operator-facing reporting shared by the flows: keyed Prefect artifacts and a CLI progress bar."""

from __future__ import annotations

import inspect
import queue
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
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


class ShardsFailed(RuntimeError):
    """Some shard tasks failed (after their retries); the finished shards are kept for a rerun."""


def shard_window(processes: int) -> int:
    """Shard tasks a flow keeps in flight for ``processes`` worker processes: one each, plus two being
    started or finished by Prefect (its API calls) so that no worker waits for the next shard."""
    return max(processes, 1) + 2


def run_shards(
    submit: Callable[[int], PrefectFuture[T]], count: int, window: int, progress: Progress, what: str
) -> Iterator[tuple[int, T]]:
    """Run shard tasks ``submit(0)`` … ``submit(count - 1)`` with at most ``window`` of them in flight,
    submitting the next as one finishes; yield ``(index, result)`` as each finishes (any order),
    advancing ``progress``.

    The flow thus holds O(window) futures and task runs, not O(shards): each finished future is
    dropped once its result is yielded (Prefect's state of a task run, ~40 KB, lives with its future),
    and the thread runner starts at most ``window`` threads. A failed shard does not stop the others:
    once every shard has finished, raises :class:`ShardsFailed` naming the failed indices (``what``,
    e.g. ``"toy@v1"``, starts the message) with the first failure's message.
    """
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    in_flight: dict[int, PrefectFuture[T]] = {}
    failed: list[int] = []
    first_message = ""
    submitted = 0
    try:
        while submitted < count or in_flight:
            while submitted < count and len(in_flight) < window:
                future = submit(submitted)
                in_flight[submitted] = future
                future.add_done_callback(partial(_put_index, finished, submitted))
                submitted += 1
            index = finished.get()
            future = in_flight.pop(index)
            future.wait()
            progress.step()
            forget_task_run(future.task_run_id)
            if future.state.is_completed():
                result = future.result()
                del future  # before the caller resumes: nothing of the task run is held past this
                yield index, result
            else:
                failed.append(index)
                first_message = first_message or str(future.state.message)
                del future
    finally:
        progress.close()
    if failed:
        shown = ", ".join(str(i) for i in sorted(failed)[:10]) + (", ..." if len(failed) > 10 else "")
        raise ShardsFailed(
            f"{what}: {len(failed)} shard(s) failed [{shown}] ({first_message}); "
            f"{count - len(failed)} finished shard(s) are kept, rerun to build the rest"
        )


def forget_task_run(task_run_id: UUID) -> None:
    """Drop what the flow run's context keeps of a finished task run whose result the flow does not
    pass to another task: its ``run_results`` entries (a copy of its final state for each object of its
    result, kept to draw dependency edges), its ``task_run_assets`` entry (an empty set), and the thread
    runner's cancel event (``ThreadPoolTaskRunner._cancel_events``, Prefect 3.9; skipped where a runner
    has no such dict). Prefect keeps all three for the flow run's life: ~10 KB per task run."""
    context = FlowRunContext.get()
    if context is None:
        return
    results = context.run_results
    for key, (state, _run_type, _ref) in list(results.items()):  # task threads add entries meanwhile
        if state.state_details.task_run_id == task_run_id:
            results.pop(key, None)
    context.task_run_assets.pop(task_run_id, None)
    cancel_events = getattr(context.task_runner, "_cancel_events", None)
    if isinstance(cancel_events, dict):
        cancel_events.pop(task_run_id, None)


def _put_index(finished: queue.SimpleQueue[int], index: int, _future: object) -> None:
    finished.put(index)


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """Publish a keyed table artifact."""
    create_table_artifact(rows, key=key, description=description)
