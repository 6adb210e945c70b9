"""MONAI dictionary-transform chains for 2D CT slices (8-bit, lung-windowed), as used for training and inference.

Intensity convention of the network input: the 8-bit slice is scaled to [0, 1], then standardised with the fixed
constants :data:`SLICE_MEAN` and :data:`SLICE_STD`. The 3D pipeline maps Hounsfield units into the same [0, 1]
range before this standardisation, so both doors feed the network the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from monai.data import PILReader

from monai.config import KeysCollection
from monai.transforms import (
    AsDiscreted,
    Compose,
    ConcatItemsd,
    CopyItemsd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RepeatChanneld,
    Resized,
    ScaleIntensityRanged,
)

from infnet_monai.defaults import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD
from infnet_monai.networks.nets.classes import CLASS_NAMES
from infnet_monai.utils.validation import check_spatial_size

__all__ = [
    "SLICE_MEAN",
    "SLICE_STD",
    "DEFAULT_SPATIAL_SIZE",
    "DEFAULT_CLASS_SIZE",
    "SliceAugmentation",
    "CLASS_AUGMENTATION",
    "train_slice_transforms",
    "train_class_transforms",
    "val_class_transforms",
    "val_slice_transforms",
    "slice_inference_transforms",
    "intensity_normalization",
    "pretrain_slice_transforms",
    "IgnoreMaskd",
    "LossMaskd",
    "IGNORE_KEY",
    "LOSS_MASK_KEY",
]

IGNORE_KEY = "ignore"
"""Datalist key of an optional 8-bit mask of pixels the loss ignores (255): the uncertain rims and dropped calls of a
real-CT positive's pseudo-label (:func:`infnet_monai.apps.hard_negatives.mine_real_positives`)."""
LOSS_MASK_KEY = "loss_mask"
"""Batch key of the per-pixel loss mask (1 counts, 0 ignored) that :class:`LossMaskd` makes and
:class:`~infnet_monai.engines.MultiScaleIteration` passes to the loss."""

# in-plane size of the GGO / consolidation head
DEFAULT_CLASS_SIZE = 256


def _load(keys: Sequence[str], allow_missing_keys: bool = False) -> list:
    # reverse_indexing=False keeps numpy's (rows, columns) order, so arrays match the PNG/JPG as viewed
    return [
        LoadImaged(keys, reader=PILReader(reverse_indexing=False), image_only=True, allow_missing_keys=allow_missing_keys),
        EnsureChannelFirstd(keys, channel_dim="no_channel", allow_missing_keys=allow_missing_keys),
    ]


def _to_unit(keys: Sequence[str], allow_missing_keys: bool = False) -> ScaleIntensityRanged:
    return ScaleIntensityRanged(
        keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True, allow_missing_keys=allow_missing_keys
    )


def intensity_normalization(
    key: str = "image", in_channels: int = 1, mean: float = SLICE_MEAN, std: float = SLICE_STD
) -> list:
    """Standardise a [0, 1] image, ``(image - mean) / std`` (default: the fixed training constants; at inference the
    checkpoint's, :class:`~infnet_monai.io.ModelSpec`), and replicate it to ``in_channels`` channels. Every chain that
    feeds a network (2D slices, CT volumes) ends with these steps."""
    out: list = [NormalizeIntensityd(key, subtrahend=mean, divisor=std)]
    if in_channels > 1:
        out.append(RepeatChanneld(key, repeats=in_channels))
    return out


@dataclass(frozen=True)
class SliceAugmentation:
    """Random augmentation of the training chains; the defaults are the binary model's (strong intensity
    augmentation, see :func:`train_slice_transforms`), :data:`CLASS_AUGMENTATION` is the class head's.

    Attributes:
        rotate_degrees: maximum in-plane rotation.
        scale_range: maximum relative zoom in or out.
        intensity_scale: range of the random intensity factor minus one.
        intensity_shift: maximum absolute intensity offset (in [0, 1] units).
        gamma: range of the random gamma.
        noise_std: standard deviation of the additive Gaussian noise (0 disables).
        flip: random flips along both axes.
    """

    rotate_degrees: float = 15.0
    scale_range: float = 0.15
    intensity_scale: tuple[float, float] = (-0.55, 0.3)
    intensity_shift: float = 0.15
    gamma: tuple[float, float] = (0.6, 1.6)
    noise_std: float = 0.02
    flip: bool = True

    def spatial(self, keys: Sequence[str]) -> list:
        """Random flips on both axes, then a random rotation and zoom, applied alike to every key (bilinear)."""
        xforms: list = []
        if self.flip:
            xforms += [
                RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
                RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
            ]
        if self.rotate_degrees > 0 or self.scale_range > 0:
            xforms.append(
                RandAffined(
                    keys,
                    prob=0.7,
                    rotate_range=math.radians(self.rotate_degrees),
                    scale_range=(self.scale_range, self.scale_range),
                    mode="bilinear",
                    padding_mode="zeros",
                    allow_missing_keys=True,
                )
            )
        return xforms

    def intensity(self, key: str) -> list:
        """Random scale, shift, gamma and noise of a [0, 1] image, clipped back to [0, 1]."""
        xforms: list = [
            RandScaleIntensityd(key, factors=self.intensity_scale, prob=0.8),
            RandShiftIntensityd(key, offsets=self.intensity_shift, prob=0.5),
            RandAdjustContrastd(key, gamma=self.gamma, prob=0.5),
        ]
        if self.noise_std > 0:
            xforms.append(RandGaussianNoised(key, prob=0.3, std=self.noise_std))
        xforms.append(ScaleIntensityRanged(key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
        return xforms


CLASS_AUGMENTATION = SliceAugmentation(intensity_scale=(-0.1, 0.1), intensity_shift=0.05, gamma=(0.85, 1.2))
"""The GGO / consolidation head's augmentation: the binary model's spatial part, a much weaker intensity part (see
:func:`train_class_transforms`)."""


class IgnoreMaskd(MapTransform):
    """Give every entry an ignore mask (1 ignored, 0 counted) under ``keys``: its own, binarised at 0.5, or all zeros
    (the shape of ``like``) when it has none, so that every entry of a batch has the same keys, whatever mix of
    labeled slices, hard negatives and real-CT positives it holds. Runs on loaded [0, 1] arrays, before resizing; the
    spatial augmentation's zero padding then counts the padded border, as the label's zero padding teaches it.

    Args:
        keys: the ignore mask's key (:data:`IGNORE_KEY`); missing or ``None`` means nothing is ignored.
        like: key whose shape an all-zeros mask takes.
    """

    def __init__(self, keys: KeysCollection = IGNORE_KEY, like: str = "label") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.like = like

    def __call__(self, data):
        d = dict(data)
        like = d[self.like]
        for key in self.keys:
            ignore = d.get(key)
            if ignore is None:
                d[key] = like * 0
                continue
            if tuple(ignore.shape) != tuple(like.shape):
                raise ValueError(
                    f"'{key}' has shape {tuple(ignore.shape)}, '{self.like}' {tuple(like.shape)}: they must match."
                )
            d[key] = (ignore > 0.5) * 1.0
        return d


class LossMaskd(MapTransform):
    """``output_key = 1 - ignore`` (1 counts, 0 ignored), the ignore mask dropped: the last step of a chain that
    carries :class:`IgnoreMaskd`'s mask through resizing and augmentation.

    Args:
        keys: the ignore mask's key (:data:`IGNORE_KEY`).
        output_key: where the loss mask goes (:data:`LOSS_MASK_KEY`).
    """

    def __init__(self, keys: KeysCollection = IGNORE_KEY, output_key: str = LOSS_MASK_KEY) -> None:
        super().__init__(keys)
        self.output_key = output_key

    def __call__(self, data):
        d = dict(data)
        for key in self.keys:
            d[self.output_key] = 1.0 - d.pop(key)
        return d


def train_slice_transforms(
    spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
    in_channels: int = 1,
    label_keys: Sequence[str] = ("label", "edge"),
    augmentation: SliceAugmentation = SliceAugmentation(),
    loss_mask: bool = False,
) -> Compose:
    """Training chain: load, [0, 1] scaling, resize, spatial and intensity augmentation, standardisation.

    The labeled slices, the darker ``coronacases`` slices and the brighter ``radiopaedia`` slices differ a lot in
    intensity (median 118 / 52 / 152 of 255), so intensity augmentation is strong: a random scale of
    ``1 + U(intensity_scale)`` (0.45x to 1.3x), a random shift of up to ``intensity_shift`` and a random gamma,
    then clipping to [0, 1].

    Args:
        spatial_size: training size (height, width); aspect ratio is not kept, as in the paper.
        in_channels: network input channels (the slice is replicated).
        label_keys: keys resized and augmented with the image (missing keys are skipped, e.g. no edge map).
        augmentation: the random ranges (default: the binary model's, :class:`SliceAugmentation`'s defaults).
        loss_mask: also load each entry's optional ignore mask (:data:`IGNORE_KEY`; :class:`IgnoreMaskd`), resize
            and augment it with the label, and hand it on as the loss mask :data:`LOSS_MASK_KEY` (:class:`LossMaskd`);
            an entry without one counts every pixel.

    Returns:
        a :class:`monai.transforms.Compose` mapping ``{"image": path, "label": path, "edge": path}`` to tensors
        ``image (in_channels, H, W)``, ``label (1, H, W)`` and ``edge (1, H, W)`` in [0, 1] (and ``loss_mask
        (1, H, W)`` with ``loss_mask``).
    """
    keys = ["image", *label_keys, *([IGNORE_KEY] if loss_mask else [])]
    xforms: list = [
        *_load(keys, allow_missing_keys=True),
        _to_unit(keys, allow_missing_keys=True),
        *([IgnoreMaskd(IGNORE_KEY, like="label")] if loss_mask else []),
        Resized(keys, spatial_size=check_spatial_size(spatial_size), mode="bilinear", allow_missing_keys=True),
        *augmentation.spatial(keys),
        *augmentation.intensity("image"),
        *intensity_normalization("image", in_channels),
        *([LossMaskd(IGNORE_KEY, output_key=LOSS_MASK_KEY)] if loss_mask else []),
        EnsureTyped(
            ["image", *label_keys, *([LOSS_MASK_KEY] if loss_mask else [])], track_meta=False, allow_missing_keys=True
        ),
    ]
    return Compose(xforms)


def _class_inputs(prior_key: str, classes_key: str) -> list:
    """Load the slice, its infection prior (8-bit probability PNG) and its class map (0/1/2) as ``label``, one-hot
    to 3 channels (the binary ``label`` and ``edge`` of the datalist entry are dropped)."""
    return [
        DeleteItemsd(["label", "edge"]),
        CopyItemsd(classes_key, names="label"),
        *_load(["image", prior_key, "label"]),
        _to_unit(["image", prior_key]),
        AsDiscreted("label", to_onehot=len(CLASS_NAMES)),
    ]


def _class_chain(spatial_size, prior_key: str, classes_key: str, augmentation: Sequence) -> Compose:
    keys = ["image", prior_key, "label"]
    return Compose(
        [
            *_class_inputs(prior_key, classes_key),
            Resized(keys, spatial_size=check_spatial_size(spatial_size), mode="bilinear"),
            *augmentation,
            *intensity_normalization("image", 1),
            ConcatItemsd(["image", prior_key], "image"),
            EnsureTyped(keys, track_meta=False),
        ]
    )


def train_class_transforms(
    spatial_size: int | Sequence[int] = DEFAULT_CLASS_SIZE,
    prior_key: str = "prior",
    classes_key: str = "classes",
    augmentation: SliceAugmentation = CLASS_AUGMENTATION,
) -> Compose:
    """Training chain of the GGO / consolidation head (:class:`~infnet_monai.networks.nets.InfNetClasses`).

    The slice gets the binary model's spatial augmentation (:func:`train_slice_transforms`) but a much weaker
    intensity one: GGO and consolidation differ by density, and the binary model's strong contrast jitter blurs that
    difference (best validation class Dice 0.358 with it, 0.392 and 0.378 in two runs with these ranges). The
    infection prior (the binary model's probability map, as written by ``predict-slices``) and the one-hot class map
    follow the spatial part only. The output ``image`` has two channels, the standardised slice and the prior in
    [0, 1]; ``label`` is the class map read from ``classes_key``, one-hot in three channels (background, GGO,
    consolidation; soft at boundaries after interpolation).
    """
    keys = ["image", prior_key, "label"]
    return _class_chain(
        spatial_size, prior_key, classes_key, [*augmentation.spatial(keys), *augmentation.intensity("image")]
    )


def val_class_transforms(
    spatial_size: int | Sequence[int] = DEFAULT_CLASS_SIZE, prior_key: str = "prior", classes_key: str = "classes"
) -> Compose:
    """Validation chain of the GGO / consolidation head: :func:`train_class_transforms` without augmentation."""
    return _class_chain(spatial_size, prior_key, classes_key, [])


def val_slice_transforms(
    spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
    in_channels: int = 1,
    label_key: str | None = "label",
    mean: float = SLICE_MEAN,
    std: float = SLICE_STD,
) -> Compose:
    """Validation chain: the image is resized to the network size, the label stays at its original size.

    The image keeps its MONAI metadata so the prediction can be brought back to the original size with
    :class:`monai.transforms.Invertd` before scoring, as the paper's protocol scores at the ground truth's size.
    ``mean`` and ``std`` are the standardisation (a trained model's are its checkpoint's,
    :class:`~infnet_monai.io.ModelSpec`).
    """
    keys = ["image"] + ([label_key] if label_key else [])
    return Compose(
        [
            *_load(keys),
            _to_unit(keys),
            Resized("image", spatial_size=check_spatial_size(spatial_size), mode="bilinear"),
            *intensity_normalization("image", in_channels, mean, std),
        ]
    )


def slice_inference_transforms(
    spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
    in_channels: int = 1,
    mean: float = SLICE_MEAN,
    std: float = SLICE_STD,
    key: str = "image",
) -> Compose:
    """Inference chain for one slice already read and scaled to [0, 1], as
    :class:`~infnet_monai.inferers.SlicePredictor` and ``predict-slices`` run it: the validation chain's resize and
    standardisation (with a checkpoint's ``mean`` and ``std``, :class:`~infnet_monai.io.ModelSpec`). Maps
    ``{key: (H, W) array}`` to ``{key: (in_channels, *spatial_size)}``."""
    return Compose(
        [
            EnsureChannelFirstd(key, channel_dim="no_channel"),
            Resized(key, spatial_size=check_spatial_size(spatial_size), mode="bilinear"),
            *intensity_normalization(key, in_channels, mean, std),
        ]
    )


def pretrain_slice_transforms(
    spatial_size: int | Sequence[int] = 256,
    in_channels: int = 1,
    patch_size: int = 32,
    mask_ratio: float = 0.6,
    rotate90: bool = True,
) -> Compose:
    """Masked-image-modelling chain for unlabeled slices: the training augmentation, then random patch masking.

    The unlabeled slices come in several in-plane orientations, so quarter turns are added to the flips (the
    encoder should not depend on orientation; the supervised stage then learns the orientation of its data).

    Args:
        spatial_size: pretraining size; a multiple of ``patch_size``.
        in_channels: network input channels.
        patch_size: masked patch edge in pixels.
        mask_ratio: fraction of patches hidden.
        rotate90: random quarter turns.

    Returns:
        a :class:`monai.transforms.Compose` mapping ``{"image": path}`` to ``image (in_channels, H, W)`` (masked) and
        ``label (in_channels + 1, H, W)`` (the unmasked image and the mask, see
        :class:`~infnet_monai.transforms.RandPatchMaskd`).
    """
    from .masking import RandPatchMaskd

    train = train_slice_transforms(spatial_size, in_channels, label_keys=())
    xforms = list(train.transforms)
    if rotate90:
        # after the flips, before the affine: index of the first RandAffined
        at = next(i for i, t in enumerate(xforms) if isinstance(t, RandAffined))
        xforms.insert(at, RandRotate90d("image", prob=0.75, max_k=3))
    xforms.insert(-1, RandPatchMaskd("image", target_key="label", patch_size=patch_size, ratio=mask_ratio))
    xforms.append(EnsureTyped("label", track_meta=False))
    return Compose(xforms)
