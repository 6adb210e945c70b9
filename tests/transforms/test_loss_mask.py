import numpy as np
import pytest
import torch
from PIL import Image

from infnet_monai.transforms import IgnoreMaskd, LossMaskd, SliceAugmentation, train_slice_transforms


def _entry(tmp_path, name: str, ignore_rows: int | None) -> dict:
    rng = np.random.default_rng(0)
    files = {"image": rng.integers(0, 256, (48, 64), dtype=np.uint8), "label": np.zeros((48, 64), np.uint8)}
    files["label"][20:30, 20:40] = 255
    files["edge"] = files["label"]
    if ignore_rows is not None:
        files["ignore"] = np.zeros((48, 64), np.uint8)
        files["ignore"][:ignore_rows] = 255
    entry = {}
    for key, array in files.items():
        entry[key] = str(tmp_path / f"{name}_{key}.png")
        Image.fromarray(array).save(entry[key])
    return entry


def test_loss_mask_follows_the_ignore_mask_through_the_chain(tmp_path):
    with_ignore, without = _entry(tmp_path, "a", 12), _entry(tmp_path, "b", None)
    still = SliceAugmentation(rotate_degrees=0.0, scale_range=0.0, flip=False)
    chain = train_slice_transforms(spatial_size=(48, 64), loss_mask=True, augmentation=still)
    out = chain(with_ignore)
    assert set(out) == {"image", "label", "edge", "loss_mask"}
    mask = out["loss_mask"]
    assert mask.shape == (1, 48, 64) and isinstance(mask, torch.Tensor)
    assert float(mask[:, :12].max()) == 0.0 and float(mask[:, 12:].min()) == 1.0
    # an entry without an ignore mask counts every pixel, also where a zoom or rotation pads the border
    turning = SliceAugmentation(rotate_degrees=30.0)
    moving = train_slice_transforms(spatial_size=(48, 64), loss_mask=True, augmentation=turning)
    for seed in range(3):
        moving.set_random_state(seed=seed)
        assert float(moving(without)["loss_mask"].min()) == 1.0
    # the mask draws nothing from the random state: image and label are those of the chain without it
    plain = train_slice_transforms(spatial_size=(48, 64), augmentation=turning)
    for seed in range(3):
        moving.set_random_state(seed=seed)
        plain.set_random_state(seed=seed)
        a, b = moving(with_ignore), plain(with_ignore)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) and "loss_mask" not in b
    # without loss_mask, an ignore path in the entry is passed on unread
    assert plain(with_ignore)["ignore"] == with_ignore["ignore"]


def test_ignore_mask_shape_must_match_the_label():
    d = {"label": torch.zeros(1, 8, 8), "ignore": torch.ones(1, 4, 8)}
    with pytest.raises(ValueError, match="'ignore' has shape"):
        IgnoreMaskd()(d)
    d = IgnoreMaskd()({"label": torch.zeros(1, 8, 8), "ignore": torch.full((1, 8, 8), 0.7)})
    assert LossMaskd()(d)["loss_mask"].max() == 0.0 and "ignore" not in LossMaskd()(d)
