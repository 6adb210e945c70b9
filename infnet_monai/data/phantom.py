# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Synthetic chest CT phantom with known lungs and infection lesions, for testing the 3D pipeline.

The phantom follows the pipeline's array convention: RAS orientation (a larger index along axis 0 is further
toward the patient's right, axis 1 anterior, axis 2 superior), voxel size ``spacing_mm`` for axes ``(0, 1, 2)``,
values in Hounsfield units. World coordinates (mm) are RAS+: ``x > 0`` is the patient's right half, so the right
lung has ``x > 0``, and the affine maps voxel indices to these coordinates with the volume centred on 0.

Anatomy (HU): room air (:data:`AIR_HU`), an elliptical body of soft tissue (:data:`SOFT_TISSUE_HU`) with a
subcutaneous fat ring (:data:`FAT_HU`), a posterior vertebral block (:data:`BONE_HU`), two ellipsoidal lungs
(:data:`LUNG_PARENCHYMA_HU`) with thin vessels (:data:`VESSEL_HU`), a trachea in the upper slices splitting into
two main bronchi that enter the lungs (air), ground-glass opacities (:data:`GGO_HU`, textured) and one
consolidation (:data:`CONSOLIDATION_HU`), all lesions fully inside the lungs. Gaussian noise of
:data:`NOISE_SD_HU` is added everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "AIR_HU",
    "FAT_HU",
    "SOFT_TISSUE_HU",
    "BONE_HU",
    "LUNG_PARENCHYMA_HU",
    "VESSEL_HU",
    "GGO_HU",
    "CONSOLIDATION_HU",
    "NOISE_SD_HU",
    "PARENCHYMA_TEXTURE_SD_HU",
    "GGO_TEXTURE_SD_HU",
    "ChestPhantom",
    "make_chest_phantom",
]

AIR_HU = -1000.0
"""Room air and airway lumen (HU)."""
FAT_HU = -100.0
"""Subcutaneous fat (HU)."""
SOFT_TISSUE_HU = 40.0
"""Muscle, mediastinum, abdominal organs (HU)."""
BONE_HU = 700.0
"""Vertebral body (HU)."""
LUNG_PARENCHYMA_HU = -850.0
"""Aerated lung parenchyma (HU)."""
VESSEL_HU = 40.0
"""Pulmonary vessels (blood, HU)."""
GGO_HU = -500.0
"""Mean of ground-glass opacities (HU)."""
CONSOLIDATION_HU = 30.0
"""Consolidation (HU)."""
NOISE_SD_HU = 15.0
"""Standard deviation of the white Gaussian noise added to the whole volume (HU)."""
PARENCHYMA_TEXTURE_SD_HU = 20.0
"""Standard deviation of the smooth texture of the lung parenchyma (HU)."""
GGO_TEXTURE_SD_HU = 60.0
"""Standard deviation of the smooth texture of ground-glass opacities (HU)."""

_FAT_THICKNESS_MM = 12.0
_TRACHEA_RADIUS_MM = 8.0
_BRONCHUS_RADIUS_MM = 5.0
_VESSEL_RADIUS_MM = 2.0
_LESION_JITTER_MM = 4.0


@dataclass
class ChestPhantom:
    """A synthetic chest CT and its ground truth.

    Attributes:
        volume_hu: CT values in HU, ``float32`` of shape ``(X, Y, Z)``, RAS-oriented.
        affine: ``(4, 4)`` voxel-to-world (RAS+, mm) matrix: diagonal ``spacing_mm``, origin placing the volume
            centre at world 0.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        lung: ``uint8`` lung truth of shape ``(X, Y, Z)``: 0 background, 1 right lung, 2 left lung. Lesions are
            part of the lung; the airway lumen is not.
        infection: ``uint8`` infection truth (0 / 1) of shape ``(X, Y, Z)``, the union of the lesions.
        lesions: one dict per lesion with ``kind`` (``"ggo"`` or ``"consolidation"``), ``side`` (``"right"`` or
            ``"left"``), ``centre_mm`` (world RAS+ coordinates, mm), ``radii_mm`` (semi-axes along axes 0, 1, 2,
            mm), ``volume_ml`` (voxel count times voxel volume, mL) and ``analytic_volume_ml``
            (``4/3 * pi * a * b * c / 1000``, mL).
    """

    volume_hu: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    lung: np.ndarray
    infection: np.ndarray
    lesions: list[dict[str, Any]] = field(default_factory=list)


def _ellipsoid(coords: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Voxels whose centre lies inside the axis-aligned ellipsoid (all in mm)."""
    return sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, centre, radii)) <= 1.0


def _tube(
    coords: Sequence[np.ndarray], start: Sequence[float], end: Sequence[float], radius: float
) -> np.ndarray:
    """Voxels within ``radius`` (mm) of the segment ``start``-``end`` (mm), with rounded ends."""
    p0 = np.asarray(start, dtype=np.float64)
    d = np.asarray(end, dtype=np.float64) - p0
    length2 = float(d @ d)
    rel = [c - p for c, p in zip(coords, p0)]
    t = np.clip(sum(r * dd for r, dd in zip(rel, d)) / length2, 0.0, 1.0)
    dist2 = sum((r - t * dd) ** 2 for r, dd in zip(rel, d))
    return dist2 <= radius**2


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma_vox)
    return noise / max(float(noise.std()), 1e-6)


def _airways(coords, lung_specs: dict, half, lung_z0: float) -> np.ndarray:
    """Trachea from the top down to the carina, main bronchi ending inside each lung."""
    carina = (0.0, 0.05 * half[1], lung_z0 + 0.45 * half[2])
    airway = _tube(coords, carina, (0.0, carina[1], half[2] + 10.0), _TRACHEA_RADIUS_MM)
    for lab, (c, r) in lung_specs.items():
        entry = (c[0] - math.copysign(0.55 * r[0], c[0]), 0.0, c[2] + 0.15 * r[2])
        airway |= _tube(coords, carina, entry, _BRONCHUS_RADIUS_MM)
    return airway


def _vessels(coords, lung_specs: dict, shape) -> np.ndarray:
    """Short tubes fully inside each lung."""
    vessels = np.zeros(shape, dtype=bool)
    for c, r in lung_specs.values():
        for dx, dy, dz0, dz1 in ((0.0, 0.3, -0.6, 0.5), (0.3, -0.3, -0.5, 0.4), (-0.35, 0.1, -0.3, 0.6)):
            p0 = (c[0] + dx * r[0], c[1] + dy * r[1], c[2] + dz0 * r[2])
            p1 = (c[0] + 0.6 * dx * r[0], c[1] + 0.5 * dy * r[1], c[2] + dz1 * r[2])
            vessels |= _tube(coords, p0, p1, _VESSEL_RADIUS_MM)
    return vessels


def _place_lesions(coords, lung_specs: dict, lung_no_airway: dict, rng, voxel_ml: float) -> tuple[list[dict], list]:
    """The lesions (kind, lung label, centre as fractions of the lung radii, radii in mm), each moved by the seed."""
    lesion_specs = (
        ("ggo", 1, (0.25, -0.2, -0.35), (12.0, 10.0, 14.0)),
        ("ggo", 2, (0.1, 0.3, -0.3), (10.0, 12.0, 14.0)),
        ("consolidation", 1, (-0.1, 0.2, 0.3), (10.0, 9.0, 14.0)),
    )
    lesions: list[dict[str, Any]] = []
    lesion_masks = []
    for kind, lab, frac, radii in lesion_specs:
        c, r = lung_specs[lab]
        jitter = rng.uniform(-_LESION_JITTER_MM, _LESION_JITTER_MM, size=3)
        centre = tuple(float(c[i] + frac[i] * r[i] + jitter[i]) for i in range(3))
        mask = _ellipsoid(coords, centre, radii)
        # a one-voxel margin from the pleura keeps the lesion enclosed by aerated lung
        if not mask.any() or (mask & ~ndi.binary_erosion(lung_no_airway[lab])).any():
            raise RuntimeError(f"{kind} lesion at {centre} mm does not fit inside the lung; enlarge the volume.")
        lesion_masks.append((kind, mask))
        lesions.append(
            {
                "kind": kind,
                "side": "right" if lab == 1 else "left",
                "centre_mm": centre,
                "radii_mm": tuple(float(v) for v in radii),
                "volume_ml": float(mask.sum()) * voxel_ml,
                "analytic_volume_ml": 4.0 / 3.0 * math.pi * radii[0] * radii[1] * radii[2] / 1000.0,
            }
        )
    return lesions, lesion_masks


def _intensities(rng, shape, spacing, tissues, lungs_all, vessels, airway, lesion_masks) -> tuple[np.ndarray, np.ndarray]:
    """``(volume in HU, infection mask)``: tissue values, parenchyma and GGO textures, lesions, noise."""
    body, fat, spine = tissues
    volume = np.full(shape, AIR_HU, dtype=np.float32)
    volume[body] = SOFT_TISSUE_HU
    volume[fat] = FAT_HU
    volume[spine & body] = BONE_HU
    sigma_vox = [4.0 / s for s in spacing]  # about 4 mm texture grain
    texture = _smooth_noise(rng, shape, sigma_vox)
    volume[lungs_all] = LUNG_PARENCHYMA_HU + PARENCHYMA_TEXTURE_SD_HU * texture[lungs_all]
    volume[vessels & lungs_all] = VESSEL_HU
    volume[airway & body] = AIR_HU
    ggo_texture = _smooth_noise(rng, shape, [3.0 / s for s in spacing])
    infection = np.zeros(shape, dtype=bool)
    for kind, mask in lesion_masks:
        if kind == "ggo":
            volume[mask] = GGO_HU + GGO_TEXTURE_SD_HU * ggo_texture[mask]
        else:
            volume[mask] = CONSOLIDATION_HU
        infection |= mask
    volume += NOISE_SD_HU * rng.standard_normal(shape, dtype=np.float32)
    return volume, infection


def make_chest_phantom(
    shape: Sequence[int] = (160, 160, 64),
    spacing_mm: Sequence[float] = (2.0, 2.0, 4.0),
    seed: int = 0,
) -> ChestPhantom:
    """Build a deterministic synthetic chest CT with two lungs, airways, vessels and infection lesions.

    Body and lung sizes are fractions of the field of view, so other shapes / spacings scale them (the default field
    of view is 320 x 320 x 256 mm); airway, vessel and lesion sizes are fixed in mm. The seed moves each lesion by up to 4 mm along each axis and
    draws the textures and the noise.

    Args:
        shape: volume shape ``(X, Y, Z)`` in voxels, each at least 16.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        seed: seed of the random generator; the same seed gives the same phantom.

    Returns:
        A :class:`ChestPhantom` (volume in HU, RAS).

    Raises:
        ValueError: when ``shape`` or ``spacing_mm`` is not 3 positive values or the volume is too small.
        RuntimeError: when a lesion would not lie inside the lung (a field of view too small for the layout).
    """
    if len(shape) != 3 or any(int(s) < 16 for s in shape):
        raise ValueError(f"shape must hold 3 sizes >= 16 voxels, got {shape!r}.")
    if len(spacing_mm) != 3 or not all(float(s) > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must hold 3 positive voxel sizes in mm, got {spacing_mm!r}.")
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing_mm)
    rng = np.random.default_rng(seed)

    origin = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    coords = np.meshgrid(
        *[o + s * np.arange(n, dtype=np.float32) for o, s, n in zip(origin, spacing, shape)], indexing="ij", sparse=True
    )
    x, y, z = coords
    half = [n * s / 2.0 for n, s in zip(shape, spacing)]  # half field of view (mm)

    # body: elliptic cylinder along z, fat ring, vertebral block
    body_ax = (0.85 * half[0], 0.62 * half[1])
    body_r = (x / body_ax[0]) ** 2 + (y / body_ax[1]) ** 2
    body = np.broadcast_to(body_r <= 1.0, shape)
    inner_r = (x / (body_ax[0] - _FAT_THICKNESS_MM)) ** 2 + (y / (body_ax[1] - _FAT_THICKNESS_MM)) ** 2
    fat = np.broadcast_to((body_r <= 1.0) & (inner_r > 1.0), shape)
    spine = np.broadcast_to((np.abs(x) <= 0.1 * half[0]) & (np.abs(y + 0.47 * half[1]) <= 0.1 * half[1]), shape)

    # lungs: ellipsoids either side of the mediastinum; the right lung (x > 0) is slightly larger
    lung_z0 = -0.1 * half[2]
    lung_specs = {
        1: ((0.40 * half[0], 0.0, lung_z0), (0.30 * half[0], 0.42 * half[1], 0.78 * half[2])),
        2: ((-0.41 * half[0], 0.0, lung_z0), (0.28 * half[0], 0.42 * half[1], 0.74 * half[2])),
    }
    ellipsoids = {lab: _ellipsoid(coords, c, r) for lab, (c, r) in lung_specs.items()}

    airway = _airways(coords, lung_specs, half, lung_z0)
    vessels = _vessels(coords, lung_specs, shape)
    lung_no_airway = {lab: e & ~airway for lab, e in ellipsoids.items()}
    lesions, lesion_masks = _place_lesions(coords, lung_specs, lung_no_airway, rng, float(np.prod(spacing)) / 1000.0)
    volume, infection = _intensities(
        rng, shape, spacing, (body, fat, spine), ellipsoids[1] | ellipsoids[2], vessels, airway, lesion_masks
    )

    lung = np.zeros(shape, dtype=np.uint8)
    lung[lung_no_airway[1]] = 1
    lung[lung_no_airway[2]] = 2
    return ChestPhantom(
        volume_hu=volume,
        affine=affine,
        spacing_mm=spacing,  # type: ignore[arg-type]
        lung=lung,
        infection=infection.astype(np.uint8),
        lesions=lesions,
    )
