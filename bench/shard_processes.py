"""Translate flow frames/s with shard work in worker processes against the flow's own process, one run.

For each translator, the same toy sim version is translated with ``pipeline.shard_processes`` N (worker
processes, started and stopped by each flow run, their start-up included) and 0 (threads of the flow's
process), interleaved round by round; the best round of each counts. Prints frames/s and the ratio
workers / in-process per translator: what ``shard_processes: null`` (workers from
``AUTO_FRAMES_PER_PROCESS`` source frames per core) rests on.

    .venv/bin/python bench/shard_processes.py --root ROOT --translators ID [ID ...] --frames 24576
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

# Only the standard library at import: every worker process re-imports this script (Python's spawn).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the sibling bench modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="storage root holding the translators")
    parser.add_argument("--translators", nargs="+", required=True, help="registry ids")
    parser.add_argument("--frames", type=int, default=24576)
    parser.add_argument("--size", default="128x256", help="HxW of the toy frames")
    parser.add_argument("--shard-samples", type=int, default=1024)
    parser.add_argument("--processes", type=int, default=2, help="worker processes of the compared arm")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best counts")
    args = parser.parse_args()

    import os

    from bench.distill_run import flow_cpu_seconds
    from bench.translate import flow_run, make_source
    from sim2real.flows.runners import RunnerConfig
    from sim2real.flows.translate import TranslateConfig

    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-processes-", dir=args.root) as tmp:
        source = make_source(tmp, "bench", args.frames, (height, width), args.shard_samples)
        warm = make_source(tmp, "warm", 2, (height, width), args.shard_samples)
        os.symlink(Path(args.root, "models").resolve(), Path(tmp, "models"))
        arms = {
            "processes": TranslateConfig.model_validate(
                {"pipeline": {"shard_processes": args.processes}, "engine": {"device": "cpu"}}
            ),
            "in_process": TranslateConfig.model_validate(
                {"pipeline": {"shard_processes": 0}, "engine": {"device": "cpu"}}
            ),
        }
        runner = RunnerConfig(kind="thread")
        for ref in args.translators:  # server start; the in-process engines are built once per process
            flow_run(warm, ref, f"warm-{ref}", arms["in_process"], runner, tmp)
        seconds: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        load_before = os.getloadavg()[0]
        for round_index in range(args.rounds):
            for ref in args.translators:
                for arm, config in arms.items():
                    cpu_started = flow_cpu_seconds()
                    took, _ = flow_run(source, ref, f"{arm}-{ref}-{round_index}", config, runner, tmp)
                    used = flow_cpu_seconds() - cpu_started
                    seconds.setdefault(f"{ref} {arm}", []).append(took)
                    cpu.setdefault(f"{ref} {arm}", []).append(used)
                    done = f"round {round_index + 1} {ref} {arm}: {args.frames / took:.1f} f/s"
                    print(done, file=sys.stderr, flush=True)
    result = {
        "device": f"cpu x{os.cpu_count()}",
        "frames": args.frames,
        "size": args.size,
        "processes": args.processes,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "fps": {key: round(args.frames / min(values), 1) for key, values in seconds.items()},
        "cpu_ms_per_frame": {key: round(1e3 * min(values) / args.frames, 3) for key, values in cpu.items()},
        "seconds": {key: [round(s, 2) for s in values] for key, values in seconds.items()},
        "ratio_processes_over_in_process": {
            ref: round(min(seconds[f"{ref} in_process"]) / min(seconds[f"{ref} processes"]), 3)
            for ref in args.translators
        },
    }
    print(f"{result['device']}, {args.frames} frames {args.size}, {args.processes} worker processes vs 0")
    for ref, ratio in result["ratio_processes_over_in_process"].items():
        fps = result["fps"]
        print(
            f"  {ref}: workers {fps[f'{ref} processes']} f/s, in-process {fps[f'{ref} in_process']} f/s; "
            f"workers / in-process = {ratio:.3f}"
        )
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
