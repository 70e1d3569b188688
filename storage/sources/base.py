"""The importer interface: how a dataset on disk becomes canonical samples.

An importer (one per on-disk format) does two things:

* ``discover(root, options)`` lists the frames: a key and the source files each frame is made of.
  It is cheap (no decoding) and deterministic (sorted), so the ingest flow can hash the inputs,
  derive the version id and split the frames into shards before any heavy work starts.
* ``load(frame)`` reads one frame's files and returns its canonical members (``rgb.*`` with the
  original bytes, ``seg.png`` in trainIds, optional ``seg_src.png``, ``inst.png``, ``boxes.json``,
  ``meta.json``). It raises :class:`BadFrame` naming the file and the reason when the frame is
  unusable; the ingest flow quarantines that frame and carries on with the rest.

Formats are kept in an explicit registry: ``register_format`` refuses duplicates and
``get_format`` raises ``ValueError`` naming an unknown format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class BadFrame(ValueError):
    """A frame cannot be ingested. ``path`` is the offending file, ``reason`` says why."""

    def __init__(self, key: str, path: str, reason: str) -> None:
        super().__init__(f"{path}: frame {key!r}: {reason}")
        self.key = key
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class SourceFrame:
    """One frame found on disk: its sample key and the files it is made of (role → path)."""

    key: str
    files: Mapping[str, str]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class LoadedFrame:
    """A frame's canonical members, plus per-id counts of label ids that mapped to ignore (255)."""

    members: dict[str, bytes]
    unknown_ids: dict[int, int] = field(default_factory=dict)


class SourceFormat(Protocol):
    """What every importer provides."""

    name: str

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """All frames under ``root`` in a deterministic order."""
        ...

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """The frame's canonical members; raises :class:`BadFrame` when it cannot be used."""
        ...

    def mapping_table(self) -> dict[str, Any]:
        """The id mapping this format applies (recorded in the version's ``version.json``)."""
        ...


_FORMATS: dict[str, Callable[[], SourceFormat]] = {}


def register_format(name: str) -> Callable[[Callable[[], SourceFormat]], Callable[[], SourceFormat]]:
    """Class decorator registering an importer under ``name``; a second registration is an error."""

    def wrap(factory: Callable[[], SourceFormat]) -> Callable[[], SourceFormat]:
        if name in _FORMATS:
            raise ValueError(f"source format {name!r} is already registered")
        _FORMATS[name] = factory
        return factory

    return wrap


def get_format(name: str) -> SourceFormat:
    """A new importer for ``name``; raises ``ValueError`` listing the known formats otherwise."""
    _load_builtin_formats()
    if name not in _FORMATS:
        raise ValueError(f"unknown source format {name!r}; known: {sorted(_FORMATS)}")
    return _FORMATS[name]()


def list_formats() -> list[str]:
    """Names of all registered formats."""
    _load_builtin_formats()
    return sorted(_FORMATS)


def _load_builtin_formats() -> None:
    # Importing the modules runs their @register_format decorators (an explicit list, no scanning).
    from sim2real.storage.sources import (  # noqa: F401
        bdd100k,
        carla,
        cityscapes,
        folder,
        gta5,
        shift,
        vkitti2,
    )
