"""Operator-facing reporting shared by the flows: keyed Prefect artifacts and a CLI progress bar."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from tqdm import tqdm

T = TypeVar("T")


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from free-form parts."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


class Progress:
    """A Prefect progress artifact plus a terminal bar (on stderr, only when it is a TTY)."""

    def __init__(self, key: str, total: int, description: str) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.description = description
        artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
        assert not inspect.isawaitable(artifact_id), "Progress is used from synchronous flows only"
        self.artifact_id = artifact_id
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
        update_progress_artifact(self.artifact_id, progress=100.0 * self.done / self.total)

    def close(self) -> None:
        self.bar.close()


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
