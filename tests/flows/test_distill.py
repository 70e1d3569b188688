"""End to end: a tiny teacher → distill flow → registered student → translate; crash and resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import webdataset as wds
from prefect.artifacts import Artifact
from typer.testing import CliRunner

from sim2real.flows.cli import app
from sim2real.flows.cli_translate import register as register_translate_commands
from sim2real.flows.cli_translator import register as register_translator_commands
from sim2real.flows.distill import distill_flow, load_distill_profile
from sim2real.flows.train_translator import train_translator_flow
from sim2real.storage import schema
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.versions import DatasetStore
from sim2real.tasks import distill as distill_tasks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(toy_root):
    """Toy sim and real versions and a tiny teacher."""
    teacher = train_translator_flow(source="sim@latest", target="real@latest", root=toy_root, profile="tiny")
    return {"root": toy_root, "teacher": teacher["translator"]}


@pytest.fixture(scope="module")
def distilled(world):
    """The student, distilled with a crash injected after the first checkpoint, then resumed."""
    root, teacher = world["root"], world["teacher"]
    real_run = distill_tasks.run_distillation
    mp = pytest.MonkeyPatch()

    def crash_in_second_segment(state, *args, **kwargs):
        if state.step >= 2:
            raise RuntimeError("simulated crash in the second segment")
        return real_run(state, *args, **kwargs)

    mp.setattr(distill_tasks, "run_distillation", crash_in_second_segment)
    with pytest.raises(RuntimeError, match="simulated crash"):
        distill_flow(teacher=teacher, source="sim@latest", root=root, profile="tiny")
    mp.undo()
    runs = list((Path(root) / "runs" / "students").iterdir())
    assert len(runs) == 1
    first_rows = json.loads((runs[0] / "losses.json").read_text())
    result = distill_flow(teacher=teacher, source="sim@latest", root=root, profile="tiny")
    return {**world, "result": result, "run_dir": runs[0], "first_rows": first_rows}


def test_crash_resumes_from_last_checkpoint_and_registers_student(distilled):
    result, run_dir = distilled["result"], distilled["run_dir"]
    assert [r["step"] for r in distilled["first_rows"]] == [1, 2], "the first segment was checkpointed"
    rows = json.loads((run_dir / "losses.json").read_text())
    assert [r["step"] for r in rows] == [1, 2, 3, 4], "resumed at step 2, not restarted"
    assert rows[:2] == distilled["first_rows"]
    assert {"l1", "edge", "sem", "hf", "total"} <= set(rows[-1])

    registry = TranslatorRegistry(distilled["root"])
    card = registry.card(result["translator"])
    teacher_card = registry.card(distilled["teacher"])
    assert card["kind"] == "student" and card["steps"] == 4
    assert card["teacher"]["id"] == distilled["teacher"] and card["teacher"]["run"] == teacher_card["run"]
    assert (
        card["data"]["source"] == result["source"]
        and card["data"]["target"] == teacher_card["data"]["target"]
    )
    assert card["label_aware"] == {"semantic": True, "high_frequency": True}
    vs = card["metrics"]["vs_teacher"]
    assert set(vs) >= {"fidelity_miou_translated", "realism_swd_translated", "edge_agreement_translated"}
    for row in vs.values():
        assert set(row) == {"student", "teacher", "difference_pct", "worse_by_over_5pct"}
    assert card["metrics"]["teacher_summary"]["realism_swd_translated"] == pytest.approx(
        teacher_card["metrics"]["summary"]["realism_swd_translated"]
    ), "the teacher is re-scored on its own frames with its own segmenter"

    key = f"student-{result['run']}"
    assert Artifact.get(f"{key}-progress").data == 100.0
    losses = Artifact.get(f"{key}-losses")
    assert losses is not None and '"step": 4' in str(losses.data)
    assert Artifact.get(f"{key}-vs-teacher") is not None

    again = distill_flow(
        teacher=distilled["teacher"], source="sim@latest", root=distilled["root"], profile="tiny"
    )
    assert again == result, "a finished run is returned, not retrained"


def test_translators_json_lists_fewer_gflops_for_the_student(distilled):
    register_translator_commands(app)
    listed = CliRunner().invoke(app, ["translators", "--root", distilled["root"], "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["id"]: r for r in json.loads(listed.output.strip().splitlines()[-1])["translators"]}
    student, teacher = rows[distilled["result"]["translator"]], rows[distilled["teacher"]]
    assert student["kind"] == "student" and teacher["kind"] == "translator"
    assert student["teacher"] == distilled["teacher"] and teacher["teacher"] is None
    assert 0 < student["gflops_per_frame"] < teacher["gflops_per_frame"]
    assert 0 < student["parameters"] < teacher["parameters"]
    assert student["gflops_per_frame"] == pytest.approx(distilled["result"]["gflops_per_frame"])


def test_translate_with_the_student_keeps_every_label_byte(distilled):
    root, student = distilled["root"], distilled["result"]["translator"]
    register_translator_commands(app)  # two commands at least, so typer reads the first word as one
    register_translate_commands(app)
    out = CliRunner().invoke(
        app, ["translate", "sim@latest", "--translator", student, "--root", root, "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    store = DatasetStore(root)
    source = {
        s["__key__"]: s for s in wds.WebDataset(store.open("sim@latest").shard_urls, shardshuffle=False)
    }
    translated = list(
        wds.WebDataset(store.open(f"{result['name']}@{result['version']}").shard_urls, shardshuffle=False)
    )
    assert sorted(s["__key__"] for s in translated) == sorted(source)
    labels = 0
    for sample in translated:
        original = source[sample["__key__"]]
        for member in schema.LABEL_MEMBERS:
            if member in original:
                assert hashlib.sha256(sample[member]).digest() == hashlib.sha256(original[member]).digest()
                labels += 1
        assert sample["rgb.png"] != original["rgb.png"]
        assert json.loads(sample["meta.json"])["translation"]["translator_id"] == student
    assert labels >= len(source)


def test_distilling_a_student_or_a_missing_teacher_is_one_clear_line(distilled):
    register_translator_commands(app)
    runner = CliRunner()
    student = distilled["result"]["translator"]
    for teacher, reason in (
        (student, "not a trained translator"),
        ("0123456789abcdef", "no translators entry"),
    ):
        out = runner.invoke(
            app,
            [
                "distill",
                "--teacher",
                teacher,
                "--source",
                "sim@latest",
                "--root",
                distilled["root"],
                "--json",
            ],
        )
        assert out.exit_code != 0
        assert reason in str(out.exception) or reason in out.output


def test_profiles_validate_and_steps_override():
    for name in ("tiny", "demo", "full"):
        config = load_distill_profile(name)
        assert config.train.checkpoint_every % config.train.log_every == 0
    short = load_distill_profile("demo", steps=7)
    assert short.train.steps == 7 and short.train.checkpoint_every == 7 and 7 % short.train.log_every == 0
    with pytest.raises(ValueError, match="not one of"):
        load_distill_profile("huge")
