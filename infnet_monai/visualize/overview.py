"""One picture per case to check the masks by eye: ``OUTPUT/<case_id>/overview.png``.

An axial mosaic of 12 slices spread over the whole height of the lungs, in reading order from the apex (top left) to
the base: always a slice within the top tenth of the lungs' height (the apex tile), the lung base and the slices with
the most infection (these replace the nearest evenly spread slices). Each tile is labelled, on a dark band that stays
readable over bright tissue, with its table position in mm and its DICOM InstanceNumber (or its number from the top
of the scan). Under it, coronal and sagittal reformats through the lungs' centre; on a short scan (the region shown
spans fewer than :data:`MIN_REFORMAT_SLICES` slices or under :data:`MIN_REFORMAT_MM` mm) they would be slivers a few
pixels high, so they are left out and a line of text in the picture says why. Everything is in radiological display
convention (the patient's right on the image's left, anterior up on axial slices, superior up on reformats, anterior
on the left of the sagittal view), with physical aspect ratio. The CT is shown in a lung window; the right and left
lung contours and the infection (GGO and consolidation when the class map exists) are drawn over it, and, when
given, the nodule-like lesions kept out of the infection and the band-like lesions of the infection (flagged
``band_like_infection`` for review) as outlines of their own colours. A header holds the case
id, the burden figures and the model version, and a legend.

:func:`overview` also says where the axial tiles lie (world z in mm, apex first) and where the lungs' top and bottom
slices lie, so that ``stats.json`` can show that the mosaic reaches the apex.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from infnet_monai.utils.files import atomic_write

__all__ = [
    "DISPLAY_WINDOW_HU", "COLOURS", "NODULE_LEGEND", "BAND_LEGEND", "Overview", "overview", "overview_image", "write_overview",
    "to_ras", "mosaic_slices", "slice_namer", "axial_z_mm",
]

DISPLAY_WINDOW_HU: tuple[float, float] = (-1350.0, 150.0)
"""Lung window used for display (level -600, width 1500 HU)."""

NODULE_LEGEND = "nodule-like (not counted)"
"""Legend entry of the nodule-like lesions kept out of the infection (shown only when the case has some)."""
BAND_LEGEND = "band-like (review)"
"""Legend entry of the infection's band-like lesions (:func:`~infnet_monai.stats.anatomy.band_like_mask`; shown only
when the case has some)."""
OUTLINES: tuple[str, ...] = (NODULE_LEGEND, BAND_LEGEND)
"""The outlined layers, by value in the outline map (1, 2): drawn as outlines, so the CT and the overlay inside stay
visible."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "right lung": (0, 200, 255),
    "left lung": (255, 220, 0),
    "infection": (255, 40, 40),
    "GGO": (255, 150, 0),
    "consolidation": (230, 0, 90),
    NODULE_LEGEND: (255, 0, 255),  # magenta: cyan would read as the right lung's contour
    BAND_LEGEND: (0, 255, 0),
}
"""Overlay colours (RGB)."""

ALPHA = 0.45
"""Opacity of the infection overlays."""

LABEL_BAND_OPACITY = 0.6
"""Opacity of the black band behind the tile labels (white text stays readable over bone or contrast)."""

N_AXIAL = 12
TILE_PX = 256
WIDTH_PX = 4 * TILE_PX
HEADER_PX = 96
"""Height of the header (case id, figures, model version)."""
LEGEND_PX = 26
"""Height of the legend, under the header; the axial mosaic follows."""

MIN_REFORMAT_SLICES = 4
"""Coronal and sagittal views are left out when the region shown spans fewer axial slices than this..."""
MIN_REFORMAT_MM = 30.0
"""... or is less than this high (mm): the reformat would be a sliver a few pixels high."""


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (3D, voxel grid of ``affine``) reoriented to RAS axes; returns it and its voxel spacing (mm)."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(np.asarray(array), ornt)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    return ras, spacing[ornt[:, 0].astype(int)]


def axial_z_mm(affine: np.ndarray, shape) -> np.ndarray:
    """World z (mm, the patient's superior-inferior coordinate, as viewers show it) of each axial slice of the RAS
    grid of :func:`to_ras`, taken at the slice's centre.

    Args:
        affine: voxel-to-world (RAS) matrix of the input's grid (any orientation).
        shape: the input's 3D shape.

    Returns:
        ``(Z,)`` float64, one per RAS axial slice (index 0 the most inferior).
    """
    ornt = nib.orientations.io_orientation(affine)
    ras_affine = np.asarray(affine, dtype=np.float64) @ nib.orientations.inv_ornt_aff(ornt, tuple(shape))
    ras_shape = nib.orientations.apply_orientation(np.empty(tuple(shape), dtype=bool), ornt).shape
    k = np.arange(ras_shape[2], dtype=np.float64)
    centre = (np.asarray(ras_shape[:2], dtype=np.float64) - 1) / 2.0
    return ras_affine[2, 0] * centre[0] + ras_affine[2, 1] * centre[1] + ras_affine[2, 2] * k + ras_affine[2, 3]


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


def _edge(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, iterations=1)


def _view(hu, lung, labels, size_wh, outlines=None) -> Image.Image:
    """One tile: grey CT, infection overlay, lung contours and the outlines of :data:`OUTLINES` (``outlines``: 0
    none, else the layer's number), resized to ``size_wh`` (physical aspect)."""
    grey = np.asarray(Image.fromarray(_grey(hu)).resize(size_wh, Image.BILINEAR)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    lung = np.asarray(Image.fromarray(lung.astype(np.uint8)).resize(size_wh, Image.NEAREST))
    labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(size_wh, Image.NEAREST))
    for value, name in ((1, "GGO"), (2, "consolidation"), (3, "infection")):
        where = labels == value
        rgb[where] = (1.0 - ALPHA) * rgb[where] + ALPHA * np.asarray(COLOURS[name], np.float32)
    for value, name in ((1, "right lung"), (2, "left lung")):
        rgb[_edge(lung == value)] = COLOURS[name]
    if outlines is not None and outlines.any():
        outlines = np.asarray(Image.fromarray(outlines.astype(np.uint8)).resize(size_wh, Image.NEAREST))
        for value, name in enumerate(OUTLINES, start=1):
            rgb[_edge(outlines == value)] = COLOURS[name]  # an outline: the CT inside stays visible
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _label(image: Image.Image, xy: tuple[int, int], text: str, size: int = 12) -> None:
    """Write ``text`` in white at ``xy`` of ``image`` (RGB, in place) on a semi-opaque black band."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox(xy, text, font=_font(size))
    box = (max(0, left - 3), max(0, top - 2), min(image.width, right + 3), min(image.height, bottom + 2))
    if box[2] > box[0] and box[3] > box[1]:
        region = image.crop(box)
        image.paste(Image.blend(region, Image.new("RGB", region.size, "black"), LABEL_BAND_OPACITY), box[:2])
    draw.text(xy, text, fill="white", font=_font(size))


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
"""The lung base shown in the mosaic: the lowest axial slice whose lung area is at least this share of the largest
(the apex tile likewise the highest), unless that lies deeper than :data:`END_DEPTH_FRACTION` into the lungs."""
END_DEPTH_FRACTION = 0.1
"""The apex tile lies within this share of the lungs' height below their top slice, the base tile within this share
above their bottom slice."""
N_MOST_INFECTED = 2
"""The mosaic always holds the axial slices with the most infection, this many."""


def mosaic_slices(lung: np.ndarray, labels: np.ndarray, n: int = N_AXIAL) -> np.ndarray:
    """Axial slices (RAS indices, ascending) for the mosaic: ``n`` spread evenly from the lung base to the apex, both
    always there, and the :data:`N_MOST_INFECTED` slices with the most infection in place of the nearest spread ones
    (where errors and disease show; each next one the most infected at least half a step from those before, not
    the neighbour of the first).

    Args:
        lung: ``(X, Y, Z)`` RAS lung mask, > 0 lung.
        labels: ``(X, Y, Z)`` RAS infection labels, > 0 infection.
        n: number of slices wanted (fewer when the lungs span fewer slices).

    Returns:
        ``(<= n,)`` int, ascending (inferior first). Without lung: ``n`` slices spread over the scan.
    """
    area = (lung > 0).sum(axis=(0, 1))
    z_hit = np.flatnonzero(area)
    if not z_hit.size:
        return np.unique(np.round(np.linspace(0, lung.shape[2] - 1, n + 2)[1:-1]).astype(int))
    z_lo, z_hi = int(z_hit[0]), int(z_hit[-1])
    reach = int(END_DEPTH_FRACTION * (z_hi - z_lo))
    large = np.flatnonzero(area >= BASE_AREA_FRACTION * area.max())  # skips the thin tip of a dome or an apex
    base, apex = min(int(large[0]), z_lo + reach), max(int(large[-1]), z_hi - reach)
    chosen = [int(z) for z in np.unique(np.round(np.linspace(base, apex, n)).astype(int))]
    fixed = {base, apex}
    infected = (labels > 0).sum(axis=(0, 1))
    gap = (apex - base) / (2.0 * max(n - 1, 1))  # half a step: the runner-up is not the neighbour of the first
    most: list[int] = []
    for z in (int(z) for z in np.argsort(-infected, kind="stable") if infected[z] > 0):
        if len(most) == N_MOST_INFECTED:
            break
        if all(abs(z - m) >= gap for m in most):
            most.append(z)
    for z in most:
        if z not in chosen:
            free = [c for c in chosen if c not in fixed]
            if len(chosen) >= n and free:
                chosen.remove(min(free, key=lambda c: (abs(c - z), c)))
            if len(chosen) < n:
                chosen.append(z)
        fixed.add(z)
    return np.array(sorted(chosen), dtype=int)


def _axial_mosaic(hu, lung, labels, spacing, box, slice_names, outlines=None) -> tuple[Image.Image, np.ndarray]:
    """The mosaic, apex first (top left), and its slices (RAS indices, in the mosaic's order)."""
    zs = mosaic_slices(lung, labels)[::-1]
    sx, sy = box[0], box[1]
    size = _fit(((sy.stop - sy.start) * spacing[1], (sx.stop - sx.start) * spacing[0]), (TILE_PX, TILE_PX))
    row_h = size[1] + 2
    mosaic = Image.new("RGB", (WIDTH_PX, row_h * math.ceil(len(zs) / 4)), "black")
    stack = [hu, lung, labels] + ([] if outlines is None else [outlines])
    for i, z in enumerate(zs):
        shown = [display_plane(a[sx, sy, z]) for a in stack]
        tile = _view(*shown[:3], size, shown[3] if len(shown) > 3 else None)
        mosaic.paste(tile, ((i % 4) * TILE_PX + (TILE_PX - size[0]) // 2, (i // 4) * row_h))
        _label(mosaic, ((i % 4) * TILE_PX + 4, (i // 4) * row_h + 3), slice_names(int(z)))
    return mosaic, zs


def _note(text: str) -> Image.Image:
    out = Image.new("RGB", (WIDTH_PX, 26), "black")
    ImageDraw.Draw(out).text((8, 6), text, fill=(220, 220, 220), font=_font(13))
    return out


def reformat_views(hu, lung, labels, spacing, box, outlines=None) -> Image.Image:
    """Coronal and sagittal reformats through the lungs, side by side; on a short scan (the region shown spans fewer
    than :data:`MIN_REFORMAT_SLICES` slices or under :data:`MIN_REFORMAT_MM` mm) a line saying they are left out."""
    sx, sy, sz = box
    n_z = sz.stop - sz.start
    height_mm = n_z * float(spacing[2])
    if n_z < MIN_REFORMAT_SLICES or height_mm < MIN_REFORMAT_MM:
        region = "the lungs span" if lung.any() else "the scan spans"
        return _note(
            f"Coronal and sagittal views left out: {region} {n_z} axial slice(s), {height_mm:.0f} mm, too short to "
            f"reformat (under {MIN_REFORMAT_SLICES} slices or {MIN_REFORMAT_MM:g} mm)."
        )
    centre = [int(round(np.mean(np.flatnonzero(lung.any(axis=tuple(b for b in range(3) if b != a)))))) if lung.any()
              else lung.shape[a] // 2 for a in range(3)]
    stack = [hu, lung, labels] + ([] if outlines is None else [outlines])
    views = [  # coronal through the lungs' antero-posterior centre, sagittal through the right lung's centre
        ("coronal", [a[sx, centre[1], sz] for a in stack], (sz, sx), (2, 0)),
    ]
    right = lung == 1
    x_c = int(round(np.mean(np.flatnonzero(right.any(axis=(1, 2)))))) if right.any() else centre[0]
    views.append(("sagittal (right lung)", [a[x_c, sy, sz] for a in stack], (sz, sy), (2, 1)))
    half = WIDTH_PX // 2
    height = 0
    tiles = []
    for name, planes, (rows, cols), (ra, ca) in views:
        size = _fit(((rows.stop - rows.start) * spacing[ra], (cols.stop - cols.start) * spacing[ca]), (half, 2 * TILE_PX))
        shown = [display_plane(p) for p in planes]
        tiles.append((name, _view(*shown[:3], size, shown[3] if len(shown) > 3 else None)))
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
    out = Image.new("RGB", (WIDTH_PX, HEADER_PX), (24, 24, 24))
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
    superior-inferior world coordinate, as viewers show it; see :func:`axial_z_mm`) and the DICOM InstanceNumber of
    the image at that position (``instance_numbers``: z in mm, rounded to 0.1, to InstanceNumber), else the slice's
    number counted from the top of the scan (1 = most superior)."""
    z_of = axial_z_mm(affine, shape)
    n = len(z_of)

    def name(k: int) -> str:
        z_mm = float(z_of[k])
        if instance_numbers:
            nearest = min(instance_numbers, key=lambda z: abs(z - z_mm))
            if abs(nearest - z_mm) < 0.5:
                return f"image {instance_numbers[nearest]}, z {z_mm:.1f} mm"
        return f"slice {n - k} of {n} from top, z {z_mm:.1f} mm"

    return name


def _legend(classes: bool, outlined: tuple[str, ...] = ()) -> Image.Image:
    names = ["right lung", "left lung"] + (["GGO", "consolidation"] if classes else ["infection"]) + list(outlined)
    out = Image.new("RGB", (WIDTH_PX, LEGEND_PX), (24, 24, 24))
    draw = ImageDraw.Draw(out)
    x = 8
    for name in names:
        if name in OUTLINES:  # drawn as an outline in the picture: an outlined square here
            draw.rectangle((x, 7, x + 14, 19), outline=COLOURS[name], width=2)
        else:
            draw.rectangle((x, 7, x + 14, 19), fill=COLOURS[name])
        draw.text((x + 20, 6), name, fill="white", font=_font(13))
        x += 40 + int(draw.textlength(name, font=_font(13)))
    return out


@dataclass(frozen=True)
class Overview:
    """The overview picture of one case and where its axial tiles lie.

    Attributes:
        image: the picture, RGB, :data:`WIDTH_PX` wide.
        axial_z_mm: world z (mm, as printed on the tiles, rounded to 0.1) of the axial tiles, in the mosaic's order:
            apex first.
        lung_apex_z_mm: world z (mm, rounded to 0.1) of the lungs' top axial slice; ``None`` without lung.
        lung_base_z_mm: world z (mm, rounded to 0.1) of the lungs' bottom axial slice; ``None`` without lung.
    """

    image: Image.Image
    axial_z_mm: tuple[float, ...]
    lung_apex_z_mm: float | None
    lung_base_z_mm: float | None

    def row_fields(self) -> dict:
        """The case-row keys (``stats.json``): ``overview_axial_z_mm`` (list, apex first), ``lung_apex_z_mm`` and
        ``lung_base_z_mm`` (mm, ``None`` without lung)."""
        return {
            "overview_axial_z_mm": list(self.axial_z_mm),
            "lung_apex_z_mm": self.lung_apex_z_mm,
            "lung_base_z_mm": self.lung_base_z_mm,
        }


def overview(
    hu: np.ndarray,
    lung: np.ndarray,
    infection: np.ndarray,
    affine: np.ndarray,
    classes: np.ndarray | None = None,
    row: dict | None = None,
    title: str = "",
    version: str = "",
    instance_numbers: dict[float, int] | None = None,
    nodules: np.ndarray | None = None,
    band_like: np.ndarray | None = None,
) -> Overview:
    """The overview picture of one case, with the positions of its axial tiles and of the lungs' ends.

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
        nodules: optional, same grid, > 0 the nodule-like lesions kept out of the infection: outlined in their own
            colour, with a legend entry when there are any.
        band_like: optional, same grid, > 0 the band-like lesions of the infection
            (:func:`~infnet_monai.stats.anatomy.band_like_mask`): outlined in their own colour, with a legend entry
            when there are any.

    Returns:
        The picture (RGB, 1024 pixels wide) and the world z of its axial tiles (apex first) and of the lungs' top
        and bottom slices.

    Raises:
        ValueError: the arrays are not 3D arrays of one shape.
    """
    arrays = [np.asarray(hu), np.asarray(lung), _labels(infection, classes)]
    layers = [np.asarray(m) for m in (nodules, band_like) if m is not None]
    if any(a.shape != arrays[0].shape or a.ndim != 3 for a in arrays + layers):
        raise ValueError(
            f"overview: CT and masks must be 3D arrays of one shape, got {[a.shape for a in arrays + layers]}."
        )
    outlines = np.zeros(arrays[0].shape, dtype=np.uint8)  # 0 none, else the layer's number in OUTLINES
    for value, mask in ((1, nodules), (2, band_like)):
        if mask is not None:
            outlines[np.asarray(mask) > 0] = value
    shown = tuple(name for value, name in enumerate(OUTLINES, start=1) if (outlines == value).any())
    ras = [to_ras(a, affine) for a in arrays]
    (hu_r, spacing), (lung_r, _), (lab_r, _) = ras
    out_r = to_ras(outlines, affine)[0] if shown else None
    del outlines
    box = lung_box(lung_r > 0)
    mosaic, zs = _axial_mosaic(
        hu_r, lung_r, lab_r, spacing, box, slice_namer(affine, arrays[0].shape, instance_numbers), out_r
    )
    parts = [
        _header(title, row or {}, version, classes is not None),
        _legend(classes is not None, shown),
        mosaic,
        reformat_views(hu_r, lung_r, lab_r, spacing, box, out_r),
    ]
    out = Image.new("RGB", (WIDTH_PX, sum(p.height for p in parts)), "black")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    z_of = axial_z_mm(affine, arrays[0].shape)
    z_hit = np.flatnonzero((lung_r > 0).any(axis=(0, 1)))
    ends = (round(float(z_of[z_hit[-1]]), 1), round(float(z_of[z_hit[0]]), 1)) if z_hit.size else (None, None)
    return Overview(out, tuple(round(float(z_of[z]), 1) for z in zs), *ends)


def overview_image(*args: Any, **kwargs: Any) -> Image.Image:
    """The overview picture of one case: :func:`overview`'s picture alone (same arguments, same errors).

    Returns:
        An RGB image, 1024 pixels wide.
    """
    return overview(*args, **kwargs).image


# one parameter list, kept by overview: help() and the docs show it here too
overview_image.__signature__ = inspect.signature(overview).replace(return_annotation="Image.Image")


PNG_COMPRESS_LEVEL = 3
"""zlib level of the overview PNG. On P001's 1024 x 1153 overview: level 3 takes 0.07 s for 777 KiB, Pillow's
``optimize=True`` (level 9 and a search over filters) 1.1 s for 742 KiB; a picture per case, so 1 s per case."""


def write_overview(path: str | os.PathLike, image: Image.Image) -> Path:
    """Write ``image`` as PNG atomically (a killed run never leaves half a picture)."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL))
