"""SegNet, the shared encoder-decoder of MTAN's Cityscapes and NYUv2 experiments (from scratch).

The network of lorenmt/mtan's ``model_segnet_split.py`` (used by CAGrad, Nash-MTL and the CSO
paper's Cityscapes table) without its task heads: five encoder stages of conv-BN-ReLU layers
with (w, 2w, 4w, 8w, 8w) channels, each followed by a 2x2 max pool that keeps its indices, and
five mirrored decoder stages that unpool with those indices. Stages 1-2 have two conv layers,
stages 3-5 three, in the encoder and the decoder alike. The output is [B, w, H, W] features;
MTAN's heads (a 3x3 and a 1x1 conv per task) come from :class:`taskprio.models.DenseHead`.

Departures from MTAN's code: the convs have no bias (each is followed by a BatchNorm, whose
mean subtraction cancels a bias, so its gradient is always zero), and unpooling restores each
stage's exact size, so inputs need not be multiples of 32.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class SegNet(nn.Module):
    """SegNet encoder-decoder: [B, 3, H, W] → [B, width, H, W] features, trained from scratch.

    Args:
        width: channels of the first stage (64 in MTAN); the stages have (w, 2w, 4w, 8w, 8w)
            channels. Use a smaller width for a reduced model (16 has 1/16 of the parameters).
        in_channels: input channels.

    Attributes:
        out_channels: channels of the output features, `width`.
        output_stride: 1, the output has the input's size.

    >>> import torch
    >>> trunk = SegNet(width=4)
    >>> tuple(trunk(torch.zeros(2, 3, 40, 56)).shape)
    (2, 4, 40, 56)
    >>> sum(p.numel() for p in SegNet().parameters())  # MTAN's shared SegNet, without biases
    24936128
    """

    output_stride = 1

    def __init__(self, *, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if width < 1 or in_channels < 1:
            raise ValueError(
                f"`width` and `in_channels` must be positive; got {width} and {in_channels}."
            )
        self.width = width
        self.out_channels = width
        channels = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        encoder, decoder = [], []
        for stage in range(5):
            enter = in_channels if stage == 0 else channels[stage - 1]
            depth = 2 if stage < 2 else 3
            c = channels[stage]
            # Encoder stage: enter → c, then c → c.
            encoder.append(
                nn.Sequential(
                    _conv_bn_relu(enter, c), *[_conv_bn_relu(c, c) for _ in range(depth - 1)]
                )
            )
            # Decoder stage (run in reverse order): c → the previous stage's channels (the
            # first stage's decoder keeps w), then convs at those channels.
            leave = channels[stage - 1] if stage > 0 else c
            decoder.append(
                nn.Sequential(
                    _conv_bn_relu(c, leave),
                    *[_conv_bn_relu(leave, leave) for _ in range(depth - 1)],
                )
            )
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(decoder)

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, H, W] → [B, width, H, W] features; H and W must be at least 32."""
        if min(x.shape[-2:]) < 32:
            raise ValueError(
                f"SegNet halves its input 5 times, so images must be at least 32x32; got "
                f"{tuple(x.shape[-2:])}. Use larger images or ResNet18Dilated."
            )
        indices, sizes = [], []
        for encode in self.encoder:  # stage s: [B, c_s, H/2^s, W/2^s] → pooled by 2
            x = encode(x)
            sizes.append(list(x.shape[-2:]))
            x, index = functional.max_pool2d(x, 2, stride=2, return_indices=True)
            indices.append(index)
        for stage in reversed(range(5)):  # unpool to the stage's exact size, then decode
            x = functional.max_unpool2d(x, indices[stage], (2, 2), (2, 2), output_size=sizes[stage])
            decode: nn.Module = self.decoder[stage]
            x = decode(x)
        return x

    def extra_repr(self) -> str:
        return f"width={self.width}"
