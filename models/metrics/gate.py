"""The quality gate of a translated version: thresholds, the numbers it reads, and the decision.

A plain function of a :class:`QualityReport` (label fidelity, detail retention, realism ratio and,
after retraining, the gain in points) and a :class:`GateConfig`; ``None`` on either side is kept
apart from a number: a threshold of ``None`` switches its check off, a value of ``None`` (not
measured) fails its check with that reason. Where decisions are recorded: ``storage/promotion.py``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    """Thresholds a translated version must meet to be promoted (``None`` switches a check off)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_label_fidelity: float | None = Field(
        0.6,
        ge=0,
        description="translated-frame mIoU of the real-trained reference segmenter ÷ its mIoU on real frames",
    )
    min_detail_retention: float | None = Field(
        0.3, ge=-1, le=1, description="edge agreement (gradient correlation) on signs, lights, lane marks"
    )
    max_realism_ratio: float | None = Field(
        1.0, gt=0, description="realism distance to real frames, translated ÷ raw sim (below 1 = closer)"
    )
    min_gain_points: float | None = Field(
        None, description="retrain gate: real+translated minus real-only mAP/mIoU, points (None: off)"
    )


class QualityReport(BaseModel):
    """The numbers the gate reads for one translated version (``None``: not measured)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label_fidelity: float | None = None
    detail_retention: float | None = None
    realism_ratio: float | None = None
    frames: int = 0
    details: dict[str, Any] = Field(default_factory=dict, description="the raw metrics behind the numbers")

    @classmethod
    def from_translation_metrics(cls, metrics: dict[str, Any]) -> QualityReport:
        """From ``models.metrics.translation_eval.evaluate_translation``'s result."""
        summary = metrics["summary"]
        detail = metrics["translated"].get("detail", {})
        raw_swd = _number(summary.get("realism_swd_raw_sim"))
        translated_swd = _number(summary.get("realism_swd_translated"))
        ratio = translated_swd / raw_swd if translated_swd is not None and raw_swd else None
        return cls(
            label_fidelity=_number(summary.get("fidelity_ratio_translated")),
            detail_retention=_number(detail.get("edge_agreement")),
            realism_ratio=ratio,
            frames=int(metrics.get("frames", {}).get("sim", 0)),
            details={"summary": summary, "detail": detail},
        )


class GateDecision(BaseModel):
    """Whether a version passed, every check made, and in words why not."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    checks: list[dict[str, Any]]
    reasons: list[str]

    def explain(self) -> str:
        """One line for logs and the CLI."""
        return "passed every check" if self.passed else "; ".join(self.reasons)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _check(name: str, value: float | None, bound: float | None, minimum: bool) -> dict[str, Any] | None:
    if bound is None:
        return None
    relation = ">=" if minimum else "<="
    if value is None:
        return {
            "check": name,
            "value": None,
            "bound": f"{relation} {bound}",
            "passed": False,
            "reason": f"{name} was not measured (needs {relation} {bound})",
        }
    passed = value >= bound if minimum else value <= bound
    reason = "" if passed else f"{name} {value:.3f} is not {relation} {bound}"
    return {
        "check": name,
        "value": round(value, 4),
        "bound": f"{relation} {bound}",
        "passed": passed,
        "reason": reason,
    }


def check_gate(report: QualityReport, config: GateConfig, gain_points: float | None = None) -> GateDecision:
    """Apply ``config``'s thresholds to ``report`` (and to the retrain gain when one is given)."""
    checks = [
        _check("label fidelity", report.label_fidelity, config.min_label_fidelity, minimum=True),
        _check("detail retention", report.detail_retention, config.min_detail_retention, minimum=True),
        _check("realism ratio", report.realism_ratio, config.max_realism_ratio, minimum=False),
    ]
    if gain_points is not None or config.min_gain_points is not None:
        checks.append(_check("retrain gain (points)", gain_points, config.min_gain_points, minimum=True))
    made = [c for c in checks if c is not None]
    return GateDecision(
        passed=all(c["passed"] for c in made),
        checks=made,
        reasons=[c["reason"] for c in made if not c["passed"]],
    )


def retrain_gain(evaluation: dict[str, Any], extra_label: str) -> float | None:
    """Mean over tasks of (real+extra − real-only) headline metric, in points; None when not comparable."""
    by_task: dict[str, dict[str, float]] = {}
    for arm in evaluation.get("arms", []):
        summary = arm.get("summary") or {}
        headline = summary.get("mAP", summary.get("mIoU"))
        if headline is not None and not math.isnan(float(headline)):
            by_task.setdefault(arm["task"], {})[arm["arm"]] = float(headline)
    gains = [
        arms[extra_label] - arms["real-only"]
        for arms in by_task.values()
        if {extra_label, "real-only"} <= set(arms)
    ]
    return sum(gains) / len(gains) if gains else None
