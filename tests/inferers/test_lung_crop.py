"""Tests of the lung-cropped slice inference (infnet_monai.inferers.lung_crop): boxes, the crop / paste geometry,
box growth and the re-run of grown slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infnet_monai.inferers.lung_crop import (
    LUNG_CROP_MARGINS,
    LungCropSliceInferer,
    grow_boxes,
    slice_boxes,
    strided_slices,
)

NO_MARGINS = (0.0, 0.0, 0.0, 0.0)


def _two_slice_lung() -> np.ndarray:
    """(40, 30, 5) mask: lung on slices 1 and 3 only, with known extents."""
    lung = np.zeros((40, 30, 5), dtype=bool)
    lung[10:20, 5:15, 1] = True  # x 10..19, y 5..14
    lung[12:14, 7:9, 1] = False  # a hole does not change the box
    lung[30:40, 0:10, 3] = True  # touches the x end and the y start of the slice
    return lung


# ---------------------------------------------------------------------------------------------------- slice_boxes
def _one_slice(k: int) -> np.ndarray:
    """The lung of :func:`_two_slice_lung` on slice ``k`` alone."""
    lung = _two_slice_lung()
    lung[:, :, np.arange(lung.shape[2]) != k] = False
    return lung


def test_slice_boxes_exact_extents_and_empty_rows():
    boxes = slice_boxes(_one_slice(1), NO_MARGINS)
    assert boxes.shape == (5, 4) and boxes.dtype == np.int64
    assert boxes[1].tolist() == [10, 20, 5, 15]  # end exclusive
    for k in (0, 2, 3, 4):
        assert boxes[k].tolist() == [-1, -1, -1, -1]
    assert slice_boxes(_one_slice(3), NO_MARGINS)[3].tolist() == [30, 40, 0, 10]


def test_slice_boxes_margins_are_fractions_of_the_extent_and_clipped():
    margins = (0.1, 0.2, 0.3, 0.5)
    # 10 x 10 box; x0 = floor(10 - 1), x1 = ceil(20 + 2), y0 = floor(5 - 3), y1 = ceil(15 + 5)
    assert slice_boxes(_one_slice(1), margins)[1].tolist() == [9, 22, 2, 20]
    # x1 = ceil(40 + 2) and y0 = floor(0 - 3) are clipped to the slice
    assert slice_boxes(_one_slice(3), margins)[3].tolist() == [29, 40, 0, 15]
    # fractional margins round outwards (floor at the start, ceil at the end)
    lung = np.zeros((20, 20, 1), dtype=bool)
    lung[5:12, 5:12, 0] = True  # 7 x 7
    assert slice_boxes(lung, (0.1, 0.1, 0.1, 0.1))[0].tolist() == [4, 13, 4, 13]


def test_slice_boxes_whole_volume_box_on_every_slice_with_lung():
    lung = _two_slice_lung()
    boxes = slice_boxes(lung, NO_MARGINS)  # default: one in-plane box for the whole lung
    assert boxes[1].tolist() == boxes[3].tolist() == [10, 40, 0, 15]
    assert (boxes[[0, 2, 4]] == -1).all()
    margins = (0.1, 0.2, 0.3, 0.5)  # 30 x 15 box
    grown = slice_boxes(lung, margins)
    assert grown[1].tolist() == grown[3].tolist() == [7, 40, 0, 23]  # 10-3, min(40, 46), max(0, -4.5), ceil(22.5)
    assert (grown[[0, 2, 4]] == -1).all()


def test_slice_boxes_without_any_lung():
    boxes = slice_boxes(np.zeros((8, 8, 3), dtype=bool))
    assert (boxes == -1).all() and boxes.shape == (3, 4)


def test_default_margins_are_small_fractions():
    assert len(LUNG_CROP_MARGINS) == 4 and all(0.0 <= m < 0.1 for m in LUNG_CROP_MARGINS)


# ---------------------------------------------------------------------------------------------------- geometry
def _position_volume(shape: tuple[int, int, int]) -> torch.Tensor:
    """(1, 1, X, Y, Z) volume whose value is a unique code of the voxel's position, in [0, 1)."""
    n = int(np.prod(shape))
    return torch.arange(n, dtype=torch.float32).reshape(1, 1, *shape) / n


def _first_channel(x: torch.Tensor) -> torch.Tensor:
    return x[:, :1]


def test_the_crop_maps_back_onto_the_input_grid_voxel_for_voxel():
    shape = (48, 40, 6)
    lung = np.zeros(shape, dtype=bool)
    lung[10:26, 8:20, 1:4] = True  # box 16 x 12 on slices 1..3
    lung[14:20, 12:16, 4] = True  # smaller lung on slice 4: it gets the whole-volume box too
    x = _position_volume(shape)
    inferer = LungCropSliceInferer(roi_size=(16, 12), sw_batch_size=2, margins=NO_MARGINS, max_rounds=1)
    report = inferer.infer(x, _first_channel, lung)
    out = report.probability
    assert out.shape == (1, 1, *shape) and out.dtype == torch.float32
    assert report.boxes[1:5].tolist() == [[10, 26, 8, 20]] * 4
    assert (report.boxes[[0, 5]] == -1).all()
    assert (report.first_pass, report.slices_run, report.rounds) == (4, 4, 1)
    torch.testing.assert_close(inferer(x, _first_channel, lung), out)  # calling it gives the same tensor
    inside = np.zeros(shape, dtype=bool)
    inside[10:26, 8:20, 1:5] = True
    # resize to the same size is the identity: every voxel comes back where it was taken from
    torch.testing.assert_close(out[0, 0][inside], x[0, 0][inside], rtol=0, atol=1e-7)
    assert (out[0, 0][~inside] == 0).all()  # outside the boxes and on slices without lung
    assert out[0, 0, :, :, 0].abs().sum() == 0 and out[0, 0, :, :, 5].abs().sum() == 0


def test_resized_crop_round_trip_approximates_the_input():
    shape = (64, 56, 4)
    lung = np.zeros(shape, dtype=bool)
    lung[12:42, 10:34, 1:3] = True  # box 30 x 24, resized to 48 x 40 and back
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ramp = (0.6 * i / shape[0] + 0.4 * j / shape[1]).astype(np.float32)  # smooth, in [0, 1)
    x = torch.from_numpy(np.repeat(ramp[:, :, None], shape[2], axis=2))[None, None]
    inferer = LungCropSliceInferer(roi_size=(48, 40), margins=NO_MARGINS, max_rounds=1)
    out = inferer(x, _first_channel, lung)[0, 0].numpy()
    inside = np.zeros(shape, dtype=bool)
    inside[12:42, 10:34, 1:3] = True
    err = np.abs(out[inside] - x[0, 0].numpy()[inside])
    slope = 0.6 / shape[0]  # per voxel along the steeper axis
    assert err.max() <= slope  # within one voxel's step of the ramp (the box's border rows)
    interior = np.zeros(shape, dtype=bool)
    interior[14:40, 12:32, 1:3] = True
    assert np.abs(out[interior] - x[0, 0].numpy()[interior]).max() <= 1e-5  # linear data: exact away from the border
    assert (out[~inside] == 0).all()


def test_inferer_rejects_bad_inputs():
    inferer = LungCropSliceInferer(roi_size=(8, 8))
    with pytest.raises(ValueError, match="inputs"):
        inferer(torch.zeros(1, 8, 8, 2), _first_channel, np.ones((8, 8, 2)))
    with pytest.raises(ValueError, match="lung mask shape"):
        inferer(torch.zeros(1, 1, 8, 8, 2), _first_channel, np.ones((8, 8, 3)))
    with pytest.raises(ValueError, match="max_rounds"):
        LungCropSliceInferer(roi_size=(8, 8), max_rounds=0)
    with pytest.raises(ValueError, match="grow_threshold"):
        LungCropSliceInferer(roi_size=(8, 8), grow_threshold=0.0)


def test_volume_without_lung_runs_nothing():
    calls = []
    inferer = LungCropSliceInferer(roi_size=(8, 8))
    report = inferer.infer(torch.ones(1, 1, 16, 16, 3), lambda t: calls.append(t.shape[0]) or t[:, :1], np.zeros((16, 16, 3)))
    assert calls == [] and (report.probability == 0).all() and (report.boxes == -1).all()
    assert (report.first_pass, report.slices_run, report.rounds) == (0, 0, 0)


def test_strided_slices_keep_every_kth_and_the_ends_of_each_run():
    todo = np.array([2, 3, 4, 5, 6, 7, 8, 12, 13, 20])
    assert strided_slices(todo, 1).tolist() == todo.tolist()
    # multiples of 3, and the ends 2, 8 | 12, 13 | 20 of the three runs: every slice left out lies between two run
    assert strided_slices(todo, 3).tolist() == [2, 3, 6, 8, 12, 13, 20]
    assert strided_slices(todo, 3, offset=1).tolist() == [2, 5, 8, 12, 13, 20]
    assert strided_slices(np.array([], dtype=np.int64), 2).size == 0


def test_z_stride_runs_fewer_slices_and_interpolates_the_others_linearly():
    shape = (32, 32, 11)
    lung = np.zeros(shape, dtype=bool)
    lung[8:24, 8:24, 1:10] = True  # lung on slices 1..9
    z = torch.arange(shape[2], dtype=torch.float32)
    x = (0.05 + 0.08 * z).expand(1, 1, *shape).contiguous()  # each slice one value, linear in z
    inferer = LungCropSliceInferer(roi_size=(16, 16), sw_batch_size=4, margins=NO_MARGINS, max_rounds=1)
    full = inferer.infer(x, _first_channel, lung)
    strided = inferer.infer(x, _first_channel, lung, z_stride=3)
    assert (full.first_pass, full.slices_run, full.interpolated) == (9, 9, 0)
    assert (strided.first_pass, strided.slices_run, strided.interpolated) == (4, 4, 5)  # slices 1 (an end), 3, 6, 9
    # a map linear in z is rebuilt exactly; slices without lung stay 0
    torch.testing.assert_close(strided.probability, full.probability, rtol=0, atol=1e-6)
    assert strided.probability[..., 0].abs().sum() == 0 and strided.probability[..., 10].abs().sum() == 0
    with pytest.raises(ValueError, match="z_stride"):
        inferer.infer(x, _first_channel, lung, z_stride=0)


# ---------------------------------------------------------------------------------------------------- grow_boxes
def _square_lung(shape=(64, 64, 1), x=(20, 40), y=(20, 40)) -> np.ndarray:
    lung = np.zeros(shape, dtype=bool)
    lung[x[0] : x[1], y[0] : y[1], 0] = True
    return lung


def test_grow_boxes_blob_attached_to_the_lung_at_a_box_edge_grows_that_side():
    lung = _square_lung()
    boxes = np.array([[20, 40, 20, 40]])
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[35:41, 25:30, 0] = 1.0  # from inside the lung to one voxel beyond the box's x end
    grown = grow_boxes(boxes, lung, prob, 0.5, NO_MARGINS)
    x0, x1, y0, y1 = grown[0].tolist()
    assert (x0, y0, y1) == (20, 20, 40)  # the other sides stay
    assert x1 >= 41  # grown on the touched side and now holding the blob
    assert (boxes == [[20, 40, 20, 40]]).all()  # input not modified


def test_grow_boxes_repeated_growth_encloses_a_long_blob_and_then_stops():
    lung = _square_lung()
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[30:52, 25:30, 0] = 0.9  # reaches 12 voxels beyond the lung's x end
    prob[22:30, 10:25, 0] = 0.9  # and 10 voxels before its y start
    boxes = slice_boxes(lung, LUNG_CROP_MARGINS)
    for _ in range(40):
        # what the next pass sees: the probability only inside the current box
        seen = np.zeros_like(prob)
        x0, x1, y0, y1 = boxes[0]
        seen[x0:x1, y0:y1] = prob[x0:x1, y0:y1]
        new = grow_boxes(boxes, lung, seen, 0.5, LUNG_CROP_MARGINS)
        assert (new[0, [0, 2]] <= boxes[0, [0, 2]]).all() and (new[0, [1, 3]] >= boxes[0, [1, 3]]).all()
        if (new == boxes).all():
            break
        boxes = new
    else:
        pytest.fail("the box kept growing")
    x0, x1, y0, y1 = boxes[0].tolist()
    assert x1 >= 52 and y0 <= 10  # both blobs enclosed
    assert x0 >= 15 and y1 <= 45  # sides without infection barely moved (margins only)


def test_grow_boxes_blob_not_connected_to_the_lung_does_not_grow():
    lung = _square_lung(x=(20, 30))  # lung ends at x = 29, the box at x = 39
    boxes = np.array([[20, 40, 20, 40]])
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[35:40, 25:30, 0] = 1.0  # touches the box's x end, 5 voxels away from the lung
    assert (grow_boxes(boxes, lung, prob, 0.5, NO_MARGINS) == boxes).all()
    # diagonal contact is not a connection either (in-plane 4-connectivity)
    prob[:] = 0
    prob[30:40, 20:21, 0] = 1.0
    lung2 = _square_lung(x=(20, 30), y=(21, 40))
    assert (grow_boxes(boxes, lung2, prob, 0.5, NO_MARGINS) == boxes).all()
    # the same blob joined to the lung does grow the box
    prob[29:35, 25:30, 0] = 1.0
    prob[35:40, 25:30, 0] = 1.0
    assert grow_boxes(boxes, lung, prob, 0.5, NO_MARGINS)[0, 1] > 40


def test_grow_boxes_infection_at_the_image_edge_does_not_grow():
    lung = _square_lung(shape=(40, 64, 1))  # lung and box reach x = 39, the slice's last row
    boxes = np.array([[20, 40, 20, 40]])
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[30:40, 25:30, 0] = 1.0  # attached to the lung, touches only the slice's edge
    assert (grow_boxes(boxes, lung, prob, 0.5, NO_MARGINS) == boxes).all()


def test_grow_boxes_below_threshold_and_empty_slices_unchanged():
    lung = np.zeros((64, 64, 2), dtype=bool)
    lung[20:40, 20:40, 0] = True
    boxes = np.array([[20, 40, 20, 40], [-1, -1, -1, -1]])
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[35:40, 25:30, 0] = 0.49
    prob[:, :, 1] = 1.0  # a slice without lung is never grown
    assert (grow_boxes(boxes, lung, prob, 0.5, NO_MARGINS) == boxes).all()


# ---------------------------------------------------------------------------------------------------- rounds
def test_second_round_reruns_grown_slices_and_encloses_dense_tissue_next_to_the_lung():
    shape = (64, 64, 5)
    x = torch.zeros(1, 1, *shape)
    lung = np.zeros(shape, dtype=bool)
    lung[20:40, 20:40, 0:4] = True  # slice 4 has no lung
    dense = np.zeros(shape, dtype=bool)
    dense[40:44, 26:34, 1:3] = True  # against the lung's x end, on slices 1 and 2 only
    x[0, 0][torch.from_numpy(dense)] = 1.0
    margins = (0.1, 0.1, 0.1, 0.1)
    first = slice_boxes(lung, margins)
    assert first[1, 1] <= 43  # the dense tissue is cut by the first box

    seen: list[int] = []

    def dense_is_infection(t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t.shape[0]))
        return (t[:, :1] > 0.5).float()

    inferer = LungCropSliceInferer(roi_size=(32, 32), sw_batch_size=8, margins=margins, max_rounds=2)
    progress: list[tuple[int, int]] = []
    report = inferer.infer(x, dense_is_infection, lung, progress=lambda d, t: progress.append((d, t)))
    out, boxes = report.probability[0, 0].numpy(), report.boxes
    assert sum(seen) == 4 + 2  # 4 slices with lung, then only the 2 grown ones
    assert (report.first_pass, report.slices_run, report.rounds) == (4, 6, 2)
    assert progress == [(4, 4)]  # the first pass's batches; reruns do not move the total
    for k in (1, 2):
        x0, x1, y0, y1 = boxes[k].tolist()
        assert x0 <= 40 and x1 >= 44 and y0 <= 26 and y1 >= 34  # dense tissue fully inside the final box
        assert x1 > first[k, 1]
    assert (boxes[[0, 3]] == first[[0, 3]]).all()  # nothing to grow there
    assert (boxes[4] == -1).all()
    assert out[dense].min() >= 0.5  # all of it is infection at threshold 0.5
    core = np.zeros(shape, dtype=bool)
    core[41:43, 27:33, 1:3] = True  # away from its border, which the resizing blurs
    assert out[core] == pytest.approx(1.0, abs=1e-6)
    assert (out[:, :, 4] == 0).all()
    # one pass only: the dense tissue beyond the first box is lost
    single = LungCropSliceInferer(roi_size=(32, 32), margins=margins, max_rounds=1)
    report1 = single.infer(x, dense_is_infection, lung)
    out1 = report1.probability[0, 0].numpy()
    assert (out1[first[1, 1] :, :, 1] == 0).all() and (report1.boxes == first).all()


def _per_slice_reference(inferer: LungCropSliceInferer, x: torch.Tensor, network, boxes: np.ndarray) -> torch.Tensor:
    """One pass the plain way: every slice cropped, resized, run and pasted back on its own."""
    out = torch.zeros((1, 1, *x.shape[2:]))
    for k in np.flatnonzero(boxes[:, 0] >= 0):
        x0, x1, y0, y1 = (int(v) for v in boxes[k])
        crop = torch.nn.functional.interpolate(x[:, :, x0:x1, y0:y1, k], size=inferer.roi_size, mode="bilinear", align_corners=False)
        back = torch.nn.functional.interpolate(network(crop), size=(x1 - x0, y1 - y0), mode="bilinear", align_corners=False)
        out[0, :, x0:x1, y0:y1, k] = back[0]
    return out


def test_batched_crops_equal_slice_by_slice_crops():
    """Slices that share a box are cropped, run and pasted back together: bit for bit what one slice at a time
    gives, whatever the batch size and however the boxes differ between slices."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 5, padding=2), torch.nn.Sigmoid()).eval()
    shape = (60, 50, 9)
    x = torch.randn(1, 1, *shape)
    lung = np.zeros(shape, dtype=bool)
    lung[10:40, 8:35, 1:8] = True
    boxes = slice_boxes(lung)
    boxes[[2, 5]] = [5, 45, 4, 40]  # two slices with a grown box, interleaved with the others
    boxes[6] = [0, 60, 0, 50]
    for batch in (1, 3, 16):
        inferer = LungCropSliceInferer(roi_size=(32, 24), sw_batch_size=batch, max_rounds=1)
        with torch.no_grad():
            got = inferer.infer(x, conv, lung, boxes=boxes).probability
            expected = _per_slice_reference(inferer, x, conv, boxes)
        assert torch.equal(got, expected), batch


class _Staged:
    """A staged network function (as :class:`~infnet_monai.inferers.backends.StagedMaps`): dense tissue is
    infection, and the share is a function of the slice and the infection; counts the head's slices."""

    def __init__(self) -> None:
        self.head_batches: list[int] = []

    @staticmethod
    def infection(t: torch.Tensor) -> torch.Tensor:
        return (t[:, :1] > 0.5).float()

    def share(self, xp: torch.Tensor) -> torch.Tensor:
        self.head_batches.append(int(xp.shape[0]))
        return torch.sigmoid(3.0 * xp[:, :1]) * 0.5 + 0.25 * xp[:, 1:2]

    @property
    def stages(self):
        return self.infection, self.share

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        p = self.infection(t)
        return torch.cat([p, torch.sigmoid(3.0 * t[:, :1]) * 0.5 + 0.25 * p], dim=1)


def test_a_staged_network_runs_the_head_once_on_each_infected_slice_and_its_last_crop():
    shape = (64, 64, 6)
    x = torch.randn(1, 1, *shape) * 0.1
    lung = np.zeros(shape, dtype=bool)
    lung[20:40, 20:40, 0:5] = True
    dense = np.zeros(shape, dtype=bool)
    dense[40:44, 26:34, 1:3] = True  # cut by the first box on slices 1 and 2: they are run again, larger
    dense[25:30, 25:30, 3] = True  # inside the box on slice 3
    x[0, 0][torch.from_numpy(dense)] = 1.0
    inferer = LungCropSliceInferer(roi_size=(32, 32), sw_batch_size=8, margins=(0.1,) * 4, max_rounds=2)
    staged = _Staged()
    fused = inferer.infer(x, staged.__call__, lung)  # the head with the infection, on every slice run
    assert fused.head_slices is None and fused.slices_run == 5 + 2
    report = inferer.infer(x, staged, lung)
    assert report.head_slices == 3 and sum(staged.head_batches) == 3  # slices 1, 2 and 3, once each
    assert (report.boxes == fused.boxes).all() and report.slices_run == fused.slices_run
    got, expected = report.probability[0], fused.probability[0]
    assert torch.equal(got[0], expected[0])  # the infection is the same
    for k in (1, 2, 3):  # the share of each infected slice is the one of its last crop
        assert torch.equal(got[1, ..., k], expected[1, ..., k]), k
    assert (got[1, ..., [0, 4, 5]] == 0).all()  # no head where nothing reaches the threshold
    with pytest.raises(AssertionError):  # the comparison sees a share from the first, smaller crop
        first_crop = LungCropSliceInferer(roi_size=(32, 32), sw_batch_size=8, margins=(0.1,) * 4, max_rounds=1)
        assert torch.equal(got[1, ..., 1], first_crop.infer(x, staged.__call__, lung).probability[0, 1, ..., 1])
