"""The ``translate`` command: a source version through a registry translator into a new version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sim2real.flows.cli import emit
from sim2real.storage.versions import DatasetStore, default_root

if TYPE_CHECKING:  # the config imports torch: only when translating (CLI start-up stays fast)
    from sim2real.flows.translate_config import TranslateConfig

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")
ROOT_OPT = typer.Option(None, "--root", help="Storage root URL (default: $SIM2REAL_ROOT or ./data).")
RUNNERS = ("thread", "dask", "ray")


def translate(
    ref: str = typer.Argument(..., help="Source version, NAME@VERSION or NAME@latest."),
    translator: str = typer.Option(..., "--translator", help="Translator id or alias (e.g. production)."),
    out_name: str = typer.Option(None, "--out-name", help="Output dataset name (default: NAME-translated)."),
    runner: str = typer.Option("thread", "--runner", help="Task runner: thread, dask or ray."),
    address: str = typer.Option(None, "--address", help="Dask scheduler or Ray cluster address."),
    config_file: Path = typer.Option(
        None,
        "--config",
        help="YAML translate config (encode / pipeline / engine); the flags below override it.",
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Frames per forward pass [8]."),
    image_format: str = typer.Option(None, "--format", help="Translated image format: png or jpg [png]."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N [auto]."),
    precision: str = typer.Option(
        None, "--precision", help="auto (bf16 where native), fp32, bf16 or fp16 (CUDA only) [auto]."
    ),
    compile_model: bool = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the translator: pays off on large runs [no]."
    ),
    forward_threads: int = typer.Option(
        None,
        "--forward-threads",
        "--cpu-streams",
        min=1,
        help="CPU: forward passes at once, each on its own thread [2].",
    ),
    root: str = ROOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Translate every shard of a version (labels copied byte for byte); rerunning resumes."""
    from sim2real.flows.runners import RunnerConfig
    from sim2real.flows.runtime import quiet_prefect, start_embedded_server_unless_configured
    from sim2real.flows.translate import run_translate

    if runner not in RUNNERS:
        raise typer.BadParameter(f"runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    flags: dict[str, dict[str, Any]] = {
        "encode": {"image_format": image_format},
        "pipeline": {"batch_size": batch_size},
        "engine": {
            "device": device,
            "precision": precision,
            "compile": compile_model,
            "forward_threads": forward_threads,
        },
    }
    try:  # unknown names, and fp16 on a CPU
        config = translate_config(config_file, flags)
        config.engine.resolve()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    root = root or default_root()
    DatasetStore(root).open(ref)  # fail fast, before any flow starts: unknown version or translator
    from sim2real.storage.registry import TranslatorRegistry  # imports torch: only when translating

    registry = TranslatorRegistry(root)
    registry.verified_card(registry.resolve(translator))  # and its weights file whole
    quiet_prefect()
    start_embedded_server_unless_configured()  # else Prefect starts one that outlives a kill -9
    result = run_translate(
        RunnerConfig(kind=runner, address=address),  # type: ignore[arg-type]
        source=ref,
        translator=translator,
        out_name=out_name,
        root=root,
        config=config,
    )
    human = (
        f"{result['name']}@{result['version']}: {result['samples']} samples, {result['shards']} shards "
        f"({result['skipped_shards']} skipped), {result['quarantined']} quarantined → {result['path']}"
    )
    emit(result, as_json, human)


def translate_config(path: Path | None, flags: dict[str, dict[str, Any]]) -> TranslateConfig:
    """The config file's settings (defaults without one), with every flag that was given on top.
    Raises ``ValueError`` naming the file and key on a bad value or an unknown key."""
    from pydantic import ValidationError

    from sim2real.flows.translate_config import TranslateConfig, one_line

    base = TranslateConfig.from_yaml(path) if path else TranslateConfig()
    data = base.model_dump()
    for part, values in flags.items():
        data[part].update({k: v for k, v in values.items() if v is not None})
    try:
        return TranslateConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(one_line(exc)) from None


def register(app: typer.Typer) -> None:
    """Add the translate command to the CLI."""
    app.command()(translate)
