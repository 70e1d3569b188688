"""The translate case of the scale benchmark: a source version translated by the tiny translator."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from scaling.exports import linked_export
from scaling.ingest_case import CLI, ingest
from scaling.proc_tree import run_sampled


def tiny_translator(root: Path) -> str:
    """A fresh tiny translator (random weights) saved in ``root``'s registry; its id."""
    import torch

    from sim2real.models.translator.checkpoint import translator_weights
    from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
    from sim2real.models.translator.model import build_translator
    from sim2real.storage.registry import TranslatorRegistry

    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    torch.manual_seed(0)
    weights = translator_weights(build_translator(config))
    return TranslatorRegistry(str(root)).save(weights, {"config": config.model_dump(mode="json")})


def translate_case(
    frames: int, base: Path, work: Path, env: dict[str, str], limit_s: float | None = None
) -> dict:
    """Ingest ``frames`` frames (untimed), then translate them with the tiny translator, measured: peak
    RSS summed over the command's processes, bytes read against the source version's shard bytes."""
    export = work / f"export-tr-{frames}"
    root = work / f"root-tr-{frames}"
    linked_export(base, export, frames)
    _, _, ingested = ingest(export, root, "trsrc", env, [])
    shutil.rmtree(export)
    source_bytes = sum(p.stat().st_size for p in Path(ingested["path"], "shards").glob("*.tar"))
    translator = tiny_translator(root)
    ref = f"{ingested['name']}@{ingested['version']}"
    command = [*CLI, "translate", ref, "--translator", translator, "--root", str(root), "--device", "cpu"]
    wall, sample, stdout = run_sampled([*command, "--json"], env, limit_s=limit_s)
    if stdout:
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["samples"] == frames, result
    else:  # stopped at the limit: count the finished shards
        parts = list(root.glob("datasets/trsrc-translated/*/_parts/*.json"))
        done = sum(json.loads(p.read_text())["shard"]["nsamples"] for p in parts)
        result = {"samples": done, "shards": len(parts), "stopped_at_s": round(wall)}
    shutil.rmtree(root)
    source_done = source_bytes * result["samples"] / frames
    row = {
        "frames": frames,
        "translate_s": round(wall, 1),
        "stopped_after_limit": "stopped_at_s" in result,
        "frames_done": result["samples"],
        "translate_frames_per_s": round(result["samples"] / wall, 1),
        "cpu_s": sample.total["cpu_s"],
        "peak_rss_MB": round(sample.peak_rss / 2**20),
        "processes": sample.processes,
        "source_shards_MB": round(source_bytes / 1e6, 1),
        "rchar_MB": round(sample.total["rchar"] / 1e6, 1),
        "rchar_over_source": round(sample.total["rchar"] / source_done, 3),
        "rchar_MB_by_process": sample.rchar_by_kind(),
        "wchar_MB": round(sample.total["wchar"] / 1e6, 1),
        "shards": result["shards"],
    }
    print(json.dumps(row), file=sys.stderr)
    return row
