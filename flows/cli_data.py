"""Data commands: ``toysim``, ``ingest``, ``versions``, ``urls``."""

from __future__ import annotations

from pathlib import Path

import typer

from sim2real.flows.cli import emit
from sim2real.storage.versions import DatasetStore, default_root

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")
ROOT_OPT = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data).")


def parse_size(size: str) -> tuple[int, int]:
    """``"128x256"`` → (128, 256)."""
    try:
        height, width = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"size {size!r}: expected HxW, e.g. 128x256") from None
    if height < 8 or width < 8:
        raise typer.BadParameter(f"size {size!r}: at least 8x8")
    return height, width


def parse_option(option: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` → (KEY, VALUE)."""
    key, sep, value = option.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"--option {option!r}: expected KEY=VALUE")
    return key, value


def toysim(
    out: Path = typer.Option(..., "--out", help="Export folder to write."),
    style: str = typer.Option("sim", "--style", help="sim (flat, clean) or real (textured, noisy, JPEG)."),
    frames: int = typer.Option(16, "--frames", min=1),
    seed: int = typer.Option(0, "--seed"),
    size: str = typer.Option("128x256", "--size", help="HxW"),
    start: int = typer.Option(0, "--start", help="Index of the first frame (to add frames later)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Render toy street scenes into a simulator-style export folder."""
    from tqdm import tqdm

    from sim2real.storage.sources.toysim import ToySimConfig, write_export

    if style not in ("sim", "real"):
        raise typer.BadParameter(f"style {style!r}: choose sim or real")
    height, width = parse_size(size)
    config = ToySimConfig(style=style, height=height, width=width, seed=seed)
    with tqdm(total=frames, desc=f"toysim {style}", unit="frame") as bar:
        keys = write_export(out, config, frames, start=start, progress=lambda n: bar.update(n))
    emit(
        {"out": str(out), "style": style, "frames": len(keys)}, as_json, f"wrote {len(keys)} frames to {out}"
    )


def ingest(
    source_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Export or dataset folder."),
    name: str = typer.Option(..., "--name", help="Dataset name (lowercase, digits, - and _)."),
    fmt: str = typer.Option("folder", "--format", help="Source format (folder, cityscapes, gta5, ...)."),
    split: str = typer.Option(None, "--split", help="Split for formats that have them (train, val, ...)."),
    option: list[str] = typer.Option(None, "--option", help="Importer option KEY=VALUE (repeatable)."),
    max_shard_samples: int = typer.Option(1000, "--max-shard-samples", min=1),
    workers: int = typer.Option(None, "--workers", min=1, help="Processes building shards (default: CPUs)."),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Ingest a folder into a new dataset version (quarantining bad frames)."""
    options = dict(parse_option(o) for o in option or [])
    from sim2real.flows.ingest import ingest_flow
    from sim2real.flows.runtime import run_quietly

    result = run_quietly(
        ingest_flow,
        source_dir=str(source_dir.resolve()),
        name=name,
        root=root or default_root(),
        format=fmt,
        split=split,
        options=options,
        max_shard_samples=max_shard_samples,
        workers=workers,
    )
    human = (
        f"{result['name']}@{result['version']}: {result['samples']} samples, {result['shards']} shards, "
        f"{result['quarantined']} quarantined → {result['path']}"
    )
    if result["unknown_ids"]:
        counts = ", ".join(f"{'' if k.startswith('#') else 'id '}{k}: {v} px"
                           for k, v in list(result["unknown_ids"].items())[:10])
        human += f"\nunknown source ids/colours mapped to ignore (255): {counts}"
    if result.get("dropped_boxes"):
        counts = ", ".join(f"{k}: {v}" for k, v in result["dropped_boxes"].items())
        human += f"\nsource boxes without a detection class (dropped): {counts}"
    emit(result, as_json, human)


def versions(name: str = typer.Argument(None), root: str = ROOT_OPT, as_json: bool = JSON_OPT) -> None:
    """List committed dataset versions."""
    from sim2real.storage.versions import check_name

    if name:
        check_name(name)  # a malformed name is an error, not an empty listing
    store = DatasetStore(root or default_root())
    rows = [
        {
            "ref": v.ref,
            "samples": v.num_samples,
            "quarantined": v.info.get("quarantined", 0),
            "shards": len(v.info["shards"]),
            "kind": v.info.get("kind"),
            "path": v.path,
        }
        for v in store.list_versions(name)
    ]
    human = "\n".join(
        f"{r['ref']:<40} {r['samples']:>7} samples {r['shards']:>4} shards  {r['kind']}" for r in rows
    )
    emit({"versions": rows}, as_json, human or "no versions")


def urls(
    ref: str = typer.Argument(..., help="NAME@VERSION or NAME@latest"),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Print the shard URL for stock webdataset and the index.json URL for wids."""
    version = DatasetStore(root or default_root()).open(ref)
    result = {
        "ref": version.ref,
        "webdataset": version.brace_url,
        "wids": version.index_url,
        "shards": version.shard_urls,
        "samples": version.num_samples,
    }
    emit(result, as_json, f"webdataset: {version.brace_url}\nwids:       {version.index_url}")


def register(app: typer.Typer) -> None:
    """Add the data commands to the CLI."""
    app.command()(toysim)
    app.command()(ingest)
    app.command()(versions)
    app.command()(urls)
