"""Post-processing transform pairs give exactly the functions' results, keep the metadata, and read the spacing."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.postprocessing import (
    InfectionClasses,
    InfectionClassesd,
    InfectionMask,
    InfectionMaskd,
    LungMask,
    LungMaskd,
    infection_classes,
    lung_mask,
    postprocess_infection,
)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom((80, 80, 24), (4.0, 4.0, 10.0), seed=1)


def _meta(arr, affine):
    return MetaTensor(torch.as_tensor(np.asarray(arr)[None]), affine=torch.as_tensor(affine, dtype=torch.float64))


def test_pairs_match_the_functions(phantom):
    spacing = (4.0, 4.0, 10.0)
    image = _meta(phantom.volume_hu, phantom.affine)
    lung = LungMask()(image)
    assert isinstance(lung, MetaTensor) and lung.dtype == torch.uint8 and tuple(lung.shape) == (1, 80, 80, 24)
    np.testing.assert_array_equal(lung[0].numpy(), lung_mask(phantom.volume_hu, spacing))
    torch.testing.assert_close(lung.affine, image.affine)

    rng = np.random.default_rng(0)
    prob = _meta(rng.random(phantom.volume_hu.shape).astype(np.float32) * (phantom.infection > 0), phantom.affine)
    options = {"threshold": 0.3, "min_lesion_volume_mm3": 300.0, "min_lesion_extent_mm": 20.0}
    infection = InfectionMask(**options)(prob, lung)
    np.testing.assert_array_equal(infection[0].numpy(), postprocess_infection(prob[0].numpy(), lung[0].numpy(), spacing, **options))
    share = _meta(rng.random(phantom.volume_hu.shape), phantom.affine)
    assert lung.sum() > 1000 and 0 < infection.sum()  # not a vacuous comparison
    classes = InfectionClasses()(infection, share)
    np.testing.assert_array_equal(classes[0].numpy(), infection_classes(infection[0].numpy(), share[0].numpy()))

    d = LungMaskd("image")({"image": image})
    d = InfectionMaskd("prob", **options)({**d, "prob": prob})
    d = InfectionClassesd("infection", share_key="share")({**d, "share": share})
    for key, expected in (("lung", lung), ("infection", infection), ("classes", classes)):
        np.testing.assert_array_equal(d[key].numpy(), expected.numpy())


def test_spacing_must_be_known_and_shape_channel_first(phantom):
    with pytest.raises(ValueError, match="no voxel spacing"):
        LungMask()(phantom.volume_hu[None])
    out = LungMask(spacing_mm=(4.0, 4.0, 10.0))(phantom.volume_hu[None])
    assert out.shape == (1, 80, 80, 24)
    with pytest.raises(ValueError, match="channel-first"):
        LungMask(spacing_mm=(4.0, 4.0, 10.0))(phantom.volume_hu)
