"""Typed configuration of the translator, nested by component like a MUNIT experiment file.

Each network receives only its own sub-config (``gen``, ``dis``); the training step receives ``loss``,
``optim`` and ``train``. All models are frozen and reject unknown keys, so a typo in a YAML profile is an
error naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PadType = Literal["reflect", "zeros", "replicate"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GeneratorConfig(_Frozen):
    """Sizes of one auto-encoder (content encoder, style encoder, AdaIN decoder)."""

    dim: int = Field(default=64, ge=4, description="channels after the first convolution")
    style_dim: int = Field(default=8, ge=1, description="length of the style code")
    n_downsample: int = Field(
        default=2, ge=1, le=5, description="stride-2 convolutions in the content encoder"
    )
    n_res: int = Field(default=4, ge=1, description="residual blocks in content encoder and decoder")
    style_n_downsample: int = Field(default=4, ge=2, description="stride-2 convolutions in the style encoder")
    mlp_dim: int = Field(default=256, ge=4, description="hidden width of the style → AdaIN-parameter MLP")
    mlp_layers: int = Field(default=3, ge=2, description="linear layers in that MLP")
    pad_type: PadType = "reflect"

    @property
    def stride(self) -> int:
        """The factor an input's height and width must be divisible by (padding is done for you)."""
        return 2**self.n_downsample

    @property
    def content_channels(self) -> int:
        """Channels of the content code."""
        return self.dim * 2**self.n_downsample


class DiscriminatorConfig(_Frozen):
    """Multi-scale PatchGAN discriminator sizes."""

    dim: int = Field(default=64, ge=4, description="channels of the first convolution")
    n_layers: int = Field(default=4, ge=1, description="stride-2 convolutions per scale")
    num_scales: int = Field(default=3, ge=1, description="image scales, each half the previous")


class SemanticLossConfig(_Frozen):
    """Semantic consistency: a seg head on the content code, supervised by the simulator's seg.png."""

    enabled: bool = True
    weight: float = Field(default=1.0, ge=0, description="weight of CE(seg_head(content(sim)), seg)")
    translated_weight: float = Field(
        default=1.0, ge=0, description="weight of CE(seg_head(content(sim→real)), seg)"
    )
    real_weight: float = Field(
        default=1.0,
        ge=0,
        description="weight of CE(seg_head(content(real)), the target's own labels), when it has them",
    )
    head_dim: int = Field(default=64, ge=4, description="hidden channels of the seg head")


class HighFrequencyLossConfig(_Frozen):
    """Laplacian-pyramid luminance consistency between sim and translated, heavier on fine detail."""

    enabled: bool = True
    weight: float = Field(default=1.0, ge=0, description="overall weight")
    levels: int = Field(default=3, ge=1, le=6, description="Laplacian pyramid levels")
    detail_gain: float = Field(
        default=10.0, ge=0, description="extra weight inside sign/light/lane-mark pixels"
    )
    detail_chroma: float = Field(
        default=0.0, ge=0, description="weight of colour-opponent bands inside detail pixels"
    )


class LossConfig(_Frozen):
    """Loss weights (MUNIT's names) and the two label-aware extras."""

    gan_w: float = Field(default=1.0, ge=0, description="adversarial (LSGAN)")
    recon_x_w: float = Field(default=10.0, ge=0, description="image reconstruction")
    recon_s_w: float = Field(default=1.0, ge=0, description="style-code reconstruction")
    recon_c_w: float = Field(default=1.0, ge=0, description="content-code reconstruction")
    recon_x_cyc_w: float = Field(
        default=10.0, ge=0, description="cycle reconstruction (0 skips the extra decode)"
    )
    semantic: SemanticLossConfig = SemanticLossConfig()
    high_frequency: HighFrequencyLossConfig = HighFrequencyLossConfig()


class OptimConfig(_Frozen):
    """Adam for generators and discriminators, step-decayed."""

    lr: float = Field(default=1e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    lr_step: int = Field(default=100_000, ge=1, description="steps between learning-rate decays")
    lr_gamma: float = Field(default=0.5, gt=0, le=1, description="decay factor")


class TrainConfig(_Frozen):
    """The training loop: length, batch, crops, checkpoints and logging."""

    steps: int = Field(default=1000, ge=1, description="optimizer steps in total")
    batch_size: int = Field(default=1, ge=1)
    crop_height: int = Field(default=256, ge=8, description="random training crop height (pixels)")
    crop_width: int = Field(default=256, ge=8, description="random training crop width (pixels)")
    hflip: bool = Field(default=True, description="random horizontal flips")
    checkpoint_every: int = Field(default=500, ge=1, description="steps between atomic checkpoints")
    log_every: int = Field(default=50, ge=1, description="steps between loss rows")
    style_momentum: float = Field(default=0.99, ge=0, lt=1, description="EMA of the inference style")
    shuffle_buffer: int = Field(default=64, ge=0, description="webdataset shuffle buffer (samples)")
    seed: int = 0

    @model_validator(mode="after")
    def _check_log(self) -> TrainConfig:
        if self.checkpoint_every % self.log_every:
            raise ValueError("train.checkpoint_every must be a multiple of train.log_every")
        return self


class TranslatorConfig(_Frozen):
    """Everything that defines a translator and how it is trained."""

    gen: GeneratorConfig = GeneratorConfig()
    dis: DiscriminatorConfig = DiscriminatorConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_crop(self) -> TranslatorConfig:
        stride = self.gen.stride
        if self.train.crop_height % stride or self.train.crop_width % stride:
            raise ValueError(
                f"train crop {self.train.crop_height}x{self.train.crop_width} must be divisible "
                f"by gen stride {stride}"
            )
        return self
