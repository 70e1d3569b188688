"""The translator checkpoint registry: weights and a JSON card per content-addressed id.

Layout::

    {root}/models/translators/{id}/weights.safetensors   inference weights (tensor name → tensor)
    {root}/models/translators/{id}/card.json             config, data versions, steps, metrics,
                                                         code version, weights_sha256; written LAST
    {root}/models/translators/aliases/{alias}.json       {"id": ..., "set_at": ...}, e.g. production

``id`` is a short sha256 over the weight bytes and the card (not its ``created_at``), so the same
training result gets the same id and saving it twice is a no-op. Both files are written to a
temporary name and renamed; an entry without ``card.json`` is invisible. This module knows files,
hashes, cards and aliases only; :meth:`TranslatorRegistry.resolve` turns an id, an alias or ``latest``
into an id wherever a translator is named; turning weights into a network is
``sim2real.models.translator.checkpoint.load_translator``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import fsspec
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from sim2real.storage.shards import write_atomic
from sim2real.storage.versions import NAME_PATTERN

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
ID_LENGTH = 16


class RegistryError(LookupError):
    """An entry is missing or damaged; the message names the path and the reason."""


def card_id(weights_sha256: str, card: Mapping[str, Any]) -> str:
    """Content id: sha256 of the weights' hash and the card's JSON (without ``id`` and ``created_at``)."""
    body = {k: v for k, v in card.items() if k not in ("id", "created_at")}
    blob = json.dumps(
        {"weights_sha256": weights_sha256, "card": body}, sort_keys=True, separators=(",", ":"), default=str
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:ID_LENGTH]


class TranslatorRegistry:
    """Translator checkpoints under one fsspec root URL (a local folder by default)."""

    kind = "translators"

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.root_url)
        self.base = f"{root.rstrip('/')}/models/{self.kind}"

    def path(self, model_id: str) -> str:
        """Directory (file-system path) of entry ``model_id``."""
        if not model_id or "/" in model_id or model_id.startswith("."):
            raise RegistryError(f"{self.base}: invalid {self.kind} id {model_id!r}")
        return f"{self.base}/{model_id}"

    def exists(self, model_id: str) -> bool:
        """Whether ``model_id`` is committed (its card exists)."""
        return self.fs.exists(f"{self.path(model_id)}/{CARD_FILE}")

    def save(self, weights: Mapping[str, torch.Tensor], card: Mapping[str, Any]) -> str:
        """Store ``weights`` with ``card`` (JSON-serialisable); returns the content id. Idempotent."""
        data = save_safetensors({name: t.detach().cpu().contiguous() for name, t in weights.items()})
        weights_sha256 = hashlib.sha256(data).hexdigest()
        full_card = dict(card)
        full_card["weights_sha256"] = weights_sha256
        model_id = card_id(weights_sha256, full_card)
        full_card["id"] = model_id
        if self.exists(model_id):
            return model_id
        directory = self.path(model_id)
        self.fs.makedirs(directory, exist_ok=True)
        write_atomic(self.fs, f"{directory}/{WEIGHTS_FILE}", data)
        card_bytes = json.dumps(full_card, sort_keys=True, indent=1, default=str).encode()
        write_atomic(self.fs, f"{directory}/{CARD_FILE}", card_bytes)  # the commit marker, last
        return model_id

    def card(self, model_id: str) -> dict[str, Any]:
        """The card of ``model_id``; raises :class:`RegistryError` when missing or unreadable."""
        path = f"{self.path(model_id)}/{CARD_FILE}"
        try:
            with self.fs.open(path, "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            raise RegistryError(f"{path}: no {self.kind} entry {model_id!r} under {self.root_url}") from None
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path}: card is not valid JSON: {exc}") from exc

    def read(self, model_id: str, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
        """``(weights, card)`` of ``model_id``; the weights' sha256 is checked against the card."""
        card = self.card(model_id)
        path, data = self._checked_weights(model_id, card)
        try:
            weights = load_safetensors(data)
        except SafetensorError as exc:
            raise RegistryError(f"{path}: not a safetensors file: {exc}") from exc
        return {name: t.to(device) for name, t in weights.items()}, card

    def verified_card(self, model_id: str) -> dict[str, Any]:
        """The card of ``model_id`` once its weights load (the file's sha256 is the card's, and it is a
        safetensors file); raises :class:`RegistryError` naming the file otherwise. For a flow to refuse
        a damaged entry up front rather than in every shard task."""
        return self.read(model_id)[1]

    def _checked_weights(self, model_id: str, card: Mapping[str, Any]) -> tuple[str, bytes]:
        """``(path, bytes)`` of the weights file, its sha256 checked against ``card``."""
        if "weights_sha256" not in card:  # nothing to check the file against: say so before reading it
            raise RegistryError(f"{self.path(model_id)}/{CARD_FILE}: the card has no weights_sha256")
        path = f"{self.path(model_id)}/{WEIGHTS_FILE}"
        try:
            with self.fs.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise RegistryError(f"{path}: weights missing for committed entry {model_id!r}") from None
        except OSError as exc:  # a directory in its place, a permission, an I/O error
            raise RegistryError(f"{path}: weights unreadable: {exc.strerror or exc}") from None
        expected = str(card["weights_sha256"])
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise RegistryError(f"{path}: sha256 {actual[:12]}… does not match card {expected[:12]}…")
        return path, data

    def list(self) -> list[dict[str, Any]]:
        """Cards of all committed entries, oldest first (by ``created_at``, then id)."""
        if not self.fs.exists(self.base):
            return []
        cards = []
        for entry in self.fs.ls(self.base, detail=False):
            model_id = entry.rstrip("/").rsplit("/", 1)[-1]
            if not model_id.startswith(".") and self.exists(model_id):
                cards.append(self.card(model_id))
        return sorted(cards, key=lambda c: (c.get("created_at", 0), c["id"]))

    def alias_path(self, alias: str) -> str:
        """Where alias ``alias`` lives; raises ``ValueError`` on a name that is not an alias name."""
        if not NAME_PATTERN.fullmatch(alias):
            raise ValueError(f"{self.kind} alias {alias!r}: use lowercase letters, digits, '-' and '_'")
        return f"{self.base}/aliases/{alias}.json"

    def set_alias(self, alias: str, model_id: str) -> dict[str, Any]:
        """Point ``alias`` at ``model_id`` (which must exist and load), atomically; returns the record."""
        self.verified_card(model_id)  # raises RegistryError naming the path when missing or damaged
        record = {"id": model_id, "set_at": time.time()}
        write_atomic(self.fs, self.alias_path(alias), json.dumps(record).encode())
        return {"alias": alias, **record}

    def resolve(self, ref: str) -> str:
        """An id from an id, an alias (``production`` or ``@production``) or ``latest`` (the newest entry).
        Raises :class:`RegistryError` naming the registry when nothing matches."""
        name = ref.removeprefix("@")
        if name == "latest":
            cards = self.list()
            if not cards:
                raise RegistryError(f"{self.base}: no {self.kind} under {self.root_url}; train one first")
            return str(cards[-1]["id"])
        if NAME_PATTERN.fullmatch(name) and self.fs.exists(self.alias_path(name)):
            with self.fs.open(self.alias_path(name), "rb") as handle:
                return str(json.loads(handle.read())["id"])
        if name and "/" not in name and not name.startswith(".") and self.exists(name):
            return name
        raise RegistryError(f"{self.base}: no {self.kind} id or alias {ref!r} under {self.root_url}")
