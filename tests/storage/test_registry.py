"""The translator registry: content ids, atomic commit, listing, integrity checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from sim2real.storage.registry import CARD_FILE, WEIGHTS_FILE, RegistryError, TranslatorRegistry


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g), "a.steps": torch.arange(5)}


def card(**extra) -> dict:
    return {
        "config": {"gen": {"dim": 8}},
        "data": {"source": "sim@abc", "target": "real@def"},
        "steps": 10,
        "metrics": {"realism": 0.5},
        "code_version": "0.1.0",
        **extra,
    }


def test_save_read_round_trip(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    model_id = registry.save(weights(), card(created_at=1.0))
    directory = tmp_path / "models" / "translators" / model_id
    assert (directory / WEIGHTS_FILE).is_file() and (directory / CARD_FILE).is_file()
    assert not [p for p in directory.iterdir() if ".tmp-" in p.name]
    loaded, loaded_card = registry.read(model_id)
    for name, tensor in weights().items():
        assert torch.equal(loaded[name], tensor)
    assert loaded_card["id"] == model_id and loaded_card["steps"] == 10
    assert len(loaded_card["weights_sha256"]) == 64
    assert registry.path(model_id) == str(directory)


def test_id_is_a_content_hash(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    first = registry.save(weights(), card(created_at=1.0))
    assert registry.save(weights(), card(created_at=2.0)) == first, "same content, same id (time ignored)"
    assert registry.card(first)["created_at"] == 1.0, "a second save leaves the entry untouched"
    assert registry.save(weights(seed=1), card()) != first
    assert registry.save(weights(), card(steps=11)) != first
    assert [c["id"] for c in registry.list()].count(first) == 1
    assert len(registry.list()) == 3


def test_uncommitted_entries_are_invisible_and_missing_ids_raise(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    half = tmp_path / "models" / "translators" / "deadbeef"
    half.mkdir(parents=True)
    (half / WEIGHTS_FILE).write_bytes(b"partial")
    assert registry.list() == []
    with pytest.raises(RegistryError, match="deadbeef"):
        registry.read("deadbeef")
    with pytest.raises(RegistryError, match="invalid"):
        registry.path("../escape")


def test_corrupted_weights_are_refused(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    model_id = registry.save(weights(), card())
    path = tmp_path / "models" / "translators" / model_id / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="does not match card"):
        registry.read(model_id)
    card_path = path.parent / CARD_FILE
    card_path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.card(model_id)


def test_card_is_plain_sorted_json(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    model_id = registry.save(weights(), card())
    text = (tmp_path / "models" / "translators" / model_id / CARD_FILE).read_text()
    assert json.loads(text)["data"] == {"source": "sim@abc", "target": "real@def"}


def test_weights_that_match_a_rewritten_card_but_do_not_load_are_refused(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    model_id = registry.save({"w": torch.zeros(2)}, {"config": {}})
    entry = Path(registry.path(model_id))
    garbage = b"\xff" * 64
    (entry / WEIGHTS_FILE).write_bytes(garbage)  # and a card rewritten to match it
    card = json.loads((entry / CARD_FILE).read_text())
    card["weights_sha256"] = hashlib.sha256(garbage).hexdigest()
    (entry / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(RegistryError, match="not a safetensors file"):
        registry.verified_card(model_id)
    (entry / WEIGHTS_FILE).unlink()
    (entry / WEIGHTS_FILE).mkdir()  # a directory in the file's place
    with pytest.raises(RegistryError, match=f"{entry / WEIGHTS_FILE}: weights unreadable"):
        registry.verified_card(model_id)


def test_an_alias_is_not_pointed_at_a_damaged_entry_and_a_card_without_its_hash_says_so(tmp_path):
    registry = TranslatorRegistry(str(tmp_path))
    model_id = registry.save({"w": torch.zeros(2)}, {"config": {}})
    entry = Path(registry.path(model_id))
    weights = (entry / WEIGHTS_FILE).read_bytes()
    (entry / WEIGHTS_FILE).write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(RegistryError, match="does not match card"):
        registry.set_alias("production", model_id)
    assert not Path(registry.alias_path("production")).exists()
    (entry / WEIGHTS_FILE).write_bytes(weights)
    card = json.loads((entry / CARD_FILE).read_text())
    del card["weights_sha256"]
    (entry / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(RegistryError, match=f"{entry / CARD_FILE}: the card has no weights_sha256"):
        registry.verified_card(model_id)
