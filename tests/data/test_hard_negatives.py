"""Hard negatives: the sampler that mixes them in, their rendering, selection, files and datalist."""

from __future__ import annotations

import csv
import importlib.util
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from infnet_monai.apps.hard_negatives import (
    RenderedSlices,
    firing_pixels,
    mine_hard_negatives,
    mine_real_positives,
    positive_ignore_mask,
    render_lung_slices,
    select_hard_negatives,
    select_positives,
)
from infnet_monai.data import MixedEpochSampler, hard_negative_datalist
from infnet_monai.data.hard_negatives import MANIFEST

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the sampler
def test_sampler_visits_every_primary_once_and_draws_fresh_extras():
    sampler = MixedEpochSampler(num_primary=5, num_extra=12, extra_per_epoch=4, seed=3)
    epochs = [list(sampler) for _ in range(3)]
    for order in epochs:
        assert len(order) == len(sampler) == 9
        counts = Counter(order)
        assert all(counts[i] == 1 for i in range(5))
        extras = [i for i in order if i >= 5]
        assert len(extras) == len(set(extras)) == 4 and all(5 <= i < 17 for i in extras)
    assert len({tuple(sorted(i for i in o if i >= 5)) for o in epochs}) > 1  # a fresh draw each epoch
    assert epochs[0][:5] != sorted(epochs[0][:5]) or epochs[1][:5] != sorted(epochs[1][:5])  # shuffled
    again = MixedEpochSampler(num_primary=5, num_extra=12, extra_per_epoch=4, seed=3)
    assert [list(again) for _ in range(3)] == epochs  # reproducible
    again.set_epoch(1)
    assert list(again) == epochs[1]


def test_sampler_draws_each_pool_apart():
    sampler = MixedEpochSampler(num_primary=4, num_extra=[10, 6], extra_per_epoch=[3, 2], seed=5)
    for _ in range(4):
        order = list(sampler)
        assert len(order) == len(sampler) == 9 and sorted(i for i in order if i < 4) == [0, 1, 2, 3]
        assert len([i for i in order if 4 <= i < 14]) == 3 and len([i for i in order if 14 <= i < 20]) == 2
        assert len(set(order)) == 9
    # one pool given as lists, or with an empty second pool: the draws of the plain single pool
    plain = [list(MixedEpochSampler(5, 12, 4, seed=3)) for _ in range(1)]
    assert [list(MixedEpochSampler(5, [12], [4], seed=3))] == plain
    assert [list(MixedEpochSampler(5, [12, 0], [4, 0], seed=3))] == plain
    with pytest.raises(ValueError, match="same length"):
        MixedEpochSampler(5, [12, 3], [4])
    with pytest.raises(ValueError, match="num_extra=3"):
        MixedEpochSampler(5, [12, 3], [4, 4])


def test_sampler_without_extras_is_plain_shuffling():
    assert sorted(MixedEpochSampler(7, 0, 0)) == list(range(7))


@pytest.mark.parametrize(
    "args, match",
    [((0, 3, 1), "num_primary"), ((3, -1, 0), "num_extra"), ((3, 2, 3), "extra_per_epoch"), ((3, 2, -1), "extra_per_epoch")],
)
def test_sampler_rejects_impossible_settings(args, match):
    with pytest.raises(ValueError, match=match):
        MixedEpochSampler(*args)


# ---------------------------------------------------------------- selection
def _rendered(firing_per_slice, lung_pixels=100) -> RenderedSlices:
    n = len(firing_per_slice)
    prob = np.zeros((n, 20, 20), np.float32)
    lung = np.zeros((n, 20, 20), bool)
    lung[:, :10, :10] = True
    for k, f in enumerate(firing_per_slice):
        prob[k].flat[:f] = 0.9  # the first rows: inside the lung for f <= 10
    prob[:, 19, 19] = 1.0  # far from the lung: never counts
    return RenderedSlices(np.zeros_like(prob), lung, prob, np.arange(n) + 40, np.arange(n) * 2.0)


def test_firing_counts_only_in_and_next_to_the_lung():
    rendered = _rendered([0, 3, 8])
    assert firing_pixels(rendered, near_lung_pixels=0).tolist() == [0, 3, 8]
    rendered.probability[0, 11, 0] = 0.9  # one pixel beyond the lung's edge
    assert firing_pixels(rendered, near_lung_pixels=0)[0] == 0
    assert firing_pixels(rendered, near_lung_pixels=2)[0] == 1


def test_selection_takes_the_most_firing_negatives_then_random_others():
    rendered = _rendered([5, 0, 9, 2, 7, 0, 0, 0])
    negative = np.array([1, 1, 0, 1, 1, 1, 1, 1], bool)  # slice 2 fires most but holds infection
    chosen = select_hard_negatives(rendered, negative, max_firing=2, num_random=2, near_lung_pixels=0, seed=1)
    assert chosen[:2] == [(4, "firing"), (0, "firing")]
    randoms = [i for i, r in chosen if r == "random"]
    assert len(randoms) == 2 and set(randoms) <= {1, 3, 5, 6, 7}
    assert select_hard_negatives(rendered, negative, 2, 2, near_lung_pixels=0, seed=1) == chosen
    rendered.lung[4, :, :] = False
    rendered.lung[4, :2, :2] = True  # a basal crescent: 4 of 400 pixels
    kept = select_hard_negatives(rendered, negative, 2, 0, near_lung_pixels=3, min_lung_share=0.2)
    assert [i for i, _ in kept] == [0, 3]
    with pytest.raises(ValueError, match="8 entries"):
        select_hard_negatives(rendered, negative[:3])


# ---------------------------------------------------------------- rendering, files, datalist
@pytest.fixture(scope="module")
def phantom_scan(tmp_path_factory) -> Path:
    from infnet_monai.data.phantom import make_chest_phantom

    phantom = make_chest_phantom(shape=(64, 64, 16), spacing_mm=(5.0, 5.0, 16.0), seed=0)
    path = tmp_path_factory.mktemp("scan") / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(phantom.volume_hu).astype(np.int16), np.asarray(phantom.affine)), str(path))
    return path


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    from infnet_monai.pipeline import CTSegmenter

    return CTSegmenter(tiny_model, device="cpu", classes=False, backend="torch", overview=False, dicom_seg=False)


def test_rendering_is_what_the_pipeline_feeds_the_network(segmenter, phantom_scan):
    seen = []
    network_fn = segmenter.predictor.network_fn

    def spy(x):
        seen.append(x[:, 0].clone())
        return network_fn(x)

    rendered = render_lung_slices(segmenter, phantom_scan)
    n = len(rendered.slice_index)
    assert n > 0 and rendered.images.shape == rendered.lung.shape == rendered.probability.shape == (n, 64, 64)
    assert 0.0 <= rendered.images.min() and rendered.images.max() <= 1.0 and rendered.lung.any()
    assert np.all(np.diff(rendered.z_mm) > 0)  # slices run foot to head on the network's grid

    # the pipeline's own first pass, spied on: the same crops (standardised) and the same probabilities
    segmenter.predictor.network_fn = spy
    try:
        data = segmenter.prepare(phantom_scan)
    finally:
        segmenter.predictor.network_fn = network_fn
    first = torch.cat(seen)[:n].numpy()
    spec = segmenter.spec
    np.testing.assert_allclose(np.clip(first * spec.std + spec.mean, 0, 1), rendered.images, atol=1e-5)
    assert int((data["boxes"][:, 0] >= 0).sum()) == n


def test_mined_negatives_round_trip_through_the_datalist(segmenter, phantom_scan, tmp_path):
    from PIL import Image

    scans = [("a", phantom_scan, None), ("b", phantom_scan, lambda r: r.slice_index % 2 == 0)]
    rows = mine_hard_negatives(segmenter, scans, tmp_path, max_firing=3, num_random=1)
    assert {r["scan"] for r in rows} == {"a", "b"} and all(r["reason"] in ("firing", "random") for r in rows)
    assert all(r["slice_index"] % 2 == 0 for r in rows if r["scan"] == "b")  # only the slices known negative
    with open(tmp_path / MANIFEST, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    items = hard_negative_datalist(tmp_path)
    assert len(items) == len(rows) and set(items[0]) == {"image", "label", "edge", "classes", "id"}
    image = np.asarray(Image.open(items[0]["image"]))
    assert image.dtype == np.uint8 and image.shape == (64, 64)
    assert not np.asarray(Image.open(items[0]["label"])).any() and not np.asarray(Image.open(items[0]["edge"])).any()
    assert all(i["id"].startswith("negative/b/") for i in hard_negative_datalist(tmp_path, exclude_scans=["a"]))
    assert len(hard_negative_datalist(tmp_path, scans=["a"])) == sum(r["scan"] == "a" for r in rows)
    with pytest.raises(ValueError, match="'c'"):
        hard_negative_datalist(tmp_path, exclude_scans=["c"])  # a typo must not train on the scan held out
    Path(items[-1]["image"]).unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        hard_negative_datalist(tmp_path)


def test_positives_are_the_final_infection_the_network_calls(segmenter, phantom_scan, tmp_path):
    from PIL import Image

    network_fn = segmenter.predictor.network_fn
    def network_fn_(x):  # "infection": the pixels darker than mid-grey in one quadrant of each crop
        called = x[:, :1] < 0
        called[..., x.shape[-2] // 2 :, :] = False
        called[..., :, x.shape[-1] // 2 :] = False
        return called.to(x.dtype)

    segmenter.predictor.network_fn = network_fn_
    try:
        rendered = render_lung_slices(segmenter, phantom_scan, with_infection=True)
        rows = mine_real_positives(segmenter, [("covid", phantom_scan)], tmp_path, max_slices=3, min_infection_share=0.01)
    finally:
        segmenter.predictor.network_fn = network_fn
    n = len(rendered.slice_index)
    assert rendered.infection.shape == rendered.lung.shape == (n, 64, 64)
    # the final infection (inside the lung, every gate passed) is the called part of the lung here: rendered where
    # the lung and the network's call are (a flipped or transposed rendering would not overlap them)
    called = (rendered.probability >= 0.5) & rendered.lung
    overlap = 2 * (rendered.infection & called).sum() / (rendered.infection.sum() + called.sum())
    assert rendered.infection.any() and overlap > 0.9
    assert render_lung_slices(segmenter, phantom_scan).infection is None
    assert len(rows) == 3 and all(r["reason"] == "positive" for r in rows)
    items = hard_negative_datalist(tmp_path)
    assert [i["id"].split("/")[:2] for i in items] == [["positive", "covid"]] * 3
    for row, item in zip(rows, items):
        pos = int(np.flatnonzero(rendered.slice_index == row["slice_index"])[0])
        label = np.asarray(Image.open(item["label"])) > 0
        np.testing.assert_array_equal(label, rendered.infection[pos] & (rendered.probability[pos] >= 0.5))
        assert label.any() and (np.asarray(Image.open(item["edge"])) > 0).any()
        # the loss ignores what is uncertain around the label: written, listed, never overlapping the label
        ignore = np.asarray(Image.open(item["ignore"])) > 0
        np.testing.assert_array_equal(
            ignore, positive_ignore_mask(label, rendered.infection[pos], rendered.probability[pos])
        )
        assert ignore.any() and not (ignore & label).any() and row["ignore"] in item["ignore"]


def test_positive_selection_is_spread_along_the_scan():
    rendered = _rendered([0] * 10)
    rendered.infection = np.zeros((10, 20, 20), bool)
    for k in (1, 2, 3, 4, 5, 6, 7, 8):
        rendered.infection[k, :5, :5] = True  # 25 of 400 pixels
    rendered.infection[1, :, :] = False
    rendered.infection[1, 0, 0] = True  # too little to be a positive
    assert select_positives(rendered, max_slices=3, min_infection_share=0.05) == [(2, "positive"), (5, "positive"), (8, "positive")]
    assert [i for i, _ in select_positives(rendered, 10, 0.05)] == [2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="with_infection"):
        select_positives(_rendered([0, 1]))


def test_datalist_without_manifest_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="mine_hard_negatives"):
        hard_negative_datalist(tmp_path)


def test_p001_negatives_keep_a_slice_away_from_the_disease(tmp_path):
    spec = importlib.util.spec_from_file_location("mine_hard_negatives", REPO / "scripts" / "mine_hard_negatives.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    labels = tmp_path / "labels.csv"
    infected = [0, 0, 0, 1, 1, 0, 0, 0]
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_position_z_mm", "infected"])
        w.writerows([[z * 2.0, i] for z, i in enumerate(infected)])
    negative = script.labelled_negatives(labels)
    rendered = RenderedSlices(*(np.zeros((9, 2, 2)),) * 3, np.arange(9), np.r_[np.arange(8) * 2.0, 40.0])
    assert negative(rendered).tolist() == [True, True, False, False, False, False, True, True, False]


def test_positive_ignore_mask_leaves_out_what_the_label_is_unsure_of():
    label = np.zeros((20, 20), bool)
    label[8:12, 8:12] = True
    infection = label.copy()
    infection[0:2, 0:2] = True  # kept by the pipeline, not called on this crop (the lung extension's dense lung)
    probability = np.zeros((20, 20))
    probability[label] = 0.9
    probability[15:18, 15:18] = 0.25  # a half-seen call the gates dropped
    probability[0:2, 18:20] = 0.1  # too faint to matter: taught as not infection
    ignore = positive_ignore_mask(label, infection, probability, min_probability=0.2, rim_pixels=2)
    assert not (ignore & label).any()
    assert ignore[0:2, 0:2].all() and ignore[15:18, 15:18].all() and not ignore[0:2, 18:20].any()
    # the rim: within 2 pixels of the label, in city-block distance (2 dilations with the cross element)
    rows, cols = np.mgrid[0:20, 0:20]
    distance = np.maximum(8 - rows, 0) + np.maximum(rows - 11, 0) + np.maximum(8 - cols, 0) + np.maximum(cols - 11, 0)
    rim = (distance <= 2) & ~label
    np.testing.assert_array_equal(ignore[4:15, 4:15], rim[4:15, 4:15])
    assert positive_ignore_mask(np.zeros((5, 5), bool), np.zeros((5, 5), bool), np.zeros((5, 5))).sum() == 0


def test_datalist_reads_an_ignore_column_only_where_it_is_filled(tmp_path):
    from PIL import Image

    rows = ["scan,slice_index,z_mm,image,label,edge,firing_pixels,max_probability,reason,ignore"]
    for k, (reason, ignore) in enumerate((("firing", ""), ("positive", "s/ignores/1.png"))):
        for kind in ("images", "masks", "edges", "ignores"):
            (tmp_path / "s" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "s" / kind / f"{k}.png")
        rows.append(f"s,{k},0,s/images/{k}.png,s/masks/{k}.png,s/edges/{k}.png,0,0.5,{reason},{ignore}")
    (tmp_path / MANIFEST).write_text("\n".join(rows) + "\n")
    negative, positive = hard_negative_datalist(tmp_path)
    assert "ignore" not in negative and positive["ignore"] == str(tmp_path / "s" / "ignores" / "1.png")
    (tmp_path / "s" / "ignores" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match="1.png"):
        hard_negative_datalist(tmp_path)
