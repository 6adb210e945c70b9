import numpy as np
import pytest
import torch

from infnet_monai.data import labeled_datalist, labeled_splits, split_datalist, unlabeled_datalist
from infnet_monai.transforms import SLICE_MEAN, SLICE_STD, train_slice_transforms, val_slice_transforms


def test_datalists_on_real_data(data_dir):
    labeled = labeled_datalist(data_dir)
    assert len(labeled) == 50
    assert all({"image", "label", "edge", "id"} <= set(d) for d in labeled)
    assert len(unlabeled_datalist(data_dir)) == 1600


def test_split_is_fixed_disjoint_and_seeded(data_dir):
    a = labeled_splits(data_dir)
    b = labeled_splits(data_dir)
    assert [d["id"] for d in a["validation"]] == [d["id"] for d in b["validation"]]
    assert len(a["train"]) == 40 and len(a["validation"]) == 10
    assert not {d["id"] for d in a["train"]} & {d["id"] for d in a["validation"]}
    c = labeled_splits(data_dir, seed=1)
    assert [d["id"] for d in c["validation"]] != [d["id"] for d in a["validation"]]


def test_split_rejects_bad_size():
    with pytest.raises(ValueError, match="num_val"):
        split_datalist([{"id": "a"}], num_val=1)


def test_missing_data_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        labeled_datalist(tmp_path)


def test_image_without_mask_is_reported(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir()
    (tmp_path / "train" / "images" / "7.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="7.jpg"):
        labeled_datalist(tmp_path)


def test_train_transforms_shapes_and_ranges(data_dir):
    item = labeled_datalist(data_dir)[0]
    out = train_slice_transforms(spatial_size=(96, 128), in_channels=3)(item)
    assert out["image"].shape == (3, 96, 128)
    assert out["label"].shape == (1, 96, 128) and out["edge"].shape == (1, 96, 128)
    assert 0.0 <= float(out["label"].min()) and float(out["label"].max()) <= 1.0
    lo, hi = (0 - SLICE_MEAN) / SLICE_STD, (1 - SLICE_MEAN) / SLICE_STD
    assert lo - 1e-5 <= float(out["image"].min()) and float(out["image"].max()) <= hi + 1e-5


def test_train_transforms_are_random_but_seedable(data_dir):
    item = labeled_datalist(data_dir)[3]
    t = train_slice_transforms(spatial_size=64)
    t.set_random_state(seed=5)
    a = t(item)["image"]
    t.set_random_state(seed=5)
    b = t(item)["image"]
    c = t(item)["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augmentation_settings_choose_the_random_steps():
    from monai.transforms import RandAdjustContrastd, RandAffined, RandFlipd, RandGaussianNoised, RandScaleIntensityd

    from infnet_monai.transforms import CLASS_AUGMENTATION, SliceAugmentation, train_class_transforms

    def kinds(chain):
        return [type(t) for t in chain.flatten().transforms]

    default = kinds(train_slice_transforms(spatial_size=64))
    assert default.count(RandFlipd) == 2 and RandAffined in default and RandGaussianNoised in default
    still = SliceAugmentation(rotate_degrees=0.0, scale_range=0.0, noise_std=0.0, flip=False)
    assert not {RandFlipd, RandAffined, RandGaussianNoised} & set(kinds(train_slice_transforms(64, augmentation=still)))
    # the class head: the binary model's spatial part, a weaker intensity part
    assert CLASS_AUGMENTATION.rotate_degrees == SliceAugmentation().rotate_degrees
    assert CLASS_AUGMENTATION.intensity_scale == (-0.1, 0.1) and CLASS_AUGMENTATION.gamma == (0.85, 1.2)
    chain = train_class_transforms(spatial_size=64).flatten().transforms
    scale = next(t for t in chain if isinstance(t, RandScaleIntensityd)).scaler.factors
    gamma = next(t for t in chain if isinstance(t, RandAdjustContrastd)).adjuster.gamma
    assert tuple(scale) == (-0.1, 0.1) and tuple(gamma) == (0.85, 1.2)


def test_val_transforms_keep_label_size(data_dir):
    item = labeled_datalist(data_dir)[0]
    out = val_slice_transforms(spatial_size=64)(item)
    from PIL import Image

    h, w = np.asarray(Image.open(item["label"])).shape
    assert out["image"].shape == (1, 64, 64)
    assert out["label"].shape == (1, h, w)
    assert set(np.unique(out["label"].numpy())) <= {0.0, 1.0}


def test_pretraining_datalist_holds_every_image_but_the_excluded(data_dir):
    from infnet_monai.data import labeled_splits, pretraining_datalist, unlabeled_datalist

    val_ids = [d["id"] for d in labeled_splits(data_dir)["validation"]]
    everything = pretraining_datalist(data_dir)
    assert len(everything) == 50 + len(unlabeled_datalist(data_dir))
    kept = pretraining_datalist(data_dir, exclude_ids=val_ids)
    assert len(kept) == len(everything) - len(val_ids)
    assert not {d["id"] for d in kept} & set(val_ids)
    assert len({d["id"] for d in kept}) == len(kept)  # labeled and unlabeled ids never collide
    assert all(set(d) == {"image", "id"} for d in kept)
