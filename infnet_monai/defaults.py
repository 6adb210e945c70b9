"""Default options of the 3D pipeline and of ``calibrate``, in a module without heavy imports.

The command line reads them to build its ``--help`` without importing torch or MONAI (``infnet-covid --help`` answers
in well under a second); :mod:`infnet_monai.pipeline.segment` and :mod:`infnet_monai.postprocessing` use the same
values.
"""

__all__ = [
    "THRESHOLD",
    "DEFAULT_MAX_SLICES",
    "DEFAULT_MIN_LESION_MM3",
    "MIN_LESION_EXTENT_MM",
    "MIN_LESION_AREA_MM2",
    "MIN_LESION_DEPTH_MM",
    "BASAL_RIM_MAX_SHARE",
    "THROUGH_PLANE_MM",
    "CALIBRATION_TEMPERATURES",
    "DEFAULT_SPATIAL_SIZE",
    "SLICE_MEAN",
    "SLICE_STD",
    "BACKENDS",
    "PRECISIONS",
    "NODE_AE_TITLE",
    "NODE_HOST",
    "NODE_PORT",
    "NODE_IDLE_SECONDS",
    "NODE_SERIES_TIMEOUT_S",
    "NODE_MAX_SPOOL_GB",
    "NODE_SEND_RETRIES",
]

THRESHOLD = 0.5
"""Infection probability at or above which a voxel is infection (``--threshold``; the paper's 0.5): the one home of the
default, read by the command line, :class:`~infnet_monai.pipeline.SegmentConfig`, the post-processing, the crop
inferer and the bundle's ``inference.json``."""

DEFAULT_MAX_SLICES = 3000
"""Longer volumes are refused, a guard against a mistaken input (e.g. a 4D series read as one volume). It is not a
memory bound: slabs of slices stream through the network, so memory beyond the volume and its masks does not grow
with the length (``scripts/benchmark_segment.py`` measures it)."""
DEFAULT_MIN_LESION_MM3 = 300.0
"""Connected 3D lesions smaller than this (0.3 mL, a sphere of 8.3 mm) are dropped: most false components on lungs
without COVID-19 are smaller (measured by ``scripts/evaluate_3d.py``; figures in the bundle's docs)."""
MIN_LESION_EXTENT_MM = 25.0
"""A lesion must reach over at least this axial distance (mm, slice count times slice spacing), or over the whole
scan when the scan is shorter: pneumonia patches span several neighbouring slices, while the false positives on lungs
without COVID-19 (partial volume at the pleura, the heart and the diaphragm, vessels) are short. Chosen
leave-one-scan-out from 10-30 mm (``scripts/evaluate_3d.py --loso``; the figures are in the bundle's docs). With the
through-plane window (:data:`THROUGH_PLANE_MM`) 15 or 20 mm was chosen on all scans, but neither pair passed its
rule held out: docs/validation.md (through-plane window)."""
BASAL_RIM_MAX_SHARE = 0.5
"""A lesion with at least this share of its voxels in the basal rim (the slice of lung over the diaphragm, the liver
and spleen domes and the heart, whose partial volume looks like ground glass) is removed
(:func:`~infnet_monai.postprocessing.infection.basal_rim_shares`). Chosen leave-one-scan-out
(``scripts/evaluate_3d.py --loso``)."""
THROUGH_PLANE_MM = 0.0
"""Length (mm) of the axial window through which each lesion is judged
(:func:`~infnet_monai.postprocessing.infection.infection_and_nodules`, step 5; 10 mm is 5 slices at 2-2.5 mm, 3 at
5 mm): a lesion stays, whole, only if it holds a lesion that passes the gates where the mean probability over the
window also reaches the threshold; 0 is off. Off by default: in three leave-one-scan-out runs no window passed the
rule written before each (docs/validation.md, through-plane window). The 0.16.0 window trimmed the voxels instead."""
MIN_LESION_AREA_MM2 = 100.0
"""Pieces of infection smaller than this in-plane area (mm^2, 1 cm^2) on an axial slice are removed: the thin tails
of lesions at the lung bases and partial volume at the diaphragm, which otherwise mark slices as infected that
radiologists call normal (``scripts/evaluate_3d.py`` measures the slice agreement with and without)."""
MIN_LESION_DEPTH_MM = 0.0
"""A lesion none of whose voxels lies at least this far (mm) inside the lung, from the chest wall, the mediastinum
and the diaphragm, is removed (``--min-lesion-depth-mm``;
:func:`~infnet_monai.postprocessing.infection.lesions_reaching_depth`): a band along the pleura or over the
diaphragm, however long, never reaches deep, a pneumonia patch does. 0 is off. Compared leave-one-scan-out with the
extent gate (docs/validation.md, lesion depth)."""
CALIBRATION_TEMPERATURES: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625)
"""Logit temperatures that ``infnet-covid calibrate`` (:func:`infnet_monai.apps.calibration.calibrate_model`) tries
by default, from the raw sigmoid down to a 16-fold logit scale."""
DEFAULT_SPATIAL_SIZE = 352
"""In-plane size (pixels) of the infection network's input; also what a checkpoint that records none is taken to
use (:class:`infnet_monai.io.ModelSpec`)."""
SLICE_MEAN = 0.5
"""Standardisation of slices scaled to [0, 1], ``(x - SLICE_MEAN) / SLICE_STD``: mid-grey to 0, most of the range
within +-2 (:func:`infnet_monai.transforms.intensity_normalization`)."""
SLICE_STD = 0.25
"""See :data:`SLICE_MEAN`."""
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
"""What may run the network (``--backend``; :func:`infnet_monai.inferers.backends.network_backend`): ``auto`` picks
OpenVINO on the CPU when it is installed and agrees with torch on a probe batch, else torch."""
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
"""Precision of the network (``--precision``): float32, or bfloat16 (opt-in: faster only on CPUs with bfloat16 matrix
units; the figures of its agreement are in the bundle's docs)."""

# the DICOM node (``infnet-covid serve``, ``segment --from-pacs``; :mod:`infnet_monai.net`)
NODE_AE_TITLE = "INFNET"
"""The node's AE title (``--ae-title``): the called AE title of its SCP and the calling one of its associations."""
NODE_HOST = "127.0.0.1"
"""Address the node listens on (``--host``): loopback, so another machine reaches it only when this says so."""
NODE_PORT = 11112
"""TCP port of the node (``--port``): the registered DICOM port for unprivileged services."""
NODE_IDLE_SECONDS = 30.0
"""A spooled series is complete when no instance of it arrived for this long (``--idle-seconds``); PACS and modalities
send a series in one association or several back to back, seconds apart at most."""
NODE_SERIES_TIMEOUT_S = 3600.0
"""A series still receiving this long after its first instance never completes (``--series-timeout``): it is set
aside with an error row."""
NODE_MAX_SPOOL_GB = 20.0
"""Bound of the spool (``--max-spool-gb``); past it, new associations are refused as out of resources."""
NODE_SEND_RETRIES = 3
"""Tries per result and pass (``--send-retries``); a result not sent stays in the outbox for later and the next start."""
