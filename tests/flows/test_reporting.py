"""Operator reporting: the progress artifact is throttled but always ends on the true count."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow, task
from prefect.artifacts import Artifact

from sim2real.flows.reporting import Progress, ShardsFailed, artifact_key, run_shards


def progress_value(key: str) -> float:
    artifact = Artifact.get(key)
    assert artifact is not None, key
    return float(artifact.data)


@pytest.mark.usefixtures("prefect_harness")
def test_progress_artifact_is_throttled_and_closes_on_the_true_count():
    seen: dict[str, list[float]] = {}

    @flow
    def steps() -> None:
        slow = Progress("progress-throttled", 10, "throttled", min_interval=3600)
        seen["throttled"] = [progress_value("progress-throttled")]
        for _ in range(4):
            slow.step()
            seen["throttled"].append(progress_value("progress-throttled"))
        slow.close()  # stopped early (a failure): the artifact shows how far it got
        seen["throttled"].append(progress_value("progress-throttled"))

        every = Progress("progress-every", 3, "every step", min_interval=0)
        seen["every"] = []
        for _ in range(3):
            every.step()
            seen["every"].append(progress_value("progress-every"))
        every.close()

        finish = Progress("progress-finish", 2, "finish", min_interval=3600)
        finish.step(2)  # 100 % is always sent, however recent the last update
        seen["finish"] = [progress_value("progress-finish")]
        finish.close()

    steps()
    assert seen["throttled"] == [0.0, 0.0, 0.0, 0.0, 0.0, 40.0]
    assert seen["every"] == pytest.approx([100 / 3, 200 / 3, 100.0])
    assert seen["finish"] == [100.0]


def test_artifact_keys_are_valid():
    assert artifact_key("translate", "Toy_Sim@v1", "progress") == "translate-toy-sim-v1-progress"


@pytest.mark.usefixtures("prefect_harness")
def test_run_shards_keeps_a_window_and_a_failure_does_not_stop_the_others():
    lock = threading.Lock()
    running = {"now": 0, "peak": 0}

    @task(retries=0)
    def shard(index: int) -> dict[str, int]:
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        try:
            time.sleep(0.02)  # so that tasks submitted together overlap
            if index == 2:
                raise ValueError("shard 2 is broken")
            return {"index": index, "square": index * index}
        finally:
            with lock:
                running["now"] -= 1

    yielded: list[tuple[int, dict[str, int]]] = []

    @flow
    def shards() -> None:
        progress = Progress("run-shards-progress", 8, "shards")
        for index, record in run_shards(shard.submit, 8, 3, progress, "toy@v1"):
            yielded.append((index, record))

    expected = r"toy@v1: 1 shard\(s\) failed \[2\] .*shard 2 is broken.*7 finished"
    with pytest.raises(ShardsFailed, match=expected):
        shards()
    assert sorted(yielded) == [(i, {"index": i, "square": i * i}) for i in range(8) if i != 2]
    assert 1 <= running["peak"] <= 3
    assert progress_value("run-shards-progress") == 100.0
