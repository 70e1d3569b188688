"""End-to-end retrain-and-evaluate on tiny toy versions: rows, artifacts, cache hits on a rerun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from sim2real.flows.evaluate import load_profile, retrain_and_evaluate
from sim2real.flows.ingest import ingest_flow
from sim2real.models import perception_train
from sim2real.storage.metrics_store import MetricsStore
from sim2real.storage.perception_store import PerceptionStore
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.taxonomy import DETECTION_CLASSES, TRAIN_CLASSES

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROWS_PER_ARM = {"detection": len(DETECTION_CLASSES) * 2 + 2, "segmentation": len(TRAIN_CLASSES) + 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("evaluate")
    root = str(base / "root")
    refs = {}
    for name, style, seed, frames in (("real", "real", 1, 6), ("sim", "sim", 2, 6), ("val", "real", 3, 4)):
        write_export(base / name, ToySimConfig(style=style, height=32, width=64, seed=seed), frames)
        result = ingest_flow(source_dir=str(base / name), name=f"toy-{name}", root=root)
        refs[name] = f"toy-{name}@{result['version']}"
    first = retrain_and_evaluate(
        real="toy-real@latest", extras=[refs["sim"]], val=refs["val"], profile="tiny", root=root
    )
    return {"root": root, "refs": refs, "first": first}


def test_writes_one_row_per_version_arm_task_class_metric(world: dict[str, Any]) -> None:
    table = MetricsStore(world["root"]).read().to_pylist()
    assert len(table) == 2 * sum(ROWS_PER_ARM.values()) == world["first"]["rows_added"]
    arms = {(r["task"], r["arm"], r["train_versions"], r["val_version"]) for r in table}
    real, sim, val = world["refs"]["real"], world["refs"]["sim"], world["refs"]["val"]
    assert arms == {
        (task, arm, train, val)
        for task in ROWS_PER_ARM
        for arm, train in (("real-only", real), ("real+toy-sim", f"{real} + {sim}"))
    }
    row = next(r for r in table if r["metric"] == "mIoU" and r["arm"] == "real-only")
    assert row["profile"] == "tiny" and row["run_id"] == world["first"]["run_id"]
    assert json.loads(row["seeds"]) == {"seed": 0}
    assert json.loads(row["model_config"])["backbone"] == "resnet18"
    assert 0.0 <= row["value"] <= 100.0
    for r in table:  # every value is a percentage, or NaN for a class absent from val
        assert math.isnan(r["value"]) or 0.0 <= r["value"] <= 100.0


def test_tables_are_seed_shaped_and_artifacts_published(world: dict[str, Any]) -> None:
    tables = world["first"]["tables"]
    det, seg = tables["detection"], tables["segmentation"]
    assert [r["Arm"] for r in det] == ["real-only", "real+toy-sim"]
    assert list(det[0]) == ["Arm", "Train", "Val", *DETECTION_CLASSES, "mAP"]
    assert list(seg[0]) == ["Arm", "Train", "Val", *TRAIN_CLASSES, "mIoU"]
    assert seg[0]["road"] is not None and seg[0]["train"] is None  # toy scenes have roads, no trains
    with get_client(sync_client=True) as client:
        artifacts = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(  # this run only: other tests publish the same keys
                    key=ArtifactFilterKey(like_="evaluate-"),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(world["first"]["run_id"])]),
                )
            )
        }
    assert {"evaluate-detection", "evaluate-segmentation", "evaluate-report"} <= set(artifacts)
    report = artifacts["evaluate-report"].data
    assert "| class | real-only | real+toy-sim | Δ real+toy-sim |" in report
    assert "**mIoU**" in report and "**mAP**" in report and "| road |" in report
    assert "| train |" not in report  # classes absent from val get no bars


def test_checkpoints_are_stored_and_rerun_does_not_retrain(world: dict[str, Any], monkeypatch) -> None:
    models = PerceptionStore(world["root"])
    ids = [arm["arm_id"] for arm in world["first"]["arms"]]
    assert len(set(ids)) == 4 and not any(arm["cached"] for arm in world["first"]["arms"])
    stamps = {i: Path(models.arm_dir(i), "checkpoint.pt").stat().st_mtime_ns for i in ids}

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached arm was retrained")

    monkeypatch.setattr(perception_train, "fit", no_training)
    again = retrain_and_evaluate(
        real=world["refs"]["real"],
        extras=[world["refs"]["sim"]],
        val=world["refs"]["val"],
        profile="tiny",
        root=world["root"],
    )
    assert [arm["arm_id"] for arm in again["arms"]] == ids
    assert all(arm["cached"] for arm in again["arms"])
    assert again["tables"] == world["first"]["tables"]
    assert again["rows_added"] == 0
    assert MetricsStore(world["root"]).read().num_rows == world["first"]["rows_added"]
    assert {i: Path(models.arm_dir(i), "checkpoint.pt").stat().st_mtime_ns for i in ids} == stamps


def test_a_changed_config_is_a_new_arm(world: dict[str, Any], tmp_path: Path) -> None:
    profile = load_profile("tiny").model_dump()
    profile["seed"] = 1
    profile.pop("name")
    path = tmp_path / "evaluate_seed1.yaml"
    path.write_text(json.dumps(profile))  # JSON is YAML
    result = retrain_and_evaluate(
        real=world["refs"]["real"],
        val=world["refs"]["val"],
        tasks=["segmentation"],
        profile=str(path),
        root=world["root"],
    )
    (arm,) = result["arms"]
    assert not arm["cached"] and arm["arm_id"] not in {a["arm_id"] for a in world["first"]["arms"]}
    assert result["profile"] == "seed1" and result["rows_added"] == ROWS_PER_ARM["segmentation"]


def test_metrics_cli_prints_the_stored_tables(world: dict[str, Any]) -> None:
    cli = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]
    env = {**os.environ, "SIM2REAL_ROOT": world["root"]}
    done = subprocess.run(
        [*cli, "metrics", "--version", "toy-sim@latest", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"  # a failure shows both
    assert done.returncode == 0, said
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["Arm"] for r in printed["tables"]["detection"]] == ["real+toy-sim"], said  # rows using sim
    assert "Segmentation: IoU (%)" in done.stderr and "mIoU" in done.stderr, said
    everything = subprocess.run([*cli, "metrics"], capture_output=True, text=True, env=env, timeout=300)
    said = f"stdout:\n{everything.stdout}\nstderr:\n{everything.stderr}"
    assert everything.returncode == 0 and "real-only" in everything.stdout, said
