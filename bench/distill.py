"""Student vs teacher in one run: FLOPs per frame, the translate flow's frames/s, the forward's frames/s.

Both translators translate the same toy sim version with the flow's defaults (thread runner, CPU
forward threads, PNG; ``--format jpg`` for JPEG, ``--shard-processes N`` for the shard work in N worker
processes, the same for both), interleaved round by round
(teacher, student, teacher, ...); the best round of each counts, so load from other processes skews the
ratio less. The forward alone (the flow's own engine over pre-decoded frames, every forward thread busy)
is timed the same way; the 1-minute load average is printed before and after. Prints the ratios:
FLOPs teacher/student (goal ≥ 8) and flow frames/s student/teacher (goal ≥ 5 on CPU).

With ``--root``, ``--teacher`` and ``--student`` it times registry entries (a distilled student and its
teacher) and prints the student card's quality comparison with the teacher too; without them it
registers a fresh ``demo`` teacher and a fresh ``demo`` student in a temporary root. The forward's speed
does not depend on the weights, the encoding's does: untrained networks output noise, which PNG
compresses worst (67 KB per 128×256 frame, 0.7 ms to encode), so trained ones give the truer flow ratio.

    .venv/bin/python bench/distill.py                                  # fresh demo pair, 768 frames
    .venv/bin/python bench/distill.py --root data/demo --teacher ID --student ID
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the sibling bench module

from bench.translate import decoded, flow_run, forward_only, make_source  # noqa: E402
from sim2real.flows.distill import load_distill_profile  # noqa: E402
from sim2real.flows.runners import RunnerConfig  # noqa: E402
from sim2real.flows.train_translator import load_profile  # noqa: E402
from sim2real.flows.translate import TranslateConfig  # noqa: E402
from sim2real.models.translator.checkpoint import translator_weights  # noqa: E402
from sim2real.models.translator.distill import student_weights  # noqa: E402
from sim2real.models.translator.kinds import footprint  # noqa: E402
from sim2real.models.translator.model import build_translator  # noqa: E402
from sim2real.models.translator.student import build_student  # noqa: E402
from sim2real.storage.registry import TranslatorRegistry  # noqa: E402
from sim2real.tasks.translate_work import cached_engine  # noqa: E402


def fresh_pair(root: str, profile: str) -> tuple[str, str]:
    """Register an untrained ``profile`` teacher and student (kinds ``translator`` and ``student``)."""
    torch.manual_seed(0)
    registry = TranslatorRegistry(root)
    teacher_config = load_profile(profile).translator
    teacher = registry.save(
        translator_weights(build_translator(teacher_config)),
        {"kind": "translator", "config": teacher_config.model_dump(mode="json")},
    )
    student_config = load_distill_profile(profile)
    student = registry.save(
        student_weights(build_student(student_config.student)),
        {"kind": "student", "config": student_config.model_dump(mode="json"), "teacher": {"id": teacher}},
    )
    return teacher, student


def flow_cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children: the shard workers, which the
    flow stops (and so reaps) at its end. The Prefect server, a child that lives on, is not counted."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    """Time both translators ``args.rounds`` times, interleaved; the best round of each counts."""
    height, width = (int(v) for v in args.size.lower().split("x"))
    if args.teacher and args.student:
        teacher, student = args.teacher, args.student
    else:
        teacher, student = fresh_pair(root, args.profile)
    names = {"teacher": teacher, "student": student}
    source = make_source(root, "bench", args.frames, (height, width), args.shard_samples)
    warm = make_source(root, "warm", 2, (height, width), args.shard_samples)
    config = TranslateConfig.model_validate(
        {
            "encode": {"image_format": args.format},
            "pipeline": {"batch_size": args.batch_size, "shard_processes": args.shard_processes},
            "engine": {"device": "cpu"},
        }
    )
    load_before = os.getloadavg()
    runner = RunnerConfig(kind="thread")
    registry = TranslatorRegistry(root)
    for name, ref in names.items():
        flow_run(warm, ref, f"warm-{name}", config, runner, root)  # server start, engine build
    images = decoded(source, torch.device("cpu"))
    engines = {
        n: cached_engine(root, ref, config.engine.resolve(), args.batch_size)
        for n, ref in names.items()
    }
    times: dict[str, list[float]] = {f"{kind}_{n}": [] for kind in ("flow", "forward") for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # this process's CPU seconds per flow run
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline") as thread:
        for round_index in range(args.rounds):
            for name, ref in names.items():
                cpu_started = flow_cpu_seconds()
                seconds, _ = flow_run(source, ref, f"bench-{name}-{round_index}", config, runner, root)
                times[f"flow_{name}"].append(seconds)
                cpu[name].append(flow_cpu_seconds() - cpu_started)
                engine = engines[name]
                times[f"forward_{name}"].append(
                    thread.submit(forward_only, images, engine, args.batch_size).result()
                )
                print(
                    f"round {round_index + 1} {name}: flow {args.frames / seconds:.1f} f/s, forward "
                    f"{args.frames / times[f'forward_{name}'][-1]:.1f} f/s",
                    file=sys.stderr,
                    flush=True,
                )
    fps = {key: round(args.frames / min(values), 2) for key, values in times.items()}
    cost = {name: footprint(registry.card(ref)) for name, ref in names.items()}
    card = registry.card(student)
    return {
        "device": f"cpu x{os.cpu_count()}",
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "encode": config.encode.model_dump(),
        "torch_threads": torch.get_num_threads(),
        "shard_processes": config.pipeline.resolve("cpu").shard_processes,
        "frames": args.frames,
        "size": args.size,
        "translators": names,
        "engine": {n: e.describe() | {"forward_threads": e.forward_threads} for n, e in engines.items()},
        "gflops_per_frame_256x512": {n: c["gflops_per_frame"] for n, c in cost.items()},
        "parameters": {n: c["parameters"] for n, c in cost.items()},
        "flops_ratio": round(cost["teacher"]["gflops_per_frame"] / cost["student"]["gflops_per_frame"], 2),
        "fps": fps,
        "seconds": {k: [round(s, 2) for s in v] for k, v in times.items()},
        "flow_ratio": round(fps["flow_student"] / fps["flow_teacher"], 2),
        # CPU time of this process and its shard workers (not the Prefect server's) per frame, least of
        # the rounds: less sensitive to other processes' load than frames/s; an idle box whose cores
        # the flow kept busy would approach its ratio
        "flow_cpu_ms_per_frame": {n: round(1e3 * min(v) / args.frames, 3) for n, v in cpu.items()},
        "flow_cpu_ratio": round(min(cpu["teacher"]) / min(cpu["student"]), 2),
        "forward_ratio": round(fps["forward_student"] / fps["forward_teacher"], 2),
        "vs_teacher": card.get("metrics", {}).get("vs_teacher"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=768)
    parser.add_argument("--size", default="128x256", help="HxW of the toy frames")
    parser.add_argument("--profile", default="demo", help="profile of the fresh pair (no --teacher)")
    parser.add_argument("--shard-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--format", default="png", choices=("png", "jpg"), help="translated image format")
    parser.add_argument(
        "--shard-processes", type=int, default=0, help="pipeline.shard_processes (default 0, the flow's)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best counts")
    parser.add_argument("--root", default=None, help="storage root holding --teacher and --student")
    parser.add_argument("--teacher", default=None, help="registry id of the teacher")
    parser.add_argument("--student", default=None, help="registry id of the student")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    args = parser.parse_args()
    if bool(args.teacher) != bool(args.student) or (args.teacher and not args.root):
        parser.error("--teacher and --student go together, with --root")
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        result = run(args, args.root or tmp)
    gflops = result["gflops_per_frame_256x512"]
    print(
        f"device {result['device']}, {result['frames']} frames {result['size']}, engines {result['engine']}"
    )
    load = result["load_average_1min"]
    print(f"  encode {result['encode']}; 1-min load average {load['before']} before, {load['after']} after")
    print(
        f"  GFLOPs/frame at 256x512: teacher {gflops['teacher']}, student {gflops['student']}; "
        f"teacher/student = {result['flops_ratio']:.2f}  (goal >= 8)"
    )
    fps = result["fps"]
    print(
        f"  flow: teacher {fps['flow_teacher']} f/s, student {fps['flow_student']} f/s; "
        f"student/teacher = {result['flow_ratio']:.2f}  (goal >= 5)"
    )
    per_frame = result["flow_cpu_ms_per_frame"]
    print(
        f"  flow CPU (this process and its shard workers): teacher {per_frame['teacher']} ms/frame, student "
        f"{per_frame['student']} ms/frame; teacher/student = {result['flow_cpu_ratio']:.2f}"
    )
    print(
        f"  forward alone: teacher {fps['forward_teacher']} f/s, student {fps['forward_student']} f/s; "
        f"student/teacher = {result['forward_ratio']:.2f}"
    )
    for name, row in (result["vs_teacher"] or {}).items():
        print(f"  {name}: {row}")
    if args.json:
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
