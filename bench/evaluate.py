"""Benchmark: does translated simulator data make real perception better? (the product's claim)

Runs the demo pipeline (render → ingest → train translator → translate, each content-addressed, so a
rerun on the same root reuses them) and retrain-and-evaluate with every arm trained ``--seeds`` times:
real-only, real+sim and real+translated, extras *added* to the same real samples. The baseline is the
real-only arm of the same run and seed: each arm's paired difference (mean ± std over seeds) is the
ratio-like number this benchmark prints. The goal, per task (detection mAP, segmentation mIoU):

* real+translated − real-only > 0, with the mean paired difference above one std of the differences;
* real+translated > real+sim.

    nice -n 5 .venv/bin/python bench/evaluate.py --seeds 3 --root bench/out/demo-root
    .venv/bin/python bench/evaluate.py --scale 0.25 --evaluate-profile tiny --translator-profile tiny

Writes the whole result to ``bench/out/evaluate.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sim2real.flows.runtime import quiet_prefect, run_quietly

SUMMARY = {"detection": "mAP", "segmentation": "mIoU"}


def goal(tables: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per task: each arm's mean ± std of the summary metric, the paired differences to real-only and,
    for every translated arm (label containing ``translated``), whether it meets the goal."""
    verdicts = {}
    for task, rows in tables.items():
        metric = SUMMARY[task]
        arms = {row["Arm"]: row for row in rows}
        sim = next((row for arm, row in arms.items() if arm != "real-only" and "translated" not in arm), None)
        entry: dict[str, Any] = {
            "metric": metric,
            "arms": {arm: {"mean": row[metric], "std": row["std"][metric], "seeds": row["Seeds"]}
                     for arm, row in arms.items()},
            "paired_diff": {arm: (row["diff"] or {}).get(metric) for arm, row in arms.items()
                            if arm != "real-only"},
            "goal": {},
        }
        for arm, row in arms.items():
            if "translated" not in arm or row["diff"] is None or sim is None:
                continue
            paired = row["diff"][metric] or {"mean": None, "std": None}
            mean, std = paired["mean"], paired["std"]
            entry["goal"][arm] = {
                "beats_real_only_by_one_std": None not in (mean, std) and mean > 0 and mean > std,
                "beats_sim": None not in (row[metric], sim[metric]) and row[metric] > sim[metric],
            }
        verdicts[task] = entry
    return verdicts


def _pm(mean: float | None, std: float | None, sign: str = "") -> str:
    if mean is None:
        return "–"
    return f"{mean:{sign}.2f}" + ("" if std is None else f" ± {std:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (>= 3 for the goal)")
    parser.add_argument("--root", default="bench/out/evaluate-root", help="storage root of the run")
    parser.add_argument("--translator-profile", default="demo")
    parser.add_argument("--evaluate-profile", default="demo")
    parser.add_argument("--scale", type=float, default=1.0, help="scale the demo's frame counts")
    parser.add_argument("--out", default="bench/out/evaluate.json")
    args = parser.parse_args()
    quiet_prefect()
    from sim2real.flows.cli_evaluate import _human_tables
    from sim2real.flows.demo import DemoConfig, demo_flow

    base = DemoConfig()
    config = DemoConfig(
        sim_frames=max(4, round(base.sim_frames * args.scale)),
        real_frames=max(4, round(base.real_frames * args.scale)),
        val_frames=max(4, round(base.val_frames * args.scale)),
        translator_profile=args.translator_profile,
        evaluate_profile=args.evaluate_profile,
        seeds=args.seeds,
    )
    started = time.perf_counter()
    result = run_quietly(demo_flow, config=config, root=str(Path(args.root).resolve()))
    verdicts = goal(result["tables"])
    print(_human_tables(result["tables"]))
    print(f"\nseeds={args.seeds} profiles translator={args.translator_profile} "
          f"evaluate={args.evaluate_profile} scale={args.scale} took {time.perf_counter() - started:.0f}s")
    for task, entry in verdicts.items():
        print(f"{task} {entry['metric']}: " + ", ".join(
            f"{arm} {_pm(a['mean'], a['std'])}" for arm, a in entry["arms"].items()))
        print("  paired Δ vs real-only: " + ", ".join(
            f"{arm} {_pm(d['mean'], d['std'], '+')}" for arm, d in entry["paired_diff"].items() if d))
        for arm, verdict in entry["goal"].items():
            print(f"  {arm}: > real-only by more than one std: {verdict['beats_real_only_by_one_std']}; "
                  f"> real+sim: {verdict['beats_sim']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "goal": verdicts, **result}, indent=1,
                                         default=str))


if __name__ == "__main__":
    main()
