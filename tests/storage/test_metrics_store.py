"""Metrics store: schema, atomic append, latest-row selection and the seed-style pivot."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sim2real.storage.metrics_store import (
    METRICS_SCHEMA,
    MetricsStore,
    MetricsStoreError,
    arm_rows,
    seed_table,
)


def _result(arm_id: str, label: str, train: list[list], car_ap: float | None, seed: int = 0) -> dict:
    return {
        "arm_id": arm_id, "task": "detection", "label": label, "train": train, "val": "val@v1",
        "seeds": {"seed": seed}, "protocol": "added", "real_samples_seen": 8,
        "extra_samples_seen": 0 if len(train) == 1 else 8,
        "model_config": {"backbone": "resnet18_fpn"}, "train_config": {"epochs": 1},
        "code_version": "0.1.0+abc", "device": "cpu",
        "metrics": {"per_class": {"car": {"AP": car_ap, "AP50": 50.0}, "bus": {"AP": None, "AP50": None}},
                    "summary": {"mAP": car_ap, "mAP50": 50.0}},
    }


def test_append_is_atomic_and_keeps_every_row(tmp_path: Path) -> None:
    store = MetricsStore(str(tmp_path))
    assert store.read().num_rows == 0 and store.read().schema == METRICS_SCHEMA
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    real_only = _result("a" * 20, "real-only", [["real@v1", 1.0]], 10.0)
    rows = arm_rows(real_only, run_id="r1", time=t0, profile="tiny")
    assert len(rows) == 6  # 2 classes × 2 metrics + 2 summary metrics
    assert store.append(rows) == 6
    extra = _result("b" * 20, "real+sim", [["real@v1", 0.5], ["sim@v2", 0.5]], 20.0)
    assert store.append(arm_rows(extra, run_id="r2", time=t0, profile="tiny")) == 12
    files = sorted(p.name for p in (tmp_path / "metrics").iterdir())
    assert files == ["metrics.parquet"]  # no temporary file left behind
    table = store.read().to_pylist()
    bus = next(r for r in table if r["class_name"] == "bus" and r["metric"] == "AP")
    assert math.isnan(bus["value"])  # absent class: NaN, not 0
    sim_row = next(r for r in table if r["arm"] == "real+sim")
    assert sim_row["train_versions"] == "real@v1 + sim@v2" and sim_row["extra_version"] == "sim@v2"
    assert sim_row["real_version"] == "real@v1" and sim_row["val_version"] == "val@v1"
    assert (sim_row["protocol"], sim_row["seed"], sim_row["real_samples_seen"]) == ("added", 0, 8)
    assert sim_row["extra_samples_seen"] == 8
    assert store.arm_ids() == {"a" * 20, "b" * 20}


def test_rows_with_wrong_columns_are_refused_naming_the_file(tmp_path: Path) -> None:
    store = MetricsStore(str(tmp_path))
    with pytest.raises(MetricsStoreError, match=r"metrics\.parquet: row 0: .*'surprise'"):
        store.append([{"surprise": 1}])
    assert not (tmp_path / "metrics" / "metrics.parquet").exists()


def test_latest_rows_filter_by_version_and_keep_newest(tmp_path: Path) -> None:
    store = MetricsStore(str(tmp_path))
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    old = _result("a" * 20, "real-only", [["real@v1", 1.0]], 10.0)
    new = _result("c" * 20, "real-only", [["real@v1", 1.0]], 30.0)
    store.append(arm_rows(new, run_id="r2", time=t0 + timedelta(hours=1), profile="demo"))
    store.append(arm_rows(old, run_id="r1", time=t0, profile="demo"))
    store.append(arm_rows(_result("b" * 20, "real+sim", [["real@v1", .5], ["sim@v2", .5]], 20.0),
                          run_id="r3", time=t0, profile="demo"))
    latest = store.latest_rows()
    assert len(latest) == 12
    assert next(r for r in latest if r["metric"] == "mAP" and r["arm"] == "real-only")["value"] == 30.0
    assert {r["arm"] for r in store.latest_rows("sim@v2")} == {"real+sim", "real-only"}  # + its baseline
    assert store.latest_rows("other@v9") == []


def test_seed_table_orders_classes_and_puts_real_only_first(tmp_path: Path) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows = arm_rows(_result("b" * 20, "real+sim", [["real@v1", 1.0], ["sim@v2", 1.0]], 22.04),
                    run_id="r", time=t0, profile="demo")
    rows += arm_rows(_result("a" * 20, "real-only", [["real@v1", 1.0]], 11.0), run_id="r", time=t0,
                     profile="demo")
    table = seed_table(rows, "detection", ["person", "car", "bus"], "AP", "mAP")
    head = ["Arm", "Train", "Val", "Protocol", "Seeds", "person", "car", "bus", "mAP", "std", "diff"]
    assert [list(r) for r in table] == [head] * 2
    assert [r["Arm"] for r in table] == ["real-only", "real+sim"]
    assert table[1]["car"] == 22.04 and table[1]["bus"] is None and table[1]["person"] is None
    assert table[1]["Seeds"] == 1 and table[1]["std"]["car"] is None  # one seed: no spread
    assert table[0]["diff"] is None and table[1]["diff"]["car"] == {"mean": 11.04, "std": None, "n": 1}
    assert seed_table(rows, "segmentation", ["road"], "IoU", "mIoU") == []


def test_seed_table_gives_mean_std_and_paired_differences_over_seeds(tmp_path: Path) -> None:
    """Per seed rows in the store; the table pairs each extra arm with real-only of the same seed."""
    store = MetricsStore(str(tmp_path))
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    real_ap, sim_ap = {0: 10.0, 1: 20.0, 2: 30.0}, {0: 13.0, 1: 21.0, 2: 35.0}  # diffs 3, 1, 5
    for seed in real_ap:
        store.append(arm_rows(_result(f"{seed}a" * 10, "real-only", [["real@v1", 1.0]], real_ap[seed], seed),
                              run_id="r", time=t0, profile="demo"))
        store.append(arm_rows(_result(f"{seed}b" * 10, "real+sim", [["real@v1", 1.0], ["sim@v2", 1.0]],
                                      sim_ap[seed], seed), run_id="r", time=t0, profile="demo"))
    latest = store.latest_rows()
    assert sorted({r["seed"] for r in latest}) == [0, 1, 2] and len(latest) == 3 * 2 * 6  # rows per seed
    real, sim = seed_table(latest, "detection", ["car"], "AP", "mAP")
    assert (real["Seeds"], real["car"], real["std"]["car"]) == (3, 20.0, 10.0)
    assert (sim["car"], sim["std"]["car"]) == (23.0, 11.14)  # sqrt(((-10)² + (-2)² + 12²) / 2)
    assert sim["diff"]["car"] == {"mean": 3.0, "std": 2.0, "n": 3}  # paired: std of 3, 1, 5
    assert seed_table(latest, "detection", ["bus"], "AP", "mAP")[1]["diff"]["bus"] is None  # no values


def test_tables_written_before_the_protocol_columns_read_back_with_nulls(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = MetricsStore(str(tmp_path))
    row = arm_rows(_result("a" * 20, "real-only", [["real@v1", 1.0]], 10.0), run_id="r",
                   time=datetime(2025, 1, 1, tzinfo=UTC), profile="demo")[0]
    old = {k: v for k, v in row.items() if k not in ("protocol", "seed", "real_samples_seen",
                                                     "extra_samples_seen")}
    (tmp_path / "metrics").mkdir()
    pq.write_table(pa.Table.from_pylist([old]), tmp_path / "metrics" / "metrics.parquet")
    (back,) = store.read().to_pylist()
    assert back["seed"] is None and back["real_samples_seen"] is None  # unknown, not zero
    assert back["value"] == 10.0
