"""Overview pictures: radiological convention, physical aspect ratio, orientation independence, overlays."""

import numpy as np
import pytest

from infnet_monai.visualize import COLOURS, overview_image
from infnet_monai.visualize.overview import display_plane, to_ras


def _case(shape=(40, 30, 12)):
    """Air-filled box lungs in soft tissue, RAS voxel axes: right lung at high x (patient's right), left at low x."""
    hu = np.full(shape, 40.0, dtype=np.float32)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[24:36, 6:24, 2:10] = 1  # right lung: larger x in RAS
    lung[4:16, 6:24, 2:10] = 2
    hu[lung > 0] = -850.0
    infection = np.zeros(shape, dtype=np.uint8)
    infection[26:30, 8:12, 4:8] = 1  # in the right lung, anterior part (large y is anterior)
    classes = infection.copy()
    classes[26:28, 8:12, 4:8] = 2
    return hu, lung, infection, classes


def _pixels(image, colour):
    arr = np.asarray(image)
    return np.argwhere((arr == np.asarray(colour, dtype=np.uint8)).all(-1))


def test_display_puts_patient_right_on_the_left_and_anterior_up():
    plane = np.zeros((4, 3))  # (x: right is high, y: anterior is high)
    plane[3, 2] = 1.0  # right, anterior
    shown = display_plane(plane)
    assert shown.shape == (3, 4) and shown[0, 0] == 1.0  # top-left


def test_overview_size_colours_and_sides():
    hu, lung, infection, classes = _case()
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    img = overview_image(hu, lung, infection, affine, classes, {"infection_volume_ml": 1.5}, "case_1", "v")
    assert img.mode == "RGB" and img.width >= 800
    right, left = _pixels(img, COLOURS["right lung"]), _pixels(img, COLOURS["left lung"])
    assert len(right) and len(left)
    # the first mosaic tile: right-lung contour on the left half of the tile, left-lung contour on the right half
    tile_right = right[right[:, 1] < 256]
    tile_left = left[left[:, 1] < 256]
    assert tile_right[:, 1].mean() < tile_left[:, 1].mean()


def test_overview_does_not_depend_on_the_voxel_order():
    hu, lung, infection, classes = _case()
    ras = np.diag([0.8, 0.8, 5.0, 1.0])
    a = overview_image(hu, lung, infection, ras, classes)
    # the same scan stored LPS: x and y flipped in the array, with the affine that says so
    lps = ras.copy()
    lps[0, 0], lps[1, 1] = -0.8, -0.8
    lps[:3, 3] = [0.8 * (hu.shape[0] - 1), 0.8 * (hu.shape[1] - 1), 0.0]
    flip = (slice(None, None, -1), slice(None, None, -1))
    b = overview_image(hu[flip], lung[flip], infection[flip], lps, classes[flip])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_physical_aspect_ratio_of_the_reformat():
    from infnet_monai.visualize.overview import lung_box, reformat_views

    hu, lung, infection, _ = _case()
    spacing = (0.8, 0.8, 5.0)
    arrays = [to_ras(a, np.diag([*spacing, 1.0])) for a in (hu, lung, infection)]
    assert tuple(arrays[0][1]) == spacing
    box = lung_box(arrays[1][0] > 0)
    part = np.asarray(reformat_views(*(a for a, _ in arrays), np.asarray(spacing), box))[18:, :512]
    rows = np.flatnonzero((part != 0).any(axis=(1, 2)))
    cols = np.flatnonzero((part != 0).any(axis=(0, 2)))
    x_mm = (box[0].stop - box[0].start) * 0.8
    z_mm = (box[2].stop - box[2].start) * 5.0
    assert (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1) == pytest.approx(x_mm / z_mm, rel=0.02)
    # no class map: the infection is drawn in the infection colour; no GGO / consolidation colour
    img = overview_image(hu, lung, infection, np.diag([*spacing, 1.0]))
    assert len(_pixels(img, COLOURS["GGO"])) == 0


def test_bad_shapes_are_refused():
    hu, lung, infection, _ = _case()
    with pytest.raises(ValueError, match="one shape"):
        overview_image(hu, lung[:, :, :5], infection, np.eye(4))


def test_mosaic_holds_the_lung_base_and_the_most_infected_slices():
    from infnet_monai.visualize.overview import N_AXIAL, mosaic_slices

    lung = np.zeros((20, 20, 100), dtype=np.uint8)
    lung[2:18, 2:18, 10:90] = 1
    lung[2:4, 2:4, 5:10] = 1  # a sliver below the base: under 5% of the largest area
    labels = np.zeros_like(lung)
    labels[5:15, 5:15, 44] = 1  # the most infected slice, between two evenly spread ones
    labels[5:8, 5:8, 71] = 2
    zs = mosaic_slices(lung, labels)
    assert len(zs) == N_AXIAL and list(zs) == sorted(set(zs))
    assert 10 in zs and 44 in zs and 71 in zs  # the base, then the slices with the most infection
    assert zs.min() >= 5 and zs.max() <= 89


def test_tiles_are_named_by_instance_number_or_from_the_top_with_z_in_mm():
    from infnet_monai.visualize.overview import slice_namer

    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    affine[2, 3] = -100.0  # slice k at z = -100 + 2.5 k mm
    name = slice_namer(affine, (8, 8, 40))
    assert name(0) == "slice 40 of 40 from top, z -100.0 mm"
    assert name(39) == "slice 1 of 40 from top, z -2.5 mm"
    numbers = {round(-100.0 + 2.5 * k, 1): 40 - k for k in range(40)}  # the series counts from the top
    assert slice_namer(affine, (8, 8, 40), numbers)(4) == "image 36, z -90.0 mm"
    flipped = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 39], [0, 0, 0, 1]])  # stored top first
    assert slice_namer(flipped, (8, 8, 40))(0) == "slice 40 of 40 from top, z -100.0 mm"  # the RAS slice 0


def _tall_case(shape=(24, 20, 60), top=54, bottom=5, stalk=8):
    """RAS voxel axes: box lungs from slice ``bottom`` to ``top`` whose top ``stalk`` slices are a thin apex (under
    5% of the largest lung area, as a real apex), infection in two slices of the right lung."""
    hu = np.full(shape, 40.0, dtype=np.float32)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[13:22, 3:17, bottom : top + 1 - stalk] = 1
    lung[2:11, 3:17, bottom : top + 1 - stalk] = 2
    lung[16:18, 9:11, top + 1 - stalk : top + 1] = 1  # 2x2 voxels: the apex
    hu[lung > 0] = -850.0
    infection = np.zeros(shape, dtype=np.uint8)
    infection[14:20, 5:12, 20] = 1
    infection[14:17, 5:8, 40] = 1
    return hu, lung, infection


def _stored_lps_top_first(arrays, ras_affine):
    """The same scan stored with x, y and z reversed (LPS axes, the top slice first, as DICOM series often are),
    with the affine that says so: every voxel keeps its world position."""
    shape = np.asarray(arrays[0].shape)
    flip = np.diag([-1.0, -1.0, -1.0, 1.0])
    flip[:3, 3] = shape - 1
    return [a[::-1, ::-1, ::-1] for a in arrays], ras_affine @ flip


RAS_AFFINE = np.array([[1.5, 0, 0, -20.0], [0, 1.5, 0, 10.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("stored", ["RAS", "LPS_top_first"])
def test_axial_tiles_reach_the_apex_whatever_the_voxel_order(stored):
    from infnet_monai.visualize.overview import N_AXIAL, overview

    arrays, affine = list(_tall_case()), RAS_AFFINE
    if stored != "RAS":
        arrays, affine = _stored_lps_top_first(arrays, RAS_AFFINE)
    result = overview(*arrays, affine)
    z = result.axial_z_mm
    assert result.lung_apex_z_mm == pytest.approx(-300.0 + 2.5 * 54) and result.lung_base_z_mm == pytest.approx(-300.0 + 2.5 * 5)
    height = result.lung_apex_z_mm - result.lung_base_z_mm
    assert len(z) == N_AXIAL and list(z) == sorted(z, reverse=True)  # apex first, each slice once
    assert result.lung_apex_z_mm - z[0] <= 0.10 * height  # the apex tile: within the top tenth of the lungs
    assert z[-1] - result.lung_base_z_mm <= 0.10 * height  # the base tile
    assert {-300.0 + 2.5 * 20, -300.0 + 2.5 * 40} <= set(z)  # the infected slices
    steps = -np.diff(z)
    assert steps.max() <= 2 * height / (N_AXIAL - 1)  # spread over the whole height: no wide gap
    fields = result.row_fields()
    assert fields == {"overview_axial_z_mm": list(z), "lung_apex_z_mm": result.lung_apex_z_mm,
                      "lung_base_z_mm": result.lung_base_z_mm}
    assert all(isinstance(v, float) for v in fields["overview_axial_z_mm"])


def test_the_tiles_positions_are_the_ones_printed_on_them():
    from infnet_monai.visualize.overview import axial_z_mm, mosaic_slices, slice_namer

    hu, lung, infection = _tall_case()
    (hu_l, lung_l, inf_l), lps = _stored_lps_top_first([hu, lung, infection], RAS_AFFINE)
    z_of = axial_z_mm(lps, hu_l.shape)
    assert z_of == pytest.approx(-300.0 + 2.5 * np.arange(60))  # RAS slice k, whatever the storage order
    name = slice_namer(lps, hu_l.shape)
    for k in mosaic_slices(lung, infection):
        assert name(int(k)).endswith(f"z {z_of[k]:.1f} mm")


def test_the_apex_tile_is_not_left_deeper_than_a_tenth_of_the_lungs():
    from infnet_monai.visualize.overview import mosaic_slices

    _, lung, infection = _tall_case(stalk=20)  # a long thin apex: under 5% of the largest area for 40% of the height
    zs = mosaic_slices(lung, infection)
    assert zs.max() >= 54 - 0.1 * (54 - 5) and zs.min() == 5


def test_the_runner_up_infected_slice_is_not_the_neighbour_of_the_first():
    from infnet_monai.visualize.overview import mosaic_slices

    lung = np.zeros((20, 20, 100), dtype=np.uint8)
    lung[2:18, 2:18, 10:90] = 1
    labels = np.zeros_like(lung)
    labels[5:15, 5:15, 44] = 1  # the most infected
    labels[5:14, 5:15, 43] = 1  # its neighbour: nearly as much, nothing new to see
    labels[5:8, 5:8, 71] = 1
    zs = set(mosaic_slices(lung, labels).tolist())
    assert {10, 44, 71, 89} <= zs and 43 not in zs


@pytest.mark.parametrize("n_slices, spacing_z", [(2, 5.0), (8, 3.0)], ids=["2_slices", "24_mm"])
def test_short_scans_leave_the_reformats_out_with_a_note(n_slices, spacing_z):
    from infnet_monai.visualize.overview import HEADER_PX, LEGEND_PX, overview_image, reformat_views

    hu, lung, infection, _ = _case(shape=(40, 30, n_slices))
    lung[:, :, :] = 0
    lung[24:36, 6:24, :], lung[4:16, 6:24, :] = 1, 2
    spacing = (0.8, 0.8, spacing_z)
    part = reformat_views(hu, lung, infection, np.asarray(spacing), [slice(0, 40), slice(0, 30), slice(0, n_slices)])
    arr = np.asarray(part)
    assert part.height < 40 and (arr > 100).any()  # one line of text, not a sliver of CT
    assert all(len(_pixels(part, COLOURS[name])) == 0 for name in ("right lung", "left lung"))
    img = overview_image(hu, lung, infection, np.diag([*spacing, 1.0]))
    below = np.asarray(img)[img.height - part.height :]
    np.testing.assert_array_equal(below, arr)  # the picture ends with the note
    assert len(_pixels(img.crop((0, HEADER_PX + LEGEND_PX, img.width, img.height)), COLOURS["right lung"]))


def test_tile_labels_sit_on_a_dark_band_over_bright_tissue():
    from infnet_monai.visualize.overview import HEADER_PX, LABEL_BAND_OPACITY, LEGEND_PX, TILE_PX, overview_image

    hu, lung, infection, _ = _case()
    hu[lung == 0] = 1000.0  # bone-bright around the lungs: white in the lung window
    img = np.asarray(overview_image(hu, lung, infection, np.diag([0.8, 0.8, 5.0, 1.0])))
    band = img[HEADER_PX + LEGEND_PX : HEADER_PX + LEGEND_PX + 16, :TILE_PX]  # the first tile's label row
    dimmed = round(255 * (1 - LABEL_BAND_OPACITY))
    assert ((np.abs(band.astype(int) - dimmed) <= 1).all(-1)).sum() > 300  # white tissue behind the band, darkened
    assert (band == 255).all(-1).sum() > 50  # and the white text on it (and the tissue right of it)


def test_nodule_like_lesions_are_outlined_in_their_colour_only_when_given():
    from infnet_monai.visualize.overview import HEADER_PX, LEGEND_PX, NODULE_LEGEND, overview_image

    hu, lung, infection, classes = _case()
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    nodules = np.zeros_like(lung)
    nodules[6:12, 14:20, 3:9] = 1  # in the left lung, away from the infection
    colour = COLOURS[NODULE_LEGEND]
    assert colour not in {v for k, v in COLOURS.items() if k != NODULE_LEGEND}
    with_nodules = overview_image(hu, lung, infection, affine, classes, nodules=nodules)
    legend = with_nodules.crop((0, HEADER_PX, with_nodules.width, HEADER_PX + LEGEND_PX))
    pictures = with_nodules.crop((0, HEADER_PX + LEGEND_PX, with_nodules.width, with_nodules.height))
    assert len(_pixels(legend, colour)) and len(_pixels(pictures, colour)) > 20
    for absent in (None, np.zeros_like(lung)):  # no nodule: no colour, no legend entry
        img = overview_image(hu, lung, infection, affine, classes, nodules=absent)
        assert len(_pixels(img, colour)) == 0
        np.testing.assert_array_equal(np.asarray(img), np.asarray(overview_image(hu, lung, infection, affine, classes)))
    with pytest.raises(ValueError, match="one shape"):
        overview_image(hu, lung, infection, affine, nodules=nodules[:, :, :3])


def test_band_like_lesions_are_outlined_when_the_row_counts_some(tmp_path):
    """The writer outlines the band-like lesions (the ones ``band_like_infection_ml`` counts) in their own colour, with
    a legend entry, only when the row counts some; nodule-like and band-like outlines do not mix."""
    import nibabel as nib
    from PIL import Image

    from infnet_monai.io.cases import CTCase
    from infnet_monai.pipeline.predictor import CaseResult
    from infnet_monai.pipeline.writer import CaseWriter, MaskVolumes, OverviewPicture
    from infnet_monai.stats.anatomy import band_like_infection_ml, band_like_mask
    from infnet_monai.visualize.overview import BAND_LEGEND, HEADER_PX, LEGEND_PX, NODULE_LEGEND

    lung = np.zeros((80, 70, 40), dtype=np.uint8)
    lung[5:38, 5:65, 3:37] = 1
    lung[42:75, 5:65, 3:37] = 2
    hu = np.where(lung > 0, -850.0, 40.0).astype(np.float32)
    infection = np.zeros_like(lung)
    infection[15:28, 25:45, 15:25] = 1  # reaches 25 mm into the right lung
    band = np.zeros_like(lung)
    band[45:70, 5:7, 10:30] = 1  # along the left lung's posterior wall, 2 voxels (3 mm) deep
    infection = np.maximum(infection, band)
    affine = RAS_AFFINE
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    assert band_like_infection_ml(lung, infection, spacing) > 0
    assert (band_like_mask(lung, infection, spacing) == (band > 0)).all()  # the band, not the deep lesions
    assert len(set(COLOURS.values())) == len(COLOURS)  # every layer its own colour
    source = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(source))
    case = CTCase(case_id="c", source_path=source, kind="nifti", files=(source,))
    pictures = {}
    for name, figure in (("flagged", band_like_infection_ml(lung, infection, spacing)), ("not", 0.0)):
        result = CaseResult(row={}, infection=infection, lung=lung, image=hu, affine=affine)
        CaseWriter([MaskVolumes(), OverviewPicture("v")]).write(
            case, result, tmp_path / name, {"case_id": "c", "band_like_infection_ml": figure}
        )
        pictures[name] = Image.open(tmp_path / name / "overview.png").convert("RGB")
    flagged = pictures["flagged"]
    legend = flagged.crop((0, HEADER_PX, flagged.width, HEADER_PX + LEGEND_PX))
    below = flagged.crop((0, HEADER_PX + LEGEND_PX, flagged.width, flagged.height))
    assert len(_pixels(legend, COLOURS[BAND_LEGEND])) and len(_pixels(below, COLOURS[BAND_LEGEND])) > 20
    assert len(_pixels(pictures["not"], COLOURS[BAND_LEGEND])) == 0


def test_overview_picture_puts_the_tiles_positions_in_stats_json(tmp_path):
    import json

    import nibabel as nib

    from infnet_monai.io.cases import CTCase
    from infnet_monai.pipeline.predictor import CaseResult
    from infnet_monai.pipeline.writer import CaseWriter, MaskVolumes, OverviewPicture

    hu, lung, infection = _tall_case()
    (hu, lung, infection), affine = _stored_lps_top_first([hu, lung, infection], RAS_AFFINE)
    source = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(source))
    case = CTCase(case_id="c", source_path=source, kind="nifti", files=(source,))
    result = CaseResult(row={}, infection=infection, lung=lung, image=hu, affine=affine)
    nodules = np.zeros_like(lung)
    nodules[5:8, 5:8, 30:33] = 1
    result.nodules = nodules  # what the predictor adds; read with getattr, so older results work too
    row = CaseWriter([MaskVolumes(), OverviewPicture("v")]).write(case, result, tmp_path / "c", {"case_id": "c"})
    stats = json.loads((tmp_path / "c" / "stats.json").read_text())
    assert (tmp_path / "c" / "overview.png").is_file() and not stats["notes"]
    z = stats["overview_axial_z_mm"]
    assert z == row["overview_axial_z_mm"] and len(z) == 12 and z == sorted(z, reverse=True)
    apex, base = stats["lung_apex_z_mm"], stats["lung_base_z_mm"]
    assert apex == pytest.approx(-300.0 + 2.5 * 54) and base == pytest.approx(-300.0 + 2.5 * 5)
    assert any(apex - v <= 0.15 * (apex - base) for v in z)  # a tile within 15% of the lungs' height of the apex
    from PIL import Image

    from infnet_monai.visualize.overview import NODULE_LEGEND

    assert len(_pixels(Image.open(tmp_path / "c" / "overview.png").convert("RGB"), COLOURS[NODULE_LEGEND]))
