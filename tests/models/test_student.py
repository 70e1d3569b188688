"""The student network, its FLOP count, the distillation step, batches and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim2real.models.translator.config import TranslatorConfig
from sim2real.models.translator.distill import (
    DistillConfig,
    DistillTrainConfig,
    distill_batches,
    distill_step,
    new_distill_state,
    restore_distill_state,
    student_weights,
)
from sim2real.models.translator.fit import CheckpointError, checkpoint_bytes
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.kinds import footprint, get_kind, model_from_weights
from sim2real.models.translator.model import build_translator
from sim2real.models.translator.student import (
    StudentConfig,
    build_student,
    count_flops,
    student_gflops_per_frame,
)
from sim2real.storage.sources.toysim import ToySimConfig, render_frame

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = DistillConfig.model_validate(
    {
        "student": {"channels": [8, 16], "n_res": 1},
        "train": {
            "steps": 4,
            "batch_size": 2,
            "crop_height": 16,
            "crop_width": 32,
            "checkpoint_every": 2,
            "log_every": 1,
            "shuffle_buffer": 0,
        },
    }
)


def tiny_teacher():
    torch.manual_seed(0)
    return build_translator(
        TranslatorConfig.model_validate(
            {
                "gen": {"dim": 4, "style_dim": 2, "n_res": 1, "mlp_dim": 8, "style_n_downsample": 2},
                "loss": {"semantic": {"head_dim": 4}},
                "train": {"crop_height": 16, "crop_width": 16},
            }
        )
    ).eval()


def toy_samples(count: int, height: int = 32, width: int = 64):
    config = ToySimConfig(style="sim", height=height, width=width, seed=3)
    for index in range(count):
        frame = render_frame(config, index)
        yield {"rgb": frame.rgb, "seg": frame.seg, "meta": frame.meta}


def test_student_keeps_shape_on_any_size_and_is_cheaper_than_its_teacher():
    student = build_student(StudentConfig(space_to_depth=2, channels=(8, 16))).eval()
    assert student.stride == 4
    images = torch.rand(3, 3, 31, 45)
    out = translate_batch(student, images)  # type: ignore[arg-type]
    assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    teacher = footprint({"kind": "translator", "config": TranslatorConfig().model_dump(mode="json")})
    mine = footprint({"kind": "student", "config": DistillConfig().model_dump(mode="json")})
    assert mine["gflops_per_frame"] * 8 < teacher["gflops_per_frame"]
    assert mine["parameters"] == sum(p.numel() for p in build_student(StudentConfig()).parameters())


def test_inference_without_autograd_works_in_place_with_the_same_values_and_training_does_not():
    torch.manual_seed(0)
    student = build_student(StudentConfig(space_to_depth=2, channels=(8, 16, 32), n_res=2))
    for dtype in (torch.float32, torch.bfloat16):
        model, x = student.to(dtype), torch.randn(2, 3, 16, 24).to(dtype)
        trained = model(x)  # autograd on: out of place, a graph to backpropagate through
        assert trained.requires_grad
        trained.float().square().mean().backward()  # in-place ops would break the backward pass
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        with torch.inference_mode():
            assert torch.equal(model(x), trained.detach())
        with torch.no_grad():
            assert torch.equal(model(x), trained.detach())
        model.zero_grad()


def test_flop_count_matches_the_hand_count():
    # space_to_depth 2, channels (8, 16), one res block, on 8×8: convs at 4×4 (16 px) and 2×2 (4 px).
    config = StudentConfig(space_to_depth=2, channels=(8, 16), n_res=1)
    macs = (
        16 * 12 * 8 * 9  # stem
        + 4 * 8 * 16 * 9  # stride-2 down
        + 2 * 4 * 16 * 16 * 9  # res block
        + 4 * 16 * 32  # 1x1 expand
        + 16 * 8 * 8 * 9  # up conv
        + 16 * 8 * 12 * 9  # head
    )
    with torch.device("meta"):
        model = build_student(config)
    assert count_flops(model, 8, 8) == 2 * macs
    assert student_gflops_per_frame(config, (8, 8)) == pytest.approx(2 * macs / 1e9)


def test_batches_crop_sim_teacher_labels_and_detail_alike():
    train = DistillTrainConfig(
        batch_size=3, crop_height=16, crop_width=32, hflip=True, log_every=1, checkpoint_every=1
    )
    calls = []

    def identity_teacher(images: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(images.shape))
        return images

    batches = list(distill_batches(toy_samples(7), identity_teacher, train, seed=1))
    assert len(batches) == 2, "7 samples make two full batches of 3; the partial one is dropped"
    assert calls == [(3, 3, 32, 64), (3, 3, 32, 64)], "the teacher sees whole frames, once per batch"
    for batch in batches:
        assert batch.sim.shape == batch.teacher.shape == (3, 3, 16, 32)
        assert torch.equal(batch.sim, batch.teacher), "same crop and flip for sim and teacher"
        assert batch.seg.shape == (3, 16, 32) and batch.detail.shape == (3, 1, 16, 32)


def test_distill_step_moves_the_student_towards_the_teacher():
    teacher = tiny_teacher()
    state = new_distill_state(TINY, "cpu")
    batches = list(distill_batches(toy_samples(2), lambda x: translate_batch(teacher, x), TINY.train))
    first = distill_step(state, teacher, batches[0], TINY.loss)
    assert set(first) == {"l1", "edge", "sem", "hf", "total"} and state.step == 1
    for _ in range(15):
        last = distill_step(state, teacher, batches[0], TINY.loss)
    assert last["total"] < first["total"]
    assert all(p.grad is None for p in teacher.parameters()), "the teacher is a frozen judge"


def test_checkpoint_round_trip_continues_identically_and_rejects_garbage():
    teacher = tiny_teacher()
    batch = next(distill_batches(toy_samples(2), lambda x: translate_batch(teacher, x), TINY.train))
    state = new_distill_state(TINY, "cpu")
    distill_step(state, teacher, batch, TINY.loss)
    restored, config = restore_distill_state(checkpoint_bytes(state, TINY), "cpu")
    assert config == TINY and restored.step == 1
    a = distill_step(state, teacher, batch, TINY.loss)
    b = distill_step(restored, teacher, batch, TINY.loss)
    assert a == b
    for name, tensor in state.student.state_dict().items():
        assert torch.equal(tensor, restored.student.state_dict()[name])
    with pytest.raises(CheckpointError, match="ckpt.pt: not a student distillation checkpoint"):
        restore_distill_state(b"\x00garbage", "cpu", source="ckpt.pt")


def test_weights_load_by_kind_and_refuse_a_mismatched_config():
    student = build_student(TINY.student).eval()
    weights = student_weights(student)
    card = {"kind": "student", "config": TINY.model_dump(mode="json")}
    loaded = model_from_weights(weights, card)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded(x), student(x))
    wider = {"kind": "student", "config": DistillConfig().model_dump(mode="json")}
    with pytest.raises(ValueError, match="w.safetensors: weights do not fit the student config"):
        model_from_weights(weights, wider, source="w.safetensors")
    with pytest.raises(ValueError, match="unknown translator kind 'gan'"):
        get_kind("gan")


def test_configs_reject_unknown_keys_and_bad_crops():
    with pytest.raises(ValueError, match="extra"):
        DistillConfig.model_validate({"student": {"chanels": [8]}})
    with pytest.raises(ValueError, match="divisible by the student's stride 4"):
        DistillConfig.model_validate(
            {"train": {"crop_height": 18}, "student": {"space_to_depth": 2, "channels": [8, 16]}}
        )
    with pytest.raises(ValueError, match="at least 4"):
        StudentConfig(channels=(2, 8))
    assert np.isfinite(student_gflops_per_frame(StudentConfig()))


def test_input_skip_adds_the_input_to_the_head():
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    for skip in (False, True):
        student = build_student(StudentConfig(space_to_depth=2, channels=(8, 16), input_skip=skip)).eval()
        torch.nn.init.zeros_(student.head.weight)
        torch.nn.init.zeros_(student.head.bias)
        with torch.no_grad():
            assert torch.equal(student(x), x if skip else torch.zeros_like(x))
