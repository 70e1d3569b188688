"""One translate config: the version id covers every setting that changes bytes, and only those.

Batch size and intra-op threads per forward pass change the output bytes (oneDNN picks convolution
algorithms by batch shape; bf16 instance norms with an affine reduce across threads): measured here by
translating one source at batch 1 / 1 thread, 4 / 1 and 4 / 2. The id covers both, so those runs are
different versions. Settings marked ``changes_bytes: False`` are shown to leave every byte alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sim2real.flows.cli_translate import translate_config
from sim2real.flows.translate import translate_flow
from sim2real.flows.translate_config import TranslateConfig, bytes_fields
from sim2real.models.translator.engine_config import EngineConfig

from .test_translate_bytes import fingerprint

pytestmark = pytest.mark.usefixtures("prefect_harness")


def config(**parts: dict[str, Any]) -> TranslateConfig:
    return TranslateConfig.model_validate({"engine": {"device": "cpu"}, **parts})


def translate(world: dict[str, Any], name: str, cfg: TranslateConfig) -> tuple[str, dict[str, str]]:
    result = translate_flow(world["source"], world["translator"], name, world["root"], cfg)
    found = fingerprint(world["root"], result)
    return result["version"], {k: v for k, v in found.items() if k.endswith((".png", ".jpg"))}


def test_every_unmarked_field_changes_the_version_key_and_marked_ones_do_not():
    base = config().version_key()
    changed = {
        "encode": {"image_format": "jpg"},
        "pipeline": {"batch_size": 4},
    }
    for part, values in changed.items():
        assert config(**{part: values}).version_key() != base, (part, values)
    for engine in ({"precision": "fp32"}, {"compile": True}, {"intra_op_threads": 3}):
        assert config(engine={"device": "cpu", **engine}).version_key() != base, engine
    pngs = (
        {"png_deflate": "zlib-ng"},
        {"png_deflate": "zlib-ng", "png_strategy": "default"},
        {"png_filter": "adaptive"},
        {"png_compress_level": 2},
    )
    for png in pngs:
        assert config(encode=png).version_key() != base, png
    marked = config(
        pipeline={
            "decode_workers": 2,
            "prefetch_batches": 5,
            "encode_threads": 3,
            "gpu_slots": 2,
            "shard_processes": 3,
        },
        engine={
            "device": "cpu",
            "forward_threads": 1,
            "intra_op_threads": config().resolve().engine.intra_op_threads,
        },
    )
    assert marked.version_key() == base
    assert "decode_workers" not in bytes_fields(marked.pipeline) and "batch_size" in bytes_fields(
        marked.pipeline
    )


def test_auto_settings_are_resolved_before_hashing():
    resolved = config(engine={"device": "cpu", "precision": "auto"}).resolve()
    assert resolved.engine.precision in ("bf16", "fp32") and resolved.engine.device == "cpu"
    assert resolved.pipeline.decode_workers == 0 and resolved.pipeline.encode_threads == 2
    assert resolved.engine.intra_op_threads == max(
        1, torch.get_num_threads() // resolved.engine.forward_threads
    )
    explicit = config(engine={"device": "cpu", "precision": resolved.engine.precision})
    assert explicit.version_key() == config().version_key()  # auto and what it resolves to: one id
    capped = EngineConfig(device="cpu", forward_threads=4).resolve()
    assert capped.forward_threads == min(4, torch.get_num_threads())  # at most one per core


@pytest.mark.parametrize(
    "a, b",
    [(("1", "1"), ("4", "1")), (("4", "1"), ("4", "2"))],
    ids=["batch 1 vs 4", "1 vs 2 threads"],
)
def test_batch_size_and_threads_change_bytes_only_under_another_version_id(translate_world, a, b):
    world = translate_world

    def run(batch: str, threads: str) -> tuple[str, dict[str, str]]:
        cfg = config(
            pipeline={"batch_size": int(batch)},
            engine={"device": "cpu", "forward_threads": 1, "intra_op_threads": int(threads)},
        )
        return translate(world, f"det-b{batch}-t{threads}", cfg)

    (id_a, bytes_a), (id_b, bytes_b) = run(*a), run(*b)
    assert id_a != id_b  # the id covers batch size and threads per forward pass
    assert bytes_a.keys() == bytes_b.keys()


def test_throughput_settings_leave_every_byte_and_the_id_alone(translate_world):
    world = translate_world
    threads = config().resolve().engine.intra_op_threads
    plain = config(
        pipeline={"shard_processes": 0},  # in the flow's process; "busy" runs in 2 worker processes
        engine={"device": "cpu", "forward_threads": 1, "intra_op_threads": threads},
    )
    busy = config(
        pipeline={"decode_workers": 1, "encode_threads": 1, "prefetch_batches": 1, "shard_processes": 2},
        engine={"device": "cpu", "forward_threads": 2, "intra_op_threads": threads},
    )
    assert translate(world, "plain", plain) == translate(world, "busy", busy)


def test_config_file_and_flags(tmp_path: Path):
    path = tmp_path / "translate.yaml"
    path.write_text("encode:\n  image_format: jpg\nengine:\n  compile: true\n")
    cfg = translate_config(path, {"pipeline": {"batch_size": 3}, "engine": {"compile": None}})
    assert (cfg.encode.image_format, cfg.pipeline.batch_size, cfg.engine.compile) == ("jpg", 3, True)
    path.write_text("engine:\n  streams: 2\n")
    with pytest.raises(
        ValueError, match=r"translate.yaml: engine.streams: Extra inputs are not permitted \(got 2\)"
    ):
        translate_config(path, {})
    with pytest.raises(ValueError, match=r"pipeline.batch_size: Input should be greater than or equal to 1"):
        translate_config(None, {"pipeline": {"batch_size": 0}})
