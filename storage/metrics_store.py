"""The metrics store: ``{root}/metrics/metrics.parquet``, one row per dataset version × arm × seed ×
task × class × metric, appended atomically (the whole new table is written to a temporary name and
renamed).

Values are percentages; NaN means the class has no ground truth in the validation version. Rows carry
the run id, time, profile, protocol, seed, how many real (and extra) samples the model trained on and
the model/train config (JSON strings), so every number can be traced back to the inputs that produced
it. Tables written before the protocol columns existed read back with those columns null. One writer
at a time per root: an append reads the current table, adds rows and replaces the file, so two
concurrent appends can lose one of them.

:func:`seed_table` turns rows into the seed paper's table shape with the mean ± std over seeds of each
class, and each real+EXTRA arm's paired difference to real-only (same seed, same real samples).
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
REAL_ONLY = "real-only"  # the arm every other arm is compared with

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
    ("protocol", pa.string()),  # how extra data joined the real data: added / pretrain-finetune
    ("seed", pa.int64()),  # the arm's seed (init, sample order, flips)
    ("real_samples_seen", pa.int64()),  # real training samples (equal across the arms of one run)
    ("extra_samples_seen", pa.int64()),  # extra training samples (0 for real-only)
    ("model_config", pa.string()),  # JSON
    ("train_config", pa.string()),  # JSON
    ("code_version", pa.string()),
    ("device", pa.string()),
])


#: Columns added after the first tables were written; read back as nulls from older files.
LATER_COLUMNS = {"protocol", "seed", "real_samples_seen", "extra_samples_seen"}


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
        for name in LATER_COLUMNS - set(table.column_names):  # older tables: unknown, not zero
            table = table.append_column(name, pa.nulls(table.num_rows, METRICS_SCHEMA.field(name).type))
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
        """The newest row of each (train versions, val, protocol, seed, task, class, metric); optionally
        only rows that mention ``version`` (``name@version``) as real, extra or val version, plus the
        real-only rows of the same real and val versions (the baseline of the paired differences)."""
        rows = self.read().to_pylist()
        if version:
            kept = [r for r in rows if version in (r["real_version"], r["extra_version"], r["val_version"])]
            pairs = {(r["real_version"], r["val_version"]) for r in kept}
            baselines = [r for r in rows if r["arm"] == REAL_ONLY and r not in kept
                         and (r["real_version"], r["val_version"]) in pairs]
            rows = kept + baselines  # the real-only arms the kept arms are compared with
        newest: dict[tuple, dict[str, Any]] = {}
        for row in sorted(rows, key=lambda r: r["time"]):
            key = (row["train_versions"], row["val_version"], row["protocol"], row["seed"], row["task"],
                   row["class_name"], row["metric"])
            newest[key] = row
        return list(newest.values())


def seed_table(
    rows: Iterable[Mapping[str, Any]],
    task: str,
    classes: Sequence[str],
    class_metric: str,
    summary_metric: str,
) -> list[dict[str, Any]]:
    """The seed paper's table shape over seeds: one row per (arm, Train, Val, protocol) with ``Seeds``
    (how many), a column per class (in ``classes`` order) and the summary metric holding the mean over
    seeds, ``std`` (sample std per column, ``None`` under two seeds) and, for every arm but real-only,
    ``diff``: per column the paired difference to the real-only arm of the same real and val versions
    and protocol over the seeds both have (``{"mean", "std", "n"}``). Classes with no value (absent
    from val) are ``None``; real-only rows come first.
    """
    columns = [*classes, summary_metric]
    values: dict[tuple, dict[str, dict[Any, float]]] = {}
    for row in rows:
        if row["task"] != task or row["metric"] not in (class_metric, summary_metric):
            continue
        key = (row["arm"], row["train_versions"], row["val_version"], row.get("protocol"),
               row["real_version"])
        column = summary_metric if row["metric"] == summary_metric else row["class_name"]
        value = row["value"]
        if value is not None and not math.isnan(value) and column in columns:
            values.setdefault(key, {c: {} for c in columns})[column][row.get("seed")] = float(value)
        else:
            values.setdefault(key, {c: {} for c in columns})
    table = []
    for key in sorted(values, key=lambda k: (k[0] != REAL_ONLY, k[:4])):
        arm, train, val, protocol, real = key
        per_seed = values[key]
        seeds = {seed for cells in per_seed.values() for seed in cells}
        line: dict[str, Any] = {"Arm": arm, "Train": train, "Val": val, "Protocol": protocol,
                                "Seeds": len(seeds)}
        line |= {c: _mean(per_seed[c].values()) for c in columns}
        line["std"] = {c: _std(per_seed[c].values()) for c in columns}
        base = values.get((REAL_ONLY, real, val, protocol, real)) if arm != REAL_ONLY else None
        line["diff"] = None if base is None else {c: _paired(per_seed[c], base[c]) for c in columns}
        table.append(line)
    return table


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 2) if values else None


def _std(values: Iterable[float]) -> float | None:
    """Sample standard deviation (n − 1); ``None`` under two values."""
    values = list(values)
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return round(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), 2)


def _paired(arm: Mapping[Any, float], base: Mapping[Any, float]) -> dict[str, Any] | None:
    """Mean and std of ``arm[seed] − base[seed]`` over the seeds both have."""
    differences = [arm[seed] - base[seed] for seed in sorted(set(arm) & set(base), key=str)]
    if not differences:
        return None
    return {"mean": _mean(differences), "std": _std(differences), "n": len(differences)}


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
        "protocol": result.get("protocol"),
        "seed": result["seeds"].get("seed"),
        "real_samples_seen": result.get("real_samples_seen"),
        "extra_samples_seen": result.get("extra_samples_seen"),
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
