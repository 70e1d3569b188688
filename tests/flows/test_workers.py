"""The worker pool of ``tasks/workers.py``: what a task sees when the work in a worker fails."""

from __future__ import annotations

import io
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool
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


# Imported at start-up by every process while PYTHONPATH names its folder: a spawn-ed worker (its last
# argument is --multiprocessing-fork) exits at once, as one that cannot start would.
NO_WORKERS = """
import os, sys
if sys.argv[-1:] == ["--multiprocessing-fork"]:
    os._exit(3)
"""


def test_a_pool_that_cannot_start_breaks_once_then_the_work_runs_in_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sitecustomize.py").write_text(NO_WORKERS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    workers.shutdown_pool()
    try:
        with pytest.raises(BrokenProcessPool):
            workers.run_in_pool(2, os.getpid)  # the caller's task fails once (Prefect retries it)
        assert workers.run_in_pool(2, os.getpid) == os.getpid()  # then it runs here, not in a new pool
        assert workers._pool is None
        workers.shutdown_pool()  # the flow's end: the next run tries workers again
        monkeypatch.delenv("PYTHONPATH")
        assert workers.run_in_pool(2, os.getpid) != os.getpid()
        with pytest.raises(ZeroDivisionError):  # a call that raises in a worker still counts as started
            workers.run_in_pool(2, divmod, 1, 0)
        assert not workers._start_failed
    finally:
        workers.shutdown_pool()


def test_a_flow_started_by_a_worker_importing_its_parents_script_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sim2real.flows.translate import run_translate

    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(RuntimeError, match="if __name__ == '__main__'"):
        run_translate(source="any@latest", translator="any")  # before any Prefect run starts
    monkeypatch.undo()
    workers.refuse_in_starting_worker("translate")  # the flow's own process: no error
