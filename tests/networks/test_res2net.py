import pytest
import torch

from infnet_monai.networks.nets import Res2Net, Res2NetBottleneck, res2net50_v1b_26w_4s


def test_res2net50_stage_layout():
    net = res2net50_v1b_26w_4s()
    assert [len(s) for s in net.stages] == [3, 4, 6, 3]
    first = net.stages[0][0]
    assert first.width == 26 and first.scale == 4
    # v1b stem: three 3x3 convolutions 3 -> 32 -> 32 -> 64, the first with stride 2
    convs = [m.conv for m in net.stem if hasattr(m, "conv")]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(3, 32, (2, 2)), (32, 32, (1, 1)), (32, 64, (1, 1))]
    # v1b downsampling shortcut: average pool then 1x1 convolution with stride 1
    shortcut = net.stages[1][0].shortcut
    assert isinstance(shortcut[0], torch.nn.AvgPool2d)
    assert shortcut[1].conv.stride == (1, 1)


@pytest.mark.parametrize("spatial_dims, size", [(2, (64, 96)), (3, (32, 32, 64))])
def test_light_variant_stage_shapes(spatial_dims, size):
    net = Res2Net(spatial_dims, in_channels=2, layers=(2, 2, 2, 2), planes=(8, 16, 32, 64), stem_channels=(8, 8, 16))
    with torch.no_grad():
        feats = net.eval()(torch.rand(1, 2, *size))
    for i, f in enumerate(feats):
        assert f.shape[1] == net.out_channels[i]
        assert tuple(f.shape[2:]) == tuple(s // 2 ** (i + 2) for s in size)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_bottleneck_scales(scale):
    block = Res2NetBottleneck(2, 16, 8, stride=2, base_width=26, scale=scale, first_in_stage=True)
    out = block(torch.rand(1, 16, 16, 16))
    assert out.shape == (1, 32, 8, 8)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        Res2Net(spatial_dims=4)
    with pytest.raises(ValueError, match="at least one block"):
        Res2Net(layers=(0, 1, 1, 1))
    with pytest.raises(ValueError, match="scale"):
        Res2NetBottleneck(2, 8, 8, scale=0)
