"""Tests of the HU-based lung mask (infnet_monai.postprocessing.lung.lung_mask).

Real-data tests use ``$INFNET_SHARED_DATA/ct`` (default ``../shared/data/ct`` from the repository root) through
``tests/conftest.py``: skipped when the shared data is absent, a failure when ``INFNET_REQUIRE_SHARED_DATA=1``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import ndimage as ndi

from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.metrics.paper import mask_dice
from infnet_monai.postprocessing import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL, lung_mask

from infnet_monai.data.paths import shared_data_dir

CT_DIR = shared_data_dir() / "ct"
SCAN = CT_DIR / "abdomen_3mm.nii.gz"
REFERENCE = CT_DIR / "abdomen_3mm_lung.nii.gz"
SMALL = CT_DIR / "abdomen_3mm_small.nii.gz"
MIN_DICE_REAL = 0.90
MAX_VOLUME_ERROR_REAL = 0.10


@pytest.fixture(scope="module")
def real_scan(data_dir):
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(SCAN))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    volume = np.asarray(img.dataobj, dtype=np.float32)
    reference = np.asarray(nib.load(str(REFERENCE)).dataobj) > 0
    return volume, spacing, reference


@pytest.fixture(scope="module")
def real_mask(real_scan):
    volume, spacing, _ = real_scan
    return lung_mask(volume, spacing)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom()


def test_real_scan_dice_and_volume(real_scan, real_mask):
    _, spacing, reference = real_scan
    assert real_mask.dtype == np.uint8 and real_mask.shape == reference.shape
    assert set(np.unique(real_mask)) == {0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL}
    assert mask_dice(real_mask, reference) >= MIN_DICE_REAL
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume_ml, reference_ml = (real_mask > 0).sum() * voxel_ml, reference.sum() * voxel_ml
    assert abs(volume_ml - reference_ml) <= MAX_VOLUME_ERROR_REAL * reference_ml


def test_real_scan_sides(real_scan, real_mask):
    # RAS: larger axis-0 index is the patient's right; each reference lung must carry one label
    _, _, reference = real_scan
    x = np.arange(reference.shape[0])[:, None, None]
    right_x = float(np.broadcast_to(x, real_mask.shape)[real_mask == RIGHT_LUNG_LABEL].mean())
    left_x = float(np.broadcast_to(x, real_mask.shape)[real_mask == LEFT_LUNG_LABEL].mean())
    assert right_x > left_x
    centre = reference.shape[0] // 2
    ref_right = reference & (x >= centre)
    ref_left = reference & (x < centre)
    assert (real_mask[ref_right] == RIGHT_LUNG_LABEL).mean() > 0.95
    assert (real_mask[ref_left] == LEFT_LUNG_LABEL).mean() > 0.95


def test_small_cut(real_scan):
    nib = pytest.importorskip("nibabel")
    volume, spacing, reference = real_scan
    small = np.asarray(nib.load(str(SMALL)).dataobj, dtype=np.float32)
    assert small.shape[2] == 30
    # the cut is the top 30 slices (the lung bases reach its last slice)
    np.testing.assert_array_equal(small, volume[:, :, -30:])
    mask = lung_mask(small, spacing)
    assert mask.shape == small.shape
    assert set(np.unique(mask)) == {0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL}
    assert mask_dice(mask, reference[:, :, -30:]) >= MIN_DICE_REAL


def test_phantom_sides_and_dice(phantom):
    mask = lung_mask(phantom.volume_hu, phantom.spacing_mm)
    assert mask_dice(mask, phantom.lung) >= 0.95
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert (mask[phantom.lung == lab] == lab).mean() > 0.95
    # right lung at larger axis-0 indices (world x > 0 in RAS+)
    right_i = np.nonzero(phantom.lung == RIGHT_LUNG_LABEL)[0].mean()
    assert phantom.affine[0, 0] * right_i + phantom.affine[0, 3] > 0


def test_phantom_mirrored_swaps_labels(phantom):
    mirrored = lung_mask(phantom.volume_hu[::-1].copy(), phantom.spacing_mm)
    truth = np.zeros_like(phantom.lung)
    flipped = phantom.lung[::-1]
    truth[flipped == RIGHT_LUNG_LABEL] = LEFT_LUNG_LABEL
    truth[flipped == LEFT_LUNG_LABEL] = RIGHT_LUNG_LABEL
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert (mirrored[truth == lab] == lab).mean() > 0.95


def test_phantom_trachea_removed(phantom):
    mask = lung_mask(phantom.volume_hu, phantom.spacing_mm)
    top = phantom.lung.any(axis=(0, 1)).nonzero()[0][-1]
    # above the lung apices only the trachea is air inside the body: it must not be lung
    assert not mask[:, :, top + 1 :].any()
    kept_airway = lung_mask(phantom.volume_hu, phantom.spacing_mm, remove_airway=False)
    assert kept_airway[:, :, top + 1 :].any()


@pytest.mark.parametrize(
    "bridge_mm, how",
    [
        (((-26.0, 26.0), (30.0, 40.0), (-40.0, 40.0)), "erosion"),  # thin anterior junction
        (((-30.0, 30.0), (-50.0, 50.0), (-80.0, 60.0)), "midline"),  # lungs merged into one block
    ],
    ids=["junction", "merged"],
)
def test_joined_lungs_are_split(phantom, bridge_mm, how, caplog):
    spacing = phantom.spacing_mm
    origin = phantom.affine[:3, 3]
    box = tuple(
        slice(int(round((lo - origin[a]) / spacing[a])), int(round((hi - origin[a]) / spacing[a])))
        for a, (lo, hi) in enumerate(bridge_mm)
    )
    volume = phantom.volume_hu.copy()
    volume[box] = -850.0  # aerated lung joining the two lungs
    region = phantom.lung > 0
    region[box] = True
    labels, _ = ndi.label((volume < -320.0) & region)
    assert len(np.unique(labels[(phantom.lung > 0) & (labels > 0)])) == 1, "the bridge must join the lungs"
    with caplog.at_level(logging.DEBUG, logger="infnet_monai.postprocessing.lung"):
        mask = lung_mask(volume, spacing)
    assert how in caplog.text
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert (mask[phantom.lung == lab] == lab).mean() > 0.95


def test_downsampled_path(phantom):
    # a working voxel size of 4 mm block-averages the 2 mm axes by 2 and brings the labels back
    mask = lung_mask(phantom.volume_hu, phantom.spacing_mm, working_spacing_mm=4.0)
    assert mask.shape == phantom.lung.shape
    assert mask_dice(mask, phantom.lung) >= 0.95
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert (mask[phantom.lung == lab] == lab).mean() > 0.9


def test_dense_lesion_inside_lung_included(phantom):
    mask = lung_mask(phantom.volume_hu, phantom.spacing_mm)
    assert (mask[phantom.infection > 0] > 0).mean() >= 0.9


@pytest.mark.parametrize(
    "volume",
    [
        np.full((40, 40, 10), -1000.0, dtype=np.float32),  # only air
        np.full((40, 40, 10), 40.0, dtype=np.float32),  # only soft tissue
        np.pad(np.full((30, 30, 10), 40.0, dtype=np.float32), ((5, 5), (5, 5), (0, 0)), constant_values=-1000.0),
    ],
    ids=["air", "tissue", "body-without-lung"],
)
def test_no_lung_gives_empty_mask(volume):
    mask = lung_mask(volume, (1.0, 1.0, 2.0))
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    assert not mask.any()


def test_integer_input_matches_float(phantom):
    as_int = np.round(phantom.volume_hu).astype(np.int16)
    np.testing.assert_array_equal(
        lung_mask(as_int, phantom.spacing_mm), lung_mask(as_int.astype(np.float32), phantom.spacing_mm)
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"volume_hu": np.zeros((4, 4)), "spacing_mm": (1.0, 1.0, 1.0)},
        {"volume_hu": np.zeros((4, 4, 4)), "spacing_mm": (1.0, 1.0)},
        {"volume_hu": np.zeros((4, 4, 4)), "spacing_mm": (1.0, 0.0, 1.0)},
        {"volume_hu": np.zeros((4, 4, 4)), "spacing_mm": (1.0, 1.0, 1.0), "max_pure_air_fraction": 1.5},
        {"volume_hu": np.zeros((4, 4, 4)), "spacing_mm": (1.0, 1.0, 1.0), "closing_radius_mm": -1.0},
        {"volume_hu": np.zeros((4, 4, 4), dtype=np.uint16), "spacing_mm": (1.0, 1.0, 1.0)},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        lung_mask(**kwargs)


def test_options_are_checked_when_made():
    from infnet_monai.postprocessing import LungMaskOptions

    assert LungMaskOptions().threshold_hu == -320.0 and LungMaskOptions().working_spacing_mm == 2.0
    for bad in ({"min_relative_volume": -0.1}, {"min_component_ml": -1.0}, {"working_spacing_mm": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LungMaskOptions(**bad)
    with pytest.raises(TypeError, match="closing_radius"):
        lung_mask(np.zeros((4, 4, 4)), (1.0, 1.0, 1.0), closing_radius=3.0)  # misspelt option


# ------------------------------------------------------------------------------------------- hand-built volumes
def _world_mm(shape, spacing):
    """Voxel-centre coordinates (mm) along each axis, the volume centred on 0 (sparse grids)."""
    return np.meshgrid(*[s * (np.arange(n) - (n - 1) / 2.0) for n, s in zip(shape, spacing)], indexing="ij", sparse=True)


def _ellipsoid(coords, centre, radii):
    return sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, centre, radii)) <= 1.0


def _two_lung_chest(shape, spacing, lung_z_mm=0.0):
    """Noise-free HU volume: air, an elliptic body of soft tissue (40 HU) along the whole scan and two ellipsoidal
    lungs of aerated parenchyma (-850 HU) at +-45 mm; returns ``(volume_hu, lung truth)``."""
    x, y, z = _world_mm(shape, spacing)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to((x / 110.0) ** 2 + (y / 90.0) ** 2 <= 1.0, shape)] = 40.0
    truth = _ellipsoid((x, y, z), (-45.0, 0.0, lung_z_mm), (30.0, 45.0, 40.0))
    truth |= _ellipsoid((x, y, z), (45.0, 0.0, lung_z_mm), (30.0, 45.0, 40.0))
    hu[truth] = -850.0
    return hu, truth


def test_coarse_boundary_is_trimmed_to_the_air_at_full_resolution():
    """At 1 mm the lung is segmented on a 2 mm grid; the nearest-neighbour upsampling spills the coarse boundary over
    the soft tissue beside the lung in a staircase, which the trim against the HU threshold removes."""
    from infnet_monai.postprocessing import LUNG_THRESHOLD_HU
    from infnet_monai.postprocessing.lung import working_factors

    spacing = (1.0, 1.0, 2.0)
    volume, truth = _two_lung_chest((240, 200, 48), spacing)
    assert working_factors(volume.shape, spacing) == [2, 2, 1]  # the reduced-resolution path is taken
    mask = lung_mask(volume, spacing)
    assert mask_dice(mask, truth) >= 0.99
    tissue = volume >= LUNG_THRESHOLD_HU
    assert np.count_nonzero((mask > 0) & tissue) == 0, "soft tissue beside the lung labelled lung (boundary not trimmed)"


def test_component_mostly_of_pure_gas_is_not_lung():
    """A stomach-like gas pocket (-1000 HU, larger than either lung) inside the body is dropped by its interior
    pure-air fraction; both lungs are kept and nothing of the gas is labelled."""
    spacing = (3.0, 3.0, 3.0)
    shape = (80, 70, 50)
    volume, truth = _two_lung_chest(shape, spacing, lung_z_mm=25.0)
    gas = _ellipsoid(_world_mm(shape, spacing), (10.0, 0.0, -50.0), (70.0, 55.0, 20.0))
    assert not (gas & truth).any() and gas.sum() > truth.sum() / 2  # larger than each lung
    volume[gas] = -1000.0
    mask = lung_mask(volume, spacing)
    assert np.count_nonzero(mask[gas]) == 0, "gas pocket labelled lung"
    assert mask_dice(mask, truth) >= 0.98
    assert set(np.unique(mask)) == {0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL}


def test_airway_partial_volume_rim_is_removed_with_the_airway():
    """On a blurred phantom (partial volume, as in a real scan) the lumen of the trachea and main bronchi has a rim of
    air-like voxels above the lumen's threshold; the airway is dilated by AIRWAY_DILATION_MM before its removal, so the
    rim is not left in the lung."""
    from infnet_monai.postprocessing.airway import find_airway
    from infnet_monai.postprocessing.lung import AIRWAY_DILATION_MM, LUNG_THRESHOLD_HU, body_mask
    from infnet_monai.postprocessing.morphology import distance_mm

    spacing = (3.0, 3.0, 4.0)
    chest = make_chest_phantom(shape=(96, 96, 48), spacing_mm=spacing, seed=0)
    volume = ndi.gaussian_filter(chest.volume_hu, sigma=[1.5 / s for s in spacing])
    airway = find_airway(volume, spacing, body_mask(volume))
    assert airway is not None and airway.carina_index is not None
    near = distance_mm(airway.lumen, spacing)
    rim = (near > 0) & (near <= AIRWAY_DILATION_MM) & (volume < LUNG_THRESHOLD_HU)
    assert rim.sum() >= 50  # the blur leaves an air-like rim around the lumen
    mask = lung_mask(volume, spacing)
    assert mask_dice(mask, chest.lung) >= 0.98
    assert not mask[airway.lumen].any()
    assert np.count_nonzero(mask[rim]) <= 0.05 * rim.sum(), "the airway's rim is left in the lung"
