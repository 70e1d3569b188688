"""The one translate config: ``encode`` / ``pipeline`` / ``engine``, as the CLI, the flow, the deployment
(``deploy/prefect.yaml``) and ``bench/translate.py`` take it.

Each part lives beside the code it configures and is handed only to that code: ``encode`` to the shard
writer (:mod:`sim2real.storage.image_encoding`), ``pipeline`` to the shard reader and the flow
(:mod:`sim2real.storage.translate_read`), ``engine`` to the translator engine
(:mod:`sim2real.models.translator.engine`). The version id hashes :meth:`TranslateConfig.version_key`:
every field of the resolved config except those marked ``changes_bytes: False`` (which tests show do not
move a byte), plus the engine's own account of how it computes. A new field is covered unless someone
marks it, and a marked field that does change bytes fails ``tests/flows/test_translate_config.py``.

As YAML (``sim2real translate --config FILE``; every key optional)::

    encode:
      image_format: png        # png or jpg
      png_filter: paeth        # PNG row filter, or adaptive (PIL's per-row choice)
      png_deflate: null        # null = isal (ISA-L, levels 0-3, fastest); zlib-ng: levels 0-9, smaller
      png_compress_level: null # null = 1 with isal, 6 with zlib-ng or adaptive; 4-9 (or a png_strategy)
                               # with png_deflate null picks zlib-ng, as configs written before ISA-L
    pipeline:
      batch_size: 8            # frames per forward pass (changes bytes: kernels pick algorithms by shape)
      decode_workers: null     # decode processes; null = 0 on CPU, min(4, cores/2) on CUDA
      shard_processes: null    # CPU: worker processes running shard work; null = one per core when the
                               # run has 8,192 frames per core, else 0 (the flow's process)
    engine:
      device: auto             # auto, cpu, cuda, cuda:N
      precision: auto          # bf16 where native, else fp32 (fp16 on older GPUs)
      compile: false           # torch.compile: pays off on large runs
      forward_threads: 2       # CPU: forward passes at once
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim2real.models.translator.engine_config import EngineConfig, engine_numerics
from sim2real.storage.image_encoding import EncodeConfig
from sim2real.storage.translate_read import PipelineConfig


class TranslateConfig(BaseModel):
    """Everything a translate run is told: how images are stored, how shards flow, how the model runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # how translated images are stored; every field changes the output bytes
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    # batching and the decode/encode workers around the forward pass; batch_size changes bytes
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    # device, precision, compilation and CPU threads of the forward pass
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TranslateConfig:
        """Load a config file (``yaml.safe_load``; unknown keys are refused). Raises ``ValueError``
        naming the file and the key."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{path}: {one_line(exc)}") from None

    def resolve(self) -> TranslateConfig:
        """The same config with ``auto`` and worker defaults decided for this machine."""
        engine = self.engine.resolve()
        device_type = "cuda" if engine.device.startswith("cuda") else "cpu"
        return self.model_copy(update={"engine": engine, "pipeline": self.pipeline.resolve(device_type)})

    def version_key(self) -> dict[str, Any]:
        """What the translated version id covers: every field of the resolved config that can change
        the output bytes, and the engine's numerics."""
        resolved = self.resolve()
        return {**bytes_fields(resolved), "engine_numerics": engine_numerics(resolved.engine)}


def bytes_fields(model: BaseModel) -> dict[str, Any]:
    """The fields of ``model`` (nested models walked) not marked ``changes_bytes: False``."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("changes_bytes") is False:
            continue
        value = getattr(model, name)
        out[name] = bytes_fields(value) if isinstance(value, BaseModel) else value
    return out


def one_line(exc: ValidationError) -> str:
    """A pydantic error as one line: ``key.path: reason (got value); ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e['input']!r})" for e in exc.errors()
    )
