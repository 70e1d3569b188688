"""Student vs teacher in one run: FLOPs per frame, the translate flow's frames/s, the forward's frames/s.

Both translators translate the same toy sim version with the flow's defaults (thread runner, CPU
forward threads, PNG; ``--format jpg`` for JPEG, ``--shard-processes N`` for the shard work in N worker
processes instead of the flow's choice by run size, the same for both), interleaved round by round
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
import sys
import tempfile
from pathlib import Path

# Only the standard library at import: the flow's worker processes re-import this script (see
# bench/distill_run.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the sibling bench modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=768)
    parser.add_argument("--size", default="128x256", help="HxW of the toy frames")
    parser.add_argument("--profile", default="demo", help="profile of the fresh pair (no --teacher)")
    parser.add_argument("--shard-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--format", default="png", choices=("png", "jpg"), help="translated image format")
    parser.add_argument(
        "--shard-processes",
        type=int,
        default=None,
        help="pipeline.shard_processes (default: the flow's, by the run's size)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best counts")
    parser.add_argument("--root", default=None, help="storage root holding --teacher and --student")
    parser.add_argument("--teacher", default=None, help="registry id of the teacher")
    parser.add_argument("--student", default=None, help="registry id of the student")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    args = parser.parse_args()
    from bench.distill_run import run  # heavy: after the arguments, never in a worker

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
    processes = result["shard_processes"]
    where = f"{processes} worker processes" if processes > 1 else "the flow's process"
    print(f"  shard work: {where} (pipeline.shard_processes, both translators)")
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
