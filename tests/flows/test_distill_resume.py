"""`sim2real distill` killed with SIGKILL (as the OOM killer would) after its first checkpoint, then rerun:
it resumes from that checkpoint and registers the same student as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from sim2real.flows.distill import distill_flow, load_distill_profile
from sim2real.flows.train_translator import train_translator_flow
from sim2real.models.translator.runs import DistillRun
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.training_runs import LOSSES_FILE
from sim2real.tasks import distill as distill_tasks
from sim2real.tasks import translator as translator_tasks

from .conftest import ingest_toy_pair

CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]
STEPS = 8  # the tiny profile checkpoints every 2 steps: four segments, the kill lands in the second


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_harness):
    """A root with toy sim and real versions and a tiny trained teacher."""
    base = tmp_path_factory.mktemp("distill-kill")
    root = str(base / "root")
    ingest_toy_pair(base, root, seeds=(2, 3))
    teacher = train_translator_flow(source="sim@latest", target="real@latest", root=root, profile="tiny")
    return base, root, teacher["translator"]


def session_processes(session: int) -> list[int]:
    """Live processes (not zombies) of session ``session``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


def kill_after_first_checkpoint(root: str, teacher: str, run: DistillRun) -> int:
    """Run ``sim2real distill`` on the test's Prefect API; SIGKILL it once its first checkpoint and loss
    rows are written. Returns the step of the checkpoint it left."""
    env = {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "SIM2REAL_ROOT": root,
        "OMP_NUM_THREADS": "1",
    }
    args = ["distill", "--teacher", teacher, "--source", "sim@latest", "--profile", "tiny"]
    args += ["--steps", str(STEPS), "--device", "cpu"]
    out = translator_tasks.folder(run)
    losses, checkpoint = Path(out.url, LOSSES_FILE), Path(out.checkpoint_url)  # rows are written first
    process = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, f"distill ended before it was killed: {process.stderr.read()!r}"
        assert checkpoint.exists() and losses.exists(), "no checkpoint within 300 s"
        os.killpg(process.pid, signal.SIGKILL)  # the command and anything it started
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_processes(process.pid) == [], "a process of the killed command is still running"
    return translator_tasks.checkpoint_step.fn(run)


def test_distill_killed_after_first_checkpoint_resumes_from_it(world):
    base, root, teacher = world
    uninterrupted_root = str(base / "uninterrupted")
    shutil.copytree(root, uninterrupted_root)  # the same versions and teacher, nothing distilled yet
    config = load_distill_profile("tiny", STEPS)
    run = distill_tasks.plan_run.fn(root, teacher, "sim@latest", "tiny", config, "cpu")

    killed_at = kill_after_first_checkpoint(root, teacher, run)
    assert 2 <= killed_at < STEPS and killed_at % 2 == 0, killed_at
    assert translator_tasks.finished_result.fn(run) is None, "nothing is registered by the killed run"
    # Tag the rows the killed run wrote: a rerun that resumes keeps them as they are, one that started
    # over would write them again (the same numbers: training here is deterministic) without the tag.
    losses = Path(translator_tasks.folder(run).url, LOSSES_FILE)
    rows_before = [{**r, "killed_run": True} for r in json.loads(losses.read_text())]
    assert [r["step"] for r in rows_before][:killed_at] == list(range(1, killed_at + 1))
    losses.write_text(json.dumps(rows_before))

    result = distill_flow(teacher=teacher, source="sim@latest", root=root, profile="tiny", steps=STEPS)
    rows = json.loads(losses.read_text())
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[:killed_at] == rows_before[:killed_at], "resumed from the checkpoint, not restarted"
    assert not any("killed_run" in r for r in rows[killed_at:])
    assert result["steps"] == STEPS and result["run"] == run.run_id

    uninterrupted = distill_flow(
        teacher=teacher, source="sim@latest", root=uninterrupted_root, profile="tiny", steps=STEPS
    )
    assert uninterrupted["run"] == run.run_id
    resumed_card = TranslatorRegistry(root).card(result["translator"])
    whole_card = TranslatorRegistry(uninterrupted_root).card(uninterrupted["translator"])
    assert resumed_card["weights_sha256"] == whole_card["weights_sha256"], "a different student"
    whole_rows = json.loads(
        Path(uninterrupted_root, "runs", "students", run.run_id, "losses.json").read_text()
    )
    assert [{k: v for k, v in r.items() if k != "killed_run"} for r in rows] == whole_rows
