"""One picture per case to check the masks by eye: ``OUTPUT/<case_id>/overview.png``.

An axial mosaic of 12 slices spread through the lungs (always with the lung base and the slices with the most
infection), each labelled with its table position in mm and its DICOM InstanceNumber (or its number from the top of
the scan), plus coronal and sagittal reformats through the lungs' centre,
in radiological display convention (the patient's right on the image's left, anterior up on axial slices, superior
up on reformats, anterior on the left of the sagittal view), with physical aspect ratio. The CT is shown in a lung
window; the right and left lung contours and the infection (GGO and consolidation when the class map exists) are
drawn over it. A header holds the case id, the burden figures and the model version, and a legend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from infnet_monai.utils.files import atomic_write

__all__ = ["DISPLAY_WINDOW_HU", "COLOURS", "overview_image", "write_overview", "to_ras", "mosaic_slices", "slice_namer"]

DISPLAY_WINDOW_HU: tuple[float, float] = (-1350.0, 150.0)
"""Lung window used for display (level -600, width 1500 HU)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "right lung": (0, 200, 255),
    "left lung": (255, 220, 0),
    "infection": (255, 40, 40),
    "GGO": (255, 150, 0),
    "consolidation": (230, 0, 90),
}
"""Overlay colours (RGB)."""

ALPHA = 0.45
"""Opacity of the infection overlays."""

N_AXIAL = 12
TILE_PX = 256
WIDTH_PX = 4 * TILE_PX


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (3D, voxel grid of ``affine``) reoriented to RAS axes; returns it and its voxel spacing (mm)."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(np.asarray(array), ornt)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    return ras, spacing[ornt[:, 0].astype(int)]


def display_plane(plane: np.ndarray) -> np.ndarray:
    """A 2D RAS plane ``(first, second)`` in radiological display: rows from the second axis' far end, columns from
    the first axis' far end (patient's right, anterior or superior first)."""
    return plane[::-1, ::-1].T


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _grey(hu: np.ndarray) -> np.ndarray:
    lo, hi = DISPLAY_WINDOW_HU
    return (np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _view(hu, lung, labels, size_wh) -> Image.Image:
    """One tile: grey CT, infection overlay and lung contours, resized to ``size_wh`` (physical aspect)."""
    grey = np.asarray(Image.fromarray(_grey(hu)).resize(size_wh, Image.BILINEAR)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    lung = np.asarray(Image.fromarray(lung.astype(np.uint8)).resize(size_wh, Image.NEAREST))
    labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(size_wh, Image.NEAREST))
    for value, name in ((1, "GGO"), (2, "consolidation"), (3, "infection")):
        where = labels == value
        rgb[where] = (1.0 - ALPHA) * rgb[where] + ALPHA * np.asarray(COLOURS[name], np.float32)
    for value, name in ((1, "right lung"), (2, "left lung")):
        mask = lung == value
        edge = mask & ~ndi.binary_erosion(mask, iterations=1)
        rgb[edge] = COLOURS[name]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def lung_box(mask: np.ndarray, margin: float = 0.08) -> list[slice]:
    """Bounding box of ``mask`` on each axis with a relative margin (the whole axis when the mask is empty)."""
    if not mask.any():
        return [slice(0, n) for n in mask.shape]
    out = []
    for axis, n in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        pad = int(math.ceil(margin * (hit[-1] - hit[0] + 1)))
        out.append(slice(max(0, hit[0] - pad), min(n, hit[-1] + pad + 1)))
    return out


def _fit(shape_mm: tuple[float, float], max_wh: tuple[int, int]) -> tuple[int, int]:
    """Pixel size (width, height) of a view whose physical size is ``shape_mm`` (height, width), within ``max_wh``."""
    h_mm, w_mm = shape_mm
    scale = min(max_wh[0] / max(w_mm, 1e-6), max_wh[1] / max(h_mm, 1e-6))
    return max(1, int(round(w_mm * scale))), max(1, int(round(h_mm * scale)))


def _labels(infection: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    if classes is not None:
        return np.asarray(classes, dtype=np.uint8)
    return np.where(np.asarray(infection) > 0, 3, 0).astype(np.uint8)


BASE_AREA_FRACTION = 0.05
"""The lung base shown in the mosaic: the lowest axial slice whose lung area is at least this share of the largest."""
N_MOST_INFECTED = 2
"""The mosaic always holds the axial slices with the most infection, this many."""


def mosaic_slices(lung: np.ndarray, labels: np.ndarray, n: int = N_AXIAL) -> np.ndarray:
    """Axial slices (RAS indices, ascending) for the mosaic: ``n`` spread through the lungs, of which the lung base
    and the :data:`N_MOST_INFECTED` slices with the most infection always (where errors and disease show)."""
    area = (lung > 0).sum(axis=(0, 1))
    z_hit = np.flatnonzero(area)
    if not z_hit.size:
        return np.unique(np.round(np.linspace(0, lung.shape[2] - 1, n + 2)[1:-1]).astype(int))
    z_lo, z_hi = int(z_hit[0]), int(z_hit[-1])
    spread = np.round(np.linspace(z_lo, z_hi, n + 2)[1:-1]).astype(int)
    must = [int(np.flatnonzero(area >= BASE_AREA_FRACTION * area.max())[0])]
    infected = (labels > 0).sum(axis=(0, 1))
    must += [int(z) for z in np.argsort(-infected, kind="stable")[:N_MOST_INFECTED] if infected[z] > 0]
    chosen = list(dict.fromkeys(must))
    for z in sorted(spread, key=lambda z: min(abs(z - m) for m in chosen)):  # farthest from the fixed ones last out
        if len(chosen) >= n:
            break
        if z not in chosen:
            chosen.append(int(z))
    return np.array(sorted(chosen)[:n], dtype=int)


def _axial_mosaic(hu, lung, labels, spacing, box, slice_names) -> Image.Image:
    zs = mosaic_slices(lung, labels)
    sx, sy = box[0], box[1]
    size = _fit(((sy.stop - sy.start) * spacing[1], (sx.stop - sx.start) * spacing[0]), (TILE_PX, TILE_PX))
    row_h = size[1] + 2
    mosaic = Image.new("RGB", (WIDTH_PX, row_h * math.ceil(len(zs) / 4)), "black")
    draw = ImageDraw.Draw(mosaic)
    for i, z in enumerate(zs):
        tile = _view(*(display_plane(a[sx, sy, z]) for a in (hu, lung, labels)), size)
        mosaic.paste(tile, ((i % 4) * TILE_PX + (TILE_PX - size[0]) // 2, (i // 4) * row_h))
        draw.text(((i % 4) * TILE_PX + 4, (i // 4) * row_h + 2), slice_names(int(z)), fill="white", font=_font(12))
    return mosaic


def reformat_views(hu, lung, labels, spacing, box) -> Image.Image:
    centre = [int(round(np.mean(np.flatnonzero(lung.any(axis=tuple(b for b in range(3) if b != a)))))) if lung.any()
              else lung.shape[a] // 2 for a in range(3)]
    sx, sy, sz = box
    half = WIDTH_PX // 2
    views = [  # coronal through the lungs' antero-posterior centre, sagittal through the right lung's centre
        ("coronal", [a[sx, centre[1], sz] for a in (hu, lung, labels)], (sz, sx), (2, 0)),
    ]
    right = lung == 1
    x_c = int(round(np.mean(np.flatnonzero(right.any(axis=(1, 2)))))) if right.any() else centre[0]
    views.append(("sagittal (right lung)", [a[x_c, sy, sz] for a in (hu, lung, labels)], (sz, sy), (2, 1)))
    height = 0
    tiles = []
    for name, planes, (rows, cols), (ra, ca) in views:
        size = _fit(((rows.stop - rows.start) * spacing[ra], (cols.stop - cols.start) * spacing[ca]), (half, 2 * TILE_PX))
        tiles.append((name, _view(*(display_plane(p) for p in planes), size)))
        height = max(height, size[1])
    out = Image.new("RGB", (WIDTH_PX, height + 18), "black")
    draw = ImageDraw.Draw(out)
    for i, (name, tile) in enumerate(tiles):
        out.paste(tile, (i * half + (half - tile.width) // 2, 18))
        draw.text((i * half + 4, 2), name, fill="white", font=_font(13))
    return out


def _fmt(value, unit: str = "") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return "nan" if math.isnan(v) else f"{v:.1f}{unit}"


def _header(title: str, row: dict, version: str, classes: bool) -> Image.Image:
    out = Image.new("RGB", (WIDTH_PX, 96), (24, 24, 24))
    draw = ImageDraw.Draw(out)
    draw.text((8, 6), title, fill="white", font=_font(20))
    lines = [
        f"infection {_fmt(row.get('infection_volume_ml'), ' mL')} = {_fmt(row.get('infection_percent'), '%')} of lung "
        f"(right {_fmt(row.get('right_lung_infection_percent'), '%')}, left {_fmt(row.get('left_lung_infection_percent'), '%')}); "
        f"lesions {row.get('lesion_count', '-')}; lung {_fmt(row.get('lung_volume_ml'), ' mL')}",
    ]
    zones = ""
    if row.get("zone_score") is not None:  # the zone score, and lesions per zone (R/L upper, middle, lower)
        counts = row.get("zones") or {}
        per_lung = [
            "/".join(str((counts.get(f"{side}_{third}") or {}).get("lesion_count", "-")) for third in ("upper", "middle", "lower"))
            for side in ("right", "left")
        ]
        zones = f"; zone score {row['zone_score']}/30 (lesions by zone R {per_lung[0]}, L {per_lung[1]})"
    if classes or zones:
        lines.append(
            (
                f"GGO {_fmt(row.get('ggo_volume_ml'), ' mL')} ({_fmt(row.get('ggo_percent'), '%')}), consolidation "
                f"{_fmt(row.get('consolidation_volume_ml'), ' mL')} ({_fmt(row.get('consolidation_percent'), '%')})"
                if classes
                else "no class map"
            )
            + zones
        )
    lines.append(f"{version}; radiological convention: patient's right on the image's left")
    for i, line in enumerate(lines):
        draw.text((8, 32 + 18 * i), line, fill=(220, 220, 220), font=_font(13))
    return out




def slice_namer(affine: np.ndarray, shape, instance_numbers: dict[float, int] | None = None):
    """``name(k)`` for the axial slice ``k`` of the RAS grid: its table position (``z`` in mm, the patient's
    superior-inferior world coordinate, as viewers show it) and the DICOM InstanceNumber of the image at that position
    (``instance_numbers``: z in mm, rounded to 0.1, to InstanceNumber), else the slice's number counted from the
    top of the scan (1 = most superior)."""
    ornt = nib.orientations.io_orientation(affine)
    ras_affine = np.asarray(affine) @ nib.orientations.inv_ornt_aff(ornt, shape)
    ras_shape = nib.orientations.apply_orientation(np.empty(shape, dtype=bool), ornt).shape
    centre = (np.asarray(ras_shape[:2]) - 1) / 2.0
    n = int(ras_shape[2])

    def name(k: int) -> str:
        z_mm = float((ras_affine @ np.array([centre[0], centre[1], k, 1.0]))[2])
        if instance_numbers:
            nearest = min(instance_numbers, key=lambda z: abs(z - z_mm))
            if abs(nearest - z_mm) < 0.5:
                return f"image {instance_numbers[nearest]}, z {z_mm:.1f} mm"
        return f"slice {n - k} of {n} from top, z {z_mm:.1f} mm"

    return name


def _legend(classes: bool) -> Image.Image:
    names = ["right lung", "left lung"] + (["GGO", "consolidation"] if classes else ["infection"])
    out = Image.new("RGB", (WIDTH_PX, 26), (24, 24, 24))
    draw = ImageDraw.Draw(out)
    x = 8
    for name in names:
        draw.rectangle((x, 7, x + 14, 19), fill=COLOURS[name])
        draw.text((x + 20, 6), name, fill="white", font=_font(13))
        x += 40 + int(draw.textlength(name, font=_font(13)))
    return out


def overview_image(
    hu: np.ndarray,
    lung: np.ndarray,
    infection: np.ndarray,
    affine: np.ndarray,
    classes: np.ndarray | None = None,
    row: dict | None = None,
    title: str = "",
    version: str = "",
    instance_numbers: dict[float, int] | None = None,
) -> Image.Image:
    """The overview picture of one case.

    Args:
        hu: CT in Hounsfield units, 3D, on the voxel grid of ``affine`` (any orientation).
        lung: same grid: 0 background, 1 right lung, 2 left lung.
        infection: same grid, > 0 infection.
        affine: voxel-to-world (RAS) matrix of the grid.
        classes: optional class map on the same grid (1 GGO, 2 consolidation); replaces ``infection`` in the overlay.
        row: the case's statistics (``burden.csv`` keys) for the header.
        title: header title (the case id).
        version: model and version line.
        instance_numbers: for a DICOM series, its images' InstanceNumber by table position (z in mm, rounded to
            0.1): the axial tiles are labelled with them, so that a viewer finds the slice (else with the slice's
            number from the top; always with z in mm).

    Returns:
        An RGB image, 1024 pixels wide.
    """
    arrays = [np.asarray(hu), np.asarray(lung), _labels(infection, classes)]
    if any(a.shape != arrays[0].shape or a.ndim != 3 for a in arrays):
        raise ValueError(f"overview: CT and masks must be 3D arrays of one shape, got {[a.shape for a in arrays]}.")
    (hu_r, spacing), (lung_r, _), (lab_r, _) = (to_ras(a, affine) for a in arrays)
    box = lung_box(lung_r > 0)
    parts = [
        _header(title, row or {}, version, classes is not None),
        _legend(classes is not None),
        _axial_mosaic(hu_r, lung_r, lab_r, spacing, box, slice_namer(affine, arrays[0].shape, instance_numbers)),
        reformat_views(hu_r, lung_r, lab_r, spacing, box),
    ]
    out = Image.new("RGB", (WIDTH_PX, sum(p.height for p in parts)), "black")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out


def write_overview(path: str | os.PathLike, image: Image.Image) -> Path:
    """Write ``image`` as PNG atomically (a killed run never leaves half a picture)."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))
