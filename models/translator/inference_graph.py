"""The inference graph of a trained translator: the translation and nothing else, rewritten for speed.

:class:`InferenceGraph` keeps only the sim content encoder and the real decoder, with the fixed real
style baked in, and folds every *nearest ×2 upsample → k×k convolution* pair into one convolution at
the low resolution followed by a pixel shuffle (:class:`UpsampledConv`): nearest upsampling repeats
each pixel, so each of the four output phases sees a narrower window of the low-resolution input (3
wide for k = 5): per low-res pixel 4·3² multiply-adds instead of 4·5². Output pixels whose window
reaches into the reflect padding are recomputed the direct way on thin strips, so the result equals
upsample-then-conv everywhere, borders included (float rounding aside).

Its instance norms can take two other forms with the same numbers: :func:`two_pass_instance_norm`
(which ``torch.compile`` vectorises on CPU) and :func:`samplewise_instance_norm` (one batch norm per
sample, in place on a channels-last bf16 tensor). Measurements: bench/RESULTS.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.models.translator.model import Translator
from sim2real.models.translator.networks import AdaINResBlock


class UpsampledConv(nn.Module):
    """``conv(upsample_nearest_x2(x))`` computed at the low resolution: the same output, fewer MACs.

    For output row ``2j + p`` (phase ``p`` ∈ {0, 1}) kernel tap ``t`` reads low-res row
    ``j + (p - r + t) // 2`` (``r`` the padding), so the k taps of each phase collapse onto
    ``2·pad + 1`` low-res taps. The four phases' kernels are stacked as output channels
    ``(o, py, px)`` and :func:`torch.nn.functional.pixel_shuffle` interleaves them back.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not can_fold(conv):
            raise ValueError(f"cannot fold {conv}: needs a square odd kernel, stride 1, 'same' padding")
        k = conv.kernel_size[0]
        r = (k - 1) // 2
        self.pad = (r + 1) // 2  # low-res taps reach from -pad to +pad for both phases
        self.border = r  # output rows/cols near each edge whose window reaches into the padding
        self.padding_mode = conv.padding_mode
        taps = 2 * self.pad + 1
        weight = conv.weight.detach()
        phase_maps = []
        for phase in (0, 1):
            m = torch.zeros(taps, k, dtype=weight.dtype, device=weight.device)
            for t in range(k):
                m[(phase - r + t) // 2 + self.pad, t] = 1
            phase_maps.append(m)
        kernels = [torch.einsum("ay,oiyx,bx->oiab", my, weight, mx) for my in phase_maps for mx in phase_maps]
        folded = torch.stack(kernels, dim=1).reshape(-1, weight.shape[1], taps, taps)
        self.weight = nn.Parameter(folded, requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
        self.bias = nn.Parameter(bias.repeat_interleave(4), requires_grad=False)
        self.direct = conv  # for the border strips, with its own padding mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero, replicate and circular padding commute with nearest upsampling, so padding the low-res
        # input the same way is exact; reflect does not (it mirrors around a repeated pixel), so its
        # border strips are redone the direct way below.
        mode = {"zeros": "constant", "circular": "circular"}.get(self.padding_mode, "replicate")
        padded = F.pad(x, (self.pad,) * 4, mode=mode)
        y = F.pixel_shuffle(F.conv2d(padded, self.weight, self.bias), 2)
        if self.padding_mode != "reflect" or self.border == 0:
            return y
        b = self.border
        if min(x.shape[-2:]) < b:  # too small for strips: the direct way throughout
            return self._direct(x)
        y[:, :, :b] = self._direct(x[:, :, :b])[:, :, :b]
        y[:, :, -b:] = self._direct(x[:, :, -b:])[:, :, -b:]
        y[:, :, :, :b] = self._direct(x[:, :, :, :b])[:, :, :, :b]
        y[:, :, :, -b:] = self._direct(x[:, :, :, -b:])[:, :, :, -b:]
        return y

    def _direct(self, x: torch.Tensor) -> torch.Tensor:
        return self.direct(F.interpolate(x, scale_factor=2, mode="nearest"))


def can_fold(conv: nn.Module) -> bool:
    """Whether ``conv`` after a nearest ×2 upsample can become an :class:`UpsampledConv`."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.kernel_size[0] % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == ((conv.kernel_size[0] - 1) // 2,) * 2
    )


def _is_nearest_x2(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Upsample)
        and module.mode == "nearest"
        and module.size is None
        and module.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
    )


def fold_upsampling(module: nn.Module) -> int:
    """Replace, in place, each nearest ×2 ``Upsample`` followed by a foldable conv (alone or first in a
    ``Sequential``) inside any ``Sequential`` of ``module``. Returns how many were folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            nxt = seq[i + 1]
            host, key = (nxt, "0") if isinstance(nxt, nn.Sequential) and len(nxt) else (seq, str(i + 1))
            conv = host._modules[key]
            if _is_nearest_x2(seq[i]) and isinstance(conv, nn.Conv2d) and can_fold(conv):
                seq._modules[str(i)] = nn.Identity()
                host._modules[key] = UpsampledConv(conv)
                folded += 1
    return folded


def two_pass_instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.instance_norm(x, eps=eps)`` (no affine, biased variance) as two mean reductions, computed in
    fp32 and returned in ``x``'s dtype.

    Same numbers up to float rounding. Inductor's CPU backend vectorises these reductions across the
    channels of a channels-last tensor; its fused instance norm there reduces one channel at a time
    with scalar loads (8× slower for the 16-channel full-resolution layer, a sixth of the forward).
    """
    dtype, x = x.dtype, x.float()
    centred = x - x.mean((2, 3), keepdim=True)
    return (centred * torch.rsqrt(centred.square().mean((2, 3), keepdim=True) + eps)).to(dtype)


class TwoPassInstanceNorm(nn.Module):
    """Drop-in for ``nn.InstanceNorm2d(affine=False)`` computed by :func:`two_pass_instance_norm`."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return two_pass_instance_norm(x, self.eps)


def _switch_instance_norms(
    module: nn.Module, norm: Callable[[float], nn.Module], adain: Callable[[AdaINResBlock], None]
) -> int:
    """Replace, in place, every affine-free ``nn.InstanceNorm2d`` in ``module`` by ``norm(eps)`` and call
    ``adain`` on every AdaIN block (to switch its functional norm). Returns how many were switched."""
    switched = 0
    for parent in list(module.modules()):
        if isinstance(parent, AdaINResBlock):
            adain(parent)
            switched += 1
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.affine and not child.track_running_stats:
                parent._modules[name] = norm(child.eps)
                switched += 1
    return switched


def use_two_pass_instance_norms(module: nn.Module) -> int:
    """Switch, in place, every affine-free instance norm in ``module`` (``nn.InstanceNorm2d`` modules and
    the AdaIN blocks' functional norm) to :func:`two_pass_instance_norm`. Returns how many were switched."""

    def adain(block: AdaINResBlock) -> None:
        block.instance_norm = two_pass_instance_norm

    return _switch_instance_norms(module, TwoPassInstanceNorm, adain)


def samplewise_instance_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """``F.instance_norm(x, eps=eps)``, then optionally a per-sample affine (``weight`` and ``bias`` N×C:
    AdaIN's ``1 + scale`` and ``shift``), as one batch norm per sample.

    Batch statistics over a batch of one sample are that sample's instance statistics, and one sample of
    a channels-last batch is a contiguous H×W×C block that torch's CPU batch norm normalises in that
    layout, accumulating bf16 in fp32 and applying the affine in the same pass (one rounding).
    ``F.instance_norm`` copies a channels-last input to NCHW and returns NCHW, which the next convolution
    reorders back: for a bf16 8×16×128×256 batch with AdaIN's affine and ReLU this is 5.1 ms against
    7.1 ms (10.7 ms with the layout restored) on one core.
    """
    weight = None if weight is None else weight.float()
    bias = None if bias is None else bias.float()
    out = [
        F.batch_norm(
            x[i : i + 1],
            None,
            None,
            None if weight is None else weight[i],
            None if bias is None else bias[i],
            training=True,
            momentum=0.0,
            eps=eps,
        )
        for i in range(x.shape[0])
    ]
    return out[0] if len(out) == 1 else torch.cat(out)


class SamplewiseInstanceNorm(nn.Module):
    """Drop-in for ``nn.InstanceNorm2d(affine=False)`` computed by :func:`samplewise_instance_norm`."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return samplewise_instance_norm(x, eps=self.eps)


def use_samplewise_instance_norms(module: nn.Module) -> int:
    """Switch, in place, every affine-free instance norm in ``module`` to :func:`samplewise_instance_norm`,
    the AdaIN blocks' norm and modulation to one call of it. Returns how many were switched."""

    def adain(block: AdaINResBlock) -> None:
        block.modulated_norm = samplewise_instance_norm

    return _switch_instance_norms(module, SamplewiseInstanceNorm, adain)


class InferenceGraph(nn.Module):
    """Sim content encoder → real decoder with the stored real style: the translation and nothing else.

    ``norms`` swaps the instance norms: ``two_pass`` for :func:`two_pass_instance_norm` (for compiling),
    ``samplewise`` for :func:`samplewise_instance_norm` (eager channels-last on CPU), ``native`` keeps them.
    """

    style: torch.Tensor

    def __init__(self, translator: Translator, fold: bool = True, norms: str = "native") -> None:
        super().__init__()
        self.content = copy.deepcopy(translator.sim.content)
        self.decoder = copy.deepcopy(translator.real.decoder)
        self.register_buffer("style", translator.real_style.detach().clone())
        self.folded = fold_upsampling(self.decoder) if fold else 0
        if norms == "two_pass":
            use_two_pass_instance_norms(self)
        elif norms == "samplewise":
            use_samplewise_instance_norms(self)
        elif norms != "native":
            raise ValueError(f"norms {norms!r}: expected native, two_pass or samplewise")
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (H, W divisible by the stride) → real style in [-1, 1]."""
        content = self.content(x)
        return self.decoder(content, self.style.to(content.dtype).expand(x.shape[0], -1))
