"""Issue 16 item 1: any name a POSIX file system holds gives a sample or a quarantined frame, in every
importer: non-UTF-8 bytes, spaces, dots, unicode, upper-case extensions; keys stay ``[A-Za-z0-9_-]+``
and ``meta.json`` stays valid UTF-8 JSON that keeps the exact name."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import REFUSED, BadFrame, SourceFrame, get_format, load_frame
from sim2real.storage.sources.source_files import sanitize_key, unique_keys

H, W = 8, 16
LATIN1 = b"stra\xdfe"  # "straße" written by a Latin-1 system: not UTF-8
#: (stem bytes, camera extension, label extension) — every kind of name in one export.
NAMES: list[tuple[bytes, str, str]] = [
    (LATIN1, ".png", ".png"),
    (b"two words", ".PNG", ".PNG"),
    (b"a.b.c", ".JPG", ".png"),
    ("straße".encode(), ".Jpeg", ".Png"),
    (b"UPPER", ".jpg", ".PNG"),
]


def write(path: bytes, image: Image.Image, fmt: str | None = None) -> None:
    """Save ``image`` at a bytes path (folders made); the format follows the extension unless given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt or ("JPEG" if ext in (b".jpg", b".jpeg") else "PNG"))
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def camera(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


def ids(value: int, dtype: type = np.uint8) -> Image.Image:
    return Image.fromarray(np.full((H, W), value, dtype))


def j(*parts: bytes | str) -> bytes:
    return os.path.join(*(p if isinstance(p, bytes) else p.encode() for p in parts))


def make_gta5(root: bytes) -> dict:
    for i, (stem, ext, label_ext) in enumerate(NAMES):
        write(j(root, "images", stem + ext.encode()), camera(i))
        write(j(root, "labels", stem + label_ext.encode()), ids(7))
    return {}


def make_carla(root: bytes) -> dict:
    for i, (stem, ext, label_ext) in enumerate(NAMES):
        write(j(root, "rgb", stem + ext.encode()), camera(i))
        raw = np.zeros((H, W, 3), np.uint8)
        raw[..., 0] = 1  # raw tag 1 = road (0.9.14)
        write(j(root, "semantic", stem + label_ext.encode()), Image.fromarray(raw))
    return {}


def make_cityscapes(root: bytes) -> dict:
    for i, (stem, ext, label_ext) in enumerate(NAMES):
        if ext.lower() not in (".png",):
            ext = ext[:-3] + "PNG" if ext.isupper() else ".png"  # Cityscapes images are PNG
        city = b"k\xf6ln"  # a non-UTF-8 city folder too
        write(j(root, "leftImg8bit", "train", city, stem + b"_leftImg8bit" + ext.encode()), camera(i))
        gt = j(root, "gtFine", "train", city, stem)
        write(gt + b"_gtFine_labelIds" + label_ext.encode(), ids(7))
        write(gt + b"_gtFine_instanceIds" + label_ext.encode(), ids(0, np.uint16))
    return {}


def make_bdd100k(root: bytes) -> dict:
    for i, (stem, ext, label_ext) in enumerate(NAMES):
        write(j(root, "images", "10k", "train", stem + ext.encode()), camera(i))
        write(j(root, "labels", "sem_seg", "masks", "train", stem + label_ext.encode()), ids(0))
    return {}


def make_vkitti2(root: bytes) -> dict:
    frames = j(root, "Scene01", b"n\xe9bula two", "frames")  # variation names are free
    for i, (_, ext, label_ext) in enumerate(NAMES):
        ext = ".JPG" if ext.isupper() else ".jpg"
        write(j(frames, "rgb", "Camera_0", f"rgb_{i:05d}{ext}"), camera(i))
        colours = np.zeros((H, W, 3), np.uint8) + np.array([100, 60, 100], np.uint8)  # Road
        seg = j(frames, "classSegmentation", "Camera_0", f"classgt_{i:05d}{label_ext}")
        write(seg, Image.fromarray(colours))
    return {}


def make_shift(root: bytes) -> dict:
    view = j(root, "discrete", "images", "train", "front")
    for i, (stem, ext, label_ext) in enumerate(NAMES):
        sequence = stem + b"-seq"  # sequence folders hold the hostile names here
        write(j(view, "img", sequence, f"{i * 10:08d}_img_front{ext}"), camera(i))
        write(j(view, "semseg", sequence, f"{i * 10:08d}_semseg_front{label_ext}"), ids(7))
    return {}


def make_folder(root: bytes) -> dict:
    os.makedirs(root, exist_ok=True)
    with open(j(root, "classes.json"), "w") as handle:
        json.dump({"classes": [{"id": 0, "name": "road"}]}, handle)
    for i, (stem, ext, label_ext) in enumerate(NAMES):
        write(j(root, "rgb", stem + ext.encode()), camera(i))
        write(j(root, "seg", stem + label_ext.encode()), ids(0))
    return {}


MAKERS: dict[str, Callable[[bytes], dict]] = {
    "gta5": make_gta5, "carla": make_carla, "cityscapes": make_cityscapes, "bdd100k": make_bdd100k,
    "vkitti2": make_vkitti2, "shift": make_shift, "folder": make_folder,
}


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_every_importer_takes_any_file_name(fmt, tmp_path, ingest):
    root = os.path.join(os.fsencode(tmp_path), b"export")
    options = MAKERS[fmt](root)
    version, raw, _ = ingest(os.fsdecode(root), fmt, options)
    assert version.info["quarantined"] == 0, version.quarantine().to_pylist()
    assert len(raw) == len(NAMES)
    names_hex = []
    for key, sample in raw.items():
        assert schema.KEY_PATTERN.fullmatch(key)
        meta = json.loads(sample[schema.META].decode("utf-8"))  # strict UTF-8, valid JSON
        names_hex.extend(meta.get("file_names_hex", {}).values())
    latin1 = [bytes.fromhex(h) for h in names_hex]
    if fmt not in ("vkitti2", "shift"):  # there the hostile part is a folder, not the file name
        assert any(name.startswith(LATIN1) for name in latin1), names_hex


def test_non_utf8_name_is_kept_exactly_in_meta(tmp_path, ingest):
    root = os.path.join(os.fsencode(tmp_path), b"gta5")
    make_gta5(root)
    version, raw, decoded = ingest(os.fsdecode(root), "gta5")
    key = sanitize_key(os.fsdecode(LATIN1))
    meta = json.loads(raw[key][schema.META])
    assert meta["files"]["rgb"] == "stra\\xdfe.png"  # readable, valid UTF-8
    assert bytes.fromhex(meta["file_names_hex"]["rgb"]) == LATIN1 + b".png"  # exact bytes
    assert bytes.fromhex(meta["file_names_hex"]["seg"]) == LATIN1 + b".png"
    assert decoded[key]["seg"].max() == 0  # label found: road (trainId 0), not "missing seg file"
    # the same frame under its UTF-8 name is another frame with another key
    assert sanitize_key("straße") in raw and sanitize_key("straße") != key


def test_upper_case_label_extension_is_found(tmp_path):
    root = os.path.join(os.fsencode(tmp_path), b"carla")
    make_carla(root)
    frames = get_format("carla").discover(os.fsdecode(root), {})
    assert all("seg" in f.files for f in frames), [f.extra for f in frames]
    by_key = {f.key: f for f in frames}
    assert by_key["UPPER"].files["seg"].endswith("UPPER.PNG")


def test_key_rule():
    assert sanitize_key("Scene01", "15-deg-left", "00001") == "Scene01_15-deg-left_00001"
    dotted, spaced = sanitize_key("a.b"), sanitize_key("a b")
    assert dotted != spaced and dotted.startswith("a_b-") and spaced.startswith("a_b-")
    assert sanitize_key("a_b") == "a_b"  # a safe name never gets a digest
    latin1 = sanitize_key(os.fsdecode(LATIN1))
    assert latin1 != sanitize_key("straße") and latin1 == sanitize_key(os.fsdecode(LATIN1))
    for key in (dotted, spaced, latin1, sanitize_key("…"), sanitize_key("日本")):
        assert schema.KEY_PATTERN.fullmatch(key), key
    assert sanitize_key("seq", "a.b") != sanitize_key("seq_a", "b")


def test_colliding_keys_are_rekeyed_not_fatal():
    frames = [SourceFrame("a_b", {"rgb": "/x/a_b.png"}), SourceFrame("a_b", {"rgb": "/y/a_b.png"}),
              SourceFrame("c", {"rgb": "/x/c.png"})]
    unique = unique_keys(frames)
    keys = [f.key for f in unique]
    assert len(set(keys)) == 3 and keys[2] == "c" and all(k.startswith("a_b-") for k in keys[:2])
    assert not any(REFUSED in f.extra for f in unique)
    same = [SourceFrame("k", {"rgb": "/x/k.png"}), SourceFrame("k", {"rgb": "/x/k.png"})]
    refused = unique_keys(same)[1]
    assert "made twice" in refused.extra[REFUSED]
    with pytest.raises(BadFrame, match="made twice"):
        load_frame(get_format("gta5"), refused)


@contextmanager
def fifo_poked(path: os.PathLike) -> Iterator[None]:
    """Every few seconds, open and close the FIFO at ``path`` for writing: a reader blocked on it (the
    fault under test) then reads an empty file, so a regression fails the test instead of hanging it."""
    done = threading.Event()

    def poke() -> None:
        while not done.wait(2):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: nobody is reading it, as it should be
                pass

    poker = threading.Thread(target=poke, daemon=True)
    poker.start()
    try:
        yield
    finally:
        done.set()
        poker.join()


def test_entries_that_are_no_data_files_are_quarantined_not_fatal(tmp_path, ingest):
    """A folder named like an image, a FIFO (reading it would block for ever) and dangling symbolic
    links are quarantined with what they are; a link to a good file is a good frame."""
    root = tmp_path / "gta5"
    make_gta5(os.fsencode(root))
    images, labels = root / "images", root / "labels"
    os.makedirs(images / "folder.png")
    os.mkfifo(images / "fifo.png")
    os.symlink(images / "gone.png", images / "dangling.png")
    for stem in ("folder", "fifo", "dangling", "linked", "label_folder"):
        write(os.fsencode(labels / f"{stem}.png"), ids(7))
    os.symlink(images / "UPPER.jpg", images / "linked.jpg")
    write(os.fsencode(images / "label_folder.png"), camera(9))
    os.remove(labels / "label_folder.png")
    os.makedirs(labels / "label_folder.png")
    with fifo_poked(images / "fifo.png"):
        version, raw, _ = ingest(str(root), "gta5")
    reasons = {row["key"]: row["reason"] for row in version.quarantine().to_pylist()}
    assert reasons == {
        "folder": "rgb file is a folder, not a file",
        "fifo": "rgb file is not a regular file (a FIFO, socket or device)",
        "dangling": f"rgb file is a dangling symbolic link (to {images / 'gone.png'})",
        "label_folder": "seg file is a folder, not a file",
    }
    assert "linked" in raw and raw["linked"][schema.RGB_JPG] == raw["UPPER"][schema.RGB_JPG]
    assert len(raw) == len(NAMES) + 1


def test_folder_format_quarantines_a_folder_named_like_a_member(tmp_path, ingest):
    root = tmp_path / "export"
    make_folder(os.fsencode(root))
    os.makedirs(root / "seg" / "UPPER.png")  # beside UPPER.PNG: the folder, not the file, is seg
    os.remove(root / "seg" / "UPPER.PNG")
    version, raw, _ = ingest(str(root), "folder")
    reasons = {row["key"]: row["reason"] for row in version.quarantine().to_pylist()}
    assert reasons == {"UPPER": "seg file is a folder, not a file"} and len(raw) == len(NAMES) - 1


def test_names_as_long_as_a_file_system_allows_give_short_unique_keys(tmp_path, ingest):
    """255-byte names (the common limit) and long sequence folders: every key fits a shard's tar
    header (schema.MAX_KEY_LENGTH) and two long names that share their start keep two keys."""
    root = tmp_path / "carla"
    long_a, long_b = "a" * 251, "a" * 250 + "b"
    sequence = "s" * 200
    for i, stem in enumerate((long_a, long_b, "short")):
        write(j(os.fsencode(root), sequence, "rgb", stem + ".png"), camera(i))
        raw_tags = np.zeros((H, W, 3), np.uint8)
        raw_tags[..., 0] = 1
        write(j(os.fsencode(root), sequence, "semantic", stem + ".png"), Image.fromarray(raw_tags))
    version, raw, _ = ingest(str(root), "carla")
    assert version.info["quarantined"] == 0, version.quarantine().to_pylist()
    assert len(raw) == 3
    for key in raw:
        assert schema.KEY_PATTERN.fullmatch(key) and len(key) <= schema.MAX_KEY_LENGTH
    assert sanitize_key(long_a) != sanitize_key(long_b)
    assert sanitize_key("x" * schema.MAX_KEY_LENGTH) == "x" * schema.MAX_KEY_LENGTH
    collided = unique_keys([SourceFrame("k" * schema.MAX_KEY_LENGTH, {"rgb": f"/{d}/x.png"})
                                    for d in "ab"])
    assert all(len(f.key) <= schema.MAX_KEY_LENGTH and REFUSED not in f.extra for f in collided)


def test_control_characters_in_names_do_not_break_message_lines(tmp_path, ingest):
    """A newline or a terminal escape in a file name is shown as ``\\xNN`` in quarantine reasons,
    error lines and meta.json (whose file_names_hex keeps the exact bytes)."""
    root = tmp_path / "gta5"
    make_gta5(os.fsencode(root))
    hostile = "new\nline\x1b[31m"
    write(os.fsencode(root / "images" / f"{hostile}.png"), camera(7))
    write(os.fsencode(root / "labels" / f"{hostile}.png"), ids(7))
    (root / "images" / "bad\ttab.png").write_bytes(b"")
    version, raw, _ = ingest(str(root), "gta5")
    (row,) = version.quarantine().to_pylist()
    assert row["path"].endswith("images/bad\\x09tab.png") and row["reason"] == "rgb file is empty (0 bytes)"
    key = sanitize_key(hostile)
    meta = json.loads(raw[key][schema.META])
    assert meta["files"]["rgb"] == "new\\x0aline\\x1b[31m.png"
    assert bytes.fromhex(meta["file_names_hex"]["rgb"]) == f"{hostile}.png".encode()
    error = BadFrame(key, str(root / "images" / f"{hostile}.png"), f"reason with {hostile}")
    assert "\n" not in str(error) and "\x1b" not in str(error)
