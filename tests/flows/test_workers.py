"""The worker pool of ``tasks/workers.py``: what a task sees when the work in a worker fails."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sim2real.tasks import workers


class HoldsAFile(Exception):
    """Like webdataset's tar ``ReadError``: the exception keeps the open file it failed on."""

    def __init__(self, message: str, handle: io.BufferedReader) -> None:
        super().__init__(message, handle)


def test_an_exception_that_cannot_travel_back_keeps_its_type_name_and_message(tmp_path: Path) -> None:
    shard = tmp_path / "toy-000002.tar"
    shard.write_bytes(b"\0" * 10)

    def read() -> None:
        with shard.open("rb") as handle:
            raise HoldsAFile(f"unexpected end of data @ {shard}", handle)

    with pytest.raises(RuntimeError) as caught:
        workers._call_in_worker(read)
    assert str(caught.value).startswith(f"HoldsAFile: ('unexpected end of data @ {shard}'")


def test_an_exception_that_travels_back_is_raised_as_it_is() -> None:
    workers.shutdown_pool()
    try:
        with pytest.raises(ValueError, match="invalid literal for int"):
            workers.run_in_pool(2, int, "not a number")  # raised in a worker process, unpickled here
        assert workers.run_in_pool(2, int, "42") == 42  # the pool still works after a task's error
    finally:
        workers.shutdown_pool()
