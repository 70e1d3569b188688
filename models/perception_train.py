"""Training and evaluating the perception models of one arm: plain functions, no Prefect, no storage.

Detection and segmentation sit in an explicit registry of :class:`PerceptionTask` entries that say how
to build, batch, train, evaluate and checkpoint each model; :func:`fit` and :func:`evaluate` are the same
four-line loops for both. Metrics come back as plain dicts (percent, NaN = class absent from val).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sim2real.models import detector, segmenter
from sim2real.models.metrics.segmentation import iou_per_class, mean_iou, pixel_accuracy
from sim2real.models.perception_data import (
    FrameTensors,
    Sample,
    detection_batches,
    frames,
    segmentation_batches,
)
from sim2real.storage.taxonomy import TRAIN_CLASSES

#: Metrics in percent: ``{"per_class": {class: {metric: value}}, "summary": {metric: value}}``.
Metrics = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one model; an epoch is a fixed number of samples drawn from the mixed stream."""

    epochs: int = 2  # passes of samples_per_epoch samples each
    samples_per_epoch: int = 32  # samples per epoch, whatever the sizes of the mixed versions
    batch_size: int = 4  # images per step
    optimizer: str = "adamw"  # adamw or sgd
    lr: float = 1e-3  # peak learning rate after warm-up
    weight_decay: float = 1e-4  # decoupled (adamw) or L2 (sgd) weight decay
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 10  # linear warm-up steps, then cosine decay to zero
    flip_probability: float = 0.5  # chance of a left-right mirror per training sample
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

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
    train: tuple[tuple[str, float], ...]  # resolved ``name@version`` refs and their mix weights
    val: str  # resolved ``name@version`` of the evaluation version
    model_config: Any  # DetectorConfig or SegmenterConfig
    train_config: TrainConfig
    data: DataOptions
    seed: int

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the trained model and its metrics (hashed into the arm id)."""
        return {
            "task": self.task,
            "train": [list(pair) for pair in self.train],
            "val": self.val,
            "model_config": config_dict(self.model_config),
            "train_config": config_dict(self.train_config),
            "data": config_dict(self.data),
            "seeds": {"seed": self.seed},
            "code_version": code_version(),
        }


@dataclass(frozen=True)
class PerceptionTask:
    """How one perception task builds, batches, trains, evaluates and checkpoints its model."""

    name: str
    config_type: type
    build: Callable[[Any], nn.Module]
    batches: Callable[[Iterable[FrameTensors], int], Iterator[Any]]
    train_one_epoch: Callable[..., dict[str, float]]
    evaluate: Callable[[nn.Module, Iterable[Any], torch.device, DataOptions], Metrics]
    checkpoint_bytes: Callable[[Any, dict | None], bytes]
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


_TASKS: dict[str, PerceptionTask] = {
    "detection": PerceptionTask(
        name="detection",
        config_type=detector.DetectorConfig,
        build=detector.build_detector,
        batches=detection_batches,
        train_one_epoch=detector.train_one_epoch,
        evaluate=_detection_metrics,
        checkpoint_bytes=detector.checkpoint_bytes,
        load=detector.load_detector,
    ),
    "segmentation": PerceptionTask(
        name="segmentation",
        config_type=segmenter.SegmenterConfig,
        build=segmenter.build_segmenter,
        batches=segmentation_batches,
        train_one_epoch=segmenter.train_one_epoch,
        evaluate=_segmentation_metrics,
        checkpoint_bytes=segmenter.checkpoint_bytes,
        load=segmenter.load_segmenter,
    ),
}
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


def get_task(name: str) -> PerceptionTask:
    """The registry entry of ``name``; ``ValueError`` names an unknown task."""
    if name not in _TASKS:
        raise ValueError(f"unknown perception task {name!r}; known: {sorted(_TASKS)}")
    return _TASKS[name]


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
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up then cosine decay over ``epochs × steps_per_epoch`` steps."""
    total = max(1, config.epochs * config.steps_per_epoch)
    warmup = min(config.warmup_steps, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    task: str,
    model_config: Any,
    train: TrainConfig,
    samples_for_epoch: Callable[[int], Iterable[Sample]],
    data: DataOptions,
    device: torch.device | str,
    seed: int,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Build a fresh model (seeded) and train it; ``samples_for_epoch(epoch)`` gives that epoch's stream."""
    spec = get_task(task)
    device = torch.device(device)
    torch.manual_seed(seed)
    model = spec.build(model_config).to(device)
    optimizer = make_optimizer(model, train)
    scheduler = make_scheduler(optimizer, train)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and train.amp else None
    history = []
    for epoch in range(train.epochs):
        items = frames(samples_for_epoch(epoch), data.image_size, train.flip_probability,
                       seed=seed * 1_000 + epoch, limit=train.samples_per_epoch, min_box_px=data.min_box_px)
        batches = spec.batches(items, train.batch_size)
        history.append(spec.train_one_epoch(model, optimizer, batches, device, epoch, scaler, scheduler))
    return model, history


def evaluate(
    task: str,
    model: nn.Module,
    samples: Iterable[Sample],
    data: DataOptions,
    device: torch.device | str,
) -> Metrics:
    """Metrics of ``model`` over every sample of ``samples`` (no augmentation)."""
    spec = get_task(task)
    loader = spec.batches(frames(samples, data.image_size), data.eval_batch_size)
    return spec.evaluate(model, loader, torch.device(device), data)


def train_and_evaluate(
    run: ArmRun,
    samples_for_epoch: Callable[[int], Iterable[Sample]],
    val_samples: Callable[[], Iterable[Sample]],
    device: torch.device | str,
) -> tuple[bytes, dict[str, Any]]:
    """Train the arm's model, evaluate it on val; return checkpoint bytes and a JSON-ready result."""
    spec = get_task(run.task)
    started = time.perf_counter()
    model, history = fit(run.task, run.model_config, run.train_config, samples_for_epoch, run.data,
                         device, run.seed)
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
        "train_seconds": round(trained - started, 3),
        "eval_seconds": round(time.perf_counter() - trained, 3),
        "device": str(device),
    }
    checkpoint = spec.checkpoint_bytes(model.cpu(), {"history": history, "arm": run.fingerprint()})
    return checkpoint, result


def _json_metrics(metrics: Metrics) -> Metrics:
    """NaN → ``None`` so the result is strict JSON."""
    def clean(values: dict[str, float]) -> dict[str, float | None]:
        return {k: None if v is None or math.isnan(v) else float(v) for k, v in values.items()}

    return {
        "per_class": {name: clean(values) for name, values in metrics["per_class"].items()},
        "summary": clean(metrics["summary"]),
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
