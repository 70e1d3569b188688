"""The metrics store: ``{root}/metrics/metrics.parquet``, one row per dataset version × arm × task ×
class × metric, appended atomically (the whole new table is written to a temporary name and renamed).

Values are percentages; NaN means the class has no ground truth in the validation version. Rows carry
the run id, time, profile, seeds and the model/train config (JSON strings), so every number can be
traced back to the inputs that produced it. One writer at a time per root: an append reads the current
table, adds rows and replaces the file, so two concurrent appends can lose one of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sim2real.storage.shards import write_atomic

METRICS_FILE = "metrics/metrics.parquet"
SUMMARY_CLASS = "all"  # class_name of the mAP / mIoU rows

METRICS_SCHEMA = pa.schema([
    ("run_id", pa.string()),  # the flow run that wrote the row
    ("time", pa.timestamp("us", tz="UTC")),  # when the row was written
    ("profile", pa.string()),  # tiny / demo / full
    ("task", pa.string()),  # detection / segmentation
    ("arm", pa.string()),  # real-only, real+sim, ...
    ("arm_id", pa.string()),  # content hash of inputs, config, seeds and code: the model cache key
    ("train_versions", pa.string()),  # "real@v1 + sim@v2": every training version, in order
    ("real_version", pa.string()),  # the real training version
    ("extra_version", pa.string()),  # the added version (null for real-only)
    ("val_version", pa.string()),  # the evaluation version
    ("class_name", pa.string()),  # a class name, or "all" for mAP/mIoU rows
    ("metric", pa.string()),  # AP, AP50, mAP, mAP50, IoU, mIoU, pixel_accuracy
    ("value", pa.float64()),  # percent; NaN = class absent from val
    ("seeds", pa.string()),  # JSON
    ("model_config", pa.string()),  # JSON
    ("train_config", pa.string()),  # JSON
    ("code_version", pa.string()),
    ("device", pa.string()),
])


class MetricsStoreError(ValueError):
    """Rows or the stored table do not match the metrics schema; the message names file and column."""


class MetricsStore:
    """Append-only metrics table under an fsspec root URL."""

    def __init__(self, root: str) -> None:
        self.fs, base = fsspec.core.url_to_fs(root.rstrip("/"))
        self.path = f"{base.rstrip('/')}/{METRICS_FILE}"

    def read(self) -> pa.Table:
        """The whole table (empty with the schema when nothing was written yet)."""
        if not self.fs.exists(self.path):
            return METRICS_SCHEMA.empty_table()
        with self.fs.open(self.path, "rb") as handle:
            table = pq.read_table(handle)
        missing = set(METRICS_SCHEMA.names) - set(table.column_names)
        if missing:
            raise MetricsStoreError(f"{self.path}: missing columns {sorted(missing)}")
        return table.select(METRICS_SCHEMA.names).cast(METRICS_SCHEMA)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Add ``rows`` (dicts with exactly the schema's columns); returns the new total row count."""
        for number, row in enumerate(rows):
            if set(row) != set(METRICS_SCHEMA.names):
                wrong = sorted(set(row) ^ set(METRICS_SCHEMA.names))
                raise MetricsStoreError(f"{self.path}: row {number}: columns differ from schema: {wrong}")
        new = pa.Table.from_pylist([dict(row) for row in rows], schema=METRICS_SCHEMA)
        table = pa.concat_tables([self.read(), new])
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_atomic(self.fs, self.path, sink.getvalue().to_pybytes())
        return table.num_rows

    def arm_ids(self) -> set[str]:
        """Arm ids (cache keys) that already have rows."""
        return set(self.read().column("arm_id").to_pylist())

    def latest_rows(self, version: str | None = None) -> list[dict[str, Any]]:
        """The newest row of each (train versions, val, task, class, metric); optionally only rows that
        mention ``version`` (``name@version``) as real, extra or val version."""
        rows = self.read().to_pylist()
        if version:
            rows = [r for r in rows if version in (r["real_version"], r["extra_version"], r["val_version"])]
        newest: dict[tuple, dict[str, Any]] = {}
        for row in sorted(rows, key=lambda r: r["time"]):
            key = (row["train_versions"], row["val_version"], row["task"], row["class_name"], row["metric"])
            newest[key] = row
        return list(newest.values())


def seed_table(
    rows: Iterable[Mapping[str, Any]],
    task: str,
    classes: Sequence[str],
    class_metric: str,
    summary_metric: str,
) -> list[dict[str, Any]]:
    """The seed paper's table shape: one row per (Train, Val), a column per class (in ``classes`` order)
    and the mean. Classes with no value (absent from val) are ``None``; real-only rows come first.
    """
    pivot: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        if row["task"] != task or row["metric"] not in (class_metric, summary_metric):
            continue
        line = pivot.setdefault(
            (row["arm"], row["train_versions"], row["val_version"]),
            {"Arm": row["arm"], "Train": row["train_versions"], "Val": row["val_version"]}
            | dict.fromkeys(classes)
            | {summary_metric: None},
        )
        value = row["value"]
        value = None if value is None or math.isnan(value) else round(float(value), 1)
        column = summary_metric if row["metric"] == summary_metric else row["class_name"]
        line[column] = value
    return [pivot[key] for key in sorted(pivot, key=lambda k: (k[0] != "real-only", k))]


def arm_rows(
    result: Mapping[str, Any], *, run_id: str, time: datetime, profile: str
) -> list[dict[str, Any]]:
    """Metric rows of one evaluated arm (a result dict of the retrain flow: ``task``, ``label``,
    ``train`` [[ref, weight], ...], ``val``, ``metrics`` {per_class, summary}, configs, seeds)."""
    train_refs = [ref for ref, _ in result["train"]]
    common = {
        "run_id": run_id,
        "time": time,
        "profile": profile,
        "task": result["task"],
        "arm": result["label"],
        "arm_id": result["arm_id"],
        "train_versions": " + ".join(train_refs),
        "real_version": train_refs[0],
        "extra_version": train_refs[1] if len(train_refs) > 1 else None,
        "val_version": result["val"],
        "seeds": json.dumps(result["seeds"], sort_keys=True),
        "model_config": json.dumps(result["model_config"], sort_keys=True),
        "train_config": json.dumps(result["train_config"], sort_keys=True),
        "code_version": result["code_version"],
        "device": result["device"],
    }
    metrics = result["metrics"]
    cells = [(name, values) for name, values in metrics["per_class"].items()]
    cells.append((SUMMARY_CLASS, metrics["summary"]))
    return [
        {**common, "class_name": name, "metric": metric, "value": math.nan if value is None else float(value)}
        for name, values in cells
        for metric, value in values.items()
    ]
