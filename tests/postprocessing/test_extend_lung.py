"""Tests of the pathology-inclusive lung (infnet_monai.postprocessing.extend_lung) and of the axial-extent filter of
postprocess_infection, on small synthetic RAS volumes in Hounsfield units."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from infnet_monai.postprocessing import (
    LEFT_LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    extend_lung,
    extension_slices,
    lung_mask,
    postprocess_infection,
)

SPACING = (2.0, 2.0, 2.0)
SHAPE = (64, 64, 24)
AIR, TISSUE, LUNG, BONE = -1000.0, 40.0, -850.0, 700.0


def _chest():
    """Synthetic chest (RAS): body ellipse of soft tissue in air, two ellipsoidal lungs (right = larger axis-0
    index), the lateral part of the right lung consolidated (soft-tissue density, against the chest wall) on the
    middle slices, a small rib (bone) where that consolidation meets the wall, and an anterior soft-tissue patch
    away from the lungs."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    vol = np.full(SHAPE, AIR, dtype=np.float32)
    body = ((i - 31.5) / 30) ** 2 + ((j - 31.5) / 24) ** 2 <= 1
    vol[body] = TISSUE
    right = ((i - 44) / 10) ** 2 + ((j - 31.5) / 14) ** 2 + ((k - 11.5) / 11) ** 2 <= 1
    left = ((i - 19) / 10) ** 2 + ((j - 31.5) / 14) ** 2 + ((k - 11.5) / 11) ** 2 <= 1
    vol[right | left] = LUNG
    consolidation = right & (i >= 48) & (k >= 7) & (k <= 16)
    vol[consolidation] = TISSUE
    rib = (i >= 53) & (i <= 56) & (j >= 30) & (j <= 33) & (k >= 10) & (k <= 13)
    vol[rib] = BONE
    patch = (i >= 28) & (i <= 35) & (j >= 49) & (j <= 52) & (k >= 8) & (k <= 14)  # mediastinum, anterior
    return vol, right, left, consolidation, rib, patch


@pytest.fixture(scope="module")
def chest():
    vol, right, left, consolidation, rib, patch = _chest()
    lung = lung_mask(vol, SPACING)
    return vol, right, left, consolidation, rib, patch, lung


def test_synthetic_chest_hu_lung_mask_misses_the_consolidation(chest):
    vol, right, left, consolidation, rib, patch, lung = chest
    aerated_right, aerated_left = right & ~consolidation, left
    assert (lung[aerated_right] == RIGHT_LUNG_LABEL).mean() > 0.95  # right lung: larger axis-0 index
    assert (lung[aerated_left] == LEFT_LUNG_LABEL).mean() > 0.95
    # the problem extend_lung solves: dense consolidation against the wall looks like the wall
    assert (lung[consolidation] > 0).mean() < 0.5


def test_a_phantom_with_dense_consolidation_against_the_chest_wall_stays_inside_the_lung_mask(chest):
    vol, right, left, consolidation, rib, patch, lung = chest
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[consolidation | rib | patch] = 1.0
    out = extend_lung(lung, prob, vol, SPACING)
    assert out.dtype == np.uint8 and out.shape == SHAPE
    # the consolidation (minus the rib) joins the right lung
    assert (out[consolidation & ~rib] == RIGHT_LUNG_LABEL).all()
    # a superset of the HU lung, with its labels unchanged
    assert (out[lung > 0] == lung[lung > 0]).all()
    assert (out > 0).sum() > (lung > 0).sum()
    # bone (above max_hu) is never added, even where the probability is 1 and it touches the lung
    assert not (out[rib] > 0).any()
    # infection not touching the lung does not join it
    assert not (out[patch] > 0).any()
    # nothing is added where the probability is 0 (besides per-slice filling, which finds no hole here)
    assert not (out[(lung == 0) & (prob == 0)] > 0).any()
    assert set(np.unique(out)) == {0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL}


def test_extend_lung_max_hu_and_threshold(chest):
    vol, right, left, consolidation, rib, patch, lung = chest
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[consolidation] = 0.7
    # consolidation is 40 HU: with max_hu below it nothing is added
    assert (extend_lung(lung, prob, vol, SPACING, max_hu=0.0) == lung).all()
    # probability below the threshold is not infection
    assert (extend_lung(lung, prob, vol, SPACING, threshold=0.8) == lung).all()
    assert (extend_lung(lung, prob, vol, SPACING, threshold=0.7)[consolidation & ~rib] == RIGHT_LUNG_LABEL).all()


def test_extend_lung_gate_closed_when_the_scan_stops_at_the_widest_level(chest):
    vol, right, left, consolidation, rib, patch, lung = chest
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[consolidation] = 1.0
    # keep only the lower half: the lungs are still growing where the scan stops (bases only)
    cut = slice(0, 12)
    lower = np.ascontiguousarray(lung[:, :, cut])
    assert not extension_slices(lower, SPACING).any()
    out = extend_lung(lower, np.ascontiguousarray(prob[:, :, cut]), np.ascontiguousarray(vol[:, :, cut]), SPACING)
    assert (out == lower).all()
    # on the whole scan the gate is open on the middle slices, shut near the apex and the base
    allowed = extension_slices(lung, SPACING)
    assert allowed[RIGHT_LUNG_LABEL, 7:17].all() and allowed[LEFT_LUNG_LABEL, 7:17].all()
    assert not allowed[:, 0].any() and not allowed[:, -1].any()
    # min_area_fraction = 1.0 allows only each lung's largest slice(s)
    strict = extension_slices(lung, SPACING, min_area_fraction=1.0)
    assert 1 <= strict[RIGHT_LUNG_LABEL].sum() < allowed[RIGHT_LUNG_LABEL].sum()


def test_extend_lung_only_on_slices_the_gate_allows(chest):
    vol, right, left, consolidation, rib, patch, lung = chest
    allowed = extension_slices(lung, SPACING)
    prob = np.zeros(SHAPE, dtype=np.float32)
    # soft tissue right below the left lung's small first slices, in every slice
    near = np.zeros(SHAPE, dtype=bool)
    for z in range(SHAPE[2]):
        xs = np.flatnonzero((lung[:, :, z] == LEFT_LUNG_LABEL).any(axis=1))
        if xs.size:
            near[xs[0] - 2 : xs[0], 28:36, z] = True  # two voxels of wall lateral to the left lung
    prob[near] = 1.0
    out = extend_lung(lung, prob, vol, SPACING)
    added = (out > 0) & (lung == 0)
    per_slice = added.any(axis=(0, 1))
    assert per_slice.any()
    assert not per_slice[~allowed[LEFT_LUNG_LABEL]].any()
    assert (out[added] == LEFT_LUNG_LABEL).all()


def test_extend_lung_rejects_shape_mismatch(chest):
    vol, *_, lung = chest
    with pytest.raises(ValueError, match="probability"):
        extend_lung(lung, np.zeros((4, 4, 4)), vol, SPACING)
    with pytest.raises(ValueError, match="volume_hu"):
        extend_lung(lung, np.zeros(SHAPE), vol[:, :, :3], SPACING)


def test_extend_lung_leaves_an_open_organ_dome_out_of_the_lung():
    """An organ's dome that rises into the left lung base shows as a soft-tissue island on the slices above the
    lung's floor and opens into the abdomen below. The Hounsfield-unit lung leaves it out; extending the lung with
    infection elsewhere must not fill it back in (every in-plane hole was filled before: 22 mL on P001)."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    vol = np.full(SHAPE, AIR, dtype=np.float32)
    vol[((i - 31.5) / 30) ** 2 + ((j - 31.5) / 24) ** 2 <= 1] = TISSUE
    right = (((i - 44) / 10) ** 2 + ((j - 31.5) / 14) ** 2 <= 1) & (k >= 6) & (k <= 21)
    left = (((i - 19) / 10) ** 2 + ((j - 31.5) / 14) ** 2 <= 1) & (k >= 6) & (k <= 21)
    vol[right | left] = LUNG
    dome = ((i - 19) / 8) ** 2 + ((j - 31.5) / 8) ** 2 + ((k - 4) / 6) ** 2 <= 1  # 707 mm2 on the lung's floor
    vol[dome] = TISSUE
    consolidation = right & (i >= 48) & (k >= 10) & (k <= 16)
    vol[consolidation] = TISSUE
    island = dome & left
    lung = lung_mask(vol, SPACING)
    in_lung = lung[island] > 0  # the closing takes in the dome's narrow top; the Hounsfield-unit lung leaves the rest
    assert island.sum() > 300 and in_lung.mean() < 0.3, in_lung.mean()
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[consolidation] = 1.0
    out = extend_lung(lung, prob, vol, SPACING)
    assert (out[consolidation] == RIGHT_LUNG_LABEL).mean() > 0.9  # the extension did add the consolidation
    assert ((out[island] > 0) == in_lung).all()
    assert (out[left & ~dome] == LEFT_LUNG_LABEL).all()
    # filling every in-plane hole, as before, puts the dome into the left lung
    assert (extend_lung(lung, prob, vol, SPACING, dome_min_area_mm2=np.inf)[island] == LEFT_LUNG_LABEL).all()
    with pytest.raises(ValueError, match="dome_min_area_mm2"):
        extend_lung(lung, prob, vol, SPACING, dome_min_area_mm2=-1.0)


# ---------------------------------------------------------------------------------------------------- extent filter
def test_postprocess_infection_min_lesion_extent():
    shape = (32, 32, 12)
    lung = np.ones(shape, dtype=np.uint8)
    prob = np.zeros(shape, dtype=np.float32)
    prob[2:8, 2:8, 3] = 1.0  # one slice: 2 mm
    prob[12:18, 2:8, 4:8] = 1.0  # four slices: 8 mm
    prob[22:28, 2:8, 2:7] = 1.0  # five slices: 10 mm, exactly the minimum
    prob[2:8, 20:26, 5:11] = 1.0  # six slices: 12 mm
    kw = dict(min_lesion_volume_mm3=0.0, min_lesion_extent_mm=10.0)
    out = postprocess_infection(prob, lung, (1.0, 1.0, 2.0), **kw)
    assert not out[2:8, 2:8, 3].any()
    assert not out[12:18, 2:8].any()
    assert out[22:28, 2:8, 2:7].all()
    assert out[2:8, 20:26, 5:11].all()
    assert out.sum() == 36 * (5 + 6)
    # 0 keeps all
    assert postprocess_infection(prob, lung, (1.0, 1.0, 2.0), min_lesion_volume_mm3=0.0).sum() == (prob > 0).sum()
    with pytest.raises(ValueError):
        postprocess_infection(prob, lung, (1.0, 1.0, 2.0), min_lesion_extent_mm=-1.0)


def test_postprocess_infection_scan_shorter_than_the_minimum_extent():
    shape = (32, 32, 3)  # 6 mm of scan
    lung = np.ones(shape, dtype=np.uint8)
    prob = np.zeros(shape, dtype=np.float32)
    prob[4:10, 4:10, :] = 1.0  # spans the whole scan: kept
    prob[20:26, 20:26, 1:3] = 1.0  # two of three slices: removed
    out = postprocess_infection(prob, lung, (1.0, 1.0, 2.0), min_lesion_volume_mm3=0.0, min_lesion_extent_mm=10.0)
    assert out[4:10, 4:10, :].all()
    assert not out[20:26, 20:26].any()


def test_normal_lung_phantom_false_positives_of_known_kinds_give_no_infection():
    """A normal chest (no consolidation) with the false positives seen on real normal scans: single-slice specks on
    vessels, a thin partial-volume rim along the lung base, and a small blob spanning a few slices. The default
    filters of the 3D pipeline (0.3 mL, 20 mm axial extent, 1 cm2 in-plane pieces) leave no infection, while a
    real lesion of the same probability is kept."""
    from infnet_monai.pipeline.segment import (
        DEFAULT_MIN_LESION_AREA_MM2,
        DEFAULT_MIN_LESION_EXTENT_MM,
        DEFAULT_MIN_LESION_MM3,
    )

    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    vol = np.full(SHAPE, AIR, dtype=np.float32)
    vol[((i - 31.5) / 30) ** 2 + ((j - 31.5) / 24) ** 2 <= 1] = TISSUE
    right = ((i - 44) / 10) ** 2 + ((j - 31.5) / 14) ** 2 + ((k - 11.5) / 11) ** 2 <= 1
    left = ((i - 19) / 10) ** 2 + ((j - 31.5) / 14) ** 2 + ((k - 11.5) / 11) ** 2 <= 1
    vol[right | left] = LUNG
    lung = lung_mask(vol, SPACING)
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[42:44, 30:32, 12] = 0.9  # vessel speck, one slice
    prob[18:20, 28:30, 9:11] = 0.9  # vessel, two slices
    base = (lung > 0) & (k == 2)
    prob[base & ~np.roll(base, 1, axis=0)] = 0.9  # one-voxel rim along the base on one slice
    prob[16:20, 36:40, 14:18] = 0.8  # 4 x 4 x 4 voxels: 0.5 mL, 8 mm axially
    kwargs = dict(
        min_lesion_volume_mm3=DEFAULT_MIN_LESION_MM3,
        min_lesion_extent_mm=DEFAULT_MIN_LESION_EXTENT_MM,
        min_lesion_area_mm2=DEFAULT_MIN_LESION_AREA_MM2,
    )
    extended = extend_lung(lung, prob, vol, SPACING)
    assert (extended == lung).all()  # nothing dense against the lung: the normal lung stays as it is
    assert not postprocess_infection(prob, extended, SPACING, **kwargs).any()
    # a lesion of 6 x 6 voxels (144 mm2) over 13 slices (26 mm) is kept whole
    prob[40:46, 26:32, 6:19] = 0.9
    out = postprocess_infection(prob, extended, SPACING, **kwargs)
    assert out[40:46, 26:32, 6:19].all() and out.sum() == 6 * 6 * 13


def test_added_voxels_take_the_label_of_the_nearest_lung_voxel_in_mm():
    from infnet_monai.postprocessing.extension import _nearest_lung_labels

    rng = np.random.default_rng(3)
    labels = np.zeros((40, 30, 12), dtype=np.uint8)
    labels[rng.random(labels.shape) > 0.995] = 1  # scattered voxels of both lungs
    labels[rng.random(labels.shape) > 0.995] = 2
    where = (labels == 0) & (rng.random(labels.shape) > 0.5)
    spacing = (0.7, 0.9, 2.5)  # anisotropic: the nearest in voxels is not the nearest in mm
    right, left = (ndi.distance_transform_edt(labels != lab, sampling=spacing)[where] for lab in (1, 2))
    tie = np.isclose(right, left, rtol=0, atol=1e-9)
    assert 0 < tie.sum() < 0.01 * tie.size  # scattered voxels on a grid: a few exact ties
    found = _nearest_lung_labels(labels, where, spacing)
    np.testing.assert_array_equal(found[~tie], np.where(right < left, 1, 2)[~tie])
    assert (found[tie] == 1).all()  # a tie goes to the right lung
    only_left = np.where(labels == 2, 2, 0).astype(np.uint8)  # one lung absent from the box
    assert set(np.unique(_nearest_lung_labels(only_left, where & (only_left == 0), spacing))) == {2}
