"""Res2Net backbone (Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", IEEE TPAMI 2021), "v1b" variant.

The v1b variant, used by Inf-Net, differs from the original Res2Net in two places:

* the stem is three 3x3 convolutions (``in -> 32 -> 32 -> 64``, the first with stride 2) instead of one 7x7;
* a downsampling shortcut is an average pool (kernel = stride) followed by a stride-1 1x1 convolution, so no
  activations are discarded by a strided 1x1 convolution.

The network here returns the four stage features (no classification head), for 2D or 3D inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Pad, Pool, split_args

__all__ = ["Res2NetBottleneck", "Res2Net", "res2net50_v1b_26w_4s", "RES2NET_LAYERS"]

# stage depths of the named configurations
RES2NET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "res2net50": (3, 4, 6, 3),
    "res2net101": (3, 4, 23, 3),
    "res2net26": (2, 2, 2, 2),
}


def _act(act: tuple | str | None) -> nn.Module:
    if act is None:
        return nn.Identity()
    name, args = split_args(act)
    return Act[name](**args)


class Res2NetBottleneck(nn.Module):
    """Res2Net bottleneck: 1x1 reduce, hierarchical 3x3 convolutions over ``scale`` channel groups, 1x1 expand.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        planes: bottleneck planes; the block outputs ``planes * expansion`` channels.
        stride: stride of the 3x3 convolutions (and of the shortcut).
        base_width: width of one group per 64 planes (26 in the paper configuration).
        scale: number of channel groups (4 in the paper configuration).
        first_in_stage: the first block of a stage does not add the previous group's output to the next group's
            input and pools its last group, as in the reference design ("stage" block).
        norm: normalisation layer name/args for MONAI's factory.
        act: activation name/args for MONAI's factory.
    """

    expansion: int = 4

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        planes: int,
        stride: int = 1,
        base_width: int = 26,
        scale: int = 4,
        first_in_stage: bool = False,
        norm: tuple | str = "BATCH",
        act: tuple | str = "RELU",
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}.")
        width = int(planes * (base_width / 64.0))
        out_channels = planes * self.expansion
        self.scale = scale
        self.width = width
        self.first_in_stage = first_in_stage

        self.reduce = Convolution(
            spatial_dims, in_channels, width * scale, kernel_size=1, norm=norm, act=act, bias=False
        )
        num_convs = max(scale - 1, 1)
        self.convs = nn.ModuleList(
            Convolution(spatial_dims, width, width, strides=stride, kernel_size=3, norm=norm, act=act, bias=False)
            for _ in range(num_convs)
        )
        # the last group bypasses the 3x3 convs; in a stage's first block it is pooled to match the stride
        self.last_pool: nn.Module = nn.Identity()
        if first_in_stage and scale > 1:
            # explicit zero padding (counted in the average, like ``padding=1``): torch's 3D average pool rejects
            # inputs smaller than the kernel even when padding would make them large enough
            self.last_pool = nn.Sequential(
                Pad[Pad.CONSTANTPAD, spatial_dims](padding=1, value=0.0),
                Pool[Pool.AVG, spatial_dims](kernel_size=3, stride=stride),
            )
        self.expand = Convolution(
            spatial_dims, width * scale, out_channels, kernel_size=1, norm=norm, act=None, bias=False
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            layers: list[nn.Module] = []
            if stride != 1:
                layers.append(
                    Pool[Pool.AVG, spatial_dims](
                        kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False
                    )
                )
            layers.append(
                Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, norm=norm, act=None, bias=False)
            )
            self.shortcut = nn.Sequential(*layers)
        self.out_act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reduce(x)
        if self.scale == 1:
            out = self.convs[0](out)
        else:
            groups = torch.split(out, self.width, dim=1)
            outputs = []
            sp = groups[0]
            for i, conv in enumerate(self.convs):
                if i > 0:
                    sp = groups[i] if self.first_in_stage else sp + groups[i]
                sp = conv(sp)
                outputs.append(sp)
            outputs.append(self.last_pool(groups[-1]))
            out = torch.cat(outputs, dim=1)
        out = self.expand(out)
        return self.out_act(out + self.shortcut(x))


class Res2Net(nn.Module):
    """Res2Net "v1b" feature extractor returning the four stage features.

    For a ``(B, in_channels, H, W)`` input (or ``(B, in_channels, H, W, D)`` in 3D) the outputs are, with
    ``c = 64 * expansion``:

    * stage 1: ``(B, c, H/4, W/4)``, stage 2: ``(B, 2c, H/8, W/8)``,
    * stage 3: ``(B, 4c, H/16, W/16)``, stage 4: ``(B, 8c, H/32, W/32)``.

    With the defaults (Res2Net-50 v1b 26w4s, the configuration of Inf-Net) ``c = 256``, so 256 / 512 / 1024 / 2048
    channels at 1/4, 1/8, 1/16 and 1/32 of the input size.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels (3 for the paper's replicated grey slice).
        layers: number of bottleneck blocks per stage; ``(3, 4, 6, 3)`` is Res2Net-50, ``(2, 2, 2, 2)`` a light
            variant for CPU training.
        base_width: width of one Res2Net group per 64 planes.
        scale: number of Res2Net groups.
        stem_channels: channels of the three stem convolutions (32, 32, 64 in v1b).
        planes: bottleneck planes of the four stages (64, 128, 256, 512 in ResNet-50); smaller values give a
            narrower network.
        norm: normalisation layer for MONAI's factory.
        act: activation for MONAI's factory.

    References:
        Gao, Cheng, Zhao, Zhang, Yang, Torr, "Res2Net: A New Multi-scale Backbone Architecture", IEEE TPAMI 2021.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        layers: Sequence[int] = (3, 4, 6, 3),
        base_width: int = 26,
        scale: int = 4,
        stem_channels: Sequence[int] = (32, 32, 64),
        planes: Sequence[int] = (64, 128, 256, 512),
        norm: tuple | str = "BATCH",
        act: tuple | str = "RELU",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(layers) != 4 or len(planes) != 4:
            raise ValueError(f"layers and planes need 4 stages, got layers={layers}, planes={planes}.")
        if any(int(n) < 1 for n in layers):
            raise ValueError(f"every stage needs at least one block, got layers={layers}.")
        if len(stem_channels) != 3:
            raise ValueError(f"stem_channels needs 3 values, got {stem_channels}.")
        self.spatial_dims = spatial_dims
        c1, c2, c3 = (int(c) for c in stem_channels)
        self.stem = nn.Sequential(
            Convolution(spatial_dims, in_channels, c1, strides=2, kernel_size=3, norm=norm, act=act, bias=False),
            Convolution(spatial_dims, c1, c2, kernel_size=3, norm=norm, act=act, bias=False),
            Convolution(spatial_dims, c2, c3, kernel_size=3, norm=norm, act=act, bias=False),
            Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1),
        )
        stages = []
        channels = c3
        for i, (n_blocks, n_planes) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(int(n_blocks)):
                blocks.append(
                    Res2NetBottleneck(
                        spatial_dims,
                        channels,
                        int(n_planes),
                        stride=stride if b == 0 else 1,
                        base_width=base_width,
                        scale=scale,
                        first_in_stage=b == 0,
                        norm=norm,
                        act=act,
                    )
                )
                channels = int(n_planes) * Res2NetBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(int(p) * Res2NetBottleneck.expansion for p in planes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
                if getattr(m, "weight", None) is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the four stage features, finest first (see the class docstring for shapes)."""
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def res2net50_v1b_26w_4s(spatial_dims: int = 2, in_channels: int = 3, **kwargs) -> Res2Net:
    """Res2Net-50 v1b 26w4s, the backbone of the Inf-Net paper (random initialisation; no download)."""
    return Res2Net(spatial_dims, in_channels, layers=RES2NET_LAYERS["res2net50"], base_width=26, scale=4, **kwargs)
