"""The translator's networks, losses and training step on tiny CPU data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim2real.models.translator.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    HighFrequencyLossConfig,
    LossConfig,
    SemanticLossConfig,
    TrainConfig,
    TranslatorConfig,
)
from sim2real.models.translator.data import TranslatorBatch, detail_mask, translator_batches
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.losses import high_frequency_loss, semantic_loss
from sim2real.models.translator.model import build_translator
from sim2real.models.translator.training import (
    generator_losses,
    new_training_state,
    run_training,
    weighted_total,
)
from sim2real.storage.taxonomy import IGNORE_ID, TRAIN_ID_BY_NAME

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**loss_overrides) -> TranslatorConfig:
    return TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        dis=DiscriminatorConfig(dim=8, n_layers=2, num_scales=2),
        loss=LossConfig(**loss_overrides),
        optim={"lr": 5e-4},
        train=TrainConfig(
            steps=30, batch_size=2, crop_height=32, crop_width=32, log_every=1, checkpoint_every=5
        ),
    )


def toy_frames(seed: int, count: int, real: bool) -> list[dict]:
    """Block scenes: road below, sky above, a sign; 'real' frames are darker, warmer and noisy."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        seg = np.full((40, 48), TRAIN_ID_BY_NAME["sky"], np.uint8)
        horizon = int(rng.integers(14, 26))
        seg[horizon:] = TRAIN_ID_BY_NAME["road"]
        x = int(rng.integers(0, 40))
        seg[horizon - 8 : horizon - 2, x : x + 6] = TRAIN_ID_BY_NAME["traffic sign"]
        palette = np.zeros((256, 3), np.uint8)
        palette[TRAIN_ID_BY_NAME["sky"]] = (120, 170, 230)
        palette[TRAIN_ID_BY_NAME["road"]] = (110, 110, 110)
        palette[TRAIN_ID_BY_NAME["traffic sign"]] = (240, 240, 20)
        rgb = palette[seg].astype(np.float32)
        if real:
            rgb = rgb * np.array([0.9, 0.75, 0.6]) + rng.normal(0, 8, rgb.shape)
        frames.append({"rgb": np.clip(rgb, 0, 255).astype(np.uint8), "seg": seg, "meta": {}})
    return frames


def cycle(frames: list[dict]):
    while True:
        yield from frames


def one_batch(config: TranslatorConfig) -> TranslatorBatch:
    return next(
        translator_batches(cycle(toy_frames(0, 4, False)), cycle(toy_frames(1, 4, True)), config.train)
    )


@pytest.mark.parametrize("profile", ["tiny", "demo", "full"])
def test_profile_shapes_and_parameter_counts(profile):
    from sim2real.flows.train_translator import load_profile

    config = load_profile(profile).translator
    model = build_translator(config)
    x = torch.zeros(1, 3, 32, 64)
    content, style = model.sim.encode(x)
    assert content.shape == (1, config.gen.content_channels, 32 // config.gen.stride, 64 // config.gen.stride)
    assert style.shape == (1, config.gen.style_dim)
    assert model.real.decode(content, style).shape == x.shape
    params = sum(p.numel() for p in model.parameters())
    print(f"{profile}: translator parameters {params}")
    bounds = {"tiny": (1e3, 3e5), "demo": (1e5, 5e6), "full": (1e7, 1e8)}[profile]  # full ≈ MUNIT (2×~15M)
    assert bounds[0] < params < bounds[1]


@pytest.mark.parametrize("size", [(37, 53), (5, 7), (32, 32), (33, 64)])
def test_output_size_equals_input_size(size):
    model = build_translator(tiny_config())
    images = torch.rand(2, 3, *size)
    out = translate_batch(model, images)
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, translate_batch(model, images)), "inference must be deterministic"


def test_translation_is_batch_independent():
    model = build_translator(tiny_config())
    images = torch.rand(3, 3, 24, 40)
    together = translate_batch(model, images)
    alone = translate_batch(model, images[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)


def test_training_steps_reduce_generator_and_discriminator_losses():
    config = tiny_config()
    state = new_training_state(config, "cpu", seed=0)
    batches = translator_batches(cycle(toy_frames(0, 6, False)), cycle(toy_frames(1, 6, True)), config.train)
    rows = run_training(state, batches, config, "cpu", until_step=30)
    assert state.step == 30 and len(rows) == 30
    first = {k: np.mean([r[k] for r in rows[:5]]) for k in ("gen_total", "dis_total", "recon_x", "sem")}
    last = {k: np.mean([r[k] for r in rows[-5:]]) for k in first}
    assert last["gen_total"] < 0.8 * first["gen_total"], (first, last)
    assert last["dis_total"] < first["dis_total"], (first, last)
    assert last["recon_x"] < first["recon_x"] and last["sem"] < first["sem"]
    assert int(state.translator.style_updates) == 30
    assert torch.isfinite(state.translator.real_style).all() and state.translator.real_style.abs().sum() > 0


def _generator_grads(
    config: TranslatorConfig, loss: LossConfig, batch: TranslatorBatch
) -> dict[str, torch.Tensor]:
    state = new_training_state(config, "cpu", seed=3)
    torch.manual_seed(7)  # the same random styles in both runs
    terms, _, _ = generator_losses(state.translator, state.discriminators, batch, loss)
    weighted_total(terms, loss).backward()
    return {n: p.grad.clone() for n, p in state.translator.named_parameters() if p.grad is not None}


def test_semantic_loss_is_switchable_and_changes_gradients():
    config = tiny_config()
    batch = one_batch(config)
    on = _generator_grads(config, config.loss, batch)
    off_loss = config.loss.model_copy(update={"semantic": SemanticLossConfig(enabled=False)})
    off = _generator_grads(config, off_loss, batch)
    assert any(n.startswith("seg_head.") for n in on) and not any(n.startswith("seg_head.") for n in off)
    name = "sim.content.net.0.0.weight"
    assert not torch.allclose(on[name], off[name]), "semantic loss must reach the sim content encoder"
    # the translated image's term reaches the real decoder that drew it, not the (frozen) real encoder;
    # only the target's own labels (real_weight) train the real encoder
    assert not torch.allclose(on["real.decoder.upsample.4.weight"], off["real.decoder.upsample.4.weight"])
    assert not torch.allclose(on["real.content.net.0.0.weight"], off["real.content.net.0.0.weight"])
    unpaired = config.loss.model_copy(update={"semantic": SemanticLossConfig(real_weight=0.0)})
    unpaired_grads = _generator_grads(config, unpaired, batch)
    assert torch.allclose(unpaired_grads["real.content.net.0.0.weight"], off["real.content.net.0.0.weight"])
    # a config with the loss off builds no seg head at all
    assert build_translator(tiny_config(semantic=SemanticLossConfig(enabled=False))).seg_head is None


def test_high_frequency_loss_is_switchable_and_changes_gradients():
    config = tiny_config()
    batch = one_batch(config)
    assert batch.detail.sum() > 0, "toy frames have sign pixels"
    on = _generator_grads(config, config.loss, batch)
    off_loss = config.loss.model_copy(update={"high_frequency": HighFrequencyLossConfig(enabled=False)})
    off = _generator_grads(config, off_loss, batch)
    name = "real.decoder.upsample.4.weight"  # the real decoder's output conv
    assert not torch.allclose(on[name], off[name])
    assert not torch.allclose(on["sim.content.net.0.0.weight"], off["sim.content.net.0.0.weight"])


def test_high_frequency_loss_weights_fine_detail_up():
    source = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 8:16] = 1
    inside, outside = source.clone(), source.clone()
    inside[..., 12, 12] = 1.0
    outside[..., 24, 24] = 1.0
    loss_in = high_frequency_loss(source, inside, mask, levels=3, detail_gain=10.0)
    loss_out = high_frequency_loss(source, outside, mask, levels=3, detail_gain=10.0)
    assert loss_in > 5 * loss_out > 0
    assert high_frequency_loss(source, source + 0.3, mask, 3, 10.0) < 1e-6, (
        "a flat offset has no high frequency"
    )


def test_semantic_loss_ignores_255():
    logits = torch.zeros(1, 19, 4, 4)
    labels = torch.full((1, 4, 4), IGNORE_ID)
    assert float(semantic_loss(logits, labels)) == 0.0
    labels[0, 0, 0] = 3
    assert float(semantic_loss(logits, labels)) == pytest.approx(np.log(19), rel=1e-5)


def test_detail_mask_covers_signs_lights_and_lane_boxes():
    seg = np.zeros((10, 12), np.uint8)
    seg[1, 1] = TRAIN_ID_BY_NAME["traffic light"]
    seg[2, 2] = TRAIN_ID_BY_NAME["traffic sign"]
    mask = detail_mask(seg, {"lane_marks": [{"bbox_xyxy": [5, 6, 8, 9]}]})
    assert mask[1, 1] == mask[2, 2] == 1
    assert mask[6:9, 5:8].all() and mask.sum() == 2 + 9


def test_config_rejects_unknown_keys_and_bad_crops():
    with pytest.raises(ValueError, match="gen_dim"):
        TranslatorConfig.model_validate({"gen_dim": 3})
    with pytest.raises(ValueError, match="divisible"):
        TranslatorConfig(train=TrainConfig(crop_height=30, crop_width=32, log_every=1, checkpoint_every=1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_channels_last_step_and_inference():
    config = tiny_config()
    state = new_training_state(config, "cuda", seed=0)
    batches = translator_batches(cycle(toy_frames(0, 4, False)), cycle(toy_frames(1, 4, True)), config.train)
    rows = run_training(state, batches, config, "cuda", until_step=3)
    assert all(np.isfinite(r["gen_total"]) and np.isfinite(r["dis_total"]) for r in rows)
    images = torch.rand(2, 3, 37, 53, device="cuda")
    out = translate_batch(state.translator, images)
    assert out.shape == images.shape and out.device.type == "cuda" and out.dtype == torch.float32
    assert torch.equal(out, translate_batch(state.translator, images))


def test_detail_chroma_term_sees_hue_inside_detail_only():
    source = torch.full((1, 3, 32, 32), 0.2)
    source[..., 10:12, 10:12] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # a small red lamp
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:14, 8:14] = 1
    green = source.clone()
    green[..., 10:12, 10:12] = torch.tensor([0.1, 0.9, 0.4]).view(1, 3, 1, 1)  # hue flipped, similar luma
    far = source.clone()
    far[..., 24:26, 24:26] = torch.tensor([0.1, 0.9, 0.4]).view(1, 3, 1, 1)
    with_chroma = high_frequency_loss(source, green, mask, 2, 10.0, detail_chroma=1.0)
    luma_only = high_frequency_loss(source, green, mask, 2, 10.0, detail_chroma=0.0)
    assert with_chroma > luma_only + 0.1
    far_gap = high_frequency_loss(source, far, mask, 2, 10.0, 1.0) - high_frequency_loss(
        source, far, mask, 2, 10.0
    )
    assert abs(float(far_gap)) < 1e-6, "colours outside fine detail are free"
