"""Masked-image-modelling wrapper for pretraining an encoder (SimMIM-style: deep features, one linear head)."""

from __future__ import annotations

import torch
import torch.nn as nn

from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Conv

__all__ = ["MaskedImageModel"]


class MaskedImageModel(nn.Module):
    """Reconstruct the hidden patches of an image from the deepest features of an encoder.

    Following SimMIM (Xie et al., "SimMIM: a Simple Framework for Masked Image Modeling", CVPR 2022), the head is
    deliberately weak, a 1x1 convolution and a pixel shuffle back to full resolution, so the encoder has to carry the
    knowledge. The encoder must return a list of feature maps, deepest last (as
    :class:`~infnet_monai.networks.nets.Res2Net` does).

    Args:
        encoder: the network being pretrained (for Inf-Net: ``InfNet(...).backbone``).
        encoder_channels: channels of the deepest feature map (``encoder.out_channels[-1]`` when present).
        spatial_dims: 2 or 3.
        out_channels: channels of the reconstruction (the image channels).
        stride: total stride of the deepest feature map (32 for Res2Net).

    Shapes: ``(B, out_channels, *spatial) -> (B, out_channels, *spatial)``; spatial sizes must be multiples of
    ``stride``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        encoder_channels: int | None = None,
        spatial_dims: int = 2,
        out_channels: int = 1,
        stride: int = 32,
    ) -> None:
        super().__init__()
        if encoder_channels is None:
            channels = getattr(encoder, "out_channels", None)
            if not channels:
                raise ValueError("encoder_channels is required for an encoder without an out_channels attribute.")
            encoder_channels = int(channels[-1])
        self.encoder = encoder
        self.stride = stride
        head_conv = Conv[Conv.CONV, spatial_dims](encoder_channels, out_channels * stride**spatial_dims, kernel_size=1)
        self.head = SubpixelUpsample(
            spatial_dims, encoder_channels, out_channels, scale_factor=stride, conv_block=head_conv, apply_pad_pool=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.stride for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be a multiple of {self.stride}.")
        return self.head(self.encoder(x)[-1])
