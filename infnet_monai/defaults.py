"""Default options of the 3D pipeline, in a module without heavy imports.

The command line reads them to build its ``--help`` without importing torch or MONAI (``infnet-covid --help`` answers
in well under a second); :mod:`infnet_monai.pipeline.segment` and :mod:`infnet_monai.postprocessing` use the same
values.
"""

__all__ = [
    "DEFAULT_MAX_SLICES",
    "DEFAULT_MIN_LESION_MM3",
    "MIN_LESION_EXTENT_MM",
    "MIN_LESION_AREA_MM2",
    "BASAL_RIM_MAX_SHARE",
]

DEFAULT_MAX_SLICES = 3000
"""Longer volumes are refused to bound memory (peak about 3.2 GB for 512 x 512 x 300 with the class head,
``scripts/benchmark_segment.py``)."""
DEFAULT_MIN_LESION_MM3 = 300.0
"""Connected 3D lesions smaller than this (0.3 mL, a sphere of 8.3 mm) are dropped: on the normal chest CT
``covid_ct_md_normal001`` most false components are smaller (``scripts/evaluate_3d.py``)."""
MIN_LESION_EXTENT_MM = 25.0
"""A lesion must reach over at least this axial distance (mm, slice count times slice spacing), or over the whole
scan when the scan is shorter: pneumonia patches span several neighbouring slices, while the false positives on lungs
without COVID-19 (partial volume at the pleura, the heart and the diaphragm, vessels) are short. Chosen
leave-one-scan-out from 10-30 mm (``scripts/evaluate_3d.py --loso``): every held-out run picks 25 mm; on the
LIDC-IDRI-0001 nodule scan the false infection is 0.10% at 20 mm and 0% at 25 mm, the COVID-19 CT's slice agreement
0.892 and 0.899."""
BASAL_RIM_MAX_SHARE = 0.5
"""A lesion with at least this share of its voxels in the basal rim (the slice of lung over the diaphragm, the liver
and spleen domes and the heart, whose partial volume looks like ground glass) is removed
(:func:`~infnet_monai.postprocessing.infection.basal_rim_shares`). Chosen leave-one-scan-out
(``scripts/evaluate_3d.py --loso``)."""
MIN_LESION_AREA_MM2 = 100.0
"""Pieces of infection smaller than this in-plane area (mm^2, 1 cm^2) on an axial slice are removed: the thin tails
of lesions at the lung bases and partial volume at the diaphragm, which otherwise mark slices as infected that
radiologists call normal (slice agreement on ``covid_ct_md_P001`` 0.81 without, 0.88 with)."""
