"""ProbabilityMaps: the one place where logits become probabilities (temperature, class head, left-right flip TTA)."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.data.image_reader import PILReader
from monai.transforms import LoadImage
from PIL import Image

from infnet_monai.inferers import LEFT_RIGHT_DIM, ProbabilityMaps
from infnet_monai.io import read_slice
from infnet_monai.networks.nets.classes import InfNetClasses
from infnet_monai.transforms.ct import ct_slice_preprocessing


class RampLogits(torch.nn.Module):
    """Logits that grow along both in-plane axes, differently: no mirror image of the input gives the same map."""

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp = torch.arange(h).view(-1, 1) * 1.0 + torch.arange(w).view(1, -1) * 0.25
        return x[:, :1] + ramp.to(x) - 3.0


class HalfPrecision(torch.nn.Module):
    def forward(self, x):
        return x.half()


class ShareHead(torch.nn.Module):
    """A "head" whose consolidation logit is the slice channel (``(B, 2, H, W)`` input: slice, infection)."""

    def forward(self, x):
        return x[:, :1]


def test_temperature_in_float32():
    x = torch.linspace(-2.0, 2.0, 2 * 6 * 5).reshape(2, 1, 6, 5)
    net = RampLogits()
    half = ProbabilityMaps(torch.nn.Sequential(net, HalfPrecision()), temperature=0.5)(x)  # as under autocast
    assert half.shape == (2, 1, 6, 5) and half.dtype == torch.float32
    torch.testing.assert_close(half, torch.sigmoid(net(x).half().float() / 0.5))
    maps = ProbabilityMaps(net, temperature=0.5)
    torch.testing.assert_close(maps(x), torch.sigmoid(net(x) / 0.5))
    maps.temperature = 2.0
    torch.testing.assert_close(maps(x), torch.sigmoid(net(x) / 2.0))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            ProbabilityMaps(net, temperature=bad)
    with pytest.raises(ValueError, match="flip_dim"):
        ProbabilityMaps(net, flip_tta=True, flip_dim=1)


@pytest.mark.parametrize("flip_dim", [-2, -1])
def test_flip_tta_mirrors_the_chosen_dimension_and_back(flip_dim):
    x = torch.rand(1, 1, 7, 5)
    net = RampLogits()
    plain = torch.sigmoid(net(x))
    mirrored = torch.sigmoid(net(x.flip(flip_dim))).flip(flip_dim)
    out = ProbabilityMaps(net, flip_tta=True, flip_dim=flip_dim)(x)
    torch.testing.assert_close(out, 0.5 * (plain + mirrored))
    other = -1 if flip_dim == -2 else -2
    assert not torch.allclose(out, ProbabilityMaps(net, flip_tta=True, flip_dim=other)(x))


def test_default_flip_is_the_patients_left_right():
    assert LEFT_RIGHT_DIM == -2
    # CT: after the slice orientation, the first in-plane axis (dim -2 of a (B, C, X, Y) batch of slices) is the one
    # whose voxel steps move towards the patient's left (-x in RAS), and only it; the input's axes are swapped
    axes_swapped = torch.tensor([[0.0, 0.7, 0, 0], [0.8, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    prepared = ct_slice_preprocessing(lung_key=None)({"image": MetaTensor(torch.zeros(1, 6, 5, 4), affine=axes_swapped)})
    affine = prepared["image"].affine.numpy()
    assert affine[0, 0] < 0 and affine[1, 0] == 0 and affine[2, 0] == 0
    assert affine[0, 1] == 0 and affine[0, 2] == 0


def test_slices_are_read_as_in_training(tmp_path):
    # predict-slices reads (rows, columns) as training does (PILReader without reverse indexing), so the slices'
    # left-right axis (their rows) is the same dimension, -2, at training and inference
    grey = (np.arange(7 * 5).reshape(7, 5) * 7).astype(np.uint8)
    path = tmp_path / "s.png"
    Image.fromarray(grey).save(path)
    ours = read_slice(path)
    trained = LoadImage(reader=PILReader(reverse_indexing=False), image_only=True)(str(path))
    np.testing.assert_array_equal(ours, grey)
    np.testing.assert_array_equal(np.asarray(trained), grey)


def test_classes_give_infection_and_share_with_one_temperature():
    x = torch.randn(2, 1, 8, 8)
    net, head = RampLogits(), ShareHead()
    classes = InfNetClasses(net, head, temperature=0.5, head_size=None)
    out = ProbabilityMaps(net, temperature=0.5, classes=classes)(x)
    assert out.shape == (2, 2, 8, 8)
    torch.testing.assert_close(out, classes.infection_and_share(x))
    # the module's temperature is the one applied, whatever the class model was built with
    torch.testing.assert_close(ProbabilityMaps(net, 2.0, classes=classes)(x)[:, :1], torch.sigmoid(net(x) / 2.0))
    flipped = ProbabilityMaps(net, 0.5, classes=classes, flip_tta=True)(x)
    expected = 0.5 * (classes.infection_and_share(x) + classes.infection_and_share(x.flip(-2)).flip(-2))
    torch.testing.assert_close(flipped, expected)
