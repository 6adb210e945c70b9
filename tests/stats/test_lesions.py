"""Tests of infnet_monai.stats.lesions: one row per lesion, positions in LPS mm, diameters on anisotropic pixels."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from infnet_monai.stats.burden import infection_burden
from infnet_monai.stats.lesions import (
    LESION_COLUMNS,
    LESION_KINDS,
    LESIONS_FILE,
    _largest_axial_diameter,
    lesion_summary,
    lesion_table,
    write_lesion_csv,
)

VOXEL_ML = 0.0014  # 0.7 * 0.8 * 2.5 mm^3
AFFINE = np.array(
    [
        [0.7, 0.0, 0.0, -100.0],
        [0.0, 0.8, 0.0, 50.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
# voxel (i, j, k) -> RAS (-100 + 0.7 i, 50 + 0.8 j, 30 + 2.5 k) -> LPS (100 - 0.7 i, -50 - 0.8 j, 30 + 2.5 k)


def _case():
    """Lungs 5 x 8 voxels per slice on slices 0-8 (thirds: 0-2 lower, 3-5 middle, 6-8 upper), touching at x 5 / 6.

    Per slice the in-plane depth is min(0.7 * r0, 0.8 * r1) mm (r = voxels to the lung's edge), at most 2.1 mm, so the
    peripheral voxels (depth <= 0.7 mm) are the first and last rows along axis 0: x 1, 5 (left) and 6, 10 (right).
    """
    lung = np.zeros((12, 10, 9), dtype=np.uint8)
    lung[1:6, 1:9, :] = 2  # left lung
    lung[6:11, 1:9, :] = 1  # right lung
    image = np.full(lung.shape, -800.0, dtype=np.float32)
    infection = np.zeros_like(lung)
    # A, right upper: x 8-10, y 2-6, slices 6-7: 30 voxels, 10 of them peripheral (x 10)
    infection[8:11, 2:7, 6:8] = 1
    image[8:11, 2:7, 6:8] = -300.0
    image[9, 4, 6] = 300.0  # mean (29 * -300 + 300) / 30 = -280
    # B, across the lungs on slices 1-2: x 4-7 on slice 1, x 5 on slice 2 (3 voxels left, 2 right; x 5, 6, 5 peripheral)
    infection[4:8, 7, 1] = 1
    infection[5, 7, 2] = 1
    image[4:8, 7, 1] = -600.0
    image[5, 7, 2] = -500.0  # mean (4 * -600 - 500) / 5 = -580
    # C, one central voxel of the right middle third
    infection[8, 4, 4] = 1
    infection[0, 0, 0] = 1  # outside the lung: ignored
    return infection, lung, image


def _centroid(row: dict) -> tuple[float, float, float]:
    return row["centroid_lps_x_mm"], row["centroid_lps_y_mm"], row["centroid_lps_z_mm"]


def test_affine_is_ras():
    assert nib.aff2axcodes(AFFINE) == ("R", "A", "S")


def test_rows_exact():
    infection, lung, image = _case()
    rows = lesion_table(infection, lung, image, AFFINE)
    assert [tuple(row) for row in rows] == [LESION_COLUMNS] * 3
    a, b, c = rows
    assert [r["lesion_id"] for r in rows] == [1, 2, 3]
    assert [r["volume_ml"] for r in rows] == pytest.approx([30 * VOXEL_ML, 5 * VOXEL_ML, VOXEL_ML], rel=1e-12)
    assert [r["lung_side"] for r in rows] == ["right", "both", "right"]
    assert [r["zone"] for r in rows] == ["right_upper", "left_lower", "right_middle"]
    assert [r["slices"] for r in rows] == [2, 2, 1]
    assert [r["mean_hu"] for r in rows] == pytest.approx([-280.0, -580.0, -800.0])
    assert [r["peripheral_share"] for r in rows] == pytest.approx([1 / 3, 3 / 5, 0.0])
    assert [r["band_like"] for r in rows] == [True] * 3  # lungs 6 mm across: nothing reaches 12 mm in
    assert a["ggo_volume_ml"] is None and a["consolidation_volume_ml"] is None

    # centroid of A: mean index (9, 4, 6.5)
    assert _centroid(a) == pytest.approx((93.7, -53.2, 46.25))
    # bounding box of A's voxel centres: i 8-10, j 2-6, k 6-7
    assert (a["bbox_lps_min_x_mm"], a["bbox_lps_max_x_mm"]) == pytest.approx((93.0, 94.4))
    assert (a["bbox_lps_min_y_mm"], a["bbox_lps_max_y_mm"]) == pytest.approx((-54.8, -51.6))
    assert (a["bbox_lps_min_z_mm"], a["bbox_lps_max_z_mm"]) == pytest.approx((45.0, 47.5))
    # centroid of B: mean index (5.4, 7, 1.2)
    assert _centroid(b) == pytest.approx((96.22, -55.6, 33.0))
    assert _centroid(c) == pytest.approx((94.4, -53.2, 40.0))
    assert c["bbox_lps_min_x_mm"] == c["bbox_lps_max_x_mm"] == pytest.approx(94.4)


def test_kind_first_id_and_a_withheld_zone():
    infection, lung, image = _case()
    rows = lesion_table(infection, lung, image, AFFINE)
    assert LESION_KINDS == ("infection", "nodule_like") and LESION_COLUMNS[:2] == ("lesion_id", "kind")
    assert [r["kind"] for r in rows] == ["infection"] * 3
    nodules = lesion_table(infection, lung, image, AFFINE, kind="nodule_like", first_id=8, with_zone=False)
    assert [r["lesion_id"] for r in nodules] == [8, 9, 10] and [r["kind"] for r in nodules] == ["nodule_like"] * 3
    assert [r["zone"] for r in nodules] == [None] * 3
    assert [r["band_like"] for r in nodules] == [None] * 3  # a nodule is not judged as a band
    blank = {"lesion_id": None, "kind": None, "zone": None, "band_like": None}
    assert [{**r, **blank} for r in nodules] == [{**r, **blank} for r in rows]  # the same figures otherwise
    with pytest.raises(ValueError, match="kind must be one of infection, nodule_like"):
        lesion_table(infection, lung, image, AFFINE, kind="nodule")


def test_lesion_summary_is_short_and_rounded_as_the_csv():
    rows = lesion_table(*_case(), AFFINE)
    summary = lesion_summary(rows[:1])
    assert summary == [
        {"lesion_id": 1, "volume_ml": 0.042, "centroid_lps_mm": [93.7, -53.2, 46.25], "largest_axial_diameter_mm": 3.49,
         "lung_side": "right"},
    ]  # fmt: skip
    assert lesion_summary([]) == []


def test_diameters_use_anisotropic_pixels():
    rows = lesion_table(*_case(), AFFINE)
    # A: a 3 x 5 voxel rectangle per slice: corners 2 * 0.7 mm and 4 * 0.8 mm apart (swapped sizes: sqrt(10.4))
    assert rows[0]["largest_axial_diameter_mm"] == pytest.approx(np.sqrt(1.4**2 + 3.2**2), rel=1e-12)
    assert rows[1]["largest_axial_diameter_mm"] == pytest.approx(2.1, rel=1e-12)  # 4 voxels along axis 0
    assert rows[2]["largest_axial_diameter_mm"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diameter_matches_all_pairs(seed):
    """Against all pairwise distances per slice: large random slices (hull path), lines (collinear), single voxels."""
    rng = np.random.default_rng(seed)
    mask = rng.random((40, 30, 3)) < 0.3
    mask[:, :, 1] = False
    mask[0:40, 7, 1] = True  # 40 collinear points on slice 1 (Qhull fails: all pairs)
    mask[:, :, 2] = False
    mask[3, 3, 2] = True
    ijk = np.argwhere(mask)
    spacing = (0.6, 1.7)
    expected = max(
        pdist(ijk[ijk[:, 2] == k][:, :2] * np.array(spacing)).max() if np.count_nonzero(ijk[:, 2] == k) > 1 else 0.0
        for k in range(3)
    )
    assert _largest_axial_diameter(ijk, spacing) == pytest.approx(expected, rel=1e-12)
    only_line = ijk[ijk[:, 2] == 1]
    assert _largest_axial_diameter(only_line, spacing) == pytest.approx(39 * 0.6, rel=1e-12)


def test_classes_and_volumes_add_up():
    infection, lung, image = _case()
    classes = np.zeros_like(lung)
    classes[8:11, 2:7, 6] = 1  # A: 15 GGO
    classes[8:10, 2:7, 7] = 2  # A: 10 consolidation
    classes[8, 4, 4] = 2  # C: 1 consolidation
    rows = lesion_table(infection, lung, image, AFFINE, classes=classes)
    assert rows[0]["ggo_volume_ml"] == pytest.approx(15 * VOXEL_ML)
    assert rows[0]["consolidation_volume_ml"] == pytest.approx(10 * VOXEL_ML)
    assert rows[1]["ggo_volume_ml"] == 0.0 and rows[1]["consolidation_volume_ml"] == 0.0
    assert rows[2]["consolidation_volume_ml"] == pytest.approx(VOXEL_ML)
    burden = infection_burden(infection * (lung > 0), lung, (0.7, 0.8, 2.5))
    assert sum(r["volume_ml"] for r in rows) == pytest.approx(burden["infection_volume_ml"], rel=1e-12)
    assert len(rows) == burden["lesion_count"]


def test_no_lesion_and_bad_inputs():
    infection, lung, image = _case()
    assert lesion_table(np.zeros_like(infection), lung, image, AFFINE) == []
    outside = np.zeros_like(infection)
    outside[0, 0, 0] = 1
    assert lesion_table(outside, lung, image, AFFINE) == []
    lps = AFFINE.copy()
    lps[:2] *= -1
    with pytest.raises(ValueError, match="RAS"):
        lesion_table(infection, lung, image, lps)
    with pytest.raises(ValueError, match="image"):
        lesion_table(infection, lung, image[..., :4], AFFINE)
    with pytest.raises(ValueError, match="4x4"):
        lesion_table(infection, lung, image, AFFINE[:3])


def test_csv_rounding_header_and_atomic_write(tmp_path):
    infection, lung, image = _case()
    classes = np.zeros_like(lung)
    rows = lesion_table(infection, lung, image, AFFINE)
    path = write_lesion_csv(rows, tmp_path / LESIONS_FILE)
    assert LESIONS_FILE == "lesions.csv" and path == tmp_path / "lesions.csv"
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == LESION_COLUMNS and len(table) == 4
    first = dict(zip(LESION_COLUMNS, table[1]))
    assert first["lesion_id"] == "1" and first["kind"] == "infection" and first["volume_ml"] == "0.0420"
    assert first["ggo_volume_ml"] == "" and first["consolidation_volume_ml"] == ""
    assert first["lung_side"] == "right" and first["zone"] == "right_upper"
    assert first["centroid_lps_x_mm"] == "93.70" and first["centroid_lps_z_mm"] == "46.25"
    assert first["largest_axial_diameter_mm"] == "3.49"  # sqrt(12.2) = 3.4928...
    assert first["mean_hu"] == "-280.0" and first["peripheral_share"] == "0.333" and first["slices"] == "2"
    assert rows[0]["peripheral_share"] != 0.333  # rounded in the file only
    with_classes = lesion_table(infection, lung, image, AFFINE, classes=classes)
    write_lesion_csv(with_classes, path)  # replaces the file
    with open(path, newline="", encoding="utf-8") as f:
        assert dict(zip(LESION_COLUMNS, list(csv.reader(f))[1]))["ggo_volume_ml"] == "0.0000"
    unzoned = lesion_table(infection, lung, image, AFFINE, kind="nodule_like", first_id=4, with_zone=False)
    write_lesion_csv(unzoned, path)
    with open(path, newline="", encoding="utf-8") as f:
        back = dict(zip(LESION_COLUMNS, list(csv.reader(f))[1]))
    assert (back["lesion_id"], back["kind"], back["zone"], back["ggo_volume_ml"]) == ("4", "nodule_like", "", "")
    empty = write_lesion_csv([], tmp_path / "none" / LESIONS_FILE)
    assert empty.read_text(encoding="utf-8").splitlines() == [",".join(LESION_COLUMNS)]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["lesions.csv", "lesions.csv"]


def test_a_given_peripheral_mask_gives_the_same_rows():
    from infnet_monai.stats.zones import peripheral_mask

    infection, lung, image = _case()
    rows = lesion_table(infection, lung, image, AFFINE)
    spacing = np.linalg.norm(AFFINE[:3, :3], axis=0)
    assert rows and any(0.0 < row["peripheral_share"] < 1.0 for row in rows)  # not a vacuous comparison
    assert lesion_table(infection, lung, image, AFFINE, peripheral=peripheral_mask(lung, spacing)) == rows
    with pytest.raises(ValueError, match="peripheral must have"):
        lesion_table(infection, lung, image, AFFINE, peripheral=np.zeros((2, 2, 2), dtype=bool))


def test_equal_volumes_keep_the_order_of_their_first_voxel():
    from scipy import ndimage as ndi

    _, lung, image = _case()
    blobs = np.zeros(lung.shape, dtype=np.uint8)
    blobs[7:9, 2:4, 5:7] = 1  # three lesions of 8 voxels; in C order this one comes last (largest x)
    blobs[2:4, 5:7, 1:3] = 1
    blobs[2:4, 1:3, 6:8] = 1  # ... and this one first (same x as the one above, smaller y)
    labels, n = ndi.label(blobs, structure=np.ones((3, 3, 3)))
    table = lesion_table(blobs, lung, image, AFFINE)
    assert n == 3 and [row["volume_ml"] for row in table] == pytest.approx([8 * VOXEL_ML] * 3)
    first_z = [2.5 * np.unravel_index(np.flatnonzero(labels.ravel() == i)[0], labels.shape)[2] + 30.0 for i in range(1, n + 1)]
    assert [row["bbox_lps_min_z_mm"] for row in table] == pytest.approx(first_z)
    assert first_z == [30.0 + 2.5 * 6, 30.0 + 2.5 * 1, 30.0 + 2.5 * 5]


def test_band_like_rows_add_up_to_the_cases_band_like_infection():
    """A band on the posterior chest wall is band-like, a patch deep in the lung is not, and the band-like rows' volumes
    are the case's ``band_like_infection_ml`` (the same lesions, the same depth)."""
    from infnet_monai.stats.anatomy import band_like_infection_ml

    lung = np.zeros((90, 80, 24), dtype=np.uint8)
    lung[5:45, 5:75, 2:22] = 1
    lung[45:85, 5:75, 2:22] = 2
    infection = np.zeros_like(lung)
    infection[50:82, 5:10, 4:20] = 1  # against the wall at y 5: 5 voxels of 0.8 mm deep (the larger lesion)
    infection[15:35, 30:50, 8:14] = 1  # reaches 14 mm (20 voxels of 0.7 mm to the wall at x 5) and 15 mm in z
    image = np.full(lung.shape, -700.0, dtype=np.float32)
    rows = lesion_table(infection, lung, image, AFFINE)
    assert [(r["lung_side"], r["band_like"]) for r in rows] == [("left", True), ("right", False)]
    spacing = np.linalg.norm(AFFINE[:3, :3], axis=0)
    assert band_like_infection_ml(lung, infection, spacing) == pytest.approx(rows[0]["volume_ml"], rel=1e-12)


def test_a_case_without_band_like_infection_spares_the_depths():
    """Given the self-check's 0 mL the rows say no lesion is band-like without measuring, and are otherwise the same;
    given anything else (or nothing) the depths are measured."""
    infection, lung, image = _case()
    measured = lesion_table(infection, lung, image, AFFINE)
    assert [r["band_like"] for r in measured] == [True] * 3
    spared = lesion_table(infection, lung, image, AFFINE, band_like_ml=0.0)
    assert [r["band_like"] for r in spared] == [False] * 3
    assert [{**r, "band_like": None} for r in spared] == [{**r, "band_like": None} for r in measured]
    assert lesion_table(infection, lung, image, AFFINE, band_like_ml=0.05) == measured
