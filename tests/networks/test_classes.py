import numpy as np
import pytest
import torch

from infnet_monai.io import CheckpointError, load_class_model, load_model, save_model
from infnet_monai.losses import ConsolidationLoss
from infnet_monai.networks import InfNetClasses, class_maps
from infnet_monai.postprocessing import infection_classes
from infnet_monai.transforms import ClassMapsd


class _Const(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((x.shape[0], 1, *x.shape[2:]), self.value)


def test_class_maps_add_up_to_infection():
    p, q = torch.rand(2, 1, 8, 9), torch.rand(2, 1, 8, 9)
    maps = class_maps(p, q)
    assert maps.shape == (2, 2, 8, 9)
    torch.testing.assert_close(maps.sum(1, keepdim=True), p)
    torch.testing.assert_close(maps[:, 1:], p * q)


def test_infnet_classes_outputs_and_head_size():
    torch.manual_seed(0)
    segmenter = torch.nn.Conv2d(1, 1, 3, padding=1)
    seen = {}

    def head(x):
        seen["shape"] = tuple(x.shape)
        return x[:, :1] * 0 + 2.0  # q = sigmoid(2)

    model = InfNetClasses(segmenter, head, temperature=0.5, head_size=16)
    x = torch.randn(3, 1, 40, 24)
    out = model(x)
    assert out.shape == (3, 3, 40, 24) and seen["shape"] == (3, 2, 16, 16)
    p = torch.sigmoid(segmenter(x) / 0.5)
    torch.testing.assert_close(out[:, :1], p)
    torch.testing.assert_close(out[:, 1:].sum(1, keepdim=True), p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:, 2:], p * torch.sigmoid(torch.tensor(2.0)), rtol=1e-5, atol=1e-6)
    share = model.infection_and_share(x)
    assert share.shape == (3, 2, 40, 24)
    torch.testing.assert_close(share[:, 1:], torch.full_like(share[:, 1:], float(torch.sigmoid(torch.tensor(2.0)))))


def test_consolidation_loss_only_counts_infected_pixels():
    target = torch.zeros(1, 3, 4, 4)
    target[:, 0] = 1.0
    target[:, 0, :2, :2], target[:, 2, :2, :2] = 0.0, 1.0  # consolidation top left
    target[:, 0, 2:, 2:], target[:, 1, 2:, 2:] = 0.0, 1.0  # GGO bottom right
    good = torch.full((1, 1, 4, 4), -8.0)
    good[..., :2, :2] = 8.0
    bad = -good
    loss = ConsolidationLoss()
    assert loss(good, target) < 0.01 < 1.0 < loss(bad, target)
    changed = good.clone()
    changed[..., :2, 2:] = 8.0  # background pixels: any value
    assert torch.isclose(loss(changed, target), loss(good, target))
    with pytest.raises(ValueError, match="expected logits"):
        loss(good, target[:, :2])


def test_class_maps_transform_reads_the_prior_channel():
    image = torch.stack([torch.zeros(5, 5), torch.full((5, 5), 0.8)])
    out = ClassMapsd("pred", prior_key="image", prior_channel=1)({"image": image, "pred": torch.zeros(1, 5, 5)})
    assert out["pred"].shape == (2, 5, 5)
    torch.testing.assert_close(out["pred"], torch.full((2, 5, 5), 0.4))


def test_infection_classes_union_is_the_binary_mask():
    rng = np.random.default_rng(0)
    infection = (rng.random((6, 7, 5)) > 0.6).astype(np.uint8)
    share = rng.random((6, 7, 5))
    classes = infection_classes(infection, share)
    assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {0, 1, 2}
    np.testing.assert_array_equal(classes > 0, infection > 0)
    np.testing.assert_array_equal(classes == 2, (infection > 0) & (share >= 0.5))
    with pytest.raises(ValueError, match="same shape"):
        infection_classes(infection, share[:, :, :2])
    with pytest.raises(ValueError, match="threshold"):
        infection_classes(infection, share, threshold=1.0)


def test_class_head_checkpoint_round_trip(tiny_model, tiny_class_model, tmp_path):
    network, _ = load_model(tiny_model)
    model, info = load_class_model(network, 0.5, tiny_class_model)
    assert info["architecture"] == "UNet" and model.head_size == (32, 32) and model.temperature == 0.5
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3, 64, 64)
    with pytest.raises(CheckpointError, match="not a GGO / consolidation head"):
        load_class_model(network, 1.0, tiny_model)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        save_model(tmp_path / "x.pt", network, {}, architecture="ResNet")


def test_head_temperature_sharpens_the_share_without_moving_its_boundary(tiny_model, tiny_class_model, tmp_path):
    from infnet_monai.io import save_calibrated_model

    network, _ = load_model(tiny_model)
    plain, _ = load_class_model(network, 1.0, tiny_class_model)
    sharp_path = save_calibrated_model(tiny_class_model, tmp_path / "sharp.pt", {"temperature": 0.5})
    sharp, _ = load_class_model(network, 1.0, sharp_path)
    assert plain.head_temperature == 1.0 and sharp.head_temperature == 0.5
    x = torch.randn(2, 1, 32, 32)  # the head's own size: no resampling between logit and share
    with torch.no_grad():
        q1, q2 = plain.infection_and_share(x)[:, 1], sharp.infection_and_share(x)[:, 1]
    logit = torch.logit(q1.clamp(1e-6, 1 - 1e-6))
    torch.testing.assert_close(q2, torch.sigmoid(logit / 0.5), rtol=1e-3, atol=1e-3)
    decided = (q1 - 0.5).abs() > 1e-3
    assert decided.any()
    assert torch.equal((q1 >= 0.5)[decided], (q2 >= 0.5)[decided])
    assert ((q2 - 0.5).abs() >= (q1 - 0.5).abs() - 1e-6).all()
