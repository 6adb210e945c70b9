import pytest
import torch

from infnet_monai.networks import InfNet, MaskedImageModel

TINY = {"layers": (1, 1, 1, 1), "planes": (8, 16, 32, 64), "stem_channels": (8, 8, 16), "ra_channels": (16, 16, 16)}


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 1, 64, 96)), (3, (1, 1, 32, 32, 64))])
def test_reconstruction_has_the_input_shape_and_trains_the_encoder(spatial_dims, shape):
    net = InfNet(spatial_dims=spatial_dims, in_channels=1, **TINY)
    model = MaskedImageModel(net.backbone, spatial_dims=spatial_dims)
    x = torch.randn(shape)
    y = model(x)
    assert y.shape == x.shape
    y.abs().mean().backward()
    # the gradient reaches the first layer of the shared backbone
    first = next(net.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_head_is_weak_and_sizes_are_checked():
    net = InfNet(in_channels=1, **TINY)
    model = MaskedImageModel(net.backbone)
    head = sum(p.numel() for p in model.head.parameters())
    assert head == 256 * 1024 + 1024  # one 1x1 convolution from 256 channels to 32*32 sub-pixels
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.zeros(1, 1, 48, 64))


def test_encoder_without_out_channels_needs_them():
    with pytest.raises(ValueError, match="encoder_channels"):
        MaskedImageModel(torch.nn.Identity())
