"""Training and evaluating the perception models of one arm: plain functions, no Prefect, no storage.

Detection and segmentation sit in an explicit registry of :class:`PerceptionTask` entries that say how
to build, batch, train, evaluate and checkpoint each model; :func:`fit` and :func:`evaluate` are the same
four-line loops for both. Metrics come back as plain dicts (percent, NaN = class absent from val).

The protocol is fair by construction: extra data is *added* to the real data, never substituted. Every
arm of one seed starts from the same initial weights and sees the same real samples, in the same order
and with the same flips (the real stream and its flips are seeded apart from the extras);

* ``added``: each epoch, ``samples_per_epoch`` real samples plus ``weight × samples_per_epoch`` samples
  of each extra version, interleaved at seeded positions (real-only: the real samples alone);
* ``pretrain-finetune``: ``epochs`` epochs on the extra versions alone, then exactly the real-only
  schedule on the real samples (a fresh optimiser and learning-rate schedule).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from sim2real.models import backbone_weights, detector, segmenter
from sim2real.models.metrics.segmentation import iou_per_class, mean_iou, pixel_accuracy
from sim2real.models.named_registry import NamedRegistry
from sim2real.models.perception_data import (
    FrameTensors,
    Sample,
    detection_batches,
    frames,
    segmentation_batches,
)
from sim2real.models.perception_model import checkpoint_bytes, train_one_epoch
from sim2real.storage.taxonomy import TRAIN_CLASSES

T = TypeVar("T")
#: How extra data joins the real data (see the module docstring).
PROTOCOLS: tuple[str, ...] = ("added", "pretrain-finetune")

#: Metrics in percent: ``{"per_class": {class: {metric: value}}, "summary": {metric: value}}``.
Metrics = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one model; an epoch is a fixed number of real samples (plus any added extras)."""

    epochs: int = 2  # passes of samples_per_epoch real samples each
    samples_per_epoch: int = 32  # real samples per epoch, whatever the size of the real version
    batch_size: int = 4  # images per step
    optimizer: str = "adamw"  # adamw or sgd
    lr: float = 1e-3  # peak learning rate after warm-up
    weight_decay: float = 1e-4  # decoupled (adamw) or L2 (sgd) weight decay
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 10  # linear warm-up steps, then cosine decay to zero
    flip_probability: float = 0.5  # chance of a left-right mirror per training sample
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a profile section (rejects unknown keys)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class DataOptions:
    """How frames are prepared for one arm (shared by its training and its evaluation)."""

    image_size: tuple[int, int] | None = None  # (H, W) every frame is resized to; None = native size
    shuffle_buffer: int = 64  # samples in each training stream's shuffle buffer
    eval_batch_size: int = 4  # images per evaluation step
    max_val_samples: int | None = None  # evaluate on at most this many val samples (None = all)
    min_box_px: float = 1.0  # training boxes narrower or shorter than this (pixels) are dropped
    eval_min_box_px: float = 0.0  # val boxes under this size² (pixels²) are ignored; 0 = plain COCO


@dataclass(frozen=True)
class ArmRun:
    """One arm of one task: which versions train it (with mix weights), which version evaluates it,
    and the full configuration. Its :meth:`arm_id` is the cache key of the trained model."""

    task: str  # a key of the task registry
    label: str  # "real-only" or "real+NAME"
    train: tuple[tuple[str, float], ...]  # real ``name@version`` first (weight 1), then each extra with
    #                                       its samples per real sample
    val: str  # resolved ``name@version`` of the evaluation version
    model_config: Any  # DetectorConfig or SegmenterConfig
    train_config: TrainConfig
    data: DataOptions
    seed: int
    protocol: str = "added"  # one of PROTOCOLS

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the trained model and its metrics (hashed into the arm id),
        including the content of any backbone weights file (a replaced file is a new arm)."""
        weights = getattr(self.model_config, "backbone_weights", None)
        return {
            "task": self.task,
            "train": [list(pair) for pair in self.train],
            "val": self.val,
            "model_config": config_dict(self.model_config),
            "train_config": config_dict(self.train_config),
            "data": config_dict(self.data),
            "seeds": {"seed": self.seed},
            "protocol": self.protocol,
            **({"backbone_weights_sha256": backbone_weights.digest(weights)} if weights else {}),
            "code_version": code_version(),
        }


@dataclass(frozen=True)
class PerceptionTask:
    """How one perception task builds, batches, trains, evaluates and checkpoints its model."""

    name: str
    config_type: type
    build: Callable[[Any], nn.Module]
    batches: Callable[[Iterable[FrameTensors], int], Iterator[Any]]
    batch_loss: Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, bool]]
    evaluate: Callable[[nn.Module, Iterable[Any], torch.device, DataOptions], Metrics]
    load: Callable[[bytes, str], nn.Module]


def _detection_metrics(
    model: nn.Module, loader: Iterable[Any], device: torch.device, data: DataOptions
) -> Metrics:
    result = detector.evaluate(model, loader, device, min_box_area=data.eval_min_box_px**2)
    per_class = {name: {"AP": result.ap[name], "AP50": result.ap50[name]} for name in result.ap}
    return {"per_class": per_class, "summary": {"mAP": result.mean_ap, "mAP50": result.mean_ap50}}


def _segmentation_metrics(
    model: nn.Module, loader: Iterable[Any], device: torch.device, data: DataOptions
) -> Metrics:
    cm = segmenter.evaluate(model, loader, device)
    ious = iou_per_class(cm) * 100
    per_class = {name: {"IoU": float(ious[i])} for i, name in enumerate(TRAIN_CLASSES[: len(ious)])}
    summary = {"mIoU": mean_iou(cm) * 100, "pixel_accuracy": pixel_accuracy(cm) * 100}
    return {"per_class": per_class, "summary": summary}


_TASKS: NamedRegistry[PerceptionTask] = NamedRegistry("perception task")
_TASKS.add(
    "detection",
    PerceptionTask(
        name="detection",
        config_type=detector.DetectorConfig,
        build=detector.build_detector,
        batches=detection_batches,
        batch_loss=detector.detection_loss,
        evaluate=_detection_metrics,
        load=detector.load_detector,
    ),
)
_TASKS.add(
    "segmentation",
    PerceptionTask(
        name="segmentation",
        config_type=segmenter.SegmenterConfig,
        build=segmenter.build_segmenter,
        batches=segmentation_batches,
        batch_loss=segmenter.segmentation_loss,
        evaluate=_segmentation_metrics,
        load=segmenter.load_segmenter,
    ),
)
TASK_NAMES: tuple[str, ...] = tuple(_TASKS.names())


def get_task(name: str) -> PerceptionTask:
    """The registry entry of ``name``; ``ValueError`` names an unknown task."""
    return _TASKS.get(name)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise ValueError(f"TrainConfig.optimizer: unknown {config.optimizer!r}; use adamw or sgd")


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up then cosine decay to zero over ``total_steps`` steps."""
    total = max(1, total_steps)
    warmup = min(config.warmup_steps, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


PRETRAIN_EPOCH_OFFSET = 1_000_000  # pre-training epochs are numbered from here (own seeds)


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own optimiser: per epoch, how many samples of each version."""

    epochs: tuple[int, ...]  # the epoch numbers (they seed the streams, flips and interleaving)
    counts: tuple[int, ...]  # samples per epoch of each training version (real first)

    def steps(self, batch_size: int) -> int:
        return len(self.epochs) * math.ceil(sum(self.counts) / batch_size)


def schedule(train: TrainConfig, weights: Sequence[float], protocol: str) -> list[Phase]:
    """The phases of an arm. ``weights``: 1 for the real version, then extra samples per real sample.

    The real samples of every arm are the real-only arm's: the same epochs, the same counts.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    real = train.samples_per_epoch
    extras = tuple(round(w * real) for w in weights[1:])
    epochs = tuple(range(train.epochs))
    if protocol == "added" or not any(extras):
        return [Phase(epochs, (real, *extras))]
    pretrain = tuple(PRETRAIN_EPOCH_OFFSET + e for e in epochs)  # streams seeded apart from the real ones
    return [Phase(pretrain, (0, *extras)), Phase(epochs, (real, *(0 for _ in extras)))]


def interleave(streams: Sequence[Iterable[T]], counts: Sequence[int], rng: random.Random) -> Iterator[T]:
    """``counts[i]`` items of stream ``i`` each, at positions shuffled by ``rng``; every stream keeps its
    own order, so stream 0 gives the same items in the same order whatever the other streams are."""
    order = [i for i, count in enumerate(counts) for _ in range(count)]
    rng.shuffle(order)
    iterators = [iter(stream) for stream in streams]
    for index in order:
        item = next(iterators[index], None)
        if item is not None:
            yield item


class RealSamplesSeen:
    """Counts and fingerprints the real frames one arm trains on (key and pixels, so flips count)."""

    def __init__(self) -> None:
        self.count = 0
        self._digest = hashlib.sha256()

    def watch(self, items: Iterable[FrameTensors]) -> Iterator[FrameTensors]:
        for item in items:
            self.count += 1
            self._digest.update(item.key.encode())
            self._digest.update(item.image.numpy().tobytes())
            yield item

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()[:16]


def fit(
    task: str,
    model_config: Any,
    train: TrainConfig,
    samples_for_epoch: Callable[[int], Sequence[Iterable[Sample]]],
    weights: Sequence[float],
    data: DataOptions,
    device: torch.device | str,
    seed: int,
    protocol: str = "added",
) -> tuple[nn.Module, list[dict[str, float]], dict[str, Any]]:
    """Build a fresh model (seeded) and train it under ``protocol`` (see the module docstring).

    ``samples_for_epoch(epoch)`` gives that epoch's stream of each training version (real first), each
    seeded by the epoch only. Returns the model, per-epoch losses and what it saw: ``real_samples_seen``,
    ``extra_samples_seen`` and ``real_samples_digest`` (equal across the arms of one seed).
    """
    spec = get_task(task)
    device = torch.device(device)
    torch.manual_seed(seed)
    model = spec.build(model_config).to(device)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and train.amp else None
    real = RealSamplesSeen()
    history: list[dict[str, float]] = []
    extra_seen = 0
    for phase in schedule(train, weights, protocol):
        optimizer = make_optimizer(model, train)
        scheduler = make_scheduler(optimizer, train, phase.steps(train.batch_size))
        for epoch in phase.epochs:
            streams = [
                frames(stream, data.image_size, train.flip_probability, seed=seed * 1_000 + epoch + 7_919 * i,
                       limit=count, min_box_px=data.min_box_px, task=task)
                for i, (stream, count) in enumerate(zip(samples_for_epoch(epoch), phase.counts, strict=True))
            ]
            streams[0] = real.watch(streams[0])
            items = interleave(streams, phase.counts, random.Random(f"{seed}:{epoch}"))
            batches = spec.batches(items, train.batch_size)
            history.append(train_one_epoch(model, optimizer, batches, spec.batch_loss, device, len(history),
                                           scaler, scheduler))
            extra_seen += sum(phase.counts[1:])
    seen = {"real_samples_seen": real.count, "extra_samples_seen": extra_seen,
            "real_samples_digest": real.digest}
    return model, history, seen


def evaluate(
    task: str,
    model: nn.Module,
    samples: Iterable[Sample],
    data: DataOptions,
    device: torch.device | str,
) -> Metrics:
    """Metrics of ``model`` over every sample of ``samples`` that has ``task``'s labels (no augmentation);
    ``metrics["frames"]`` counts the frames used and those left out for having no such labels."""
    spec = get_task(task)
    counts: dict[str, int] = {}
    loader = spec.batches(frames(samples, data.image_size, task=task, left_out=counts), data.eval_batch_size)
    return {**spec.evaluate(model, loader, torch.device(device), data), "frames": counts}


def train_and_evaluate(
    run: ArmRun,
    samples_for_epoch: Callable[[int], Sequence[Iterable[Sample]]],
    val_samples: Callable[[], Iterable[Sample]],
    device: torch.device | str,
) -> tuple[bytes, dict[str, Any]]:
    """Train the arm's model, evaluate it on val; return checkpoint bytes and a JSON-ready result."""
    started = time.perf_counter()
    model, history, seen = fit(run.task, run.model_config, run.train_config, samples_for_epoch,
                               [w for _, w in run.train], run.data, device, run.seed, run.protocol)
    trained = time.perf_counter()
    val = val_samples()
    if run.data.max_val_samples is not None:
        val = itertools.islice(val, run.data.max_val_samples)
    metrics = evaluate(run.task, model, val, run.data, device)
    result = {
        **run.fingerprint(),
        "label": run.label,
        "metrics": _json_metrics(metrics),
        "history": history,
        **seen,
        "train_seconds": round(trained - started, 3),
        "eval_seconds": round(time.perf_counter() - trained, 3),
        "device": str(device),
    }
    checkpoint = checkpoint_bytes(model.cpu(), {"history": history, "arm": run.fingerprint()})
    return checkpoint, result


def _json_metrics(metrics: Metrics) -> Metrics:
    """NaN → ``None`` so the result is strict JSON."""
    def clean(values: dict[str, float]) -> dict[str, float | None]:
        return {k: None if v is None or math.isnan(v) else float(v) for k, v in values.items()}

    return {
        "per_class": {name: clean(values) for name, values in metrics["per_class"].items()},
        "summary": clean(metrics["summary"]),
        **({"frames": dict(metrics["frames"])} if "frames" in metrics else {}),
    }


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (for hashing, checkpoints and the metrics store)."""
    values = config.to_dict() if hasattr(config, "to_dict") else asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@functools.cache
def code_version() -> str:
    """Package version plus a hash of the perception code, so a code change invalidates cached arms."""
    from sim2real import __version__
    from sim2real.models import perception_data
    from sim2real.models.metrics import detection, segmentation

    modules = (detector, segmenter, perception_data, detection, segmentation, sys.modules[__name__])
    digest = hashlib.sha256("".join(inspect.getsource(m) for m in modules).encode()).hexdigest()
    return f"{__version__}+{digest[:10]}"
