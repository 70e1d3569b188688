"""How retrain-and-evaluate results are shown: seed-style tables, plain-text tables for the terminal,
and a markdown report with per-class unicode bars and deltas against real-only."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sim2real.storage.metrics_store import arm_rows, seed_table
from sim2real.storage.taxonomy import DETECTION_CLASSES, TRAIN_CLASSES

#: Per task: the per-class metric, the summary metric and the class columns, as in the seed's tables.
TABLE_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "detection": ("AP", "mAP", DETECTION_CLASSES),
    "segmentation": ("IoU", "mIoU", TRAIN_CLASSES),
}
TITLES = {"detection": "Detection: AP@[.5:.95] (%)", "segmentation": "Segmentation: IoU (%)"}
#: Column headers of the terminal tables (seven characters at most).
SHORT_NAMES = {
    "sidewalk": "sidewlk", "building": "buildng", "traffic light": "light", "traffic sign": "sign",
    "vegetation": "veget", "terrain": "terrain", "motorcycle": "motorcy", "bicycle": "bicycle",
}
BAR_WIDTH = 12
_EIGHTHS = " ▏▎▍▌▋▊▉"


def tables_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Seed-style table rows per task present in ``rows`` (metric-store rows)."""
    rows = list(rows)
    present = {row["task"] for row in rows}
    return {
        task: seed_table(rows, task, classes, class_metric, summary_metric)
        for task, (class_metric, summary_metric, classes) in TABLE_METRICS.items()
        if task in present
    }


def task_tables(results: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Seed-style tables of the arms of one flow run."""
    now = datetime.now(UTC)
    return tables_from_rows(row for r in results for row in arm_rows(r, run_id="", time=now, profile=""))


def _cell(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width terminal table of seed-table rows; classes absent from val in every row are left out."""
    if not rows:
        return "(no rows)"
    columns = [c for c in rows[0] if c not in ("Arm", "Train", "Val") and any(r[c] is not None for r in rows)]
    if len({r["Val"] for r in rows}) > 1:  # several validation versions: name each row's
        rows = [{**r, "Arm": f"{r['Arm']} on {r['Val']}"} for r in rows]
    arm_width = max(len("Arm"), *(len(str(r["Arm"])) for r in rows))
    header = f"{'Arm':<{arm_width}} " + " ".join(f"{SHORT_NAMES.get(c, c)[:7]:>7}" for c in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['Arm']:<{arm_width}} " + " ".join(f"{_cell(row[c]):>7}" for c in columns))
    vals = sorted({r["Val"] for r in rows})
    lines.append(f"Val: {', '.join(vals)}")
    lines += [f"Train {r['Arm']}: {r['Train']}" for r in rows]
    return "\n".join(lines)


def bar(value: float | None, scale: float = 100.0, width: int = BAR_WIDTH) -> str:
    """A unicode bar of ``value`` out of ``scale`` in ``width`` cells (eighth-cell resolution)."""
    if value is None or math.isnan(value):
        return " " * width
    eighths = round(max(0.0, min(value / scale, 1.0)) * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[rest] if rest else "")).ljust(width)


def _delta(value: Any, base: Any) -> str:
    if value is None or base is None or math.isnan(value) or math.isnan(base):
        return "–"
    return f"{value - base:+.1f}"


def markdown_section(task: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One task: per class a bar and value per arm, and each extra arm's delta against real-only."""
    class_metric, summary_metric, classes = TABLE_METRICS[task]
    base = next((r for r in rows if r["Arm"] == "real-only"), rows[0])
    others = [r for r in rows if r is not base]
    head = ["class", *(r["Arm"] for r in rows), *(f"Δ {r['Arm']}" for r in others)]
    lines = [f"### {TITLES[task]}", "", f"Val: `{base['Val']}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in [*classes, summary_metric]:
        if all(r.get(name) is None for r in rows):
            continue  # class absent from val in every arm
        cells = [f"`{bar(r.get(name))}` {_cell(r.get(name))}" for r in rows]
        deltas = [_delta(r.get(name), base.get(name)) for r in others]
        label = f"**{name}**" if name == summary_metric else name
        lines.append("| " + " | ".join([label, *cells, *deltas]) + " |")
    lines += ["", "Train: " + "; ".join(f"{r['Arm']} = `{r['Train']}`" for r in rows), ""]
    return "\n".join(lines)


def markdown_report(results: Sequence[Mapping[str, Any]]) -> str:
    """The flow's markdown artifact: one section per task, plus arm timings and cache hits."""
    sections = [markdown_section(task, rows) for task, rows in task_tables(results).items()]
    timing = ["| task | arm | trained (s) | evaluated (s) | cached |", "|---|---|---|---|---|"]
    timing += [
        f"| {r['task']} | {r['label']} | {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} | "
        f"{'yes' if r['cached'] else 'no'} |"
        for r in results
    ]
    return "\n".join(["## Retrain and evaluate", "", *sections, "### Arms", "", *timing])
