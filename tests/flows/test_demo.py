"""The main job end to end at tiny sizes: every stage runs, versions chain, a rerun redoes nothing."""

from __future__ import annotations

import re

import pytest

from sim2real.flows.demo import DemoConfig, demo_flow
from sim2real.storage.versions import DatasetStore

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_demo_flow_tiny(tmp_path, capfd):
    config = DemoConfig(height=32, width=64, sim_frames=6, real_frames=6, val_frames=4,
                        translator_profile="tiny", evaluate_profile="tiny", max_shard_samples=4)
    root = str(tmp_path / "root")
    first = demo_flow(config=config, root=root)
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("[sim2real demo")]
    arm_lines = [line for line in lines if " seed " in line and "trained in" in line]  # one per training
    step_lines = [line for line in lines if ": step " in line]  # one per translator checkpoint segment
    lines = [line for line in lines if line not in arm_lines + step_lines]
    stages = ["render and ingest toy-sim", "render and ingest toy-real ", "render and ingest toy-real-val",
              "train the translator", "translate toy-sim@", "retrain and evaluate", "done"]
    assert len(lines) == len(stages) and all(s in line for s, line in zip(stages, lines, strict=True))
    assert len(arm_lines) == 2 * 3  # two tasks × three arms × the tiny profile's one seed
    last = re.search(r": step (\d+)/(\d+):", step_lines[-1]) if step_lines else None
    assert last is not None and last[1] == last[2]  # the last segment's line ends the run
    store = DatasetStore(root)
    assert set(first["versions"]) == {"toy-sim", "toy-real", "toy-real-val", "toy-sim-translated"}
    translated = store.open(first["versions"]["toy-sim-translated"])
    assert translated.num_samples == store.open(first["versions"]["toy-sim"]).num_samples == 6
    assert translated.info["source"] == first["versions"]["toy-sim"]
    arms = {row["Arm"] for rows in first["tables"].values() for row in rows}
    assert {"real-only", "real+toy-sim", "real+toy-sim-translated"} <= arms
    assert set(first["tables"]) == {"detection", "segmentation"}

    second = demo_flow(config=config, root=root)  # content-addressed: same versions, same translator
    assert second["versions"] == first["versions"] and second["translator"] == first["translator"]
