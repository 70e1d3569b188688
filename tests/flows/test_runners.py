"""Task runners from config and the ``gpu`` tag concurrency limit."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from pydantic import ValidationError

from sim2real.flows.runners import RunnerConfig, build_task_runner, ensure_tag_limit, tasks_leave_process


def test_runner_kinds_from_config():
    thread = build_task_runner(RunnerConfig(max_workers=3))
    assert isinstance(thread, ThreadPoolTaskRunner) and thread._max_workers == 3
    remote = build_task_runner(RunnerConfig(kind="dask", address="tcp://scheduler:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://scheduler:8786"
    local = build_task_runner(RunnerConfig(kind="dask", dask_workers=2, dask_processes=True))
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["processes"] is True
    with pytest.raises(ValidationError, match="takes no address"):
        RunnerConfig(kind="thread", address="tcp://x:1")
    with pytest.raises(ValidationError):
        RunnerConfig(kind="spark")  # type: ignore[arg-type]


@pytest.mark.usefixtures("prefect_harness")
def test_gpu_tag_limit_is_created_once_and_never_overridden():
    tag = "gpu-test-runners"
    assert ensure_tag_limit(tag, 1) == 1
    assert ensure_tag_limit(tag, 4) == 1  # an operator's (or an earlier run's) limit stays in force
    with get_client(sync_client=True) as client:
        assert client.read_concurrency_limit_by_tag(tag).concurrency_limit == 1
        client.delete_concurrency_limit_by_tag(tag)


def test_ray_runner_by_address():
    prefect_ray = pytest.importorskip("prefect_ray")
    runner = build_task_runner(RunnerConfig(kind="ray", address="ray://head:10001"))
    assert isinstance(runner, prefect_ray.RayTaskRunner) and runner.address == "ray://head:10001"


@pytest.mark.usefixtures("prefect_harness")
def test_only_runners_outside_the_process_count_as_leaving_it():
    # The translate flow tags GPU shard tasks (and waits on the tag limit) only when they leave it.
    @flow
    def probe() -> bool:
        return tasks_leave_process()

    assert tasks_leave_process() is False  # no flow run
    assert probe.with_options(task_runner=build_task_runner(RunnerConfig()))() is False
    local_dask = RunnerConfig(kind="dask", dask_workers=1, dask_processes=False)
    assert probe.with_options(task_runner=build_task_runner(local_dask))() is True
