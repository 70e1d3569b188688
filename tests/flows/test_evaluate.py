"""End-to-end retrain-and-evaluate on tiny toy versions, two seeds: per-seed rows, the fair protocol
(equal real samples across arms), mean ± std tables, artifacts, cache hits on a rerun."""

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
        real="toy-real@latest", extras=[refs["sim"]], val=refs["val"], profile="tiny", root=root, seeds=2
    )
    return {"root": root, "refs": refs, "first": first}


def test_writes_one_row_per_version_arm_seed_task_class_metric(world: dict[str, Any]) -> None:
    table = MetricsStore(world["root"]).read().to_pylist()
    assert len(table) == 2 * 2 * sum(ROWS_PER_ARM.values()) == world["first"]["rows_added"]
    for seed in (0, 1):  # every arm has its own rows for each seed
        assert len([r for r in table if r["seed"] == seed]) == 2 * sum(ROWS_PER_ARM.values())
    arms = {(r["task"], r["arm"], r["train_versions"], r["val_version"]) for r in table}
    real, sim, val = world["refs"]["real"], world["refs"]["sim"], world["refs"]["val"]
    assert arms == {
        (task, arm, train, val)
        for task in ROWS_PER_ARM
        for arm, train in (("real-only", real), ("real+toy-sim", f"{real} + {sim}"))
    }
    row = next(r for r in table if r["metric"] == "mIoU" and r["arm"] == "real-only" and r["seed"] == 0)
    assert row["profile"] == "tiny" and row["run_id"] == world["first"]["run_id"]
    assert json.loads(row["seeds"]) == {"seed": 0} and row["protocol"] == "added"
    assert json.loads(row["model_config"])["backbone"] == "resnet18"
    assert 0.0 <= row["value"] <= 100.0
    for r in table:  # every value is a percentage, or NaN for a class absent from val
        assert math.isnan(r["value"]) or 0.0 <= r["value"] <= 100.0


def test_every_arm_of_a_seed_trains_on_the_same_real_samples(world: dict[str, Any]) -> None:
    """Extra data is added, not substituted: equal real samples (keys, pixels, order, flips) per seed."""
    arms = world["first"]["arms"]
    assert len(arms) == 2 * 2 * 2  # seeds × tasks × arms
    table = MetricsStore(world["root"]).read().to_pylist()
    models = PerceptionStore(world["root"])
    for task in ROWS_PER_ARM:
        train = load_profile("tiny").train_for(task)
        by_seed: dict[int, set[tuple[int, str]]] = {}
        for arm in (a for a in arms if a["task"] == task):
            result = models.load_result(arm["arm_id"])
            assert result is not None and result["real_samples_seen"] == arm["real_samples_seen"]
            assert arm["real_samples_seen"] == train.epochs * train.samples_per_epoch
            expected_extra = 0 if arm["arm"] == "real-only" else arm["real_samples_seen"]  # 1 per real
            assert arm["extra_samples_seen"] == expected_extra
            seen = (arm["real_samples_seen"], result["real_samples_digest"])
            by_seed.setdefault(arm["seed"], set()).add(seen)
            rows = [r for r in table if r["arm_id"] == arm["arm_id"]]
            assert {r["real_samples_seen"] for r in rows} == {arm["real_samples_seen"]}
        assert all(len(seen) == 1 for seen in by_seed.values()), by_seed  # real-only == real+sim
        assert len({digest for seen in by_seed.values() for _, digest in seen}) == 2  # seeds differ


def test_tables_are_seed_shaped_and_artifacts_published(world: dict[str, Any]) -> None:
    tables = world["first"]["tables"]
    det, seg = tables["detection"], tables["segmentation"]
    assert [r["Arm"] for r in det] == ["real-only", "real+toy-sim"]
    extra = ["std", "diff"]
    assert list(det[0]) == ["Arm", "Train", "Val", "Protocol", "Seeds", *DETECTION_CLASSES, "mAP", *extra]
    assert list(seg[0]) == ["Arm", "Train", "Val", "Protocol", "Seeds", *TRAIN_CLASSES, "mIoU", *extra]
    assert seg[0]["road"] is not None and seg[0]["train"] is None  # toy scenes have roads, no trains
    assert seg[0]["Seeds"] == 2 and seg[0]["std"]["mIoU"] is not None and seg[0]["diff"] is None
    paired = seg[1]["diff"]["mIoU"]
    assert paired["n"] == 2 and paired["std"] is not None
    assert paired["mean"] == pytest.approx(seg[1]["mIoU"] - seg[0]["mIoU"], abs=0.02)
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
    assert "mean ± std over 2 seed(s)" in report and "±" in report.split("**mIoU**")[1]
    assert "**mIoU**" in report and "**mAP**" in report and "| road |" in report
    assert "| train |" not in report  # classes absent from val get no bars


def test_checkpoints_are_stored_and_rerun_does_not_retrain(world: dict[str, Any], monkeypatch) -> None:
    models = PerceptionStore(world["root"])
    ids = [arm["arm_id"] for arm in world["first"]["arms"]]
    assert len(set(ids)) == 8 and not any(arm["cached"] for arm in world["first"]["arms"])
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
        seeds=2,
    )
    assert [arm["arm_id"] for arm in again["arms"]] == ids
    assert all(arm["cached"] for arm in again["arms"])
    assert again["tables"] == world["first"]["tables"]
    assert again["rows_added"] == 0
    assert MetricsStore(world["root"]).read().num_rows == world["first"]["rows_added"]
    assert {i: Path(models.arm_dir(i), "checkpoint.pt").stat().st_mtime_ns for i in ids} == stamps


def test_a_changed_config_is_a_new_arm(world: dict[str, Any], tmp_path: Path) -> None:
    profile = load_profile("tiny").model_dump()
    profile["seed"] = 2  # seeds 0 and 1 are cached
    profile.pop("name")
    path = tmp_path / "evaluate_seed2.yaml"
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
    assert result["profile"] == "seed2" and result["rows_added"] == ROWS_PER_ARM["segmentation"]


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
    det = printed["tables"]["detection"]
    assert [r["Arm"] for r in det] == ["real-only", "real+toy-sim"], said  # sim's rows and their baseline
    assert det[1]["diff"]["mAP"]["n"] == 2, said  # paired over both seeds
    assert "Segmentation: IoU (%)" in done.stderr and "mIoU" in done.stderr, said
    everything = subprocess.run([*cli, "metrics"], capture_output=True, text=True, env=env, timeout=300)
    said = f"stdout:\n{everything.stdout}\nstderr:\n{everything.stderr}"
    assert everything.returncode == 0 and "real-only" in everything.stdout, said


def test_a_garbage_backbone_weights_file_exits_2_naming_it(world: dict[str, Any], tmp_path: Path) -> None:
    garbage = tmp_path / "imagenet-resnet18.pth"
    garbage.write_bytes(b"<html>404 not found</html>")
    cli = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]
    done = subprocess.run(
        [*cli, "evaluate", "--real", world["refs"]["real"], "--val", world["refs"]["val"],
         "--profile", "tiny", "--task", "segmentation", "--backbone-weights", str(garbage),
         "--root", world["root"], "--json"],
        capture_output=True, text=True, timeout=300,
    )
    said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 2, said
    assert f"{garbage}: not a torch state-dict file" in done.stderr and "Traceback" not in said, said


def test_pretrain_finetune_trains_the_real_only_schedule_after_the_extras(world: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    profile = load_profile("tiny").model_dump()
    profile.pop("name")
    profile["protocol"] = "pretrain-finetune"
    path = tmp_path / "evaluate_pretrain.yaml"
    path.write_text(json.dumps(profile))
    result = retrain_and_evaluate(real=world["refs"]["real"], extras=[world["refs"]["sim"]],
                                  val=world["refs"]["val"], tasks=["segmentation"], profile=str(path),
                                  root=world["root"])
    models = PerceptionStore(world["root"])
    real_only, pretrained = (models.load_result(a["arm_id"]) for a in result["arms"])
    assert real_only is not None and pretrained is not None
    assert pretrained["protocol"] == "pretrain-finetune" and pretrained["extra_samples_seen"] > 0
    assert pretrained["real_samples_digest"] == real_only["real_samples_digest"]  # same real phase
    assert len(pretrained["history"]) == 2 * len(real_only["history"])  # extra epochs, then real epochs
