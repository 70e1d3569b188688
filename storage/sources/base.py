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


def printable(text: str) -> str:
    """``text`` as valid UTF-8 for messages, JSON and parquet.

    A POSIX file name is bytes; Python hands the bytes that are not UTF-8 over as surrogate escapes
    (PEP 383), which no UTF-8 writer accepts. They are shown as ``\\xNN`` here; where the exact name
    must be kept, :func:`sim2real.storage.sources.source_files.file_names` also records its bytes in hex.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def for_people(text: str) -> str:
    """:func:`printable` with control characters (newline, tab, escape, ...) shown as ``\\xNN`` too, so a
    file name cannot break a one-line message or send escape sequences to a terminal."""
    return printable(text).translate(_CONTROLS)


class BadFrame(ValueError):
    """A frame cannot be ingested. ``path`` is the offending file, ``reason`` says why (for people)."""

    def __init__(self, key: str, path: str, reason: str) -> None:
        path, reason = for_people(path), for_people(reason)
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


#: ``SourceFrame.extra`` key of a frame refused at discovery (e.g. its key collides); the value is the
#: reason. :func:`load_frame` quarantines such a frame instead of loading it.
REFUSED = "refused"


@dataclass
class LoadedFrame:
    """A frame's canonical members, plus per-id counts of label ids that mapped to ignore (255) and
    per-class counts of source boxes that have no detection class (dropped)."""

    members: dict[str, bytes]
    unknown_ids: dict[int | str, int] = field(default_factory=dict)  # id, or colour as colour_name
    dropped_boxes: dict[str, int] = field(default_factory=dict)
    # The decoded ``seg.png`` (H×W uint8 trainIds) when the importer had it anyway: the manifest's class
    # pixel counts then need no second decode.
    seg_train_ids: Any = None


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


def load_frame(importer: SourceFormat, frame: SourceFrame) -> LoadedFrame:
    """``importer.load(frame)``, or :class:`BadFrame` for a frame refused at discovery."""
    if REFUSED in frame.extra:
        raise BadFrame(frame.key, next(iter(frame.files.values()), "?"), str(frame.extra[REFUSED]))
    return importer.load(frame)


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
