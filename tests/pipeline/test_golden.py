"""Golden-file test of the shipped models on a small real scan: today's code must give the stored outputs.

The stored outputs under ``tests/data/golden/`` are those of ``scripts/make_golden.py`` run on committed code: the
shipped infection model and GGO / consolidation head with ``infnet-covid segment``'s defaults (on the CPU) on 19
slices of the real 5 mm chest CT ``lung_pet_ct_dx_A0001_chest_5mm`` (the lung apices and the upper-lobe lesion).
This test runs the same function, :func:`make_golden.segment_crop`, on the current code and compares the masks'
signatures (per-slice voxel counts within ``1 - MIN_DICE`` of the voxels, centroids within a voxel; no image data is
committed) for the infection mask, each lung and each infection class, every volume of the burden row (the
``*_ml`` fields) within :data:`VOLUME_TOLERANCE_ML`, every lesion count equal.

A change that moves the results on purpose (a new model, a new default) regenerates the stored outputs; see the
docstring of ``scripts/make_golden.py`` (run it from a clean checkout of the commit, never from a tree with edits
in progress).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_golden.py"
GOLDEN = REPO / "tests" / "data" / "golden"
REGENERATE = (
    "if the change is intended, regenerate the stored outputs with scripts/make_golden.py from a clean checkout "
    "of the commit (see its docstring)"
)

MIN_DICE = 0.99
"""Smallest Dice between a current mask and its stored twin (per label)."""
VOLUME_TOLERANCE_ML = 0.1
"""Largest difference of any volume of the burden row (mL)."""

pytestmark = pytest.mark.slow  # the shipped models on 19 real 512 x 512 slices: seconds


def _load_script():
    spec = importlib.util.spec_from_file_location("make_golden", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_script()


@pytest.fixture(scope="module")
def golden() -> dict:
    path = GOLDEN / make_golden.BURDEN_FILE
    assert path.is_file(), f"{path} is missing; create it with scripts/make_golden.py (see its docstring)"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def current(data_dir, tmp_path_factory):
    """``(row, case_dir)`` of the current code on the golden scan."""
    return make_golden.segment_crop(data_dir, tmp_path_factory.mktemp("golden"))


def test_golden_record_describes_the_same_run(golden):
    """The stored record was made by committed code with the options and the cut that the test runs now."""
    assert golden["crop_files"] == list(make_golden.CROP_FILES), f"the stored outputs are of another cut; {REGENERATE}"
    assert golden["options"] == make_golden.OPTIONS, f"the stored outputs used other options; {REGENERATE}"
    assert golden["provenance"]["local_edits"] is False, (
        "the stored outputs came from a tree with local edits; rerun scripts/make_golden.py from a clean checkout"
    )
    assert golden["row"]["infection_volume_ml"] > 0, "the golden scan must have infection, else the comparison is weak"


def test_shipped_models_are_those_of_the_golden_outputs(golden):
    hashes = make_golden.shipped_model_hashes()
    for name, digest in golden["provenance"]["model_sha256"].items():
        assert hashes[name] == digest, f"the shipped {name} changed since the stored outputs were made; {REGENERATE}"


@pytest.mark.parametrize("name", list(make_golden.MASK_FILES), ids=["infection", "lungs", "classes"])
def test_masks_match_the_golden_outputs(current, golden, name):
    """Same shape and affine; per label, the per-slice voxel counts differ by at most ``1 - MIN_DICE`` of the two
    masks' voxels (a Dice above ``MIN_DICE`` implies it: the symmetric difference is ``(1 - Dice)`` of them), and
    every slice's centroid lies within one voxel of the stored one (a mask that moves without changing size)."""
    _, case_dir = current
    ours, stored = make_golden.mask_signature(case_dir / name, make_golden.MASK_FILES[name]), golden["masks"][name]
    assert ours["shape"] == stored["shape"], f"{name}: shape {ours['shape']} against the stored {stored['shape']}; {REGENERATE}"
    np.testing.assert_allclose(ours["affine"], stored["affine"], atol=1e-4, err_msg=f"{name}: affine differs; {REGENERATE}")
    for label, theirs in stored["labels"].items():
        a, b = np.asarray(ours["labels"][label]["counts"]), np.asarray(theirs["counts"])
        change = float(np.abs(a - b).sum()) / max(int(a.sum() + b.sum()), 1)
        assert change <= 1.0 - MIN_DICE, (
            f"{name} label {label}: per-slice voxel counts differ by {change:.4f} of the voxels "
            f"({int(a.sum())} voxels against {int(b.sum())}); {REGENERATE}"
        )
        for k, (c, d) in enumerate(zip(ours["labels"][label]["centroids"], theirs["centroids"])):
            if c is not None and d is not None and min(a[k], b[k]) >= 50:
                shift = float(np.hypot(c[0] - d[0], c[1] - d[1]))
                assert shift <= 1.0, f"{name} label {label}: slice {k} moved {shift:.2f} voxels; {REGENERATE}"


def test_burden_row_matches_the_golden_row(current, golden):
    row, _ = current
    stored = golden["row"]
    assert row["status"] == "ok"
    assert list(row["shape"]) == stored["shape"]
    volumes = [k for k in stored if k.endswith("_ml")]
    counts = [k for k in stored if k.endswith("_count")]
    assert "infection_volume_ml" in volumes and "lesion_count" in counts
    missing = [k for k in volumes + counts if k not in row]
    assert not missing, f"burden row fields {missing} are gone (stored by scripts/make_golden.py); {REGENERATE}"
    off = {k: (row[k], stored[k]) for k in volumes if abs(float(row[k]) - float(stored[k])) > VOLUME_TOLERANCE_ML}
    assert not off, f"volumes (now, stored) beyond {VOLUME_TOLERANCE_ML} mL: {off}; {REGENERATE}"
    changed = {k: (row[k], stored[k]) for k in counts if int(row[k]) != int(stored[k])}
    assert not changed, f"lesion counts (now, stored) differ: {changed}; {REGENERATE}"
