"""The full 3D pipeline with the shipped model on a lesion-free chest phantom (a normal lung)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from infnet_monai.data.phantom import LUNG_PARENCHYMA_HU, NOISE_SD_HU, make_chest_phantom
from infnet_monai.pipeline import CTSegmenter
from infnet_monai.utils import MODEL_ENV_VAR

# 32 slices of 8 mm keep the run at a few seconds on two CPU cores; the lungs span 25 of them
SHAPE, SPACING = (160, 160, 32), (2.0, 2.0, 8.0)

# Measured with the shipped model (bundles/infnet_covid/models/model.pt, epoch 85, temperature 0.25), CPU:
# 141.9 mL of infection, 5.58% of the lung, 10 lesions (seeds 1 and 2 of the phantom: 5.41% and 6.85%). The false
# infection lies deep in the parenchyma (median 15 mm from the pleura, not on the vessels): the phantom's smooth
# noise texture does not look like real lung to the network, so the bound below only guards against regressions.
MEASURED_PERCENT = 5.58
MAX_PERCENT = 8.0


@pytest.fixture(scope="module")
def normal_result():
    phantom = make_chest_phantom(SHAPE, SPACING, seed=0)
    volume = phantom.volume_hu.copy()
    lesions = phantom.infection > 0
    # lesions back to aerated lung: parenchyma with the phantom's noise
    volume[lesions] = LUNG_PARENCHYMA_HU + NOISE_SD_HU * np.random.default_rng(0).standard_normal(int(lesions.sum()))
    image = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(phantom.affine, dtype=torch.float64))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(MODEL_ENV_VAR, raising=False)
        segmenter = CTSegmenter(device="cpu")
    assert segmenter.model_path is not None and segmenter.model_path.name == "model.pt"
    return phantom, segmenter.segment_image(image)


def test_normal_phantom_false_infection_below_the_measured_bound(normal_result):
    phantom, result = normal_result
    row = result.row
    assert row["infection_percent"] < MAX_PERCENT
    # statistics agree with the returned masks, infection only inside the lung
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    assert row["infection_volume_ml"] == pytest.approx(result.infection.sum() * voxel_ml)
    assert not result.infection[result.lung == 0].any()
    # no dense tissue on a normal phantom: the lung is the HU lung, close to the truth
    truth_ml = float((phantom.lung > 0).sum()) * voxel_ml
    assert row["lung_volume_ml"] == pytest.approx(truth_ml, rel=0.05)
    assert row["lung_volume_ml"] == pytest.approx(row["lung_hu_volume_ml"], rel=0.01)


@pytest.mark.xfail(strict=True, reason=f"the shipped model marks {MEASURED_PERCENT}% of the phantom's normal lung as infection")
def test_normal_phantom_has_no_infection(normal_result):
    _, result = normal_result
    assert result.row["infection_volume_ml"] < 1.0


def test_slices_without_lung_are_not_inferred(normal_result):
    phantom, result = normal_result
    with_lung = int((phantom.lung > 0).any(axis=(0, 1)).sum())
    assert with_lung < SHAPE[2]  # the phantom has slices above and below the lungs
    assert result.row["slices_inferred"] < SHAPE[2]
    assert abs(result.row["slices_inferred"] - with_lung) <= 1
