"""The lung mask's anatomy on hand-built phantoms: the trachea, an organ dome rising into the lung, a consolidation
against the ribs next to the chest wall muscle, and a solitary solid nodule."""

import dataclasses

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi

from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.postprocessing import LungMaskd, extend_lung, lung_mask
from infnet_monai.postprocessing.airway import Airway, find_airway
from infnet_monai.postprocessing.infection import basal_rim_shares, infection_and_nodules
from infnet_monai.postprocessing.lung import body_mask, lung_mask_with_airway, working_factors
from infnet_monai.postprocessing.morphology import block_mean, fill_enclosed_holes
from infnet_monai.stats import AnatomyChecksd
from infnet_monai.postprocessing.nodules import sphericity
from infnet_monai.stats.anatomy import anatomy_checks, infection_outside_thorax_ml, trachea_in_lung_percent

SPACING = (2.0, 2.0, 2.0)


def _grid(shape, spacing=SPACING):
    return np.meshgrid(*[s * np.arange(n, dtype=np.float32) for n, s in zip(shape, spacing)], indexing="ij", sparse=True)


# ---------------------------------------------------------------------------------------------------- trachea
@pytest.fixture(scope="module")
def chest():
    return make_chest_phantom(shape=(140, 120, 80), spacing_mm=(2.0, 2.0, 3.0), seed=1)


def test_trachea_found_in_3d_and_kept_out_of_the_lung(chest):
    hu, spacing = chest.volume_hu, chest.spacing_mm
    airway = find_airway(hu, spacing, body_mask(hu))
    assert airway is not None and airway.carina_index is not None
    # the phantom's trachea is air above its carina, in the middle of the body
    air = hu < -900
    column = air & ~(chest.lung > 0)
    column[:, :, : airway.carina_index] = False
    assert (airway.trachea & column).sum() > 0.8 * (airway.trachea.sum())
    lung = lung_mask(hu, spacing, working_spacing_mm=None)
    assert trachea_in_lung_percent(hu, lung, spacing) <= 2.0
    # without the airway removal the same mask swallows the tracheal column: the check reads it
    with_airway = lung_mask(hu, spacing, working_spacing_mm=None, remove_airway=False)
    assert trachea_in_lung_percent(hu, with_airway, spacing) > 50.0
    assert "trachea_in_lung" in anatomy_checks(hu, with_airway, np.zeros_like(with_airway), spacing)["qc_flags"]


@pytest.fixture(scope="module")
def fine_chest():
    """The chest phantom at 1 x 1 x 3 mm: the lung mask works on a 2 x 2 x 1 block grid."""
    return make_chest_phantom(shape=(280, 240, 80), spacing_mm=(1.0, 1.0, 3.0), seed=1)


@pytest.mark.parametrize("which", ["chest", "fine_chest"])
def test_the_lung_masks_airway_gives_the_trachea_figure_of_tracking_again(which, request):
    phantom = request.getfixturevalue(which)
    hu, spacing = phantom.volume_hu, phantom.spacing_mm
    lung, airway = lung_mask_with_airway(hu, spacing)
    factors = working_factors(hu.shape, spacing)
    assert airway is not None and airway.factors == tuple(factors) and airway.trachea.any()
    np.testing.assert_array_equal(lung, lung_mask(hu, spacing))
    # the anatomy check's own tracking on the same grid finds the same tracheal column
    coarse = block_mean(hu, factors)
    coarse_spacing = tuple(s * f for s, f in zip(spacing, factors))
    top = int(np.flatnonzero(lung.any(axis=(0, 1)))[-1]) // factors[2]
    tracked = find_airway(coarse, coarse_spacing, body_mask(coarse), air_top=top)
    np.testing.assert_array_equal(airway.trachea, tracked.trachea)
    with_trachea = lung_mask(hu, spacing, remove_airway=False)
    for mask, low, high in ((lung, 0.0, 2.0), (with_trachea, 50.0, 100.0)):
        reused = trachea_in_lung_percent(hu, mask, spacing, airway)
        assert low <= reused <= high
        assert reused == trachea_in_lung_percent(hu, mask, spacing)
    # the airway is really used when it lies on the check's grid, and ignored (tracked again) when it does not
    empty = dataclasses.replace(airway, trachea=np.zeros_like(airway.trachea))
    assert np.isnan(trachea_in_lung_percent(hu, with_trachea, spacing, empty))
    elsewhere = dataclasses.replace(empty, factors=tuple(f + 1 for f in factors))
    assert trachea_in_lung_percent(hu, with_trachea, spacing, elsewhere) > 50.0


def test_lung_mask_transform_hands_its_airway_to_the_anatomy_checks(chest):
    hu, spacing = chest.volume_hu, chest.spacing_mm
    image = MetaTensor(torch.as_tensor(hu[None]), affine=torch.as_tensor(np.diag([*spacing, 1.0])))
    d = LungMaskd("image")({"image": image, "airway": "stale"})
    assert isinstance(d["airway"], Airway) and d["airway"].trachea.any()
    np.testing.assert_array_equal(d["lung"][0].numpy(), lung_mask(hu, spacing))
    assert "airway" not in LungMaskd("image", airway_key=None)({"image": image})
    # the lung without its airway removal covers the trachea: every way of running the check reads it
    d["lung"] = MetaTensor(torch.as_tensor(lung_mask(hu, spacing, remove_airway=False)[None]), meta=image.meta)
    d["infection"] = MetaTensor(torch.zeros_like(d["lung"]), meta=image.meta)
    reused = AnatomyChecksd("infection")(d)["burden"]
    tracked = AnatomyChecksd("infection", airway_key=None)(d)["burden"]
    missing = AnatomyChecksd("infection")({k: v for k, v in d.items() if k != "airway"})["burden"]
    assert reused == tracked == missing and reused["trachea_in_lung_percent"] > 50.0
    # no trachea in the scan: no airway is written, and none of another volume is kept
    slab = MetaTensor(torch.as_tensor(hu[None, :, :, :30]), affine=image.affine)
    assert "airway" not in LungMaskd("image")({"image": slab, "airway": d["airway"]})


def test_no_trachea_in_an_abdominal_slab(chest):
    # the lower half of the phantom holds lung bases only: no tracheal column reaches the top of the lungs there
    hu = chest.volume_hu[:, :, :30]
    assert find_airway(hu, chest.spacing_mm, body_mask(hu), air_top=29) is None
    lung = lung_mask(hu, chest.spacing_mm)
    assert np.isnan(trachea_in_lung_percent(hu, lung, chest.spacing_mm))


# ---------------------------------------------------------------------------------------------------- dome
def _dome_volume():
    """A body, a right lung and a liver rising from below into the lung base: on its top slices the dome is an island
    inside the lung, lower down it joins the abdomen (all sizes in mm)."""
    shape = (100, 80, 60)
    x, y, z = _grid(shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = np.broadcast_to(((x - 100) / 95) ** 2 + ((y - 80) / 75) ** 2 <= 1.0, shape)
    hu[body] = 40.0
    lung = (((x - 135) / 50) ** 2 + ((y - 80) / 55) ** 2 + ((z - 70) / 70) ** 2 <= 1.0) & (z >= 20)
    hu[lung] = -850.0
    dome = ((x - 135) / 25) ** 2 + ((y - 80) / 25) ** 2 + ((z - 10) / 30) ** 2 <= 1.0  # top at 40 mm
    hu[dome] = 55.0  # liver
    hu[body & (z < 20)] = 55.0  # the abdomen below the lung
    return hu, dome & (z >= 22)  # the dome's top, an island in the lung on every slice above the lung's floor


def test_dome_is_not_filled_into_the_lung():
    hu, island = _dome_volume()
    lung = lung_mask(hu, SPACING) > 0
    assert island.any() and (lung & island).sum() < 0.01 * island.sum()  # a few boundary voxels of the closing
    # per-slice filling (the 0.6.0 behaviour) takes the island in: the test is sensitive to the rule
    filled = lung_mask(hu, SPACING, dome_min_area_mm2=float("inf")) > 0
    assert (filled & island).sum() > 0.9 * island.sum()


def test_fill_enclosed_holes_keeps_vessels_and_lesions():
    mask = np.zeros((40, 40, 20), dtype=bool)
    mask[5:35, 5:35, 2:18] = True
    mask[10:13, 10:13, 6:10] = False  # an enclosed lesion
    mask[20:23, 20:23, 0:18] = False  # a vessel leaving through the bottom: open, but small (9 mm^2 per slice)
    mask[8:30, 25:33, 0:6] = False  # a dome entering from below: open and large (176 mm^2 per slice)
    mask[8:30, 25:33, 6:8] = False
    mask[8:30, 25:33, 8] = False
    filled, unfilled = fill_enclosed_holes(mask, (1.0, 1.0, 1.0), max_open_area_mm2=100.0)
    assert filled[10:13, 10:13, 6:10].all()
    assert filled[20:23, 20:23, 2:18].all()
    assert not filled[8:30, 25:33, 2:9].any() and unfilled[8:30, 25:33, 2:9].all()


# ---------------------------------------------------------------------------------------------------- chest wall
def _chest_wall_volume():
    """An axial slab: lung, a ring of ribs with intercostal gaps, chest wall muscle outside them; a consolidation
    against the lateral pleura whose network probability leaks through a gap into the muscle."""
    shape = (100, 100, 16)
    x, y, _ = _grid(shape)
    r = np.sqrt((x - 100.0) ** 2 + (y - 100.0) ** 2)
    angle = np.arctan2(y - 100.0, x - 100.0)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    ring = lambda a, b: np.broadcast_to((r >= a) & (r < b), shape)  # noqa: E731
    hu[ring(0, 96)] = 40.0  # muscle and mediastinum
    hu[ring(0, 70)] = -850.0  # lung (one big lung for the test)
    ribs = ring(72, 80) & np.broadcast_to(np.cos(8 * angle) > -0.3, shape)  # ribs with intercostal gaps
    hu[ribs] = 800.0
    hu[np.broadcast_to((np.abs(x - 100.0) < 8) & (y < 30), shape)] = 800.0  # spine
    consolidation = ring(56, 71) & np.broadcast_to(np.abs(angle) < 0.35, shape)
    hu[consolidation] = 40.0
    probability = np.zeros(shape, dtype=np.float32)
    probability[consolidation] = 0.9
    leak = ring(70, 95) & np.broadcast_to(np.abs(angle) < 0.35, shape)  # through the gaps, into the muscle
    probability[leak] = 0.8
    return hu, probability, consolidation, ring(81, 96)


def test_extension_stays_inside_the_ribs():
    hu, probability, consolidation, outside_ribs = _chest_wall_volume()
    lung = lung_mask(hu, SPACING)
    extended = extend_lung(lung, probability, hu, SPACING) > 0
    assert (extended & consolidation).sum() > 0.9 * consolidation.sum()
    assert not (extended & outside_ribs).any()
    infection = infection_and_nodules(probability, extended, SPACING, min_lesion_volume_mm3=0, volume_hu=hu)[0]
    assert infection_outside_thorax_ml(hu, infection, SPACING) == 0.0
    # without the thoracic envelope the extension runs out into the muscle, and the self-check sees it
    loose = extend_lung(lung, probability, hu, SPACING, thorax=False) > 0
    assert (loose & outside_ribs).any()
    assert infection_outside_thorax_ml(hu, (probability > 0.5) & loose, SPACING) > 0.5


# ---------------------------------------------------------------------------------------------------- nodule
def _nodule_volume(nodule_hu):
    shape = (60, 60, 40)
    x, y, z = _grid(shape, (1.0, 1.0, 1.0))
    hu = np.full(shape, -850.0, dtype=np.float32)
    ball = (x - 30) ** 2 + (y - 30) ** 2 + (z - 20) ** 2 <= 8**2
    hu[ball] = nodule_hu
    probability = np.where(ball, 0.9, 0.0).astype(np.float32)
    return hu, probability, np.ones(shape, dtype=np.uint8), ball


def test_solitary_solid_nodule_is_reported_apart():
    hu, probability, lung, ball = _nodule_volume(40.0)
    infection, nodules = infection_and_nodules(probability, lung, (1.0, 1.0, 1.0), min_lesion_volume_mm3=300, volume_hu=hu)
    assert not infection.any()
    assert nodules.astype(bool).sum() == ball.sum()
    assert sphericity(ball, (1.0, 1.0, 1.0)) > 0.9
    # the same shape in ground glass is infection; without the CT no nodule test is made
    hu_ggo, *_ = _nodule_volume(-550.0)
    infection, nodules = infection_and_nodules(probability, lung, (1.0, 1.0, 1.0), min_lesion_volume_mm3=300, volume_hu=hu_ggo)
    assert infection.astype(bool).sum() == ball.sum() and not nodules.any()
    infection, _ = infection_and_nodules(probability, lung, (1.0, 1.0, 1.0), min_lesion_volume_mm3=300)
    assert infection.astype(bool).sum() == ball.sum()


# ---------------------------------------------------------------------------------------------------- basal rim
def test_basal_rim_lesion_removed_and_basal_lesion_kept():
    """A lesion only on the slice of lung over the diaphragm is partial volume; one that rises above it stays."""
    shape = (40, 40, 30)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[5:35, 5:35, 10:30] = 1  # the lung's floor is slice 10; below it, the diaphragm and the liver
    probability = np.zeros(shape, dtype=np.float32)
    probability[6:16, 6:16, 10] = 0.9  # the rim: one 2 mm slice above the floor
    probability[20:32, 20:32, 10:22] = 0.9  # a basal lesion: its bottom slice on the floor, 24 mm high
    spacing = (1.0, 1.0, 2.0)
    labels, n = ndi.label(probability > 0.5, structure=np.ones((3, 3, 3)))
    shares = basal_rim_shares(labels, n, lung, spacing, 0.0, (0, 0, 0))
    rim, basal = labels[10, 10, 10], labels[25, 25, 15]
    assert shares[rim] == pytest.approx(1.0) and shares[basal] < 0.2
    out, _ = infection_and_nodules(probability, lung, spacing, min_lesion_volume_mm3=0, basal_rim_max_share=0.5)
    assert not out[6:16, 6:16, 10].any() and out[20:32, 20:32, 10:22].all()
    off, _ = infection_and_nodules(probability, lung, spacing, min_lesion_volume_mm3=0, basal_rim_max_share=1.1)
    assert off[6:16, 6:16, 10].all()


def test_lung_floor_and_bony_thorax_on_random_volumes():
    from skimage.morphology import convex_hull_image

    from infnet_monai.postprocessing.thorax import BONE_HU, bony_thorax, lung_floor

    rng = np.random.default_rng(0)
    lung = (rng.random((700, 30, 20)) < 0.02).astype(np.uint8) * rng.integers(1, 3, (700, 30, 20)).astype(np.uint8)
    floor = lung_floor(lung)
    has = lung.any(axis=2)
    np.testing.assert_array_equal(floor[has], np.argmax(lung > 0, axis=2)[has])
    assert (floor[~has] == -1).all() and has.any() and (~has).any()

    hu = rng.normal(0.0, 300.0, (40, 50, 5)).astype(np.float32)
    body = np.zeros(hu.shape, dtype=bool)
    body[5:35, 5:45] = True
    for mask, hull in ((hu > BONE_HU, bony_thorax(hu, None, range(5))), (body & (hu > BONE_HU), bony_thorax(hu, body, range(5)))):
        for k in range(5):
            np.testing.assert_array_equal(hull[:, :, k], convex_hull_image(mask[:, :, k]))
    assert bony_thorax(hu, None, []).shape == (40, 50, 0)


def test_infection_outside_thorax_counts_the_pixels_outside_each_slices_bone_hull():
    from skimage.morphology import convex_hull_image

    from infnet_monai.postprocessing.thorax import BONE_HU

    rng = np.random.default_rng(1)
    hu = np.full((60, 50, 8), -800.0, dtype=np.float32)
    hu[rng.random(hu.shape) < 0.01] = 700.0  # scattered bone
    hu[:, :, 2] = -800.0  # a slice without bone: not counted
    hu[:, :, 3] = -800.0
    hu[10, 10, 3] = hu[40, 30, 3] = 700.0  # two bone pixels: their hull is the pixels themselves
    infection = rng.random(hu.shape) < 0.3
    expected = 0
    for k in range(hu.shape[2]):
        bone = hu[:, :, k] > BONE_HU
        if bone.any():
            hull = convex_hull_image(bone) if bone.sum() >= 3 else bone
            expected += int((infection[:, :, k] & ~hull).sum())
    assert expected > 0
    assert infection_outside_thorax_ml(hu, infection, (1.0, 1.0, 1.0)) == pytest.approx(expected / 1000.0)


# ---------------------------------------------------------------------------------------------------- bands
def test_band_like_infection_is_counted_and_flagged_not_removed():
    """A band along the posterior pleura (4 mm deep, 40 mm long) counts as band-like; a patch that reaches 24 mm into
    the lung does not; the flag goes up only with the band."""
    from infnet_monai.stats.anatomy import BAND_DEPTH_MM, band_like_infection_ml

    spacing = (1.0, 1.0, 2.0)
    lung = np.zeros((80, 80, 30), dtype=np.uint8)
    lung[10:70, 10:70, 3:27] = 1
    band = np.zeros(lung.shape, dtype=bool)
    band[20:60, 10:14, 5:25] = True  # against the posterior wall: its deepest voxel is 4 mm in
    patch = np.zeros(lung.shape, dtype=bool)
    patch[30:50, 30:50, 10:16] = True  # its deepest voxel is 24 mm from the nearest wall (12 slices of 2 mm)
    voxel_ml = np.prod(spacing) / 1000.0
    assert band_like_infection_ml(lung, band | patch, spacing) == pytest.approx(band.sum() * voxel_ml)
    assert band_like_infection_ml(lung, patch, spacing) == 0.0
    assert band_like_infection_ml(lung, np.zeros_like(band), spacing) == 0.0
    assert band_like_infection_ml(lung, patch, spacing, depth_mm=24.5) == pytest.approx(patch.sum() * voxel_ml)
    assert BAND_DEPTH_MM > 4.0
    hu = np.where(lung > 0, -850.0, 40.0).astype(np.float32)
    with_band = anatomy_checks(hu, lung, band | patch, spacing)
    assert "band_like_infection" in with_band["qc_flags"]
    assert with_band["band_like_infection_ml"] == pytest.approx(band.sum() * voxel_ml)
    without = anatomy_checks(hu, lung, patch, spacing)
    assert "band_like_infection" not in without["qc_flags"] and without["band_like_infection_ml"] == 0.0


# ---------------------------------------------------------------------------------------------------- stomach
def _stomach_volume(bridge: bool, bulla: bool = False):
    """2-mm voxels: two box lungs; under the left one a stomach bubble (pure gas) that a thin diaphragm separates from
    the lung base, except (``bridge``) for a 2 x 2-voxel gap of partial volume; optionally a bulla (pure gas) inside
    the right lung with lung beneath it."""
    hu = np.full((70, 50, 60), 40.0, dtype=np.float32)
    hu[8:30, 10:40, 20:55] = -850.0  # left lung (RAS: smaller axis-0 indices)
    hu[40:62, 10:40, 20:55] = -850.0  # right lung
    hu[10:28, 12:38, 6:19] = -1000.0  # stomach gas under the left lung; z 19 is the diaphragm
    if bridge:
        hu[18:20, 24:26, 19] = -600.0  # partial volume through the diaphragm
    if bulla:  # a bulla inside the right lung, lung beneath it (z 20-30), walled off but for the same gap
        hu[43:57, 15:33, 31:45] = 40.0
        hu[44:56, 16:32, 32:44] = -1000.0
        hu[49:51, 23:25, 31] = -600.0
    return hu


@pytest.mark.parametrize("bridge", [False, True])
def test_stomach_joined_to_the_lung_base_through_the_diaphragm_is_not_lung(bridge):
    from infnet_monai.postprocessing.lung import LEFT_LUNG_LABEL

    hu = _stomach_volume(bridge)
    lung = lung_mask(hu, (2.0, 2.0, 2.0))
    stomach = hu < -950.0
    assert not (lung[stomach] > 0).any()  # not a voxel of the gas
    left = lung == LEFT_LUNG_LABEL
    assert left[8:30, 10:40, 20:55].mean() > 0.97  # the lung base above it is kept


def test_joined_gas_is_the_bubble_under_the_lung_not_a_bulla_with_lung_beneath():
    """Both are pure gas joined to a lung through a 2 x 2-voxel gap; only the one under the lung (lung above, none
    beneath) is gas."""
    from infnet_monai.postprocessing.lung import LungMaskOptions, _joined_gas_pockets

    hu = _stomach_volume(bridge=True, bulla=True)
    candidate = (hu < -320.0) & (body_mask(hu) > 0)
    gas = _joined_gas_pockets(candidate, hu, (2.0, 2.0, 2.0), LungMaskOptions())
    stomach = np.zeros(hu.shape, dtype=bool)
    stomach[10:28, 12:38, 6:19] = True
    assert gas[stomach].all()  # the bubble and its rim
    assert not gas[44:56, 16:32, 32:44].any()  # the bulla: lung beneath it
    assert not gas[:, :, 20:].any()  # nothing of the lungs
    lung = lung_mask(hu, (2.0, 2.0, 2.0))
    assert (lung[44:56, 16:32, 32:44] > 0).all() and not (lung[stomach] > 0).any()


def test_an_emphysematous_lung_joined_to_the_other_is_not_taken_for_gas():
    """A whole lung of pure gas (a small emphysematous left lung) joined to a normal right lung through a gap at the
    junction: it is gas by the pure-gas rule, but nothing of the lung lies above it, so it stays lung."""
    from infnet_monai.postprocessing.lung import LungMaskOptions, _joined_gas_pockets

    hu = np.full((70, 50, 60), 40.0, dtype=np.float32)
    hu[40:66, 6:44, 10:56] = -850.0  # right lung
    hu[14:30, 14:36, 24:44] = -1000.0  # left lung, emphysematous, a quarter of the right one's volume
    hu[30:40, 24:26, 33:35] = -600.0  # the junction's partial volume
    candidate = (hu < -320.0) & (body_mask(hu) > 0)
    assert not _joined_gas_pockets(candidate, hu, (2.0, 2.0, 2.0), LungMaskOptions()).any()
    assert (lung_mask(hu, (2.0, 2.0, 2.0))[14:30, 14:36, 24:44] > 0).mean() > 0.9  # kept as lung
