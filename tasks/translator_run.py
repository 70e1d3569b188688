"""Plain functions behind the translator tasks: one training run on a storage root, no Prefect.

A run is identified by a content hash of its inputs (source and target versions, profile, seed) and
keeps its state under ``{root}/runs/translators/{run_id}/``: the latest training checkpoint, the loss
rows so far, preview grids and, once registered, ``result.json``. A crashed run started again with
the same inputs finds its checkpoint and continues from the saved step.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from sim2real import __version__
from sim2real.models.device import resolve_device
from sim2real.models.metrics.translation import TranslationMetricsConfig
from sim2real.models.metrics.translation_eval import (
    evaluate_translation,
    is_validation,
    to_tensor,
    to_uint8,
    train_reference_segmenter,
)
from sim2real.models.segmenter import checkpoint_bytes as segmenter_checkpoint_bytes
from sim2real.models.segmenter import load_segmenter
from sim2real.models.translator.checkpoint import checkpoint_bytes, restore_training_state, translator_weights
from sim2real.models.translator.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    LossConfig,
    OptimConfig,
    TrainConfig,
    TranslatorConfig,
)
from sim2real.models.translator.data import translator_batches
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.training import TrainingState, new_training_state, run_training
from sim2real.storage.reader import decoded_samples
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.shards import write_atomic
from sim2real.storage.sources.toysim import sign_glyphs
from sim2real.storage.versions import DatasetStore, content_hash

CHECKPOINT_FILE = "checkpoint.pt"
LOSSES_FILE = "losses.json"
RESULT_FILE = "result.json"
PREVIEW_FRAMES = 4


class TranslatorProfile(BaseModel):
    """A translator profile file: the translator's config plus how to evaluate it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gen: GeneratorConfig = GeneratorConfig()
    dis: DiscriminatorConfig = DiscriminatorConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    metrics: TranslationMetricsConfig = TranslationMetricsConfig()

    @property
    def translator(self) -> TranslatorConfig:
        """The part that defines the network and its training."""
        return TranslatorConfig(
            gen=self.gen, dis=self.dis, loss=self.loss, optim=self.optim, train=self.train
        )


class TranslatorRun(BaseModel):
    """Everything a translator task needs, as plain references (no tensors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str
    run_id: str
    source: str  # name@version
    target: str
    source_urls: list[str]
    target_urls: list[str]
    profile_name: str
    profile: TranslatorProfile
    device: str

    @property
    def run_dir(self) -> str:
        """The run's folder as a URL under the root."""
        return f"{self.root.rstrip('/')}/runs/translators/{self.run_id}"


def plan_run(
    root: str, source: str, target: str, profile_name: str, profile: TranslatorProfile, device: str
) -> TranslatorRun:
    """Resolve ``source``/``target`` refs to committed versions and derive the run id."""
    store = DatasetStore(root)
    src, tgt = store.open(source), store.open(target)
    run_id = content_hash({"source": src.ref, "target": tgt.ref, "profile": profile.model_dump(mode="json")})
    return TranslatorRun(
        root=root,
        run_id=run_id,
        source=src.ref,
        target=tgt.ref,
        source_urls=src.shard_urls,
        target_urls=tgt.shard_urls,
        profile_name=profile_name,
        profile=profile,
        device=str(resolve_device(device)),
    )


def _read(url: str) -> bytes | None:
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        return handle.read()


def _write(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    write_atomic(fs, path, data)


def read_json(url: str) -> Any | None:
    """Parsed JSON at ``url`` or None when absent."""
    data = _read(url)
    return None if data is None else json.loads(data)


def write_json(url: str, payload: Any) -> None:
    """Write JSON atomically (sorted keys)."""
    _write(url, json.dumps(payload, sort_keys=True, indent=1, default=float).encode())


def checkpoint_step(run: TranslatorRun) -> int:
    """The step of the run's last checkpoint (0 when it has none)."""
    data = _read(f"{run.run_dir}/{CHECKPOINT_FILE}")
    if data is None:
        return 0
    state, _ = restore_training_state(data, "cpu", source=f"{run.run_dir}/{CHECKPOINT_FILE}")
    return state.step


def load_state(run: TranslatorRun) -> TrainingState:
    """The run's training state: from its checkpoint, or fresh (seeded) when there is none."""
    url = f"{run.run_dir}/{CHECKPOINT_FILE}"
    data = _read(url)
    if data is None:
        return new_training_state(run.profile.translator, run.device, seed=run.profile.train.seed)
    state, _ = restore_training_state(data, run.device, source=url)
    return state


def sample_stream(
    urls: list[str], validation: bool, fraction: float, shuffle_buffer: int, seed: int, resampled: bool
) -> Iterator[dict[str, Any]]:
    """Decoded samples of one side of the held-out split (stock webdataset, optional shuffling)."""
    dataset = decoded_samples(urls, shuffle_buffer=shuffle_buffer, seed=seed, resampled=resampled)
    return iter(dataset.select(lambda s: is_validation(s["__key__"], fraction) == validation))


def held_out_frames(urls: list[str], fraction: float, count: int) -> list[dict[str, Any]]:
    """The first ``count`` held-out samples in shard order (deterministic)."""
    frames = []
    for sample in sample_stream(urls, True, fraction, 0, 0, resampled=False):
        frames.append(sample)
        if len(frames) == count:
            break
    if not frames:
        raise ValueError(f"{urls[0]}…: no held-out frames (val_fraction {fraction}); add frames or raise it")
    return frames


def preview_png(state: TrainingState, frames: list[dict[str, Any]]) -> bytes:
    """A PNG grid, one row per frame: sim input | translation."""
    images = to_tensor([f["rgb"] for f in frames])
    translated = to_uint8(translate_batch(state.translator, images))
    rows = [np.concatenate([f["rgb"], out], axis=1) for f, out in zip(frames, translated, strict=True)]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buffer, format="PNG")
    return buffer.getvalue()


def train_segment(run: TranslatorRun, stop_step: int) -> dict[str, Any]:
    """Train from the last checkpoint to ``stop_step``, checkpointing atomically; rows + preview URL."""
    profile = run.profile
    config = profile.translator
    state = load_state(run)
    start = state.step
    seed = profile.train.seed + start  # a resumed segment sees a fresh, reproducible data order
    frac, buf = profile.metrics.val_fraction, profile.train.shuffle_buffer
    sim = sample_stream(run.source_urls, False, frac, buf, seed, resampled=True)
    real = sample_stream(run.target_urls, False, frac, buf, seed + 1, resampled=True)
    batches = translator_batches(sim, real, profile.train, seed=seed)
    losses_url = f"{run.run_dir}/{LOSSES_FILE}"
    history = [r for r in read_json(losses_url) or [] if r["step"] <= start]

    def save(s: TrainingState) -> None:
        _write(f"{run.run_dir}/{CHECKPOINT_FILE}", checkpoint_bytes(s, config))

    rows = run_training(state, batches, config, run.device, stop_step, on_checkpoint=save)
    write_json(losses_url, history + rows)
    preview_url = f"{run.run_dir}/preview-{stop_step:07d}.png"
    frames = held_out_frames(run.source_urls, frac, PREVIEW_FRAMES)
    _write(preview_url, preview_png(state, frames))
    return {"start": start, "step": state.step, "rows": rows, "preview": preview_url}


def card_for(run: TranslatorRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The registry card of a finished run."""
    translator = run.profile.translator
    return {
        "kind": "translator",
        "config": translator.model_dump(mode="json"),
        "metrics_config": run.profile.metrics.model_dump(mode="json"),
        "profile": run.profile_name,
        "data": {
            "source": run.source,
            "target": run.target,
            "val_fraction": run.profile.metrics.val_fraction,
        },
        "steps": translator.train.steps,
        "label_aware": {
            "semantic": translator.loss.semantic.enabled,
            "high_frequency": translator.loss.high_frequency.enabled,
        },
        "metrics": dict(metrics),
        "run": run.run_id,
        "code_version": __version__,
        "created_at": time.time(),
    }


def reference_segmenter_url(run: TranslatorRun) -> str:
    """Where the target-trained reference segmenter of this target version and config is cached."""
    metrics = run.profile.metrics
    key = content_hash(
        {
            "target": run.target,
            "segmenter": metrics.segmenter.model_dump(mode="json"),
            "val_fraction": metrics.val_fraction,
            "device": run.device,
        }
    )
    name = run.target.replace("@", "-")
    return f"{run.root.rstrip('/')}/runs/reference-segmenters/{name}-{key}/segmenter.pt"


def ensure_reference_segmenter(run: TranslatorRun) -> str:
    """Train (once per target version and config) the segmenter behind label fidelity; returns its URL."""
    url = reference_segmenter_url(run)
    if _read(url) is not None:
        return url
    metrics = run.profile.metrics
    samples = sample_stream(
        run.target_urls,
        False,
        metrics.val_fraction,
        run.profile.train.shuffle_buffer,
        seed=run.profile.train.seed,
        resampled=True,
    )
    model = train_reference_segmenter(samples, metrics.segmenter, run.device, seed=run.profile.train.seed)
    _write(url, segmenter_checkpoint_bytes(model, {"target": run.target}))
    return url


def evaluate_run(run: TranslatorRun, segmenter_url: str) -> dict[str, Any]:
    """All translation metrics of the run's final checkpoint on held-out frames (saved as metrics.json)."""
    metrics_config = run.profile.metrics
    state = load_state(run)
    segmenter = load_segmenter(_read(segmenter_url) or b"", source=segmenter_url).to(run.device)
    sim_frames = held_out_frames(run.source_urls, metrics_config.val_fraction, metrics_config.frames)
    real_frames = held_out_frames(run.target_urls, metrics_config.val_fraction, metrics_config.frames)
    metrics = evaluate_translation(
        state.translator,
        sim_frames,
        real_frames,
        segmenter,
        metrics_config,
        run.device,
        sign_glyphs(metrics_config.sign_glyphs),
    )
    write_json(f"{run.run_dir}/metrics.json", metrics)
    return metrics


def register_run(run: TranslatorRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Save the final weights with their card in the registry; write and return the run's result."""
    state = load_state(run)
    if state.step != run.profile.train.steps:
        raise RuntimeError(
            f"{run.run_dir}: checkpoint is at step {state.step}, not the planned {run.profile.train.steps}"
        )
    translator_id = TranslatorRegistry(run.root).save(
        translator_weights(state.translator), card_for(run, metrics)
    )
    result = {
        "translator": translator_id,
        "run": run.run_id,
        "source": run.source,
        "target": run.target,
        "profile": run.profile_name,
        "steps": state.step,
        "metrics": dict(metrics.get("summary", {})),
    }
    write_json(f"{run.run_dir}/{RESULT_FILE}", result)
    return result


def finished_result(run: TranslatorRun) -> dict[str, Any] | None:
    """The result of an already registered run (None when it has not finished)."""
    result = read_json(f"{run.run_dir}/{RESULT_FILE}")
    if result and TranslatorRegistry(run.root).exists(result["translator"]):
        return result
    return None
