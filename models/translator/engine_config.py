"""How the translator engine runs: its config, precision choice and the numerics that decide its bytes.

:class:`EngineConfig` is the ``engine:`` part of the translate config. :func:`engine_numerics` of a
resolved config is what the engine builds itself from and what the version id hashes, so the two cannot
disagree: device type, precision, compilation, the instance norms' form, the graph's layout and the
intra-op threads per forward pass (bf16 instance norms with an affine reduce across them, so their
count changes bytes).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field

from sim2real.models.device import resolve_device

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # precision → torch dtype (fp32: none)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (not by emulation, which would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # private helpers; absent on some builds
            return False
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` → ``bf16`` where native, ``fp16`` on CUDA without bf16, else ``fp32``; others as given."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision fp16: not supported on CPU (use bf16 or fp32)")
        return precision
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


# A field marked so does not change the output bytes; every other field feeds the version id.
THROUGHPUT_ONLY: dict[str, Any] = {"changes_bytes": False}


class EngineConfig(BaseModel):
    """How the translator runs (``engine:`` of the translate config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # where the forward pass runs; auto = cuda when available, else cpu
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    # compute precision; bf16 moves some pixels by a level or two against fp32 (bench/RESULTS.md)
    precision: Precision = Field(
        default="auto",
        description="auto = bf16 where the device has it natively (fp16 on older GPUs), else fp32",
    )
    # torch.compile the inference graph: seconds to a minute per input shape, for large runs
    compile: bool = Field(default=False, description="torch.compile the translator (for large runs)")
    # CPU: forward passes at once, each on a thread of its own (a GPU runs one)
    forward_threads: int = Field(
        default=2,
        ge=1,
        description="CPU: forward passes at once, each on its own thread with cores / forward_threads "
        "intra-op threads (two single-threaded forwards beat one two-threaded forward by ~20 % on 2 cores)",
        json_schema_extra=THROUGHPUT_ONLY,
    )
    # CPU: torch intra-op threads per forward pass; None = cores / forward_threads
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU: torch threads per forward pass (default: cores / forward_threads); bf16 output "
        "bytes depend on it",
    )

    def resolve(self) -> EngineConfig:
        """The same config with ``auto`` and defaults decided for this machine (what the engine runs)."""
        device = resolve_device(self.device)
        cpu = device.type == "cpu"
        forward_threads = min(self.forward_threads, torch.get_num_threads()) if cpu else 1
        intra = (self.intra_op_threads or max(1, torch.get_num_threads() // forward_threads)) if cpu else None
        return self.model_copy(
            update={
                "device": str(device),
                "precision": resolve_precision(self.precision, device),
                "forward_threads": forward_threads,
                "intra_op_threads": intra,
            }
        )


def engine_numerics(config: EngineConfig) -> dict[str, Any]:
    """How a resolved engine computes: what decides its output bytes (beyond the weights and batch size).

    The engine builds itself from this and the version id hashes it, so the two cannot disagree.
    """
    device = torch.device(config.device)
    cast_graph = config.precision in DTYPES and device.type == "cpu"
    return {
        "device": device.type,
        "precision": config.precision,
        "compiled": config.compile,
        "intra_op_threads": config.intra_op_threads,
        # On CPU a bf16 graph holds its weights in bf16 and runs channels-last without autocast.
        "cast_graph": cast_graph,
        "channels_last": device.type == "cuda" or cast_graph,
        # Compiled, the instance norms take the form inductor vectorises; eager channels-last on CPU, one
        # batch norm per sample (no layout round trip); otherwise the native kernel.
        "norms": "two_pass" if config.compile else "samplewise" if cast_graph else "native",
        "fold_upsampling": True,
    }
