"""End-to-end tests of the 3D pipeline on the real scans of ../shared/data/ct (with a tiny random-weight model: the
geometry, statistics and file handling do not depend on the model's quality)."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from infnet_monai.cli import main
from infnet_monai.io import discover_cases, load_ct
from infnet_monai.pipeline import CTSegmenter, segment_cohort

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ct_dir(data_dir):
    return data_dir / "ct"


@pytest.fixture(scope="module")
def segmenter(tiny_model, tiny_class_model):
    return CTSegmenter(tiny_model, device="cpu", batch_slices=8, class_model_path=tiny_class_model)


def _arrays(case_dir):
    inf = nib.load(str(case_dir / "infection.nii.gz"))
    lung = nib.load(str(case_dir / "lung.nii.gz"))
    return inf, lung


def test_nifti_outputs_keep_shape_affine_and_lung_mask_is_accurate(tmp_path, ct_dir, segmenter):
    report = segmenter.run(ct_dir / "abdomen_3mm.nii.gz", tmp_path)
    assert report.exit_code == 0
    src = nib.load(str(ct_dir / "abdomen_3mm.nii.gz"))
    inf, lung = _arrays(tmp_path / "abdomen_3mm")
    for img in (inf, lung):
        assert img.shape == src.shape
        assert np.allclose(img.affine, src.affine)
        assert img.get_data_dtype() == np.uint8
    ref = nib.load(str(ct_dir / "abdomen_3mm_lung.nii.gz")).get_fdata() > 0
    ours = np.asarray(lung.dataobj) > 0
    dice = 2 * (ref & ours).sum() / (ref.sum() + ours.sum())
    assert dice >= 0.90
    assert set(np.unique(np.asarray(lung.dataobj))) <= {0, 1, 2}
    row = report.rows[0]
    assert abs(row["lung_volume_ml"] - ref.sum() * 27 / 1000) / (ref.sum() * 27 / 1000) <= 0.10
    # statistics agree with the written masks
    inf_arr = np.asarray(inf.dataobj)
    assert row["infection_volume_ml"] == pytest.approx(inf_arr.sum() * 27 / 1000)
    assert not np.any(inf_arr[np.asarray(lung.dataobj) == 0])  # infection only inside the lung
    stats = json.loads((tmp_path / "abdomen_3mm" / "stats.json").read_text())
    assert stats["status"] == "ok" and stats["shape"] == list(src.shape)
    # GGO / consolidation: the class map refines the binary mask, the columns agree with it
    classes = nib.load(str(tmp_path / "abdomen_3mm" / "infection_classes.nii.gz"))
    assert classes.shape == src.shape and np.allclose(classes.affine, src.affine) and classes.get_data_dtype() == np.uint8
    cls_arr = np.asarray(classes.dataobj)
    np.testing.assert_array_equal(cls_arr > 0, inf_arr > 0)
    assert row["ggo_volume_ml"] == pytest.approx((cls_arr == 1).sum() * 27 / 1000)
    assert row["consolidation_volume_ml"] == pytest.approx((cls_arr == 2).sum() * 27 / 1000)
    assert row["ggo_volume_ml"] + row["consolidation_volume_ml"] == pytest.approx(row["infection_volume_ml"])
    lung_arr = np.asarray(lung.dataobj)
    assert row["left_consolidation_volume_ml"] == pytest.approx(((cls_arr == 2) & (lung_arr == 2)).sum() * 27 / 1000)
    header = next(csv.reader((tmp_path / "burden.csv").open()))
    assert {"ggo_volume_ml", "consolidation_percent", "right_ggo_percent", "left_consolidation_volume_ml"} <= set(header)


def test_dicom_series_outputs_match_loaded_geometry(tmp_path, ct_dir, segmenter):
    report = segmenter.run(ct_dir / "abdomen_dicom", tmp_path)
    assert report.exit_code == 0
    image = load_ct(discover_cases(ct_dir / "abdomen_dicom")[0])
    inf, lung = _arrays(tmp_path / "abdomen_dicom")
    assert inf.shape == lung.shape == (512, 512, 20)
    assert np.allclose(inf.affine, image.affine.numpy(), atol=1e-4)
    assert np.allclose(nib.affines.voxel_sizes(inf.affine), (0.9765625, 0.9765625, 2.0), atol=1e-4)
    row = report.rows[0]
    assert row["spacing_mm"] == pytest.approx([0.9765625, 0.9765625, 2.0], abs=1e-5)
    assert row["series_instance_uid"] == ""  # this anonymised series has an empty SeriesInstanceUID


def test_stripped_two_slice_chest_dicom_works(tmp_path, ct_dir, segmenter):
    report = segmenter.run(ct_dir / "chest_2slice_dicom", tmp_path)
    row = report.rows[0]
    assert row["status"] == "ok", row.get("error")
    inf, lung = _arrays(tmp_path / "chest_2slice_dicom")
    assert inf.shape == (512, 512, 2)
    assert row["lung_volume_ml"] > 10  # both lungs are visible on these slices
    assert row["series_instance_uid"].startswith("1.2.826.")


def _reoriented_copy(src_path, dst_path, ornt):
    src = nib.load(str(src_path))
    data = nib.orientations.apply_orientation(np.asarray(src.dataobj), ornt)
    affine = src.affine @ nib.orientations.inv_ornt_aff(ornt, src.shape)
    nib.save(nib.Nifti1Image(data, affine), str(dst_path))


def test_permuted_and_flipped_copy_gives_the_same_masks(tmp_path, ct_dir, segmenter):
    src = ct_dir / "abdomen_3mm_small.nii.gz"
    ornt = np.array([[1, -1], [2, 1], [0, -1]])  # axes permuted, two flipped
    cohort = tmp_path / "in"
    cohort.mkdir()
    shutil.copy(src, cohort / "original.nii.gz")
    _reoriented_copy(src, cohort / "permuted.nii.gz", ornt)
    report = segmenter.run(cohort, tmp_path / "out")
    assert report.exit_code == 0
    rows = {r["case_id"]: r for r in report.rows}
    for key in ("lung_volume_ml", "infection_volume_ml", "lesion_count", "slices_with_infection"):
        assert rows["original"][key] == pytest.approx(rows["permuted"][key], rel=1e-6), key
    orig_inf, orig_lung = _arrays(tmp_path / "out" / "original")
    perm_inf, perm_lung = _arrays(tmp_path / "out" / "permuted")
    assert np.allclose(perm_inf.affine, nib.load(str(cohort / "permuted.nii.gz")).affine)
    for o, p in ((orig_inf, perm_inf), (orig_lung, perm_lung)):
        # map the permuted result back onto the original grid
        back = nib.orientations.apply_orientation(
            np.asarray(p.dataobj), nib.orientations.ornt_transform(nib.io_orientation(p.affine), nib.io_orientation(o.affine))
        )
        assert np.array_equal(back, np.asarray(o.dataobj))


def test_cli_and_bundle_write_identical_files(tmp_path, ct_dir):
    """The bundle's zoo components (network_def, preprocessing, inferer, postprocessing from _target_), with a key
    overridden from the command line, give what the command line gives, voxel for voxel (shipped models)."""
    src = ct_dir / "abdomen_3mm_small.nii.gz"
    cli_out, bundle_out = tmp_path / "cli", tmp_path / "bundle"
    assert main(["segment", str(src), "-o", str(cli_out), "--device", "cpu", "-q", "--save-prob"]) == 0
    proc = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run", "--config_file",
            str(REPO / "bundles" / "infnet_covid" / "configs" / "inference.json"),
            "--dataset_dir", str(src), "--output_dir", str(bundle_out), "--device", "cpu", "--batch_slices", "3",
            "--save_probability", "true",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("infection.nii.gz", "lung.nii.gz", "infection_classes.nii.gz", "probability.nii.gz"):
        a = nib.load(str(cli_out / "abdomen_3mm_small" / name))
        b = nib.load(str(bundle_out / "abdomen_3mm_small" / name))
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.array_equal(a.affine, b.affine)
    assert np.asarray(nib.load(str(cli_out / "abdomen_3mm_small" / "lung.nii.gz")).dataobj).any()
    rows_a = list(csv.DictReader((cli_out / "burden.csv").open()))
    rows_b = list(csv.DictReader((bundle_out / "burden.csv").open()))
    drop = {"seconds", "stage_seconds", "infection_mask_path", "lung_mask_path", "infection_classes_path", "model", "class_model"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows_b
    ]
    stats_a, stats_b = (json.loads((out / "abdomen_3mm_small" / "stats.json").read_text()) for out in (cli_out, bundle_out))
    assert Path(stats_a["model"]).resolve() == Path(REPO / stats_b["model"]).resolve()  # the same shipped model


def test_bundle_components_are_built_from_target_and_overridable():
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from infnet_monai.inferers import LungCropSliceInferer
    from infnet_monai.networks.nets import InfNet
    from infnet_monai.pipeline.components import ct_postprocessing, ct_preprocessing, split_slicewise

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "infnet_covid" / "configs" / "inference.json"))
    for key in ("inferer", "preprocessing", "postprocessing"):
        assert "_target_" in parser[key], key
    assert "@checkpoint" in parser["network_def"]  # built from the checkpoint's own arguments, not a copy of them
    parser["inferer"]["sw_batch_size"] = 3
    parser["bundle_root"] = str(REPO / "bundles" / "infnet_covid")
    parser.parse()
    assert isinstance(parser.get_parsed_content("network_def"), InfNet)
    spec = parser.get_parsed_content("checkpoint")
    assert parser.get_parsed_content("inferer").roi_size == (spec.spatial_size, spec.spatial_size)
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, LungCropSliceInferer) and inferer.slice_inferer.sw_batch_size == 3
    pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    assert isinstance(pre, Compose) and isinstance(post, Compose)
    # the same steps, with the same settings, as the factories the command line uses
    factory_pre = ct_preprocessing()
    assert [type(t) for t in pre.flatten().transforms] == [type(t) for t in factory_pre.flatten().transforms]
    volume, slices = split_slicewise(pre)
    assert [type(t).__name__ for t in volume.transforms] == ["LoadCTd", "Orientationd", "LungMaskd"]
    assert [type(t).__name__ for t in slices.transforms] == ["Orientationd", "ScaleIntensityRanged", "NormalizeIntensityd"]
    scale = slices.transforms[1].scaler
    assert (scale.a_min, scale.a_max) == (-1060.0, 195.0)
    norm = slices.transforms[2].normalizer
    assert (norm.subtrahend, norm.divisor) == (spec.mean, spec.std)  # the checkpoint's statistics
    factory_post = ct_postprocessing(split_slicewise(factory_pre)[0])
    assert [type(t) for t in post.transforms] == [type(t) for t in factory_post.transforms]
    mask, factory_mask = post.transforms[1].transform, factory_post.transforms[1].transform
    assert mask.kwargs == factory_mask.kwargs


def test_bundle_network_def_must_fit_the_checkpoint(tmp_path, tiny_model):
    from infnet_monai.io import CheckpointError, load_weights
    from infnet_monai.networks.nets import InfNet

    with pytest.raises(CheckpointError, match="network_def"):
        load_weights(InfNet(in_channels=1), tiny_model)


def test_cohort_with_a_bad_case_continues_and_resume_skips(tmp_path, ct_dir, tiny_model, tiny_class_model, capsys):
    cohort = tmp_path / "cohort with space"
    (cohort / "nested" / "déjà").mkdir(parents=True)
    shutil.copy(ct_dir / "abdomen_3mm_small.nii.gz", cohort / "nested" / "déjà" / "good.nii.gz")
    (cohort / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    out = cohort / "results"  # output inside the input: must not be scanned as input
    models = ["--model", str(tiny_model), "--class-model", str(tiny_class_model)]
    code = main(["segment", str(cohort), "-o", str(out), *models, "--device", "cpu", "-q"])
    assert code == 1
    rows = list(csv.DictReader((out / "burden.csv").open()))
    by_status = {r["case_id"]: r["status"] for r in rows}
    assert by_status == {"broken": "error", "nested_deja_good": "ok"}
    assert "broken.nii.gz" in next(r["error"] for r in rows if r["case_id"] == "broken")
    first = (out / "nested_deja_good" / "stats.json").stat().st_mtime_ns
    overview = out / "nested_deja_good" / "overview.png"
    assert Image.open(overview).width >= 800
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "broken.nii.gz" in page and 'src="nested_deja_good/overview.png"' in page and "http" not in page
    overview.unlink()  # a case skipped by --resume gets its missing picture back
    (out / "report.html").unlink()
    code = main(["segment", str(cohort), "-o", str(out), *models, "--device", "cpu", "-q", "--resume"])
    assert code == 1
    assert (out / "nested_deja_good" / "stats.json").stat().st_mtime_ns == first
    assert Image.open(overview).width >= 800
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "broken.nii.gz" in page and "nested_deja_good" in page
    assert not list(out.rglob("*.part*"))  # no temporary files left


def test_too_long_volume_is_refused_with_the_option_named(tmp_path, ct_dir, tiny_model, tiny_class_model):
    report = segment_cohort(
        ct_dir / "abdomen_3mm_small.nii.gz", tmp_path, model_path=tiny_model, class_model_path=tiny_class_model,
        device="cpu", max_slices=100,
    )
    assert report.exit_code == 1
    assert "--max-slices" in report.rows[0]["error"]


def test_segment_cohort_passes_segmenter_and_run_options(tmp_path, ct_dir, tiny_model, tiny_class_model):
    src = ct_dir / "abdomen_3mm_small.nii.gz"
    seen = []
    models = {"model_path": tiny_model, "class_model_path": tiny_class_model}
    report = segment_cohort(
        src, tmp_path, **models, device="cpu", save_probability=True, overview=False,
        progress=lambda cases: seen.extend(cases) or cases,
    )
    assert report.exit_code == 0 and [c.case_id for c in seen] == ["abdomen_3mm_small"]
    case = tmp_path / "abdomen_3mm_small"
    assert (case / "probability.nii.gz").is_file() and not (case / "overview.png").exists()
    first = (case / "stats.json").stat().st_mtime_ns
    again = segment_cohort(src, tmp_path, **models, device="cpu", save_probability=True, resume=True)
    assert again.exit_code == 0 and (case / "stats.json").stat().st_mtime_ns == first  # complete: skipped
    with pytest.raises(TypeError, match="no_such_option"):
        segment_cohort(src, tmp_path, model_path=tiny_model, no_such_option=1)


def test_segmenter_reads_yes_no_words_as_bundle_overrides_give_them(tmp_path, ct_dir, tiny_model):
    """``--save_probability false`` reaches the bundle's segmenter as the string "false"."""
    seg = CTSegmenter(tiny_model, device="cpu", save_probability="false", overview="no", dicom_seg="0", classes="false")
    cfg = seg.config
    assert (cfg.save_probability, cfg.overview, cfg.dicom_seg, cfg.classes, seg.class_model) == (False, False, False, False, None)
    seg.run(ct_dir / "abdomen_3mm_small.nii.gz", tmp_path, resume="false")
    assert sorted(p.name for p in (tmp_path / "abdomen_3mm_small").iterdir()) == ["infection.nii.gz", "lesions.csv", "lung.nii.gz", "stats.json"]
    with pytest.raises(ValueError, match="save_probability must be true or false"):
        CTSegmenter(tiny_model, device="cpu", save_probability="sometimes")


def test_usage_errors(tmp_path, tiny_model, capsys):
    assert main(["segment", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "-q"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["segment", str(empty), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "-q"]) == 2
    assert "holds no files" in capsys.readouterr().err
    (empty / "notes.txt").write_text("no CT here")  # files, but none a CT: found out by the scan, OUTPUT not left
    assert main(["segment", str(empty), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "-q"]) == 2
    assert "no NIfTI" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_unknown_option_is_refused_by_name(tiny_model):
    with pytest.raises(TypeError, match="field_of_view"):
        CTSegmenter(tiny_model, device="cpu", field_of_view="body")


def test_no_classes_option_and_resume_redoes_cases_without_classes(tmp_path, ct_dir, tiny_model, tiny_class_model):
    src = ct_dir / "abdomen_3mm_small.nii.gz"
    args = ["segment", str(src), "-o", str(tmp_path), "--model", str(tiny_model), "--device", "cpu", "-q"]
    assert main(args + ["--no-classes"]) == 0
    assert not (tmp_path / "abdomen_3mm_small" / "infection_classes.nii.gz").exists()
    row = next(csv.DictReader((tmp_path / "burden.csv").open()))
    assert row["ggo_volume_ml"] == "" and row["infection_volume_ml"] != ""
    # a resumed run that wants the classes redoes the case instead of skipping it
    assert main(args + ["--resume", "--class-model", str(tiny_class_model)]) == 0
    assert (tmp_path / "abdomen_3mm_small" / "infection_classes.nii.gz").is_file()
    row = next(csv.DictReader((tmp_path / "burden.csv").open()))
    assert row["ggo_volume_ml"] != ""
    stats = json.loads((tmp_path / "abdomen_3mm_small" / "stats.json").read_text())
    assert stats["class_model"] == str(tiny_class_model)


def test_slice_progress_reports_every_batch_of_a_case(tmp_path, ct_dir, segmenter):
    calls = []
    report = segmenter.run(ct_dir / "abdomen_3mm_small.nii.gz", tmp_path, slice_progress=lambda *a: calls.append(a))
    row = report.rows[0]
    assert row["status"] == "ok" and calls
    assert {c[0] for c in calls} == {row["case_id"]}
    done = [c[1] for c in calls]
    assert done == sorted(done) and done[0] == 0  # the bar starts before the first batch
    assert {c[2] for c in calls} == {row["slices_inferred"]}  # with its final total
    assert calls[-1][1] == calls[-1][2] > 0


def test_max_slice_gap_runs_fewer_slices_and_reports_the_interpolated_ones(ct_dir, tiny_model, tiny_class_model):
    """``--max-slice-gap-mm``: on 3 mm slices a 6 mm gap runs about every second slice with lung; the others are
    interpolated, the row says how many, and the progress total is the slices run."""
    (case,) = discover_cases(ct_dir / "abdomen_3mm_small.nii.gz")
    image = load_ct(case)
    full = CTSegmenter(tiny_model, device="cpu", class_model_path=tiny_class_model).segment_image(image)
    calls = []
    seg = CTSegmenter(tiny_model, device="cpu", class_model_path=tiny_class_model, max_slice_gap_mm=6.0)
    gap = seg.segment_image(image, progress=lambda d, t: calls.append((d, t)))
    with_lung = full.row["slices_inferred"]
    assert full.row["slices_interpolated"] == 0 and with_lung > 4
    assert gap.row["slices_inferred"] + gap.row["slices_interpolated"] == with_lung
    assert with_lung / 2 <= gap.row["slices_inferred"] < with_lung
    assert calls[-1] == (gap.row["slices_inferred"],) * 2
    assert gap.lung.shape == full.lung.shape
    with pytest.raises(ValueError, match="max_slice_gap_mm"):
        CTSegmenter(tiny_model, device="cpu", max_slice_gap_mm=0)


def test_slabs_stream_to_the_same_result_as_the_whole_volume(ct_dir, tiny_model, tiny_class_model):
    """Preprocessing, network and inversion stream in slabs of slices (bounded memory); the crop boxes come from the
    whole lung, so the result does not depend on the slab size."""
    (case,) = discover_cases(ct_dir / "abdomen_3mm_small.nii.gz")
    image = load_ct(case)
    results = {}
    for slab in (4, 7, 10_000):
        seg = CTSegmenter(tiny_model, device="cpu", batch_slices=4, class_model_path=tiny_class_model, slab_slices=slab)
        calls = []
        result = seg.segment_image(image, keep_probability=True, progress=lambda d, t: calls.append((d, t)))
        results[slab] = (result, result.boxes.copy(), calls)
    whole, whole_boxes, whole_calls = results[10_000]
    assert whole.row["slices_inferred"] > 0
    for slab in (4, 7):
        res, boxes, calls = results[slab]
        np.testing.assert_array_equal(boxes, whole_boxes)
        np.testing.assert_allclose(res.probability, whole.probability, atol=2e-3)
        for name in ("infection", "lung", "classes"):
            np.testing.assert_array_equal(getattr(res, name), getattr(whole, name), err_msg=name)
        assert calls[-1] == whole_calls[-1]  # progress counts every slice once, across slabs
        assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))


# ------------------------------------------------------------------------------------------- synthetic geometry
# Small noise-free chests built in world coordinates (RAS+, mm) on grids of a given affine, for tests of where the
# network's output lands: each is segmented in well under a second with an in-memory network.


def _ct_on_grid(affine, shape, lungs=("right", "left")):
    """``(1, X, Y, Z)`` MetaTensor in HU on the grid of ``affine``: air, an elliptic body (40 HU) along the scan and
    ellipsoidal lungs (-850 HU) at world x = +-42 mm (``"right"`` at x > 0); the right lung is larger and sits more
    anteriorly than the left, so the volume is not mirror-symmetric."""
    import torch
    from monai.data import MetaTensor

    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    x, y, z = np.moveaxis(idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3], -1, 0)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[(x / 95.0) ** 2 + (y / 75.0) ** 2 <= 1.0] = 40.0
    specs = {"right": ((42.0, 8.0, 0.0), (30.0, 48.0, 60.0)), "left": ((-42.0, -4.0, 0.0), (24.0, 40.0, 60.0))}
    for side in lungs:
        (cx, cy, cz), (rx, ry, rz) = specs[side]
        hu[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0] = -850.0
    return MetaTensor(torch.from_numpy(hu[None]), affine=torch.as_tensor(affine, dtype=torch.float64))


def _centred_affine(axes, shape):
    """Voxel-to-world matrix whose columns are ``axes`` (world mm per index step) with the volume centred on 0."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(axes, dtype=np.float64).T
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def _in_memory_segmenter(network, **options):
    return CTSegmenter(
        network=network, spatial_size=32, device="cpu", amp=False, classes=False, crop_rounds=1, overview=False,
        dicom_seg=False, **options,
    )


class _OneWeight(torch.nn.Module):
    """A one-channel test "network" with one learnable scale (so it has a parameter and a device)."""

    in_channels = 1

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weight))


def _skewed_network():
    """A 2D "network" whose logits depend on the slice and, differently, on both in-plane positions: mirroring its
    input along either in-plane axis changes its output."""
    import torch

    class Skewed(_OneWeight):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = torch.linspace(-2.0, 2.0, x.shape[-2], dtype=x.dtype, device=x.device)[:, None]
            cols = torch.linspace(-1.0, 1.5, x.shape[-1], dtype=x.dtype, device=x.device)[None, :]
            return self.weight * x[:, :1] + rows * (1.0 + cols) + 0.5 * cols

    return Skewed(0.5)


def test_flip_tta_averages_with_the_patients_left_right_mirror():
    """``flip_tta`` averages the plain prediction with the prediction of the slice mirrored left-right (world x).

    The volume's array axes run along world y, x and z, so the world-x mirror is a flip of array axis 1 and the
    anterior-posterior mirror one of axis 0. Every other step (lung mask, crop box, resizing) is equivariant under the
    left-right mirror (the lungs' box is narrow enough for its left and right margins to round to one voxel each), so
    the left-right TTA equals the mean of the plain prediction and the plain prediction of the mirrored volume,
    mirrored back."""
    import torch
    from monai.data import MetaTensor

    shape = (48, 56, 8)
    affine = _centred_affine([(0.0, 4.0, 0.0), (-4.0, 0.0, 0.0), (0.0, 0.0, 6.0)], shape)  # axes: +y, -x, +z
    image = _ct_on_grid(affine, shape)
    network = _skewed_network()
    plain = _in_memory_segmenter(network)

    def mirrored_prediction(axis: int) -> np.ndarray:
        flipped = MetaTensor(torch.flip(image.as_tensor(), dims=(axis + 1,)), affine=image.affine)
        return np.flip(plain.probability(flipped)[0].numpy(), axis)

    p = plain.probability(image)[0].numpy()
    assert (p > 0).any(axis=(0, 1)).all()  # every slice holds lung and was inferred
    left_right = 0.5 * (p + mirrored_prediction(1))
    anterior_posterior = 0.5 * (p + mirrored_prediction(0))
    assert np.abs(left_right - anterior_posterior).mean() > 0.05  # the network tells the two mirrors apart
    tta = _in_memory_segmenter(network, flip_tta=True).probability(image)[0].numpy()
    off_lr, off_ap = np.abs(tta - left_right).mean(), np.abs(tta - anterior_posterior).mean()
    assert off_lr < off_ap, (
        f"flip TTA averages with the anterior-posterior mirror (mean difference {off_ap:.4f}), not the left-right one "
        f"({off_lr:.4f})"
    )
    np.testing.assert_allclose(tta, left_right, atol=3e-3)


def test_slab_probabilities_land_at_their_world_position():
    """Each slab of slices carries its own origin through the slice-wise preprocessing: a slice-wise step that reads
    the slab's geometry (here it replaces the intensities by the voxels' world z, as a resampling step would depend
    on it) sees every slice where it lies, whatever ``slab_slices`` is, and the probability comes back onto the
    input's voxel at that world position. The input is stored LPI (slices from the head down), so both orientations
    (RAS for the lung mask, LPS for the slices) reverse axes on the way."""
    import torch
    from monai.transforms import Compose, NormalizeIntensityd, ScaleIntensityRanged

    from infnet_monai.pipeline.components import ct_preprocessing, split_slicewise

    z_scale_mm = 20.0

    class WorldZAsIntensityd(ScaleIntensityRanged):
        # a ScaleIntensityRanged: the pipeline streams it slab by slab (components.split_slicewise)
        def __init__(self) -> None:
            super().__init__("image", a_min=0.0, a_max=1.0)

        def __call__(self, data):
            d = dict(data)
            img = d["image"]
            a = img.affine.to(torch.float64)
            i, j, k = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in img.shape[1:]], indexing="ij")
            world_z = a[2, 0] * i + a[2, 1] * j + a[2, 2] * k + a[2, 3]
            d["image"] = img * 0.0 + (world_z / z_scale_mm).to(img.dtype)
            return d

    class Identity(_OneWeight):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.weight * x[:, :1]

    shape = (56, 48, 10)
    affine = _centred_affine([(-4.0, 0.0, 0.0), (0.0, -4.0, 0.0), (0.0, 0.0, -6.0)], shape)  # L, P, I
    affine[2, 3] += 7.0  # the scan is not centred on z = 0: a wrong origin would show at every slab
    image = _ct_on_grid(affine, shape)
    world_z = (np.asarray(affine)[2, 2] * np.arange(shape[2]) + affine[2, 3])[None, None, :]
    expected = np.broadcast_to(1.0 / (1.0 + np.exp(-world_z / z_scale_mm)), shape)
    steps = [t for t in ct_preprocessing().flatten().transforms if not isinstance(t, (ScaleIntensityRanged, NormalizeIntensityd))]
    preprocessing = Compose([*steps, WorldZAsIntensityd()])
    assert isinstance(split_slicewise(preprocessing)[1].transforms[-1], WorldZAsIntensityd)  # it runs per slab
    results = {}
    for slab in (3, 1000):
        seg = _in_memory_segmenter(Identity(1.0), preprocessing=preprocessing, slab_slices=slab)
        prob = seg.probability(image)[0].numpy()
        inferred = prob > 0  # the crop boxes; 0 outside them
        assert inferred.any(axis=(0, 1)).all()  # every slice holds lung: 4 slabs of 3 slices, or one
        np.testing.assert_allclose(prob[inferred], expected[inferred], atol=2e-3, err_msg=f"slab_slices={slab}")
        results[slab] = prob
    np.testing.assert_allclose(results[3], results[1000], atol=1e-6)


def test_resumed_case_keeps_its_nan_statistics_in_burden_csv(tmp_path):
    """A case skipped by ``resume`` comes back from its stats.json, where an undefined statistic (the infection
    percent of a missing lung) is stored as null: its burden.csv row must be the original run's, "nan" included."""
    shape = (48, 56, 8)
    affine = _centred_affine([(4.0, 0.0, 0.0), (0.0, 4.0, 0.0), (0.0, 0.0, 6.0)], shape)
    image = _ct_on_grid(affine, shape, lungs=("right",))  # a pneumonectomy: no left lung
    cohort = tmp_path / "in"
    cohort.mkdir()
    nib.save(nib.Nifti1Image(np.round(image[0].numpy()).astype(np.int16), affine), str(cohort / "one_lung.nii.gz"))
    segmenter = _in_memory_segmenter(_skewed_network())
    out = tmp_path / "out"
    assert segmenter.run(cohort, out).exit_code == 0
    table = (out / "burden.csv").read_text(encoding="utf-8")
    row = next(csv.DictReader(table.splitlines()))
    assert row["left_lung_infection_percent"] == "nan" and row["left_lung_volume_ml"] == "0"
    assert row["right_lung_infection_percent"] not in ("", "nan")
    stats = out / "one_lung" / "stats.json"
    assert json.loads(stats.read_text())["left_lung_infection_percent"] is None
    first = stats.stat().st_mtime_ns
    again = segmenter.run(cohort, out, resume=True)
    assert again.exit_code == 0 and stats.stat().st_mtime_ns == first  # skipped, restored from stats.json
    assert (out / "burden.csv").read_text(encoding="utf-8") == table


def test_a_passed_in_inferer_is_not_changed_and_contradicting_settings_are_refused(tiny_model):
    from infnet_monai.inferers import LungCropSliceInferer

    inferer = LungCropSliceInferer(roi_size=(64, 64), sw_batch_size=16, device="cpu", grow_threshold=0.5)
    assert inferer.slice_inferer.sw_device is None
    seg = CTSegmenter(tiny_model, device="cpu", inferer=inferer)
    assert inferer.slice_inferer.sw_device is None  # the caller's object is left as it was
    assert seg.inferer is not inferer and seg.inferer.slice_inferer.sw_device == torch.device("cpu")
    with pytest.raises(ValueError, match="grows its crops at 0.5 but the threshold is 0.4"):
        CTSegmenter(tiny_model, device="cpu", inferer=inferer, threshold=0.4)
    with pytest.raises(ValueError, match="runs 16 slices per batch but batch_slices is 8"):
        CTSegmenter(tiny_model, device="cpu", inferer=inferer, batch_slices=8)
