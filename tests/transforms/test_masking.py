import numpy as np
import pytest
import torch

from infnet_monai.transforms import RandPatchMask, RandPatchMaskd, pretrain_slice_transforms


@pytest.mark.parametrize("shape,patch,ratio", [((1, 64, 96), 32, 0.6), ((2, 70, 50), 16, 0.25), ((1, 40, 40, 24), 8, 0.5)])
def test_hidden_fraction_grid_and_fill(shape, patch, ratio):
    img = torch.rand(shape) + 1.0  # never equal to the fill value
    masker = RandPatchMask(patch_size=patch, ratio=ratio, fill_value=0.0)
    masker.set_random_state(3)
    masked, mask = masker(img)
    assert masked.shape == img.shape and mask.shape == (1, *shape[1:])
    grid = [-(-s // patch) for s in shape[1:]]
    hidden_patches = round(ratio * int(np.prod(grid)))
    # hidden pixels are exactly the filled ones, in every channel; visible pixels are untouched
    hidden = mask[0].bool()
    assert torch.all(masked[:, hidden] == 0.0)
    assert torch.equal(masked[:, ~hidden], img[:, ~hidden])
    # the mask is constant on every grid patch and hides the requested number of patches
    coarse = mask[0][tuple(slice(0, None, patch) for _ in shape[1:])]
    assert int(coarse.sum()) == hidden_patches
    upsampled = coarse
    for axis in range(coarse.ndim):
        upsampled = upsampled.repeat_interleave(patch, dim=axis)
    assert torch.equal(upsampled[tuple(slice(0, s) for s in shape[1:])], mask[0])


def test_seeded_masks_repeat_and_differ_between_calls():
    a, b = RandPatchMask(ratio=0.5), RandPatchMask(ratio=0.5)
    a.set_random_state(7)
    b.set_random_state(7)
    img = torch.ones(1, 128, 128)
    first = a(img)[1]
    assert torch.equal(first, b(img)[1])
    assert not torch.equal(first, a(img)[1])


def test_bad_ratio_is_refused():
    with pytest.raises(ValueError, match="ratio"):
        RandPatchMask(ratio=1.0)


@pytest.mark.parametrize("patch", [0, (16, 0), -8])
def test_empty_patches_are_refused(patch):
    with pytest.raises(ValueError, match="patch_size"):
        RandPatchMask(patch_size=patch)
    with pytest.raises(ValueError, match="patch_size"):
        RandPatchMaskd("image", patch_size=patch)


def test_dictionary_version_stores_original_and_mask_as_label():
    t = RandPatchMaskd("image", target_key="label", patch_size=16, ratio=0.5)
    t.set_random_state(0)
    img = torch.rand(1, 64, 64) + 1.0
    out = t({"image": img, "id": "x"})
    assert out["label"].shape == (2, 64, 64)
    assert torch.equal(out["label"][0], img[0])
    hidden = out["label"][1].bool()
    assert torch.all(out["image"][0][hidden] == 0) and torch.equal(out["image"][0][~hidden], img[0][~hidden])
    assert out["id"] == "x"


def test_pretraining_chain_on_a_real_slice(data_dir):
    from infnet_monai.data import unlabeled_datalist

    item = unlabeled_datalist(data_dir)[0]
    t = pretrain_slice_transforms(spatial_size=128, patch_size=32, mask_ratio=0.6)
    t.set_random_state(0)
    out = t(item)
    assert out["image"].shape == (1, 128, 128) and out["label"].shape == (2, 128, 128)
    assert out["label"][1].mean().item() == pytest.approx(10 / 16)  # round(0.6 * 16) patches of 16
    assert type(out["label"]) is torch.Tensor  # plain tensors batch cleanly
