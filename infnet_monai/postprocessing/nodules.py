# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Nodule-like lesions: solid, compact findings that a burden tool must not count as infection.

A 2D infection network trained on COVID-19 slices marks a solid pulmonary nodule or a small mass as consolidation
(on LIDC-IDRI-0001 the 2 cm nodule became 6.9 mL of "infection"). COVID-19 pneumonia is ground-glass dominated, and
where it consolidates the consolidation comes with ground glass around it in the same lesion; a nodule is solid
throughout, round and surrounded by lung. :func:`nodule_like` flags a lesion when at least
:data:`NODULE_MIN_SOLID_SHARE` of its voxels are solid (above :data:`SOLID_HU`), its sphericity reaches
:data:`NODULE_MIN_SPHERICITY`, at least :data:`NODULE_MIN_AERATED_SHELL` of its surroundings are aerated lung and
it is no larger than :data:`NODULE_MAX_VOLUME_ML`. The pipeline keeps such lesions out of the infection mask and the burden and
reports them apart (``nodule_like_lesion_count``, ``nodule_like_volume_ml``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.morphology import FACE_3D

__all__ = [
    "SOLID_HU",
    "AERATED_HU",
    "NODULE_MIN_SOLID_SHARE",
    "NODULE_MIN_SPHERICITY",
    "NODULE_MAX_VOLUME_ML",
    "NODULE_MIN_AERATED_SHELL",
    "sphericity",
    "nodule_like",
]

SOLID_HU = -300.0
"""Voxels above this (HU) are solid: soft tissue and consolidation (-100 to +100 HU); ground glass is -750 to
-300 HU."""
NODULE_MIN_SOLID_SHARE = 0.5
"""A nodule-like lesion has at least this share of solid voxels. On ``shared/`` the LIDC-IDRI-0001 nodule measures
0.56 and the COVID-19 lesions of ``covid_ct_md_P001`` at most 0.35 (``scripts/evaluate_3d.py``)."""
NODULE_MIN_SPHERICITY = 0.4
"""... and a sphericity (:func:`sphericity`) of at least this: 0.49 for the LIDC-IDRI-0001 nodule at 2.5 mm
slices, 1 for a ball; the consolidated band of an atelectasis or an irregular mass scores lower."""
AERATED_HU = -500.0
"""Voxels below this (HU) are aerated lung."""
NODULE_MIN_AERATED_SHELL = 0.5
"""... and at least this share of the voxels just outside it (a one-voxel shell) is aerated lung: a nodule lies in
the lung, while a piece of the mediastinum or the chest wall that the lung mask took in is surrounded by soft
tissue."""
NODULE_MAX_VOLUME_ML = 30.0
"""... and at most this volume (mL, a ball of 3.9 cm): nodules are under 3 cm, and larger solid regions are
consolidation or masses that the burden keeps."""


def sphericity(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """``pi^(1/3) (6 V)^(2/3) / A`` of a binary 3D mask (1 for a ball), with the surface area ``A`` of its marching
    cubes mesh (scikit-image) in mm^2 and its volume ``V`` in mm^3."""
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    if padded.sum() == 0:
        return 0.0
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(float(s) for s in spacing))
    area = float(mesh_surface_area(verts, faces))
    volume = float(np.count_nonzero(mask)) * float(np.prod(spacing))
    return float(np.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / area) if area > 0 else 0.0


def nodule_like(
    labels: np.ndarray, n: int, volume_hu: np.ndarray, spacing: Sequence[float], candidates: np.ndarray | None = None
) -> np.ndarray:
    """Per lesion label (index 0 unused, ``False``), whether the lesion is nodule-like (module docstring).

    Args:
        labels: ``(X, Y, Z)`` lesion labels ``1..n``.
        n: number of labels.
        volume_hu: the CT in HU on the grid of ``labels``.
        spacing: voxel size in mm along axes ``(0, 1, 2)``.
        candidates: per label, whether to test it (default all); the others are ``False``.
    """
    out = np.zeros(n + 1, dtype=bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or (candidates is not None and not candidates[i]):
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, size)) for s, size in zip(sl, labels.shape))
        lesion = labels[grown] == i
        count = int(np.count_nonzero(lesion))
        if count * voxel_ml > NODULE_MAX_VOLUME_ML:
            continue
        hu = np.asarray(volume_hu[grown])
        if np.count_nonzero(hu[lesion] > SOLID_HU) < NODULE_MIN_SOLID_SHARE * count:
            continue
        shell = ndi.binary_dilation(lesion, structure=FACE_3D) & ~lesion
        if np.count_nonzero(hu[shell] < AERATED_HU) < NODULE_MIN_AERATED_SHELL * max(np.count_nonzero(shell), 1):
            continue
        out[i] = sphericity(lesion, spacing) >= NODULE_MIN_SPHERICITY
    return out
