"""The run store: one folder per training run under a storage root, written atomically.

    {root}/runs/translators/{run_id}/checkpoint.pt     the latest training checkpoint (replaced atomically)
    {root}/runs/translators/{run_id}/losses.json       loss rows so far
    {root}/runs/translators/{run_id}/preview-{step}.png
    {root}/runs/translators/{run_id}/metrics.json      evaluation of the final checkpoint
    {root}/runs/translators/{run_id}/result.json       written once the model is in the registry
    {root}/runs/students/{run_id}/…                    the same for distillation runs
    {root}/runs/reference-segmenters/{target}-{key}/segmenter.pt

A run id is a content hash of the run's inputs, so a run started again with the same inputs finds its
folder and continues from the checkpoint. Any fsspec URL works as the root. Also here: the sample
streams a run reads, split into training and held-out frames by a key predicate the caller gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from sim2real.storage.reader import decoded_samples
from sim2real.storage.shards import write_atomic

CHECKPOINT_FILE = "checkpoint.pt"
LOSSES_FILE = "losses.json"
METRICS_FILE = "metrics.json"
RESULT_FILE = "result.json"


def read_bytes(url: str) -> bytes | None:
    """The bytes at ``url``, or None when there is no such file."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        return handle.read()


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` atomically (temp name, then rename), making its folder."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    write_atomic(fs, path, data)


def read_json(url: str) -> Any | None:
    """Parsed JSON at ``url``, or None when absent."""
    data = read_bytes(url)
    return None if data is None else json.loads(data)


def write_json(url: str, payload: Any) -> None:
    """Write JSON atomically (sorted keys; numpy and torch scalars as floats)."""
    write_bytes(url, json.dumps(payload, sort_keys=True, indent=1, default=float).encode())


@dataclass(frozen=True)
class RunFolder:
    """One run's folder (a URL); each file is written atomically."""

    url: str

    def checkpoint(self) -> bytes | None:
        """The latest training checkpoint's bytes, or None before the first one."""
        return read_bytes(f"{self.url}/{CHECKPOINT_FILE}")

    @property
    def checkpoint_url(self) -> str:
        """Where the checkpoint is (for error messages)."""
        return f"{self.url}/{CHECKPOINT_FILE}"

    def save_checkpoint(self, data: bytes) -> None:
        """Replace the checkpoint atomically."""
        write_bytes(self.checkpoint_url, data)

    def losses_until(self, step: int) -> list[dict[str, float]]:
        """The loss rows saved so far up to ``step`` (rows of a segment that crashed after are dropped)."""
        return [row for row in read_json(f"{self.url}/{LOSSES_FILE}") or [] if row["step"] <= step]

    def save_losses(self, rows: list[dict[str, float]]) -> None:
        """Replace the loss rows."""
        write_json(f"{self.url}/{LOSSES_FILE}", rows)

    def save_preview(self, step: int, png: bytes) -> str:
        """Save a preview grid of ``step``; returns its URL."""
        url = f"{self.url}/preview-{step:07d}.png"
        write_bytes(url, png)
        return url

    def save_metrics(self, metrics: Any) -> None:
        """Save the evaluation of the final checkpoint."""
        write_json(f"{self.url}/{METRICS_FILE}", metrics)

    def result(self) -> dict[str, Any] | None:
        """The result of a finished run, or None."""
        return read_json(f"{self.url}/{RESULT_FILE}")

    def save_result(self, result: dict[str, Any]) -> None:
        """Mark the run finished with its result (the registry id of what it made)."""
        write_json(f"{self.url}/{RESULT_FILE}", result)


def run_folder(root: str, kind: str, run_id: str) -> RunFolder:
    """The folder of run ``run_id`` of ``kind`` (``translators``, ``students``) under ``root``."""
    return RunFolder(f"{root.rstrip('/')}/runs/{kind}/{run_id}")


def reference_segmenter_url(root: str, target: str, key: str) -> str:
    """Where the reference segmenter trained on ``target`` (``name@version``) with settings ``key`` is."""
    return f"{root.rstrip('/')}/runs/reference-segmenters/{target.replace('@', '-')}-{key}/segmenter.pt"


def sample_stream(
    urls: list[str],
    keep: Callable[[str], bool],
    shuffle_buffer: int = 0,
    seed: int = 0,
    resampled: bool = False,
) -> Iterator[dict[str, Any]]:
    """Decoded samples of the shards at ``urls`` whose key ``keep`` accepts (stock webdataset;
    ``resampled``: endless, shuffled through ``shuffle_buffer`` samples with ``seed``)."""
    dataset = decoded_samples(urls, shuffle_buffer=shuffle_buffer, seed=seed, resampled=resampled)
    return iter(dataset.select(lambda sample: keep(sample["__key__"])))


def first_samples(urls: list[str], keep: Callable[[str], bool], count: int) -> list[dict[str, Any]]:
    """The first ``count`` samples ``keep`` accepts, in shard order (deterministic).

    Raises ``ValueError`` naming the shards when there is none.
    """
    frames = []
    for sample in sample_stream(urls, keep):
        frames.append(sample)
        if len(frames) == count:
            break
    if not frames:
        first = urls[0] if urls else "<no shards>"
        raise ValueError(f"{first}…: no held-out frames; add frames or hold out more of them")
    return frames
