"""Tests of the synthetic chest CT phantom (infnet_monai.data.phantom)."""

from __future__ import annotations

import numpy as np
import pytest

from infnet_monai.data.phantom import ChestPhantom, make_chest_phantom
from infnet_monai.postprocessing import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL, lung_mask
from infnet_monai.stats import infection_burden


@pytest.fixture(scope="module")
def phantom() -> ChestPhantom:
    return make_chest_phantom()


def test_types_and_geometry(phantom):
    assert phantom.volume_hu.shape == (160, 160, 64) and phantom.volume_hu.dtype == np.float32
    assert phantom.lung.dtype == np.uint8 and set(np.unique(phantom.lung)) == {0, 1, 2}
    assert phantom.infection.dtype == np.uint8 and set(np.unique(phantom.infection)) == {0, 1}
    np.testing.assert_allclose(np.diag(phantom.affine), [2.0, 2.0, 4.0, 1.0])
    centre = phantom.affine @ np.array([(n - 1) / 2.0 for n in phantom.volume_hu.shape] + [1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    # RAS: the right lung is at world x > 0, i.e. at larger axis-0 indices
    right_x = np.nonzero(phantom.lung == RIGHT_LUNG_LABEL)[0].mean()
    left_x = np.nonzero(phantom.lung == LEFT_LUNG_LABEL)[0].mean()
    assert right_x > left_x and phantom.affine[0, 0] * right_x + phantom.affine[0, 3] > 0
    kinds = [lesion["kind"] for lesion in phantom.lesions]
    assert kinds.count("ggo") >= 2 and kinds.count("consolidation") >= 1


def test_deterministic():
    a, b = make_chest_phantom(seed=3), make_chest_phantom(seed=3)
    np.testing.assert_array_equal(a.volume_hu, b.volume_hu)
    np.testing.assert_array_equal(a.lung, b.lung)
    np.testing.assert_array_equal(a.infection, b.infection)
    assert a.lesions == b.lesions
    c = make_chest_phantom(seed=4)
    assert not np.array_equal(a.volume_hu, c.volume_hu)


def test_lesions_inside_lungs(phantom):
    assert ((phantom.lung > 0) | (phantom.infection == 0)).all()
    for lesion in phantom.lesions:
        centre = np.linalg.solve(phantom.affine, np.array([*lesion["centre_mm"], 1.0]))[:3]
        label = phantom.lung[tuple(int(round(c)) for c in centre)]
        assert label == (RIGHT_LUNG_LABEL if lesion["side"] == "right" else LEFT_LUNG_LABEL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lesion_volumes(seed):
    phantom = make_chest_phantom(seed=seed)
    for lesion in phantom.lesions:
        assert min(lesion["radii_mm"]) >= 6.0
        a, b, c = lesion["radii_mm"]
        assert lesion["analytic_volume_ml"] == pytest.approx(4.0 / 3.0 * np.pi * a * b * c / 1000.0, rel=1e-12)
        assert lesion["volume_ml"] == pytest.approx(lesion["analytic_volume_ml"], rel=0.05)
    burden = infection_burden(phantom.infection, phantom.lung, phantom.spacing_mm)
    assert burden["infection_volume_ml"] == pytest.approx(sum(les["volume_ml"] for les in phantom.lesions), rel=1e-9)
    assert burden["lesion_count"] == len(phantom.lesions)


def _lesion_mask(phantom: ChestPhantom, lesion: dict) -> np.ndarray:
    """Rebuild one lesion's voxels (centres inside the ellipsoid) from its centre and radii."""
    centre = np.linalg.solve(phantom.affine, np.array([*lesion["centre_mm"], 1.0]))[:3]
    grids = np.meshgrid(*[np.arange(n) for n in phantom.volume_hu.shape], indexing="ij", sparse=True)
    terms = [((g - c) * s / r) ** 2 for g, c, s, r in zip(grids, centre, phantom.spacing_mm, lesion["radii_mm"])]
    return (terms[0] + terms[1] + terms[2]) <= 1.0


def test_intensities(phantom):
    v = phantom.volume_hu
    assert v[0, 0, 0] < -900  # air outside the body
    lung_only = (phantom.lung > 0) & (phantom.infection == 0)
    assert -900 < np.median(v[lung_only]) < -800
    expected = {"ggo": -500.0, "consolidation": 30.0}
    tolerance = {"ggo": 100.0, "consolidation": 15.0}  # GGO carries a smooth texture of 60 HU SD
    union = np.zeros(v.shape, dtype=bool)
    for lesion in phantom.lesions:
        inside = _lesion_mask(phantom, lesion)
        assert inside.sum() * np.prod(phantom.spacing_mm) / 1000.0 == pytest.approx(lesion["volume_ml"])
        assert abs(np.median(v[inside]) - expected[lesion["kind"]]) < tolerance[lesion["kind"]]
        union |= inside
    np.testing.assert_array_equal(union, phantom.infection > 0)


def test_lung_mask_on_phantom(phantom):
    mask = lung_mask(phantom.volume_hu, phantom.spacing_mm)
    truth = phantom.lung > 0
    pred = mask > 0
    assert 2.0 * (pred & truth).sum() / (pred.sum() + truth.sum()) >= 0.95
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert (mask[phantom.lung == lab] == lab).mean() > 0.95
    consolidations = [les for les in phantom.lesions if les["kind"] == "consolidation"]
    assert consolidations
    for lesion in consolidations:
        assert (mask[_lesion_mask(phantom, lesion)] > 0).mean() >= 0.9


@pytest.mark.parametrize("shape, spacing", [((160, 160), (2.0, 2.0, 4.0)), ((160, 160, 64), (2.0, 0.0, 4.0))])
def test_invalid_arguments(shape, spacing):
    with pytest.raises(ValueError):
        make_chest_phantom(shape=shape, spacing_mm=spacing)
