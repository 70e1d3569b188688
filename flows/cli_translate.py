"""The ``translate`` command: a source version through a registry translator into a new version."""

from __future__ import annotations

import typer

from sim2real.flows.cli import emit
from sim2real.storage.versions import DatasetStore, default_root

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")
ROOT_OPT = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data).")
RUNNERS = ("thread", "dask", "ray")


def translate(
    ref: str = typer.Argument(..., help="Source version, NAME@VERSION or NAME@latest."),
    translator: str = typer.Option(..., "--translator", help="Translator id in the registry."),
    out_name: str = typer.Option(None, "--out-name", help="Output dataset name (default: NAME-translated)."),
    runner: str = typer.Option("thread", "--runner", help="Task runner: thread, dask or ray."),
    address: str = typer.Option(None, "--address", help="Dask scheduler or Ray cluster address."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Frames per forward pass."),
    image_format: str = typer.Option("png", "--format", help="Translated image format: png or jpg."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 where native), fp32, bf16 or fp16 (CUDA only)."
    ),
    compile_model: bool = typer.Option(
        False, "--compile", help="torch.compile the translator: pays off on large runs (minutes of frames)."
    ),
    cpu_streams: int = typer.Option(
        2, "--cpu-streams", min=1, help="CPU: forward passes at once, each on cores / streams threads."
    ),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Translate every shard of a version (labels copied byte for byte); rerunning resumes."""
    from sim2real.flows.runners import RunnerConfig
    from sim2real.flows.runtime import quiet_prefect
    from sim2real.flows.translate import TranslateConfig, run_translate
    from sim2real.models.translator.engine import resolve_precision
    from sim2real.models.translator.engine import resolve_device

    if runner not in RUNNERS:
        raise typer.BadParameter(f"runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    if image_format not in ("png", "jpg"):
        raise typer.BadParameter(f"format {image_format!r}: choose png or jpg")
    try:  # unknown names, and fp16 on a CPU
        resolve_precision(precision, resolve_device(device))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    root = root or default_root()
    DatasetStore(root).open(ref)  # fail fast, before any flow starts: unknown version or translator
    from sim2real.storage.registry import TranslatorRegistry  # imports torch: only when translating

    TranslatorRegistry(root).card(translator)
    quiet_prefect()
    result = run_translate(
        RunnerConfig(kind=runner, address=address),  # type: ignore[arg-type]
        source=ref,
        translator=translator,
        out_name=out_name,
        root=root,
        config=TranslateConfig(
            batch_size=batch_size,
            image_format=image_format,  # type: ignore[arg-type]
            device=device,
            precision=precision,  # type: ignore[arg-type]
            compile=compile_model,
            cpu_streams=cpu_streams,
        ),
    )
    human = (
        f"{result['name']}@{result['version']}: {result['samples']} samples, {result['shards']} shards "
        f"({result['skipped_shards']} skipped), {result['quarantined']} quarantined → {result['path']}"
    )
    emit(result, as_json, human)


def register(app: typer.Typer) -> None:
    """Add the translate command to the CLI."""
    app.command()(translate)
