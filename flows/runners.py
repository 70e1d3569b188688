"""Task runners from config: Prefect's thread pool by default, Dask or Ray for scale-out.

``build_task_runner(RunnerConfig(...))`` returns a fresh runner; a flow takes it through
``flow.with_options(task_runner=...)``. ``prefect_dask`` and ``prefect_ray`` are imported only when
asked for, so neither is needed for the default.

GPU tasks that leave the flow's process (Dask workers, Ray actors) carry the tag ``gpu``. Prefect
limits how many task runs with a tag run at once through a tag concurrency limit on the API server.
Create it once per server, with as many slots as GPUs a single task may be scheduled onto (one GPU:
one slot)::

    prefect concurrency-limit create gpu 1

or from Python with :func:`ensure_tag_limit` (the translate flow calls it for such runs and leaves a
limit that already exists untouched). Tasks tagged ``gpu`` then wait for a free slot wherever they run.

Under the thread runner the shard tasks are threads of the flow's process and share its one cached
engine, so the process itself bounds the GPU's work (``max_workers`` tasks; which flows share a GPU
host is the work pool's concurrency, ``deploy/pools``). There the tag is left off
(:func:`tasks_leave_process`): each tagged task start cost ~2 s of slot acquisition on the embedded
server, and a task that finds the slot taken is told to retry after up to
``PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS`` (Prefect's default 10 s; 1 s for sim2real's
embedded server, ``flows/runtime.py``); ``bench/gpu_slots.py`` measures both.
"""

from __future__ import annotations

from typing import Literal

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

GPU_TAG = "gpu"


class RunnerConfig(BaseModel):
    """Which task runner executes a flow's tasks, and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["thread", "dask", "ray"] = Field(default="thread", description="thread pool, Dask or Ray")
    max_workers: int | None = Field(
        default=2, ge=1, description="thread runner: tasks at once (None: Prefect's)"
    )
    address: str | None = Field(
        default=None, description="dask: scheduler address; ray: cluster address (None: start a local one)"
    )
    dask_workers: int = Field(default=1, ge=1, description="dask local cluster: worker count")
    dask_threads_per_worker: int = Field(default=1, ge=1, description="dask local cluster: tasks per worker")
    dask_processes: bool = Field(
        default=False, description="dask local cluster: worker processes (else threads)"
    )

    @model_validator(mode="after")
    def _check_address(self) -> RunnerConfig:
        if self.kind == "thread" and self.address:
            raise ValueError("runner 'thread' takes no address")
        return self


def build_task_runner(config: RunnerConfig) -> TaskRunner:
    """A new task runner for ``config``; raises ``ValueError`` naming the missing package."""
    if config.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=config.max_workers)
    if config.kind == "dask":
        return _dask_runner(config)
    return _ray_runner(config)


def _dask_runner(config: RunnerConfig) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ValueError(f"runner 'dask' needs prefect-dask (pip install prefect-dask): {exc}") from None
    if config.address:
        return DaskTaskRunner(address=config.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": config.dask_workers,
            "threads_per_worker": config.dask_threads_per_worker,
            "processes": config.dask_processes,
            "dashboard_address": None,
        },
    )


def _ray_runner(config: RunnerConfig) -> TaskRunner:
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise ValueError(f"runner 'ray' needs prefect-ray (pip install prefect-ray): {exc}") from None
    return RayTaskRunner(address=config.address)


def ensure_tag_limit(tag: str, slots: int) -> int:
    """Create a tag concurrency limit of ``slots`` unless one exists; return the limit in force."""
    with get_client(sync_client=True) as client:
        try:
            return int(client.read_concurrency_limit_by_tag(tag).concurrency_limit)
        except ObjectNotFound:
            client.create_concurrency_limit(tag=tag, concurrency_limit=slots)
            return slots


def tasks_leave_process() -> bool:
    """Whether the running flow's task runner executes tasks outside this process (Dask, Ray), as
    opposed to Prefect's thread pool. Outside a flow run: False."""
    context = FlowRunContext.get()
    return context is not None and not isinstance(context.task_runner, ThreadPoolTaskRunner)
