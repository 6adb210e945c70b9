"""Every advertised ``segment`` option through the command line, and ``demo`` end to end."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from infnet_monai.cli import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, tiny_model, tiny_class_model):
    """``segment`` of one real scan with the tiny model: defaults plus the probability map, then one option each."""
    src = data_dir / "ct" / "abdomen_3mm_small.nii.gz"
    base = ["--model", str(tiny_model), "--class-model", str(tiny_class_model), "--device", "cpu", "-q", "--no-overview"]
    options = {
        "default": ["--save-prob"],
        "threshold": ["--threshold", "0.9", "--save-prob"],
        "min_lesion": ["--min-lesion-mm3", "1e9"],
        "no_min_lesion": ["--min-lesion-mm3", "0", "--min-lesion-extent-mm", "0", "--min-lesion-area-mm2", "0"],
        "through_plane": ["--min-lesion-mm3", "0", "--min-lesion-extent-mm", "0", "--min-lesion-area-mm2", "0",
                          "--through-plane-mm", "6"],
        "depth": ["--min-lesion-mm3", "0", "--min-lesion-extent-mm", "0", "--min-lesion-area-mm2", "0",
                  "--min-lesion-depth-mm", "12"],
    }
    out = {}
    for name, extra in options.items():
        folder = tmp_path_factory.mktemp(name)
        assert main(["segment", str(src), "-o", str(folder), *base, *extra]) == 0, name
        case = folder / "abdomen_3mm_small"
        out[name] = {
            "stats": json.loads((case / "stats.json").read_text()),
            "infection": np.asarray(nib.load(str(case / "infection.nii.gz")).dataobj),
            "lung": nib.load(str(case / "lung.nii.gz")),
            "lesions_csv": case / "lesions.csv",
            "probability": nib.load(str(case / "probability.nii.gz")) if (case / "probability.nii.gz").exists() else None,
        }
    return out


def test_save_prob_writes_a_probability_scaled_to_0_1(runs):
    img = runs["default"]["probability"]
    assert img is not None and img.get_data_dtype() == np.uint8
    assert img.dataobj.slope == pytest.approx(1 / 255) and img.dataobj.inter == 0.0  # nibabel moves scl_* here
    prob = img.get_fdata()
    assert prob.min() >= 0.0 and prob.max() <= 1.0 + 1e-6 and prob.max() > 0.5
    infection = runs["default"]["infection"] > 0
    assert infection.any()
    assert prob[infection].min() >= 0.5 - 1 / 255  # every infection voxel is at or above the threshold
    assert runs["no_min_lesion"]["probability"] is None  # only with --save-prob


def test_threshold_keeps_only_voxels_above_it(runs):
    prob = runs["default"]["probability"].get_fdata()
    high = runs["threshold"]["infection"] > 0
    assert runs["threshold"]["stats"]["threshold"] == 0.9 and runs["default"]["stats"]["threshold"] == 0.5
    assert high.sum() < (runs["default"]["infection"] > 0).sum()
    assert not high.any() or prob[high].min() >= 0.9 - 1 / 255


def test_min_lesion_volume_filters_lesions(runs):
    assert runs["min_lesion"]["stats"]["lesion_count"] == 0 and not runs["min_lesion"]["infection"].any()
    assert runs["no_min_lesion"]["stats"]["lesion_count"] >= runs["default"]["stats"]["lesion_count"] > 0
    assert (runs["no_min_lesion"]["infection"] >= runs["default"]["infection"]).all()  # the filters only remove


def test_through_plane_window_only_removes(runs):
    """``--through-plane-mm`` reaches the post-processing (6 mm: 3 slices of this 3-mm scan): the window never adds
    a voxel and keeps each lesion whole or not at all (its behaviour: tests/postprocessing/test_infection_postprocess.py)."""
    from scipy import ndimage as ndi

    window, plain = runs["through_plane"]["infection"] > 0, runs["no_min_lesion"]["infection"] > 0
    assert not (window & ~plain).any()
    assert window.any()  # something to keep whole
    labels, n = ndi.label(plain, np.ones((3, 3, 3)))
    kept = np.bincount(labels[window], minlength=n + 1)[1:]
    assert np.array_equal(kept[kept > 0], np.bincount(labels.ravel(), minlength=n + 1)[1:][kept > 0])
    from infnet_monai.cli import _segment_kwargs, build_parser
    from infnet_monai.pipeline.segment import SegmentConfig

    args = build_parser().parse_args(["segment", "in", "-o", "out", "--through-plane-mm", "6"])
    assert SegmentConfig(**_segment_kwargs(args)).through_plane_mm == 6.0
    assert SegmentConfig().through_plane_mm == build_parser().parse_args(["segment", "in", "-o", "out"]).through_plane_mm


def test_min_lesion_depth_removes_whole_lesions_that_stay_near_the_lung_edge(runs):
    """``--min-lesion-depth-mm 12`` reaches the post-processing: of the ungated lesions, exactly those with a voxel at
    least 12 mm inside the written lung mask (distances in the output's own voxel spacing) stay, whole."""
    from scipy import ndimage as ndi

    from infnet_monai.cli import _segment_kwargs, build_parser
    from infnet_monai.pipeline.segment import SegmentConfig

    deep, plain = runs["depth"]["infection"] > 0, runs["no_min_lesion"]["infection"] > 0
    lung_img = runs["no_min_lesion"]["lung"]
    spacing = lung_img.header.get_zooms()[:3]
    r = int(np.ceil(12.0 / min(spacing))) + 1  # the scan's edge is not the pleura: the lung goes on beyond it
    grown = np.pad(np.pad(np.asarray(lung_img.dataobj) > 0, r, mode="edge"), 1)
    depth = ndi.distance_transform_edt(grown, sampling=spacing)[r + 1 : -r - 1, r + 1 : -r - 1, r + 1 : -r - 1]
    labels, n = ndi.label(plain, np.ones((3, 3, 3)))
    reaches = np.zeros(n + 1, dtype=bool)
    np.maximum.at(reaches, labels[plain], depth[plain] >= 12.0 * (1 - 1e-6))
    assert reaches[1:].any() and not reaches[1:].all()  # the option has something to keep and something to remove
    np.testing.assert_array_equal(deep, reaches[labels] & plain)
    # without the gate the same lesions are counted, flagged and marked instead: the self-check and lesions.csv agree
    voxel_ml = float(np.prod(spacing)) / 1000.0
    band_ml = float(np.count_nonzero(plain & ~reaches[labels])) * voxel_ml
    stats = runs["no_min_lesion"]["stats"]
    assert stats["band_like_infection_ml"] == pytest.approx(band_ml) and "band_like_infection" in stats["qc_flags"]
    import csv

    with open(runs["no_min_lesion"]["lesions_csv"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "infection"]
    assert sum(float(r["volume_ml"]) for r in rows if r["band_like"] == "True") == pytest.approx(band_ml, abs=1e-3)
    assert {r["band_like"] for r in rows} == {"True", "False"}
    args = build_parser().parse_args(["segment", "in", "-o", "out", "--min-lesion-depth-mm", "12"])
    assert SegmentConfig(**_segment_kwargs(args)).min_lesion_depth_mm == 12.0
    assert SegmentConfig().min_lesion_depth_mm == build_parser().parse_args(["segment", "in", "-o", "out"]).min_lesion_depth_mm


def test_tta_averages_with_the_flipped_slices(tmp_path, data_dir):
    """With the shipped model (the tiny random one saturates): --tta changes the probabilities, not the grid. On torch:
    converting the shipped model with its flipped view for OpenVINO takes 15 s, and the backends' agreement has its own
    test (tests/inferers/test_backends.py)."""
    src = data_dir / "ct" / "abdomen_3mm_small.nii.gz"
    maps = {}
    for name, extra in (("plain", []), ("tta", ["--tta"])):
        out = tmp_path / name
        args = ["segment", str(src), "-o", str(out), "--device", "cpu", "--backend", "torch", "-q", "--no-overview"]
        assert main([*args, "--save-prob", *extra]) == 0
        maps[name] = nib.load(str(out / "abdomen_3mm_small" / "probability.nii.gz")).get_fdata()
    plain, tta = maps["plain"], maps["tta"]
    assert tta.shape == plain.shape and tta.min() >= 0.0 and tta.max() <= 1.0 + 1e-6
    assert not np.array_equal(tta, plain)
    assert np.corrcoef(plain.ravel(), tta.ravel())[0, 1] > 0.8  # an average with the flipped view (0.87), not another map


def test_demo_end_to_end(tmp_path, capsys):
    """``infnet-covid demo``: writes the phantom, segments it with the shipped models and reports the truth."""
    assert main(["demo", "-o", str(tmp_path), "--device", "cpu", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "phantom truth: infection" in printed and "phantom_chest" in printed
    case = tmp_path / "segmentation" / "phantom_chest"
    for name in ("infection.nii.gz", "lung.nii.gz", "infection_classes.nii.gz", "stats.json", "overview.png"):
        assert (case / name).is_file(), name
    assert (tmp_path / "segmentation" / "burden.csv").is_file() and (tmp_path / "segmentation" / "report.html").is_file()
    truth = np.asarray(nib.load(str(tmp_path / "truth" / "phantom_chest_infection.nii.gz")).dataobj) > 0
    lung = np.asarray(nib.load(str(case / "lung.nii.gz")).dataobj) > 0
    stats = json.loads((case / "stats.json").read_text())
    assert stats["status"] == "ok"
    assert (lung & truth).sum() / truth.sum() > 0.95  # the lung mask holds the true lesions
    # the figures the README states for the demo (shipped models, seed 0)
    found = re.search(r"over-calls it \((\d+\.\d) mL in (\d+) lesions found for (\d+\.\d) mL in (\d+) true lesions", README)
    lungs = re.search(r"lung mask matches the phantom's lungs \((\d+) mL measured, (\d+) mL true\)", README)
    assert found and lungs, "the README's demo figures moved: update this test with them"
    assert f"{stats['infection_volume_ml']:.1f}" == found.group(1) and stats["lesion_count"] == int(found.group(2))
    assert f"infection {found.group(3)} mL in {found.group(4)} lesions" in printed
    assert round(stats["lung_volume_ml"]) == int(lungs.group(1))
    truth_lung = re.search(r"lung (\d+\.\d) mL", printed.split("phantom truth:")[1])
    assert truth_lung and round(float(truth_lung.group(1))) == int(lungs.group(2))


def test_shipped_model_on_the_abdomen_scan_gives_the_readme_figure(tmp_path, data_dir):
    """README: the shipped models mark N mL of the lung bases of abdomen_3mm as infection (scripts/evaluate_3d.py)."""
    stated = re.search(r"and (\d+\.\d) mL of the lung bases of `abdomen_3mm` as infection", README)
    assert stated, "the README's abdomen_3mm figure moved: update this test with it"
    assert main(["segment", str(data_dir / "ct" / "abdomen_3mm.nii.gz"), "-o", str(tmp_path), "--device", "cpu", "-q", "--no-overview"]) == 0
    stats = json.loads((tmp_path / "abdomen_3mm" / "stats.json").read_text())
    assert f"{stats['infection_volume_ml']:.1f}" == stated.group(1)


def test_default_run_prints_no_python_warning_and_no_third_party_log_line(tmp_path, data_dir, tiny_model, tiny_class_model):
    """A DICOM cohort of two cases at the default verbosity: stderr holds our own log lines only (no per-case
    nvImageCodec warning from MONAI, no highdicom line, no Python warning, no progress bar off a terminal); ``-q``
    writes nothing at all; ``-v`` shows the third-party lines. The first run converts the network (an empty cache) in
    a home folder of its own: OpenVINO's converter writes no telemetry client ID there (nothing is reported)."""
    import os
    import shutil
    import subprocess
    import sys

    cohort = tmp_path / "cohort"
    for name in ("one", "two"):
        shutil.copytree(data_dir / "ct" / "chest_2slice_dicom", cohort / name)
    cmd = [sys.executable, "-m", "infnet_monai.cli", "segment", str(cohort), "--model", str(tiny_model), "--device", "cpu"]
    cmd += ["--class-model", str(tiny_class_model)]
    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home), INFNET_CACHE_DIR=str(home / "converted"))
    env.pop("CI", None)  # OpenVINO's telemetry skips CI jobs by this variable; a user's machine has none
    default = subprocess.run(cmd + ["-o", str(tmp_path / "a")], capture_output=True, text=True, timeout=600, env=env)
    assert default.returncode == 0, default.stderr[-2000:]
    assert (home / "converted" / "openvino").is_dir() and not (home / "intel").exists()
    lines = [line for line in default.stderr.splitlines() if line.strip()]
    assert lines and all(re.match(r"(INFO|WARNING|ERROR) infnet_monai[.:]", line) for line in lines), lines
    assert "\r" not in default.stderr and "\x1b[" not in default.stderr  # no progress bar off a terminal
    quiet = subprocess.run(cmd + ["-o", str(tmp_path / "q"), "-q"], capture_output=True, text=True, timeout=600, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""  # -q: nothing at all on success
    verbose = subprocess.run(cmd + ["-o", str(tmp_path / "b"), "-v"], capture_output=True, text=True, timeout=600, env=env)
    assert "nvImageCodec" in verbose.stderr or "highdicom" in verbose.stderr  # shown when asked for
