"""Exports for the scale benchmark: hard-linked toy exports, the ``tar cf`` baseline, label work alone."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sim2real.storage.sources.toysim import ToySimConfig, write_export

ROLES = ("rgb", "seg", "inst", "boxes", "depth", "meta")


def base_export(out: Path, frames: int, size: tuple[int, int]) -> Path:
    """A rendered toy export, reused across runs."""
    path = out / f"base-{frames}-{size[0]}x{size[1]}"
    if not (path / "classes.json").exists():
        tmp = path.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_export(tmp, ToySimConfig(style="sim", height=size[0], width=size[1], seed=7), frames)
        tmp.rename(path)
    return path


def linked_export(base: Path, dest: Path, frames: int) -> int:
    """``frames`` frames as hard links to ``base``'s files (keys ``{key}-c{copy}``); its size in bytes."""
    shutil.rmtree(dest, ignore_errors=True)
    for role in ROLES:
        (dest / role).mkdir(parents=True)
    shutil.copy(base / "classes.json", dest / "classes.json")
    size = (dest / "classes.json").stat().st_size
    entries = {role: sorted(os.listdir(base / role)) for role in ROLES}
    sizes = {(role, name): (base / role / name).stat().st_size for role in ROLES for name in entries[role]}
    made = 0
    copy = 0
    while made < frames:
        for index in range(min(len(entries["rgb"]), frames - made)):
            for role in ROLES:
                name = entries[role][index]
                stem, ext = os.path.splitext(name)
                os.link(base / role / name, dest / role / f"{stem}-c{copy:04d}{ext}")
                size += sizes[role, name]
            made += 1
        copy += 1
    return size


def tar_baseline(export: Path, work: Path) -> float:
    """Seconds for ``tar cf`` of the export folder into one archive on the same disk."""
    archive = work / "export.tar"
    start = time.perf_counter()
    subprocess.run(["tar", "cf", str(archive), "-C", str(export), "."], check=True)
    wall = time.perf_counter() - start
    archive.unlink()
    return wall


def label_work_alone(base: Path, repeats: int) -> float:
    """Seconds per frame of decoding, converting (lookup table) and encoding ``seg.png``, one process."""
    lut = _non_identity_lut()
    files = sorted((base / "seg").iterdir())
    start = time.process_time()
    for _ in range(repeats):
        for path in files:
            ids = np.asarray(Image.open(io.BytesIO(path.read_bytes())))
            buffer = io.BytesIO()
            Image.fromarray(lut[ids].astype(np.uint8), mode="L").save(buffer, format="PNG")
    return (time.process_time() - start) / (repeats * len(files))


def _non_identity_lut() -> np.ndarray:
    lut = np.arange(256, dtype=np.int16)
    lut[:19] = (np.arange(19) + 1) % 19  # what a classes.json numbering ids i -> trainId (i+1) % 19 does
    return lut


def convert_classes(export: Path) -> None:
    """Renumber classes.json so that seg.png must be converted (id i is the class of trainId (i+1) % 19)."""
    spec = json.loads((export / "classes.json").read_text())
    by_id = {c["id"]: c["name"] for c in spec["classes"]}
    spec["classes"] = [{"id": i, "name": by_id[(i + 1) % 19]} for i in range(19) if (i + 1) % 19 in by_id]
    (export / "classes.json").write_text(json.dumps(spec))
