"""Prefect tasks that score a trained translator or student on held-out frames (label fidelity through
a target-trained reference segmenter, detail retention, realism): ``models.metrics.translation_eval``
over frames read by ``storage.training_runs``.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from sim2real.models.metrics.translation_eval import (
    evaluate_translation,
    train_reference_segmenter,
    with_teacher,
)
from sim2real.models.perception_model import checkpoint_bytes
from sim2real.models.segmenter import load_segmenter
from sim2real.models.translator import runs
from sim2real.models.translator.runs import DistillRun, TranslatorRun
from sim2real.storage import training_runs as store
from sim2real.storage.sources.toysim import sign_glyphs
from sim2real.storage.versions import content_hash
from sim2real.tasks import distill, translator


def held_out_inputs(
    run: TranslatorRun, source_urls: list[str], segmenter_url: str
) -> tuple[nn.Module, list[dict[str, Any]], list[dict[str, Any]]]:
    """The reference segmenter and the first held-out sim (of ``source_urls``) and real frames of ``run``."""
    config, held_out = run.profile.metrics, runs.split(run.profile.metrics.val_fraction, True)
    segmenter = load_segmenter(store.read_bytes(segmenter_url) or b"", source=segmenter_url).to(run.device)
    sim = store.first_samples(source_urls, held_out, config.frames)
    return segmenter, sim, store.first_samples(run.target_urls, held_out, config.frames)


@task(name="reference-segmenter", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def reference_segmenter(run: TranslatorRun) -> str:
    """The target-trained segmenter behind label fidelity, trained once per target version and settings
    (a distill run passes its teacher's run); returns its URL."""
    metrics, train = run.profile.metrics, run.profile.train
    key = content_hash({
        "target": run.target,
        "segmenter": metrics.segmenter.model_dump(mode="json"),
        "val_fraction": metrics.val_fraction,
        "device": run.device,
    })
    url = store.reference_segmenter_url(run.root, run.target, key)
    if store.read_bytes(url) is None:
        training = runs.split(metrics.val_fraction, False)
        samples = store.sample_stream(run.target_urls, training, train.shuffle_buffer, train.seed, True)
        model = train_reference_segmenter(samples, metrics.segmenter, run.device, seed=train.seed)
        store.write_bytes(url, checkpoint_bytes(model, {"target": run.target}))
    return url


@task(name="evaluate-translator", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def evaluate(run: TranslatorRun, segmenter_url: str) -> dict[str, Any]:
    """All translation metrics of the final checkpoint on held-out frames, translated vs raw sim."""
    state, config = translator.load_state(run), run.profile.metrics
    segmenter, sim, real = held_out_inputs(run, run.source_urls, segmenter_url)
    glyphs = sign_glyphs(config.sign_glyphs)
    metrics = evaluate_translation(state.translator, sim, real, segmenter, config, run.device, glyphs)
    translator.folder(run).save_metrics(metrics)
    return metrics


@task(name="evaluate-student", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def evaluate_distilled(run: DistillRun, segmenter_url: str) -> dict[str, Any]:
    """Metrics of the final student and of its teacher on the teacher's held-out frames."""
    state, teacher = distill.load_state(run), distill.load_teacher(run)
    segmenter, sim, real = held_out_inputs(run.teacher_run, run.source_urls, segmenter_url)
    glyphs = sign_glyphs(run.metrics.sign_glyphs)
    student_metrics, teacher_metrics = (
        evaluate_translation(model, sim, real, segmenter, run.metrics, run.device, glyphs)  # type: ignore[arg-type]
        for model in (state.student.eval(), teacher)  # any module with ``translate`` and ``stride``
    )
    metrics = with_teacher(student_metrics, teacher_metrics)
    translator.folder(run).save_metrics(metrics)
    return metrics
