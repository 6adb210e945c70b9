import pytest
import torch

from infnet_monai.networks import INFNET_LIGHT, InfNet, InfNetOutput

# small, fast configuration for most tests; the paper configuration is checked where it matters
TINY = {"layers": (1, 1, 1, 1), "planes": (8, 16, 32, 64), "stem_channels": (8, 8, 16), "ra_channels": (32, 16, 16)}


def count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("size", [(352, 352), (256, 320), (96, 64), (64, 160)])
def test_2d_eval_output_matches_input_size(size):
    net = InfNet(in_channels=1, **TINY).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, *size)


def test_paper_configuration_2d_shape_and_parameter_count():
    net = InfNet().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 352, 352))
    assert out.shape == (1, 1, 352, 352)
    n = count(net)
    # Res2Net-50 v1b 26w4s without its classifier (23.67 M) plus the Inf-Net decoder; the paper quotes "about 33 M"
    assert 30e6 < n < 33e6, n
    assert count(net.backbone) == pytest.approx(23_669_352, abs=0)


def test_paper_configuration_3d_shape():
    net = InfNet(spatial_dims=3, in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 64, 64, 32))
    assert out.shape == (1, 1, 64, 64, 32)


def test_backbone_stage_shapes_paper_configuration():
    net = InfNet().backbone.eval()
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 352, 352))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 88, 88), (1, 512, 44, 44), (1, 1024, 22, 22), (1, 2048, 11, 11)]


def test_training_mode_returns_all_supervised_outputs():
    net = InfNet(in_channels=1, out_channels=2, **TINY).train()
    out = net(torch.rand(2, 1, 64, 96))
    assert isinstance(out, InfNetOutput)
    for name in ("global_map", "stage4_map", "stage3_map", "stage2_map"):
        assert getattr(out, name).shape == (2, 2, 64, 96)
    assert out.edge_map.shape == (2, 1, 64, 96)
    assert len(out.segmentation_maps()) == 4
    # eval output is the finest map of the same weights
    net.eval()
    with torch.no_grad():
        ev = net(torch.rand(2, 1, 64, 96))
    assert ev.shape == (2, 2, 64, 96)


def test_3d_training_outputs():
    net = InfNet(spatial_dims=3, in_channels=1, **TINY).train()
    out = net(torch.rand(1, 1, 32, 32, 64))
    assert all(m.shape == (1, 1, 32, 32, 64) for m in out)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = InfNet(in_channels=1, **TINY).train()
    out = net(torch.rand(2, 1, 64, 64))
    sum(m.mean() for m in out).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_deterministic_with_seed():
    def build_and_run():
        torch.manual_seed(123)
        net = InfNet(in_channels=1, **TINY).eval()
        with torch.no_grad():
            return net(torch.rand(1, 1, 64, 64))

    a, b = build_and_run(), build_and_run()
    assert torch.equal(a, b)


def test_reference_code_quirk_without_activation_differs():
    torch.manual_seed(0)
    a = InfNet(in_channels=1, **TINY)
    torch.manual_seed(0)
    b = InfNet(in_channels=1, act=None, **TINY)
    assert count(a) == count(b)  # same parameters, only the activation differs
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a.eval()(x), b.eval()(x))


def test_light_configuration_is_lighter():
    assert count(InfNet(in_channels=1, **INFNET_LIGHT)) < 0.4 * count(InfNet(in_channels=1))


def test_jit_trace_channels_last_and_compile_consistent():
    torch.manual_seed(0)
    net = InfNet(in_channels=1, **TINY).eval()
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        ref = net(x)
        traced = torch.jit.trace(net, x)
        assert torch.allclose(traced(x), ref, atol=1e-5)
        cl = net.to(memory_format=torch.channels_last)
        assert torch.allclose(cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-5)


def test_torch_compile_captures_the_whole_network_and_matches_eager():
    """TorchDynamo captures Inf-Net as one graph (``fullgraph=True`` fails on any graph break) and the captured graph,
    run through AOTAutograd, gives eager's output. TorchInductor's code generation (a C++ compile of about a minute
    here) is torch's own and not run."""
    torch.manual_seed(0)
    net = InfNet(in_channels=1, **TINY).eval()
    x = torch.rand(1, 1, 64, 64)
    torch._dynamo.reset()
    with torch.no_grad():
        ref = net(x)
        out = torch.compile(net, backend="aot_eager", fullgraph=True)(x)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"layers": (1, 1, 1)}, "4 stages"),
        ({"out_channels": 0}, "out_channels"),
        ({"ra_channels": (1, 2)}, "ra_channels"),
    ],
)
def test_invalid_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InfNet(**kwargs)
