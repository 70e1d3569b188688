"""The measuring part of ``bench/distill.py`` (its CLI): kept out of the script, because every shard worker
process the flow starts (``pipeline.shard_processes``) re-imports the script that started it as its
``__main__`` (Python's ``spawn``), and these imports (Prefect, torch, the flows) cost a worker ~3.4 s.
The ``sim2real`` CLI's own module imports lazily for the same reason."""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from bench.translate import decoded, flow_run, forward_only, make_source
from sim2real.flows.distill import load_distill_profile
from sim2real.flows.runners import RunnerConfig
from sim2real.flows.train_translator import load_profile
from sim2real.flows.translate import TranslateConfig
from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.distill import student_weights
from sim2real.models.translator.kinds import footprint
from sim2real.models.translator.model import build_translator
from sim2real.models.translator.student import build_student
from sim2real.storage.registry import TranslatorRegistry
from sim2real.tasks.translate_work import cached_engine

# Frames the forward alone is timed on (decoded as float32 in memory: 1.2 GB at 128×256)
FORWARD_FRAMES = 3072


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
    images = decoded(source, torch.device("cpu"), FORWARD_FRAMES)  # the forward's speed: a sample is enough
    engines = {
        n: cached_engine(root, ref, config.engine.resolve(), args.batch_size) for n, ref in names.items()
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
                    f"{len(images) / times[f'forward_{name}'][-1]:.1f} f/s",
                    file=sys.stderr,
                    flush=True,
                )
    counts = {"flow": args.frames, "forward": len(images)}
    fps = {key: round(counts[key.split("_")[0]] / min(values), 2) for key, values in times.items()}
    cost = {name: footprint(registry.card(ref)) for name, ref in names.items()}
    card = registry.card(student)
    return {
        "device": f"cpu x{os.cpu_count()}",
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "encode": config.encode.model_dump(),
        "torch_threads": torch.get_num_threads(),
        # worker processes the flow chose (the same for both translators): set, or by the run's size
        "shard_processes": config.pipeline.resolve("cpu").processes_for(args.frames, len(source.shard_urls)),
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
