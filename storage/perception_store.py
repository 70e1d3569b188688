"""Trained perception models of the retrain flow, cached by content hash under
``{root}/models/perception/{arm_id}/``: ``checkpoint.pt`` (torch checkpoint dict bytes) and
``result.json`` (metrics, history, config). ``result.json`` is written last and is the commit marker:
an arm directory without it is unfinished and is trained again.
"""

from __future__ import annotations

import json
import re
from typing import Any

import fsspec

from sim2real.storage.shards import write_atomic

CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"
ARM_ID_PATTERN = re.compile(r"[0-9a-f]{8,64}")


class PerceptionStore:
    """Model checkpoints and results of evaluated arms under one fsspec root URL."""

    def __init__(self, root: str) -> None:
        self.fs, base = fsspec.core.url_to_fs(root.rstrip("/"))
        self.base = f"{base.rstrip('/')}/models/perception"

    def arm_dir(self, arm_id: str) -> str:
        """Directory of one arm (file-system path)."""
        if not ARM_ID_PATTERN.fullmatch(arm_id):
            raise ValueError(f"arm id {arm_id!r}: expected a lowercase hex content hash")
        return f"{self.base}/{arm_id}"

    def load_result(self, arm_id: str) -> dict[str, Any] | None:
        """The committed result of ``arm_id``, or ``None`` if the arm was never finished."""
        path = f"{self.arm_dir(arm_id)}/{RESULT_FILE}"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            try:
                return json.loads(handle.read())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON: {exc}") from exc

    def load_checkpoint(self, arm_id: str) -> bytes:
        """Checkpoint bytes of a committed arm (``FileNotFoundError`` names the path)."""
        path = f"{self.arm_dir(arm_id)}/{CHECKPOINT_FILE}"
        if self.load_result(arm_id) is None or not self.fs.exists(path):
            raise FileNotFoundError(f"{path}: arm {arm_id} has no committed checkpoint")
        with self.fs.open(path, "rb") as handle:
            return handle.read()

    def save(self, arm_id: str, checkpoint: bytes, result: dict[str, Any]) -> str:
        """Write the checkpoint, then ``result.json`` (the commit marker), each atomically."""
        directory = self.arm_dir(arm_id)
        write_atomic(self.fs, f"{directory}/{CHECKPOINT_FILE}", checkpoint)
        payload = json.dumps(result, sort_keys=True, indent=1, allow_nan=False).encode()
        write_atomic(self.fs, f"{directory}/{RESULT_FILE}", payload)
        return directory
