"""What the ``gpu`` tag concurrency limit costs the translate flow's shard tasks, one run, CPU only.

On CUDA the translate flow tags its shard tasks ``gpu`` and Prefect's server limits how many run at
once. A task that finds every slot taken is told to retry after ``min(average slot occupancy,
tag_concurrency_slot_wait_seconds)`` (Prefect's default 10 s, with jitter), and with one slot the next
shard also waits for all of the previous shard's CPU work (the tail of its encoding, the checked write,
Prefect's state changes). The first GPU session (bench/RESULTS.md, H200) lost 11 of 18 s of a 256-frame
flow this way.

This stands in for the shards with tasks that sleep ``--shard-seconds`` (a GPU-bound shard leaves the
CPU free) and runs the same flow under four settings, each in a fresh process with its own embedded
server and Prefect home (the wait is a server setting, and the server's database keeps limits):

- ``untagged``: no limit, what the translate flow now does under the thread runner (its shard tasks
  share the process's one engine), and the baseline;
- ``1 slot, wait 10 s``: every CUDA run before (Prefect's default wait), and Dask/Ray runs with one
  slot per GPU on a server left at the default;
- ``1 slot, wait 1 s``: the same with the wait sim2real sets for its embedded server and in
  ``deploy/compose.yaml``;
- ``2 slots, wait 1 s``: two slots for the thread runner's two tasks (no task ever finds them taken).

Prints wall seconds per setting and the ratio against ``untagged``.

    .venv/bin/python bench/gpu_slots.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETTINGS = {  # name: (slots or None for untagged, server's slot wait in seconds)
    "untagged": (None, 1.0),
    "1 slot, wait 10 s": (1, 10.0),
    "1 slot, wait 1 s": (1, 1.0),
    "2 slots, wait 1 s": (2, 1.0),
}


def child(slots: int | None, shards: int, shard_seconds: float) -> float:
    """Run the stand-in flow once in this process (its server already configured); wall seconds."""
    from prefect import flow, task

    from sim2real.flows.runners import GPU_TAG, RunnerConfig, build_task_runner, ensure_tag_limit
    from sim2real.flows.runtime import embedded_run_settings

    @task(name="shard")
    def shard(index: int) -> int:
        time.sleep(shard_seconds)
        return index

    @flow(name="gpu-slots", task_runner=build_task_runner(RunnerConfig()))
    def shards_flow() -> list[int]:
        task_ = shard
        if slots is not None:
            ensure_tag_limit(GPU_TAG, slots)
            task_ = shard.with_options(tags=[GPU_TAG])
        return [f.result() for f in [task_.submit(i) for i in range(shards)]]

    with embedded_run_settings():  # as the CLI runs flows (no heartbeat thread to join at the end)
        shards_flow()  # the server's start and first run, not timed
        started = time.perf_counter()
        assert shards_flow() == list(range(shards))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard-seconds", type=float, default=0.5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        slots = None if args.child == "none" else int(args.child)
        print(json.dumps(child(slots, args.shards, args.shard_seconds)))
        return
    from sim2real.flows.runtime import quiet_prefect

    quiet_prefect()
    results = {}
    for name, (slots, wait) in SETTINGS.items():
        # A fresh Prefect home each: the embedded server's database keeps a limit created before.
        with tempfile.TemporaryDirectory(prefix="bench-gpu-slots-") as home:
            env = dict(
                os.environ,
                PREFECT_HOME=home,
                PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS=str(wait),
            )
            command = [sys.executable, __file__, "--child", "none" if slots is None else str(slots)]
            command += ["--shards", str(args.shards), "--shard-seconds", str(args.shard_seconds)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench/gpu_slots.py: the {name!r} run failed:\n{done.stderr}")
        results[name] = float(done.stdout.strip().splitlines()[-1])
    base = results["untagged"]
    print(f"{args.shards} stand-in shard tasks of {args.shard_seconds} s, thread runner (2 at once)")
    for name, seconds in results.items():
        print(f"  {name:<20} {seconds:6.2f} s   {seconds / base:5.2f}x untagged")


if __name__ == "__main__":
    main()
