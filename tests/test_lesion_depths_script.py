"""scripts/lesion_depths.py: the depths it lists are the ones the depth gate and the band-like self-check use."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("lesion_depths", REPO / "scripts" / "lesion_depths.py")
lesion_depths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lesion_depths)


def test_listed_depths_decide_as_the_gate_does():
    """A lesion's listed depth reaches D exactly when lesions_reaching_depth says it does, the scan's edge included."""
    from infnet_monai.postprocessing.infection import lesions_reaching_depth

    rng = np.random.default_rng(1)
    spacing = (0.8, 0.7, 2.0)
    lung = ndi.binary_opening(rng.random((40, 44, 18)) > 0.2)
    lung[:, 0] = False  # one face without lung; the others cut it
    lesions = ndi.binary_dilation(rng.random(lung.shape) > 0.97) & lung
    labels, n = ndi.label(lesions, np.ones((3, 3, 3)))
    depth = lesion_depths._depths_mm(lung, spacing)
    for d in (0.7, 1.5, 2.5, 4.0):
        listed = np.array([False] + [depth[labels == i].max() >= d * (1 - 1e-6) for i in range(1, n + 1)])
        np.testing.assert_array_equal(listed, lesions_reaching_depth(labels, n, lung, spacing, d, (0, 0, 0)))


def test_lists_a_scan_without_lesions(data_dir, capsys):  # the abdomen scan: lung bases, no lesion
    assert lesion_depths.main(["--data", str(data_dir), "--scans", "abdomen", "--extents", "25"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scans"] == {"abdomen": {"extent_25_mm": []}}
