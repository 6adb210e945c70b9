"""The lung mask's anatomy on hand-built phantoms: the trachea, an organ dome rising into the lung, a consolidation
against the ribs next to the chest wall muscle, and a solitary solid nodule."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.postprocessing import extend_lung, lung_mask
from infnet_monai.postprocessing.airway import find_airway
from infnet_monai.postprocessing.infection import basal_rim_shares, infection_and_nodules
from infnet_monai.postprocessing.lung import body_mask
from infnet_monai.postprocessing.morphology import fill_enclosed_holes
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
