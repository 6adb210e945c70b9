"""Building blocks of Inf-Net (Fan et al., IEEE TMI 2020), for 2D and 3D.

* :class:`ReceptiveFieldBlock`: multi-branch block with asymmetric and dilated convolutions that reduces a backbone
  stage to a few channels while enlarging its receptive field.
* :class:`PartialDecoder`: parallel partial decoder fusing the three deepest reduced features into a coarse global
  map.
* :class:`EdgeAttention`: low-level edge guidance features plus an edge prediction head.
* :class:`ReverseAttention`: erases what the coarser prediction already found, refines the remainder with the help of
  the edge guidance, and adds the refinement to the coarser prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai.networks.blocks import Convolution

__all__ = [
    "ConvBlock",
    "ReceptiveFieldBlock",
    "PartialDecoder",
    "EdgeAttention",
    "ReverseAttention",
    "resize_to",
]


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``x`` (B, C, *spatial) to ``size`` with (bi/tri)linear interpolation, ``align_corners=True``.

    Returns ``x`` itself when it already has that size.
    """
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=tuple(int(s) for s in size), mode=mode, align_corners=True)


class ConvBlock(Convolution):
    """Convolution + batch norm (+ activation), with "same" padding for any kernel size and dilation.

    The Inf-Net reference code's basic block applies no activation in its forward pass (its ReLU is created but
    never called); pass ``act=None`` to reproduce that. The default applies the activation, as the paper describes.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        dilation: Sequence[int] | int = 1,
        norm: tuple | str | None = "BATCH",
        act: tuple | str | None = "RELU",
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            dilation=dilation,
            norm=norm,
            act=act,
            bias=False,
        )


class ReceptiveFieldBlock(nn.Module):
    """Receptive-field block: four parallel branches, concatenated, fused, plus a 1x1 residual.

    Branch 0 is a 1x1 convolution. Branch ``k`` (k = 3, 5, 7 by default) is a 1x1 convolution, then one
    convolution of length ``k`` along each spatial axis (1xk then kx1 in 2D), then a 3x3 convolution dilated by ``k``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        kernel_sizes: asymmetric kernel lengths of the dilated branches.
        norm: normalisation for MONAI's factory.
        act: activation inside the branches (``None`` reproduces the reference code).

    Shapes:
        ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        norm: tuple | str | None = "BATCH",
        act: tuple | str | None = "RELU",
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBlock(spatial_dims, in_channels, out_channels, 1, norm=norm, act=act)]
        for k in kernel_sizes:
            layers: list[nn.Module] = [ConvBlock(spatial_dims, in_channels, out_channels, 1, norm=norm, act=act)]
            # one 1D convolution per axis, last axis first (1xk then kx1 in 2D)
            for axis in reversed(range(spatial_dims)):
                kernel = [1] * spatial_dims
                kernel[axis] = int(k)
                layers.append(ConvBlock(spatial_dims, out_channels, out_channels, kernel, norm=norm, act=act))
            layers.append(ConvBlock(spatial_dims, out_channels, out_channels, 3, dilation=int(k), norm=norm, act=act))
            branches.append(nn.Sequential(*layers))
        self.branches = nn.ModuleList(branches)
        self.fuse = ConvBlock(spatial_dims, len(branches) * out_channels, out_channels, 3, norm=norm, act=act)
        self.residual = ConvBlock(spatial_dims, in_channels, out_channels, 1, norm=norm, act=act)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.act(fused + self.residual(x))


class PartialDecoder(nn.Module):
    """Parallel partial decoder: aggregates three reduced features, coarse to fine, into one global map.

    With ``c`` channels per input, the coarsest feature is upsampled and multiplied into the finer ones, then the
    streams are concatenated (``2c`` then ``3c`` channels) and projected to ``out_channels`` logits.

    Args:
        spatial_dims: 2 or 3.
        channels: channels ``c`` of each input feature (32 in the paper).
        out_channels: channels of the output map.
        norm: normalisation for MONAI's factory.
        act: activation of the convolutions (``None`` reproduces the reference code).

    Shapes:
        inputs ``f_coarse (B, c, *S/4)``, ``f_mid (B, c, *S/2)``, ``f_fine (B, c, *S)``; output
        ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int = 32,
        out_channels: int = 1,
        norm: tuple | str | None = "BATCH",
        act: tuple | str | None = "RELU",
    ) -> None:
        super().__init__()
        c = channels

        def block(cin: int, cout: int) -> ConvBlock:
            return ConvBlock(spatial_dims, cin, cout, 3, norm=norm, act=act)

        self.coarse_to_mid = block(c, c)
        self.coarse_to_fine = block(c, c)
        self.mid_to_fine = block(c, c)
        self.coarse_skip = block(c, c)
        self.mid_stream_to_fine = block(2 * c, 2 * c)
        self.fuse_mid = block(2 * c, 2 * c)
        self.fuse_fine = block(3 * c, 3 * c)
        self.refine = block(3 * c, 3 * c)
        self.head = Convolution(spatial_dims, 3 * c, out_channels, kernel_size=1, conv_only=True, bias=True)

    def forward(self, f_coarse: torch.Tensor, f_mid: torch.Tensor, f_fine: torch.Tensor) -> torch.Tensor:
        mid_size, fine_size = f_mid.shape[2:], f_fine.shape[2:]
        coarse_at_mid = resize_to(f_coarse, mid_size)
        coarse_at_fine = resize_to(f_coarse, fine_size)
        mid = self.coarse_to_mid(coarse_at_mid) * f_mid
        fine = self.coarse_to_fine(coarse_at_fine) * self.mid_to_fine(resize_to(f_mid, fine_size)) * f_fine
        mid = self.fuse_mid(torch.cat([mid, self.coarse_skip(coarse_at_mid)], dim=1))
        fine = torch.cat([fine, self.mid_stream_to_fine(resize_to(mid, fine_size))], dim=1)
        fine = self.refine(self.fuse_fine(fine))
        return self.head(fine)


class EdgeAttention(nn.Module):
    """Edge-attention branch on the finest backbone stage.

    A 1x1 convolution then two 3x3 convolutions give the edge guidance features; one more 3x3 convolution gives the
    edge logits (supervised with the edge maps).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the backbone's first stage (256 in the paper).
        channels: guidance channels (64 in the paper).
        out_channels: channels of the edge logits.
        norm: normalisation for MONAI's factory.
        act: activation of the convolutions (``None`` reproduces the reference code).

    Shapes:
        ``(B, in_channels, *S) -> (guidance (B, channels, *S), edge logits (B, out_channels, *S))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        out_channels: int = 1,
        norm: tuple | str | None = "BATCH",
        act: tuple | str | None = "RELU",
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBlock(spatial_dims, in_channels, channels, 1, norm=norm, act=act),
            ConvBlock(spatial_dims, channels, channels, 3, norm=norm, act=act),
            ConvBlock(spatial_dims, channels, channels, 3, norm=norm, act=act),
        )
        self.head = Convolution(spatial_dims, channels, out_channels, kernel_size=3, conv_only=True, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        guidance = self.features(x)
        return guidance, self.head(guidance)


class ReverseAttention(nn.Module):
    """Reverse attention with residual refinement.

    ``attention = 1 - sigmoid(coarser prediction)`` (with several output channels: 1 minus the largest class
    probability, i.e. "not yet found as any class") erases the regions already segmented; the erased features are
    reduced by a 1x1 convolution, concatenated with the edge guidance, refined by a small convolution stack, and the
    resulting logits are ADDED to the coarser prediction.

    Args:
        spatial_dims: 2 or 3.
        in_channels: backbone stage channels.
        channels: channels after the 1x1 reduction and in the refinement stack.
        edge_channels: channels of the edge guidance (the :class:`EdgeAttention` ``channels``).
        out_channels: prediction channels.
        kernel_sizes: one kernel size per convolution of the refinement stack (three of 5 for stage 4, two of 3
            for stages 3 and 2 in the paper).
        head_kernel_size: kernel of the final projection (1 for stage 4, 3 otherwise).
        norm: normalisation for MONAI's factory.
        act: activation of the convolutions (``None`` reproduces the reference code).

    Shapes:
        ``features (B, in_channels, *S)``, ``coarse (B, out_channels, *S')``, ``guidance (B, edge_channels, *S'')``
        -> refined logits ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        edge_channels: int,
        out_channels: int = 1,
        kernel_sizes: Sequence[int] = (3, 3),
        head_kernel_size: int = 3,
        norm: tuple | str | None = "BATCH",
        act: tuple | str | None = "RELU",
    ) -> None:
        super().__init__()
        self.reduce = ConvBlock(spatial_dims, in_channels, channels, 1, norm=norm, act=act)
        layers: list[nn.Module] = []
        cin = channels + edge_channels
        for kernel_size in kernel_sizes:
            layers.append(ConvBlock(spatial_dims, cin, channels, kernel_size, norm=norm, act=act))
            cin = channels
        self.refine = nn.Sequential(*layers)
        self.head = Convolution(
            spatial_dims, channels, out_channels, kernel_size=head_kernel_size, conv_only=True, bias=True
        )

    def forward(self, features: torch.Tensor, coarse: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        size = features.shape[2:]
        coarse = resize_to(coarse, size)
        prob = torch.sigmoid(coarse)
        if prob.shape[1] > 1:
            prob = prob.amax(dim=1, keepdim=True)
        erased = features * (1.0 - prob)
        x = torch.cat([self.reduce(erased), resize_to(guidance, size)], dim=1)
        return self.head(self.refine(x)) + coarse
