"""Operator reporting: the progress artifact is throttled but always ends on the true count."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.artifacts import Artifact

from sim2real.flows.reporting import Progress, artifact_key


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
