"""End to end through the lesion filters, with a network whose output is not saturated.

The random tiny model of ``tests/conftest.py`` marks nearly all the lung as infection, so the lesion filters never
act in the other end-to-end tests. Here the network is a real :class:`~infnet_monai.networks.nets.InfNet` with
hand-set weights (:func:`ground_glass_detector`): its logit is high where the slice is ground glass (between
:data:`AERATED_HU` and :data:`SOLID_HU`) with no aerated and no solid tissue close by, and low everywhere else, so
aerated lung, air, the chest wall and the mediastinum come out as background. The scan is the project's chest
phantom (:func:`~infnet_monai.data.phantom.make_chest_phantom`, as ``infnet-covid demo`` uses it) with its own
lesions replaced by the ground-glass lesions of :data:`LESIONS`: two large ones that every filter keeps, one flat
disc that only the axial-extent filter removes and one slender rod that only the in-plane area filter removes.

The pipeline runs once, through :func:`~infnet_monai.pipeline.segment_cohort` with its default filters, writing the
probability map too, so the network's own mask (probability >= 0.5 inside the written lung) shows what the filters
had to remove. Not exercised alone here: the minimum volume (with the default area and extent, any lesion that
survives both holds at least 100 mm^2 x 25 mm = 2.5 mL, above the 0.3 mL minimum; every written lesion is still
checked against it), the basal rim (the lesions are mid-lung) and the nodule split (this detector marks no solid
tissue).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage as ndi

from infnet_monai.data.phantom import GGO_HU, LUNG_PARENCHYMA_HU, NOISE_SD_HU, make_chest_phantom
from infnet_monai.defaults import DEFAULT_MIN_LESION_MM3, MIN_LESION_AREA_MM2, MIN_LESION_EXTENT_MM
from infnet_monai.io import save_model
from infnet_monai.networks import InfNet
from infnet_monai.pipeline import segment_cohort
from infnet_monai.transforms.ct import LUNG_WINDOW_HU
from infnet_monai.transforms.slices import SLICE_MEAN, SLICE_STD

CASE = "phantom_lesions"

NETWORK_KWARGS = dict(spatial_dims=2, in_channels=1, layers=(1, 1, 1, 1), planes=(4, 4, 4, 4), stem_channels=(4, 4, 4))
NETWORK_KWARGS.update(rfb_channels=4, edge_channels=4, ra_channels=(4, 4, 4))
"""A narrow InfNet: the detector needs two channels along one path, and a small network keeps the test fast."""
SPATIAL_SIZE = 352
"""The network's input size (the shipped model's)."""
AERATED_HU = -650.0
"""Below this the detector calls a voxel aerated (lung parenchyma at -850 HU, air)."""
SOLID_HU = -250.0
"""Above this the detector calls a voxel solid (soft tissue, fat, bone)."""
GROUND_GLASS_LOGIT = 4.0
"""The detector's logit inside ground glass, far from aerated and solid tissue."""
PENALTY_LOGIT = 40.0
"""How much the logit falls per 200 HU of aerated or solid excess averaged over the detector's footprint."""
BACKGROUND_LOGIT = -8.0
"""The coarse maps of the network (global map, stages 4 and 3): certain background, so nothing is erased."""

LESIONS = {
    # name: (centre in world mm (RAS, the phantom's grid), semi-axes in mm)
    "right_large": ((64.0, -10.0, -10.0), (16.0, 16.0, 24.0)),
    "left_large": ((-66.0, 14.0, -14.0), (14.0, 16.0, 22.0)),
    # one 4 mm slice thick (centred on a slice): spans less than the minimum extent, wide on its slice
    "flat_disc": ((-62.0, -10.0, 42.0), (14.0, 14.0, 3.0)),
    # long enough axially, but the network's piece on each slice is smaller than the minimum area
    "slender_rod": ((78.0, 30.0, 20.0), (8.0, 8.0, 24.0)),
}
"""The painted ground-glass lesions; the first two must survive every filter, the last two must not."""
KEPT = ("right_large", "left_large")

pytestmark = pytest.mark.slow  # one run of the pipeline on a 160 x 160 x 64 phantom: seconds


def _standardised(hu: float) -> float:
    """The network's input value for a voxel of ``hu`` (the pipeline's window, then the slice standardisation)."""
    low, high = LUNG_WINDOW_HU
    return ((hu - low) / (high - low) - SLICE_MEAN) / SLICE_STD


def ground_glass_detector() -> InfNet:
    """An InfNet whose eval output is the logit of "ground glass, away from aerated and solid tissue".

    All weights are zero and every batch norm is the identity, except along one path. The stem's first convolution
    averages 3x3 pixels into two channels, ``relu(t_aerated - x)`` and ``relu(x - t_solid)``; the other stem
    convolutions, the max pool (which spreads both channels over their neighbours) and the shortcuts of the first
    two Res2Net stages carry them to stage 2 (1/8 of the input). The stage-2 reverse attention passes them through
    its reduction and refinement, and its head gives ``GROUND_GLASS_LOGIT + BACKGROUND_LOGIT`` minus both channels
    times the penalty, to which the constant coarse map ``BACKGROUND_LOGIT`` is added.
    """
    net = InfNet(**NETWORK_KWARGS)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)  # (x - 0) / sqrt(var + eps) is x itself
        aerated, solid = 0, 1  # the two channels of the path
        stem = net.backbone.stem
        stem[0].conv.weight[aerated, 0] = -1.0 / 9.0
        stem[0].adn.N.bias[aerated] = _standardised(AERATED_HU)
        stem[0].conv.weight[solid, 0] = 1.0 / 9.0
        stem[0].adn.N.bias[solid] = -_standardised(SOLID_HU)
        for conv in (stem[1].conv, stem[2].conv):
            for c in (aerated, solid):
                conv.weight[c, c, 1, 1] = 1.0
        for stage in net.backbone.stages[:2]:
            for c in (aerated, solid):
                stage[0].shortcut[-1].conv.weight[c, c] = 1.0
        net.decoder.head.conv.bias.fill_(BACKGROUND_LOGIT)
        ra = net.ra2
        kept = 1.0 - 1.0 / (1.0 + math.exp(-BACKGROUND_LOGIT))  # 1 - sigmoid(coarse map): what reverse attention keeps
        per_unit = PENALTY_LOGIT / (_standardised(200.0) - _standardised(0.0))
        for c in (aerated, solid):
            ra.reduce.conv.weight[c, c] = 1.0 / kept
            for layer in ra.refine:
                layer.conv.weight[c, c, 1, 1] = 1.0
            ra.head.conv.weight[0, c, 1, 1] = -per_unit
        ra.head.conv.bias.fill_(GROUND_GLASS_LOGIT - BACKGROUND_LOGIT)
    return net.eval()


def _ellipsoid(shape, affine: np.ndarray, centre, radii) -> np.ndarray:
    idx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    world = [affine[i, i] * idx[i] + affine[i, 3] for i in range(3)]
    return sum(((w - c) / r) ** 2 for w, c, r in zip(world, centre, radii)) <= 1.0


def _slices(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask.any(axis=(0, 1)))


def _piece_areas_mm2(mask: np.ndarray, pixel_mm2: float) -> list[float]:
    """Areas of the in-plane 8-connected pieces of ``mask`` on every axial slice."""
    areas = []
    for z in _slices(mask):
        labels, n = ndi.label(mask[:, :, z], structure=np.ones((3, 3)))
        areas += [float(a) * pixel_mm2 for a in np.bincount(labels.ravel())[1:n + 1]]
    return areas


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("detector") / "ground_glass.pt"
    preprocessing = {"spatial_size": SPATIAL_SIZE, "in_channels": 1, "slice_mean": SLICE_MEAN, "slice_std": SLICE_STD}
    save_model(
        path, ground_glass_detector(), NETWORK_KWARGS, preprocessing=preprocessing, metadata={"note": "hand-set"},
        fp16=False,
    )
    return path


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    """``(path of the NIfTI, phantom, {lesion name: mask})``: the phantom, its lesions replaced by :data:`LESIONS`."""
    phantom = make_chest_phantom(seed=0)
    rng = np.random.default_rng(1)
    volume = phantom.volume_hu.copy()
    old = phantom.infection > 0
    volume[old] = LUNG_PARENCHYMA_HU + NOISE_SD_HU * rng.standard_normal(int(old.sum()))
    inner_lung = ndi.binary_erosion(phantom.lung > 0, iterations=2)
    masks = {}
    for name, (centre, radii) in LESIONS.items():
        mask = _ellipsoid(volume.shape, phantom.affine, centre, radii)
        assert mask.any() and not (mask & ~inner_lung).any(), f"{name} does not lie inside the phantom's lung"
        volume[mask] = GGO_HU + NOISE_SD_HU * rng.standard_normal(int(mask.sum()))
        masks[name] = mask
    union = np.zeros(volume.shape, dtype=int)
    for mask in masks.values():
        union += mask
    assert union.max() == 1, "painted lesions overlap"
    path = tmp_path_factory.mktemp("phantom") / f"{CASE}.nii.gz"
    nib.save(nib.Nifti1Image(np.round(volume).astype(np.int16), phantom.affine), str(path))
    return path, phantom, masks


@pytest.fixture(scope="module")
def segmented(detector_path, phantom_case, tmp_path_factory):
    """``(case output folder, burden.csv row, voxel volume in mm^3)`` of the default pipeline with the detector."""
    path, phantom, _ = phantom_case
    out = tmp_path_factory.mktemp("segmented")
    report = segment_cohort(
        path, out, model_path=detector_path, device="cpu", window_hu=LUNG_WINDOW_HU, classes=False, overview=False,
        save_probability=True,
    )
    assert report.exit_code == 0, report.rows[0].get("error")
    row = next(csv.DictReader((out / "burden.csv").open()))
    return out / CASE, row, float(np.prod(phantom.spacing_mm))


def _read(case_dir: Path, name: str) -> np.ndarray:
    return np.asanyarray(nib.load(str(case_dir / name)).dataobj)


def _network_mask(case_dir: Path) -> np.ndarray:
    """What the network marked inside the written lung, before any lesion filter."""
    probability = nib.load(str(case_dir / "probability.nii.gz")).get_fdata()
    return (probability >= 0.5) & (_read(case_dir, "lung.nii.gz") > 0)


def test_detector_marks_ground_glass_and_nothing_else():
    """On one slice: a ground-glass disc in aerated lung is infection; lung, air, soft tissue and fat are not."""
    hu = np.full((SPATIAL_SIZE, SPATIAL_SIZE), LUNG_PARENCHYMA_HU, dtype=np.float32)
    yy, xx = np.mgrid[:SPATIAL_SIZE, :SPATIAL_SIZE]
    hu[(yy - 176) ** 2 + (xx - 176) ** 2 < 40**2] = GGO_HU
    hu[:, :60], hu[:, 60:80], hu[:30, :] = 40.0, -100.0, -1000.0  # soft tissue, fat, air
    x = torch.from_numpy(_standardised(hu).astype(np.float32))[None, None]
    with torch.no_grad():
        prob = torch.sigmoid(ground_glass_detector()(x))[0, 0].numpy()
    assert prob[176, 176] > 0.95  # ground glass
    assert prob[176, 300] < 0.01 and prob[10, 200] < 0.01  # aerated lung, air
    assert prob[200, 20] < 0.01 and prob[200, 70] < 0.01  # soft tissue, fat
    disc = prob >= 0.5
    assert 0.4 * np.pi * 40**2 < disc.sum() <= np.pi * 40**2  # the disc, eroded by the footprint, and nothing else
    assert not disc[:, :100].any() and not disc[:40].any()


def test_network_finds_every_painted_lesion_and_nothing_else(segmented, phantom_case):
    """The output is not saturated: one component of the network's mask per painted lesion, none elsewhere."""
    case_dir, row, voxel_mm3 = segmented
    _, _, masks = phantom_case
    found = _network_mask(case_dir)
    labels, n = ndi.label(found, structure=np.ones((3, 3, 3)))
    painted = np.zeros(found.shape, dtype=bool)
    for name, mask in masks.items():
        hit = np.unique(labels[mask & found])
        assert hit.size == 1, f"the network's mask has {hit.size} components on {name}"
        painted |= mask
    assert n == len(masks), f"{n} components in the network's mask for {len(masks)} painted lesions"
    near_lesions = ndi.binary_dilation(painted, iterations=2)
    assert not (found & ~near_lesions).any(), "the network marked voxels away from the lesions"
    assert found.sum() * voxel_mm3 / 1000.0 < 0.02 * float(row["lung_volume_ml"])


def test_each_removed_lesion_is_removed_by_its_own_filter(segmented, phantom_case):
    """What the network found of the disc passes every filter but the axial extent; of the rod, all but the area."""
    case_dir, _, voxel_mm3 = segmented
    phantom, masks = phantom_case[1], phantom_case[2]
    labels, _ = ndi.label(_network_mask(case_dir), structure=np.ones((3, 3, 3)))
    pixel_mm2, slice_mm = phantom.spacing_mm[0] * phantom.spacing_mm[1], phantom.spacing_mm[2]

    def component(name: str) -> np.ndarray:
        return labels == np.unique(labels[masks[name] & (labels > 0)])[0]

    disc = component("flat_disc")
    assert len(_slices(disc)) * slice_mm < MIN_LESION_EXTENT_MM
    assert min(_piece_areas_mm2(disc, pixel_mm2)) >= MIN_LESION_AREA_MM2
    assert disc.sum() * voxel_mm3 >= DEFAULT_MIN_LESION_MM3
    rod = component("slender_rod")
    assert len(_slices(rod)) * slice_mm >= MIN_LESION_EXTENT_MM
    assert max(_piece_areas_mm2(rod, pixel_mm2)) < MIN_LESION_AREA_MM2
    assert rod.sum() * voxel_mm3 >= DEFAULT_MIN_LESION_MM3


def test_filters_keep_the_large_lesions_and_drop_the_others(segmented, phantom_case):
    case_dir, _, _ = segmented
    _, _, masks = phantom_case
    infection = _read(case_dir, "infection.nii.gz") > 0
    labels, n = ndi.label(infection, structure=np.ones((3, 3, 3)))
    assert n == len(KEPT), f"{n} lesions written, expected {len(KEPT)} ({', '.join(KEPT)})"
    for name in KEPT:
        assert np.unique(labels[masks[name] & infection]).size == 1, f"{name} is not one written lesion"
        assert (masks[name] & infection).sum() >= 0.3 * masks[name].sum(), f"too little of {name} is left"
    for name in set(LESIONS) - set(KEPT):
        assert not (masks[name] & infection).any(), f"{name} should have been removed"
    kept = np.logical_or.reduce([masks[name] for name in KEPT])
    assert not (infection & ~kept).any(), "infection written outside the painted lesions"


def test_every_written_lesion_passes_the_filters(segmented, phantom_case):
    case_dir, _, voxel_mm3 = segmented
    phantom = phantom_case[1]
    infection = _read(case_dir, "infection.nii.gz") > 0
    labels, n = ndi.label(infection, structure=np.ones((3, 3, 3)))
    assert n > 0
    pixel_mm2, slice_mm = phantom.spacing_mm[0] * phantom.spacing_mm[1], phantom.spacing_mm[2]
    for i in range(1, n + 1):
        lesion = labels == i
        assert lesion.sum() * voxel_mm3 >= DEFAULT_MIN_LESION_MM3
        assert len(_slices(lesion)) * slice_mm >= MIN_LESION_EXTENT_MM
        assert min(_piece_areas_mm2(lesion, pixel_mm2)) >= MIN_LESION_AREA_MM2


def test_burden_csv_counts_the_written_lesions(segmented):
    case_dir, row, voxel_mm3 = segmented
    infection = _read(case_dir, "infection.nii.gz") > 0
    labels, n = ndi.label(infection, structure=np.ones((3, 3, 3)))
    sizes_ml = np.bincount(labels.ravel())[1:] * voxel_mm3 / 1000.0
    assert int(row["lesion_count"]) == n == len(KEPT)
    assert float(row["infection_volume_ml"]) == pytest.approx(infection.sum() * voxel_mm3 / 1000.0, rel=1e-4)
    assert float(row["largest_lesion_ml"]) == pytest.approx(sizes_ml.max(), rel=1e-4)
    assert 0.0 < float(row["infection_percent"]) < 2.0
