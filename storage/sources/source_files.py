"""Where an importer's frame files are, whether they are data, and the sample key a frame gets.

Sample keys (:func:`sanitize_key`) must match ``[A-Za-z0-9_-]+`` while file names may hold any byte
but ``/`` and NUL. Name parts already in that alphabet are joined with ``_`` and used as they are;
otherwise each run of other characters becomes ``_`` and ``-`` plus the first 8 hex digits of the
sha256 of the parts' raw bytes is appended, so two names that differ only in those characters still
get two keys. A key longer than ``schema.MAX_KEY_LENGTH`` (88, what a shard's tar header holds) is
cut to 79 characters before the digest is appended. Frames whose keys collide anyway are re-keyed by
the same digest over their file paths (:func:`unique_keys`), or quarantined with both files named
when even that collides. ``meta.json`` keeps each file's name as readable UTF-8 and, for a name that
is not UTF-8, its bytes in hex (:func:`file_names`). Only readable regular files are data
(:func:`present_files`): a folder named like an image, a FIFO, a dangling link make a bad frame saying so.

A file location is either a plain path or an fsspec chained URL into an archive,
``zip://{member}::{archive.zip}`` (SHIFT ships its frames in zip files).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import fsspec

from sim2real.storage import schema
from sim2real.storage.sources.base import REFUSED, BadFrame, SourceFrame, for_people

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_KEEP = schema.MAX_KEY_LENGTH - 9  # characters of a name kept before "-" and an 8-digit digest


def zip_location(archive: str, member: str) -> str:
    """The fsspec URL of ``member`` inside the zip file ``archive``."""
    return f"zip://{member}::{archive}"


def file_name(location: str) -> str:
    """The base name of a file location (of the member, for a ``zip://member::archive`` URL)."""
    if "::" in location:
        location = location.split("::", 1)[0].split("://", 1)[-1]
    return location.replace("\\", "/").rsplit("/", 1)[-1]


def not_a_file(path: str) -> str | None:
    """Why ``path`` cannot be read as a data file (``None`` when it is a readable regular file).

    Only regular files (or symbolic links to one) are data: reading a FIFO or a device would block or
    never end, and a folder named like an image (``x.png/``) cannot be read at all.
    """
    if os.path.isfile(path):  # follows symbolic links
        return None if os.access(path, os.R_OK) else "is not readable (permission denied)"
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a dangling symbolic link (to {os.readlink(path)})"
    if os.path.isdir(path):
        return "is a folder, not a file"
    if os.path.exists(path):
        return "is not a regular file (a FIFO, socket or device)"
    return "is missing"


def present_files(candidates: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Split a frame's expected files into ``files`` (readable regular files) and ``extra`` naming the
    others: ``{"missing": {role: path}}`` and, for a path that exists but is no data file (a folder, a
    FIFO, a dangling link, unreadable), ``{"unusable": {role: reason}}``.

    The ingest planner hashes every file a frame lists, so only readable regular files are listed;
    ``load`` then reports the others as a bad frame through :func:`require_file`.
    """
    files: dict[str, str] = {}
    missing: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for role, path in candidates.items():
        why = None if "::" in path else not_a_file(path)
        if why is None:
            files[role] = path
        else:
            missing[role] = path
            if why != "is missing":
                unusable[role] = why
    extra: dict[str, Any] = {"missing": missing} if missing else {}
    return files, ({**extra, "unusable": unusable} if unusable else extra)


def require_file(frame: SourceFrame, role: str) -> str:
    """The location of ``role`` for ``frame``, or :class:`BadFrame` naming the expected file and why it
    cannot be used (missing, a folder, a dangling link, ...)."""
    if role in frame.files:
        return frame.files[role]
    expected = frame.extra.get("missing", {}).get(role, f"<{role} file>")
    why = frame.extra.get("unusable", {}).get(role)
    raise BadFrame(frame.key, expected, f"{role} file {why}" if why else f"missing {role} file")


def read_bytes(key: str, location: str, role: str) -> bytes:
    """The bytes at ``location`` (a path or a ``zip://member::archive`` URL), or :class:`BadFrame`."""
    try:
        if "::" in location:
            with fsspec.open(location, "rb") as handle:
                return handle.read()
        with open(location, "rb") as handle:
            return handle.read()
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # last 3: a damaged zip
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadFrame(key, location, f"cannot read {role} file: {reason}") from None


def file_names(files: Mapping[str, str]) -> dict[str, Any]:
    """``meta.json``'s record of a frame's files: ``{"files": {role: name}}`` with readable UTF-8 names,
    plus ``{"file_names_hex": {role: hex}}``, the exact bytes, for names that are not UTF-8 or hold
    control characters (shown as ``\\xNN``)."""
    names = {role: file_name(location) for role, location in sorted(files.items())}
    shown = {role: for_people(name) for role, name in names.items()}
    record: dict[str, Any] = {"files": shown}
    raw = {role: os.fsencode(name) for role, name in names.items() if shown[role] != name}
    if raw:
        record["file_names_hex"] = {role: data.hex() for role, data in raw.items()}
    return record


def find_by_stem(folder: str, extensions: tuple[str, ...]) -> dict[str, str]:
    """``{stem: path}`` of the files in ``folder`` whose extension matches ``extensions`` in any case
    (``.png``, ``.PNG``, ``.Png``); when several do, the lower-case one wins, then the first by name.

    Lists the folder once (an empty dict when it does not exist), so a lookup costs no system call.
    """
    if not os.path.isdir(folder):
        return {}
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder), key=lambda e: (os.path.splitext(e)[1] not in extensions, e)):
        stem, ext = os.path.splitext(entry)
        if ext.lower() in extensions and stem not in found:
            found[stem] = os.path.join(folder, entry)
    return found


def _name_digest(parts: Iterable[str]) -> str:
    """First 8 hex digits of the sha256 of name parts' raw bytes (NUL-separated: NUL is in no name)."""
    return hashlib.sha256(b"\0".join(os.fsencode(p) for p in parts)).hexdigest()[:8]


def sanitize_key(*parts: str) -> str:
    """A sample key from name parts, by the rule in the module docstring (collision-safe)."""
    used = [p for p in parts if p]
    cleaned = [_KEY_UNSAFE.sub("_", part) for part in used]
    key = "_".join(cleaned)
    if cleaned != used or not key or len(key) > schema.MAX_KEY_LENGTH:
        key = f"{key.strip('_')[:_KEEP] or 'k'}-{_name_digest(used)}"
    return key


def unique_keys(frames: Sequence[SourceFrame]) -> list[SourceFrame]:
    """``frames`` with colliding keys made unique (module docstring); a frame whose key still collides
    is marked refused (``extra["refused"]``, both files named) and quarantined at load, never an abort."""
    groups: dict[str, list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(frame.key, []).append(index)
    out = list(frames)
    for key, indexes in groups.items():
        if len(indexes) < 2:
            continue
        for index in indexes:
            frame = frames[index]
            out[index] = replace(frame, key=f"{key[:_KEEP]}-{_name_digest(sorted(frame.files.values()))}")
    seen: dict[str, str] = {}
    for index, frame in enumerate(out):
        first_file = for_people(next(iter(frame.files.values()), "?"))
        if frame.key in seen:
            reason = f"key {frame.key!r} made twice, from {seen[frame.key]} and {first_file}"
            out[index] = replace(frame, extra={**frame.extra, REFUSED: reason})
        else:
            seen[frame.key] = first_file
    return out
