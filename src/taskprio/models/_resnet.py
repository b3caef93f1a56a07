"""A dilated ResNet-18 trunk (output stride 8) for dense prediction, trained from scratch.

The layout is torchvision's ResNet-18 with the last two stages dilated instead of strided, as
in MTAN's ``resnet_dilated.py`` and MTI-Net's ResNet backbones: a 7x7/2 stem conv and a 3x3/2
max pool (stride 4), four stages of two basic blocks with (w, 2w, 4w, 8w) channels, the second
stage strided (stride 8), the third and fourth dilated by 2 and 4 (their first convs by 1 and
2, where torchvision's would stride).

No pretrained weights are available offline, so the trunk always starts from a random
initialization (Kaiming normal convs, BatchNorm γ = 1, β = 0). Results are therefore not
comparable with numbers from ImageNet-initialized backbones (MTI-Net, the CSO paper's NYUD and
PASCAL tables).

Every conv is bias-free and followed directly by a BatchNorm, and the residual additions come
after the norms, so each conv is a connection CSO can read.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (identity, or 1x1 conv-BN), then ReLU.

    Args:
        in_channels: input channels.
        channels: output channels.
        stride: the first conv's stride (and the shortcut's).
        first_dilation: the first conv's dilation.
        dilation: the second conv's dilation.
    """

    def __init__(
        self, in_channels: int, channels: int, *, stride: int, first_dilation: int, dilation: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels,
            channels,
            3,
            stride=stride,
            padding=first_dilation,
            dilation=first_dilation,
            bias=False,
        )
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """[B, in, H, W] → [B, channels, H / stride, W / stride]."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        summed: Tensor = self.relu(out + shortcut)
        return summed


def _stage(in_channels: int, channels: int, *, stride: int, dilation: int) -> nn.Sequential:
    """Two basic blocks; a dilated stage's first conv is dilated half as much (torchvision)."""
    first_dilation = max(1, dilation // 2)
    return nn.Sequential(
        BasicBlock(
            in_channels, channels, stride=stride, first_dilation=first_dilation, dilation=dilation
        ),
        BasicBlock(channels, channels, stride=1, first_dilation=dilation, dilation=dilation),
    )


class ResNet18Dilated(nn.Module):
    """ResNet-18 with output stride 8: [B, 3, H, W] → [B, 8·width, ⌈H/8⌉, ⌈W/8⌉].

    From scratch only (see the module docstring): no pretrained weights are available offline.

    Args:
        width: channels of the first stage (64 in ResNet-18); the stages have
            (width, 2·width, 4·width, 8·width) channels. Small widths make test-sized models.
        in_channels: input channels.

    Attributes:
        out_channels: channels of the output features, 8·width.
        output_stride: 8, the input size over the feature size.

    >>> import torch
    >>> trunk = ResNet18Dilated(width=8)
    >>> tuple(trunk(torch.zeros(2, 3, 32, 48)).shape)
    (2, 64, 4, 6)
    >>> sum(p.numel() for p in ResNet18Dilated().parameters())  # torchvision's, minus the fc
    11176512
    """

    output_stride = 8

    def __init__(self, *, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if width < 1 or in_channels < 1:
            raise ValueError(
                f"`width` and `in_channels` must be positive; got {width} and {in_channels}."
            )
        self.width = width
        self.out_channels = 8 * width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),  # [B, w, H/2, W/2]
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),  # [B, w, H/4, W/4]
        )
        self.layer1 = _stage(width, width, stride=1, dilation=1)  # [B, w, H/4, W/4]
        self.layer2 = _stage(width, 2 * width, stride=2, dilation=1)  # [B, 2w, H/8, W/8]
        self.layer3 = _stage(2 * width, 4 * width, stride=1, dilation=2)  # [B, 4w, H/8, W/8]
        self.layer4 = _stage(4 * width, 8 * width, stride=1, dilation=4)  # [B, 8w, H/8, W/8]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, H, W] → [B, 8·width, ⌈H/8⌉, ⌈W/8⌉] features."""
        x = self.stem(x)
        x = self.layer2(self.layer1(x))
        out: Tensor = self.layer4(self.layer3(x))
        return out

    def extra_repr(self) -> str:
        return f"width={self.width}, output_stride={self.output_stride}"
