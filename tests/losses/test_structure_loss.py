import math

import pytest
import torch
import torch.nn.functional as F

from infnet_monai.losses import DeepSupervisionLoss, EdgeLoss, StructureLoss, boundary_weight
from infnet_monai.networks.nets import InfNetOutput


def test_boundary_weight_matches_direct_box_filter():
    torch.manual_seed(0)
    g = (torch.rand(2, 1, 40, 50) > 0.7).float()
    direct = F.avg_pool2d(g, kernel_size=31, stride=1, padding=15)  # count_include_pad=True, as in the paper's code
    assert torch.allclose(boundary_weight(g), 1 + 5 * (direct - g).abs(), atol=1e-5)


def test_boundary_weight_3d_matches_direct_box_filter():
    g = (torch.rand(1, 1, 12, 14, 9) > 0.5).float()
    direct = F.avg_pool3d(F.pad(g, [2] * 6), kernel_size=5, stride=1)
    assert torch.allclose(boundary_weight(g, kernel_size=5), 1 + 5 * (direct - g).abs(), atol=1e-5)


def test_boundary_weight_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        boundary_weight(torch.zeros(1, 1, 8, 8), kernel_size=4)


def test_empty_mask_zero_logits_hand_computed():
    # G = 0 everywhere: w = 1, BCE(0 logit, 0) = ln 2, p = 0.5;
    # wIoU = 1 - (0 + 1) / (sum 0.5 - 0 + 1) with 16 pixels: 1 - 1 / 9
    x = torch.zeros(1, 1, 4, 4)
    g = torch.zeros(1, 1, 4, 4)
    loss = StructureLoss(kernel_size=3)(x, g)
    assert loss.item() == pytest.approx(math.log(2) + 1 - 1 / 9, rel=1e-6)


def test_full_mask_hand_computed():
    # G = 1 everywhere, 3x3 window with zero padding: interior weight 1, edge pixels see 6/9, corners 4/9
    x = torch.full((1, 1, 4, 4), 2.0)
    g = torch.ones(1, 1, 4, 4)
    w = torch.ones(4, 4)
    w[0, :] = w[-1, :] = w[:, 0] = w[:, -1] = 1 + 5 * (1 - 6 / 9)
    for r, c in [(0, 0), (0, 3), (3, 0), (3, 3)]:
        w[r, c] = 1 + 5 * (1 - 4 / 9)
    p = 1 / (1 + math.exp(-2.0))
    bce = -math.log(p)  # the same at every pixel, so the weighted mean equals it
    inter = float((w * p).sum())
    union = float((w * (p + 1)).sum())
    expected = bce + 1 - (inter + 1) / (union - inter + 1)
    assert StructureLoss(kernel_size=3)(x, g).item() == pytest.approx(expected, rel=1e-6)


def test_bce_is_pixel_weighted_unlike_reference_code():
    # a prediction wrong only at the object's boundary: weighting makes it cost more than a plain mean would
    g = torch.zeros(1, 1, 32, 32)
    g[..., 8:24, 8:24] = 1
    x = torch.where(g > 0, 5.0, -5.0)
    x[..., 8, 8:24] = -5.0  # wrong row on the boundary
    w = boundary_weight(g)
    bce = F.binary_cross_entropy_with_logits(x, g, reduction="none")
    weighted = ((w * bce).sum() / w.sum()).item()
    plain = bce.mean().item()
    p = torch.sigmoid(x)
    inter, union = (p * g * w).sum(), ((p + g) * w).sum()
    wiou = (1 - (inter + 1) / (union - inter + 1)).item()
    loss = StructureLoss()(x, g).item()
    assert loss == pytest.approx(weighted + wiou, rel=1e-5)
    assert weighted > plain


@pytest.mark.parametrize("reduction, shape", [("none", (3, 2)), ("mean", ()), ("sum", ())])
def test_reduction(reduction, shape):
    x, g = torch.randn(3, 2, 16, 16), (torch.rand(3, 2, 16, 16) > 0.5).float()
    per_image = StructureLoss(reduction="none")(x, g)
    out = StructureLoss(reduction=reduction)(x, g)
    assert out.shape == shape
    if reduction == "mean":
        assert out.item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    if reduction == "sum":
        assert out.item() == pytest.approx(per_image.sum().item(), rel=1e-6)


def test_structure_loss_3d_and_gradients():
    x = torch.randn(1, 1, 8, 8, 8, requires_grad=True)
    g = (torch.rand(1, 1, 8, 8, 8) > 0.5).float()
    loss = StructureLoss(kernel_size=5)(x, g)
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None and torch.any(x.grad != 0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        StructureLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="shapes differ"):
        EdgeLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 5, 4))


def test_edge_loss_hand_computed():
    x = torch.tensor([[[[0.0, 2.0]]]])
    e = torch.tensor([[[[1.0, 0.0]]]])
    expected = (math.log(2) + math.log(1 + math.exp(2.0))) / 2
    assert EdgeLoss()(x, e).item() == pytest.approx(expected, rel=1e-6)


def test_deep_supervision_is_sum_of_parts():
    torch.manual_seed(1)
    maps = [torch.randn(2, 1, 32, 32) for _ in range(4)]
    edge_logits = torch.randn(2, 1, 32, 32)
    out = InfNetOutput(*maps, edge_logits)
    g = (torch.rand(2, 1, 32, 32) > 0.5).float()
    e = (torch.rand(2, 1, 32, 32) > 0.9).float()
    total = DeepSupervisionLoss()(out, g, e)
    expected = sum(StructureLoss()(m, g) for m in maps) + EdgeLoss()(edge_logits, e)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    # without edge maps only the segmentation terms remain
    no_edge = DeepSupervisionLoss()(out, g, None)
    assert no_edge.item() == pytest.approx(sum(StructureLoss()(m, g) for m in maps).item(), rel=1e-5)
    weighted = DeepSupervisionLoss(map_weights=(0, 0, 0, 1), edge_weight=0)(out, g, e)
    assert weighted.item() == pytest.approx(StructureLoss()(maps[3], g).item(), rel=1e-5)


def test_soft_targets_supported():
    x = torch.zeros(1, 1, 8, 8)
    g = torch.full((1, 1, 8, 8), 0.5)
    assert torch.isfinite(StructureLoss(kernel_size=3)(x, g))


def test_loss_mask_ignores_pixels_in_every_term():
    torch.manual_seed(2)
    maps = [torch.randn(2, 1, 32, 32, requires_grad=True) for _ in range(4)]
    edge_logits = torch.randn(2, 1, 32, 32, requires_grad=True)
    out = InfNetOutput(*maps, edge_logits)
    g = (torch.rand(2, 1, 32, 32) > 0.5).float()
    e = (torch.rand(2, 1, 32, 32) > 0.9).float()
    loss = DeepSupervisionLoss()
    ones = torch.ones(2, 1, 32, 32)
    assert loss(out, g, e, mask=ones).item() == pytest.approx(loss(out, g, e).item(), rel=1e-6)
    mask = ones.clone()
    mask[:, :, :16] = 0.0
    masked = loss(out, g, e, mask=mask)
    # what the ignored half predicts, and its edge target, change nothing (its segmentation target still shapes the
    # boundary weights of the counted pixels within 15 of it, as the kernel reaches)
    shifted = InfNetOutput(*(m.detach() + 5.0 * (1.0 - mask) for m in maps), edge_logits.detach() - 3.0 * (1.0 - mask))
    e2 = e.clone()
    e2[:, :, :16] = 1.0 - e2[:, :, :16]
    assert loss(shifted, g, e2, mask=mask).item() == pytest.approx(masked.item(), rel=1e-6)
    masked.backward()
    for t in (*maps, edge_logits):
        assert t.grad[:, :, :16].abs().max().item() == 0.0 and t.grad[:, :, 16:].abs().max().item() > 0.0
    # an image whose every pixel is ignored gives 0, not NaN
    assert EdgeLoss(reduction="none")(edge_logits, e, torch.zeros(2, 1, 32, 32)).abs().max().item() == 0.0
    assert torch.isfinite(loss(out, g, e, mask=torch.zeros(2, 1, 32, 32)))
    with pytest.raises(ValueError, match="mask shape"):
        loss(out, g, e, mask=torch.ones(2, 1, 16, 16))
