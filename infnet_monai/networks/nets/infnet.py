"""Inf-Net: lung infection segmentation network (Fan et al., IEEE TMI 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from infnet_monai.networks.blocks.infnet_blocks import (
    EdgeAttention,
    PartialDecoder,
    ReceptiveFieldBlock,
    ReverseAttention,
    resize_to,
)
from infnet_monai.networks.nets.res2net import Res2Net

__all__ = ["InfNet", "InfNetOutput", "INFNET_LIGHT"]


class InfNetOutput(NamedTuple):
    """Supervised outputs of :class:`InfNet` in training mode, all logits at the input size.

    Attributes:
        global_map: the partial decoder's coarse map, ``(B, out_channels, *S)``.
        stage4_map: refined by the stage-4 reverse attention, ``(B, out_channels, *S)``.
        stage3_map: refined by the stage-3 reverse attention, ``(B, out_channels, *S)``.
        stage2_map: refined by the stage-2 reverse attention (the final prediction), ``(B, out_channels, *S)``.
        edge_map: edge logits, ``(B, 1, *S)``.
    """

    global_map: torch.Tensor
    stage4_map: torch.Tensor
    stage3_map: torch.Tensor
    stage2_map: torch.Tensor
    edge_map: torch.Tensor

    def segmentation_maps(self) -> tuple[torch.Tensor, ...]:
        """The four segmentation maps, coarse to fine."""
        return (self.global_map, self.stage4_map, self.stage3_map, self.stage2_map)


# A light configuration that trains on CPUs: Res2Net with 2 blocks per stage and half-width stages.
INFNET_LIGHT: dict = {"layers": (2, 2, 2, 2), "planes": (32, 64, 128, 256), "stem_channels": (16, 16, 32)}


class InfNet(nn.Module):
    """Inf-Net: Res2Net backbone, receptive-field blocks, parallel partial decoder, edge attention and three
    reverse-attention modules with residual refinement.

    The defaults are the paper configuration (Res2Net-50 v1b 26w4s, 3 input channels, 32 channels after the
    receptive-field blocks, 64 edge-guidance channels), randomly initialised: nothing is downloaded.

    In training mode ``forward`` returns an :class:`InfNetOutput` with every supervised output (four segmentation
    maps and the edge map, all logits at the input size). In eval mode it returns a single tensor, the finest
    (stage-2) map's logits at the input size, so MONAI inferers (``SimpleInferer``, ``SliceInferer``,
    ``SlidingWindowInferer``) use it unchanged.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 in the paper: the grey slice replicated).
        out_channels: segmentation channels (1: infection; more for multi-class, one logit map per class).
        layers: Res2Net blocks per stage (``(3, 4, 6, 3)`` = Res2Net-50).
        planes: bottleneck planes of the four stages (the stage outputs have 4x as many channels).
        stem_channels: channels of the v1b stem's three convolutions.
        rfb_channels: channels after the receptive-field blocks (32 in the paper).
        edge_channels: channels of the edge guidance (64 in the paper).
        ra_channels: channels of the reverse-attention modules for stages 4, 3 and 2 (256, 64, 64 in the paper).
        norm: normalisation for MONAI's factory.
        act: activation of the decoder's convolution blocks; ``None`` reproduces the reference code, whose basic
            block never applies its activation.
        backbone_options: further :class:`~infnet_monai.networks.nets.Res2Net` options, e.g. ``base_width`` (group
            width per 64 planes, 26) and ``scale`` (groups, 4), the Res2Net-50 26w4s of the paper by default.

    Shapes:
        input ``(B, in_channels, *S)`` with every spatial size a multiple of 32; eval output
        ``(B, out_channels, *S)``.

    Example::

        net = InfNet().eval()
        logits = net(torch.rand(1, 3, 352, 352))  # (1, 1, 352, 352)

    References:
        Fan, Zhou, Ji, Zhou, Chen, Fu, Shen, Shao, "Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT
        Images", IEEE Transactions on Medical Imaging 39(8):2626-2637, 2020.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        layers: Sequence[int] = (3, 4, 6, 3),
        planes: Sequence[int] = (64, 128, 256, 512),
        stem_channels: Sequence[int] = (32, 32, 64),
        rfb_channels: int = 32,
        edge_channels: int = 64,
        ra_channels: Sequence[int] = (256, 64, 64),
        norm: tuple | str = "BATCH",
        act: tuple | str | None = "RELU",
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
        if len(ra_channels) != 3:
            raise ValueError(f"ra_channels needs 3 values (stages 4, 3, 2), got {ra_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.backbone = Res2Net(
            spatial_dims,
            in_channels,
            layers=layers,
            stem_channels=stem_channels,
            planes=planes,
            norm=norm,
            **backbone_options,
        )
        c1, c2, c3, c4 = self.backbone.out_channels
        self.rfb2 = ReceptiveFieldBlock(spatial_dims, c2, rfb_channels, norm=norm, act=act)
        self.rfb3 = ReceptiveFieldBlock(spatial_dims, c3, rfb_channels, norm=norm, act=act)
        self.rfb4 = ReceptiveFieldBlock(spatial_dims, c4, rfb_channels, norm=norm, act=act)
        self.decoder = PartialDecoder(spatial_dims, rfb_channels, out_channels, norm=norm, act=act)
        self.edge = EdgeAttention(spatial_dims, c1, edge_channels, 1, norm=norm, act=act)
        # the paper's refinement: three 5x5 convolutions and a 1x1 head at stage 4, two 3x3 and a 3x3 head below
        ra = {"edge_channels": edge_channels, "out_channels": out_channels, "norm": norm, "act": act}
        self.ra4 = ReverseAttention(spatial_dims, c4, ra_channels[0], kernel_sizes=(5, 5, 5), head_kernel_size=1, **ra)
        self.ra3 = ReverseAttention(spatial_dims, c3, ra_channels[1], kernel_sizes=(3, 3), head_kernel_size=3, **ra)
        self.ra2 = ReverseAttention(spatial_dims, c2, ra_channels[2], kernel_sizes=(3, 3), head_kernel_size=3, **ra)

    def forward(self, x: torch.Tensor) -> torch.Tensor | InfNetOutput:
        size = x.shape[2:]
        f1, f2, f3, f4 = self.backbone(x)
        guidance, edge_logits = self.edge(f1)
        global_map = self.decoder(self.rfb4(f4), self.rfb3(f3), self.rfb2(f2))  # at the stage-2 resolution
        map4 = self.ra4(f4, global_map, guidance)
        map3 = self.ra3(f3, map4, guidance)
        map2 = self.ra2(f2, map3, guidance)
        if not self.training:
            return resize_to(map2, size)
        return InfNetOutput(
            global_map=resize_to(global_map, size),
            stage4_map=resize_to(map4, size),
            stage3_map=resize_to(map3, size),
            stage2_map=resize_to(map2, size),
            edge_map=resize_to(edge_logits, size),
        )
