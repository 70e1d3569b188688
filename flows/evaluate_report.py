"""How retrain-and-evaluate results are shown: seed-style tables (mean ± std over seeds, and each arm's
paired difference to real-only), plain-text tables for the terminal, flat rows for Prefect table
artifacts, and a markdown report with per-class unicode bars."""

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


def _spread(mean: Any, std: Any, sign: bool = False) -> str:
    """``mean±std`` (``mean`` alone with one seed, ``–`` without a value), one decimal."""
    if mean is None:
        return "–"
    text = f"{mean:+.1f}" if sign else f"{mean:.1f}"
    return text if std is None else f"{text}±{std:.1f}"


def _diff(row: Mapping[str, Any], column: str) -> str:
    paired = (row.get("diff") or {}).get(column)
    return "–" if paired is None else _spread(paired["mean"], paired["std"], sign=True)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Class and summary columns with a value in some row (classes absent from val are left out)."""
    return [c for c in rows[0] if c not in NON_METRIC_KEYS and any(r[c] is not None for r in rows)]


NON_METRIC_KEYS = ("Arm", "Train", "Val", "Protocol", "Seeds", "std", "diff")


def display_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows for a Prefect table artifact: each class cell ``mean±std``, then per extra arm a
    ``Δ ARM`` row with the paired difference to real-only (``mean±std`` over seeds)."""
    if not rows:
        return []
    columns = _columns(rows)
    flat = []
    for row in rows:
        head = {"Arm": row["Arm"], "Seeds": row["Seeds"], "Protocol": row["Protocol"]}
        flat.append(head | {c: _spread(row[c], row["std"][c]) for c in columns} | {"Train": row["Train"]})
    for row in rows:
        if row["diff"] is not None:
            head = {"Arm": f"Δ {row['Arm']}", "Seeds": row["Seeds"], "Protocol": row["Protocol"]}
            flat.append(head | {c: _diff(row, c) for c in columns} | {"Train": "paired with real-only"})
    return flat


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width terminal table of seed-table rows (``mean±std`` over seeds), then each extra arm's
    paired difference to real-only; classes absent from val in every row are left out."""
    if not rows:
        return "(no rows)"
    columns = _columns(rows)
    if len({r["Val"] for r in rows}) > 1:  # several validation versions: name each row's
        rows = [{**r, "Arm": f"{r['Arm']} on {r['Val']}"} for r in rows]
    labels = [str(r["Arm"]) for r in rows] + [f"Δ {r['Arm']}" for r in rows if r["diff"] is not None]
    arm_width = max(len("Arm"), *(len(label) for label in labels))
    width = 9 if any(r["Seeds"] > 1 for r in rows) else 7
    header = f"{'Arm':<{arm_width}} " + " ".join(f"{SHORT_NAMES.get(c, c)[:7]:>{width}}" for c in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = (_spread(row[c], row["std"][c]) for c in columns)
        lines.append(f"{row['Arm']:<{arm_width}} " + " ".join(f"{cell:>{width}}" for cell in cells))
    for row in rows:
        if row["diff"] is not None:
            cells = (_diff(row, c) for c in columns)
            label = f"Δ {row['Arm']}"
            lines.append(f"{label:<{arm_width}} " + " ".join(f"{cell:>{width}}" for cell in cells))
    seeds = "/".join(str(n) for n in sorted({r["Seeds"] for r in rows}))
    protocols = ", ".join(sorted({str(r["Protocol"]) for r in rows}))
    lines.append(f"mean±std over {seeds} seed(s); Δ = paired difference to real-only "
                 f"(same seeds, same real samples); protocol {protocols}")
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


def markdown_section(task: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One task: per class a bar and mean ± std per arm, and each extra arm's paired difference to
    real-only (mean ± std over seeds)."""
    class_metric, summary_metric, classes = TABLE_METRICS[task]
    others = [r for r in rows if r["diff"] is not None]
    head = ["class", *(r["Arm"] for r in rows), *(f"Δ {r['Arm']}" for r in others)]
    seeds = "/".join(str(n) for n in sorted({r["Seeds"] for r in rows}))
    lines = [f"### {TITLES[task]}", "", f"Val: `{rows[0]['Val']}` · mean ± std over {seeds} seed(s) · "
             "Δ: paired difference to real-only", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in [*classes, summary_metric]:
        if all(r.get(name) is None for r in rows):
            continue  # class absent from val in every arm
        cells = [f"`{bar(r.get(name))}` {_spread(r.get(name), r['std'].get(name))}" for r in rows]
        deltas = [_diff(r, name) for r in others]
        label = f"**{name}**" if name == summary_metric else name
        lines.append("| " + " | ".join([label, *cells, *deltas]) + " |")
    lines += ["", "Train: " + "; ".join(f"{r['Arm']} = `{r['Train']}`" for r in rows), ""]
    return "\n".join(lines)


def markdown_report(results: Sequence[Mapping[str, Any]]) -> str:
    """The flow's markdown artifact: one section per task, plus arm timings and cache hits."""
    sections = [markdown_section(task, rows) for task, rows in task_tables(results).items()]
    timing = ["| task | arm | seed | real samples | extra samples | trained (s) | evaluated (s) | cached |",
              "|---|---|---|---|---|---|---|---|"]
    timing += [
        f"| {r['task']} | {r['label']} | {r['seeds']['seed']} | {r['real_samples_seen']} | "
        f"{r['extra_samples_seen']} | {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} | "
        f"{'yes' if r['cached'] else 'no'} |"
        for r in results
    ]
    return "\n".join(["## Retrain and evaluate", "", *sections, "### Arms", "", *timing])
