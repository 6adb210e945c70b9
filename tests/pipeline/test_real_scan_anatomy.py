"""The shipped models on a real chest CT: every lesion of the written mask passes the documented filters, the counts
are those of the mask, and the anatomical self-checks are written (issue 22, issue 26)."""

import json

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from infnet_monai.cli import main
from infnet_monai.defaults import DEFAULT_MIN_LESION_MM3, MIN_LESION_EXTENT_MM


def test_lung_cancer_ct_lesions_pass_the_filters_and_checks_are_written(tmp_path, data_dir):
    src = data_dir / "ct" / "lung_pet_ct_dx_A0001_chest_5mm"
    assert main(["segment", str(src), "-o", str(tmp_path), "--device", "cpu", "-q", "--no-overview", "--no-dicom-seg"]) == 0
    case = tmp_path / src.name
    stats = json.loads((case / "stats.json").read_text())
    img = nib.load(str(case / "infection.nii.gz"))
    infection = np.asarray(img.dataobj) > 0
    spacing = img.header.get_zooms()[:3]
    axial = int(np.argmax(np.abs(img.affine[2, :3])))
    labels, n = ndi.label(infection, structure=np.ones((3, 3, 3)))
    assert n == stats["lesion_count"] and n >= 1
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        assert (labels[sl] == i).sum() * float(np.prod(spacing)) >= DEFAULT_MIN_LESION_MM3
        assert (sl[axial].stop - sl[axial].start) * spacing[axial] >= MIN_LESION_EXTENT_MM - 1e-6
    voxel_ml = float(np.prod(spacing)) / 1000.0
    assert abs(infection.sum() * voxel_ml - stats["infection_volume_ml"]) < 1e-6
    # the anatomical self-checks: the trachea found and outside the lung mask, no infection outside the bony thorax
    assert stats["trachea_in_lung_percent"] is not None and stats["trachea_in_lung_percent"] <= 2.0
    assert stats["infection_outside_thorax_ml"] <= 0.5
    assert stats["band_like_infection_ml"] == 0.0  # its one lesion, the tumour region, reaches 18 mm into the lung
    assert stats["qc_flags"] == [] and stats["lungs_cut_by_scan"] is False
    assert {"nodule_like_lesion_count", "nodule_like_volume_ml"} <= set(stats)
    header = (tmp_path / "burden.csv").read_text().splitlines()[0].split(",")
    assert {"trachea_in_lung_percent", "infection_outside_thorax_ml", "band_like_infection_ml", "qc_flags",
            "nodule_like_lesion_count"} <= set(header)
