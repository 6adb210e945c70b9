import pytest
import torch

from infnet_monai.losses import MaskedReconstructionLoss


def test_only_hidden_pixels_count():
    pred = torch.zeros(1, 1, 2, 2)
    original = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    loss = MaskedReconstructionLoss()(pred, torch.cat([original, mask], 1))
    assert loss.item() == pytest.approx((1 + 4) / 2)


def test_reductions_and_empty_mask():
    pred = torch.zeros(2, 1, 4, 4)
    target = torch.cat([torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)], 1)
    target[0, 1] = 1.0  # item 0 fully hidden (error 1), item 1 nothing hidden (0, not NaN)
    per_item = MaskedReconstructionLoss(reduction="none")(pred, target)
    assert per_item.tolist() == [1.0, 0.0]
    assert MaskedReconstructionLoss(reduction="sum")(pred, target).item() == 1.0
    assert MaskedReconstructionLoss()(pred, target).item() == 0.5


def test_gradient_flows_through_hidden_pixels_only():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, 0.0]]]]).reshape(1, 2, 2, 2)
    MaskedReconstructionLoss()(pred, target).backward()
    assert pred.grad[0, 0, 0, 0] != 0 and torch.count_nonzero(pred.grad) == 1


def test_target_without_mask_channel_is_refused():
    with pytest.raises(ValueError, match="mask channel"):
        MaskedReconstructionLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
