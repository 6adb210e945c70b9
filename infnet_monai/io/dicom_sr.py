"""DICOM Structured Report of the infection burden (TID 1500 Measurement Report), written and read with highdicom.

A case that has ``OUTPUT/<case_id>/segmentation.dcm`` (:mod:`infnet_monai.io.dicom_seg`) can also get
``OUTPUT/<case_id>/measurements.dcm``: a Comprehensive 3D SR in the source study (new series) holding one TID 1411
"Volumetric ROI Measurements" group per segment of the SEG, each referencing its segment (SEG SOP Instance UID and
segment number), with the figures of the case's stats row (segment: measurement name = row key, concept, UCUM
unit):

- right lung, left lung: ``volume`` = ``right_lung_volume_ml`` / ``left_lung_volume_ml``, SCT 118565006 "Volume",
  ``ml``.
- infection: ``volume`` = ``infection_volume_ml`` (as above); ``lung involvement`` = ``infection_percent``,
  ``right lung involvement`` = ``right_lung_infection_percent`` and ``left lung involvement`` =
  ``left_lung_infection_percent``, all ``99INFNET LUNGINVOLVED`` "Percentage of lung volume involved", ``%``, with
  the finding site SCT 39607008 "Lung", SCT 3341006 "Right lung" or SCT 44029006 "Left lung"; ``lesion count`` =
  ``lesion_count``, SCT 246206008 "Number of lesions", ``{lesions}``.
- ground-glass opacity, consolidation (segments of the SEG only with a class map): ``volume`` = ``ggo_volume_ml`` /
  ``consolidation_volume_ml`` and ``lung involvement`` = ``ggo_percent`` / ``consolidation_percent`` (finding site
  "Lung").

The involved percentage is one concept whose denominator is its finding site (the whole lung, the right or the left
lung), so the three percentages of the infection differ only by that site. No standard code says "percentage of the
lung volume involved", so it is a local code of the private coding scheme ``99INFNET`` (local designators start with
"99", as DICOM PS3.3 asks), declared in the SR's Coding Scheme Identification Sequence. Volumes carry the method
DCM 126030 "Sum of segmented voxel method for volume"; every measurement carries the algorithm identification
(TID 4019: name ``infnet-monai``, the software version, the model as a parameter).

Values are the row's own (not recomputed, not rounded further); a value that is missing, ``None`` (JSON null) or NaN
(the percentage of an empty lung side) is left out. The row's other figures are not reported: the zone figures
(``zone_score``, ``<zone>_infection_percent``, ``None`` with ``zones_withheld`` on a scan that cuts the lungs) and the
nodule-like lesions have no measurement group here.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infnet_monai.io.dicom_seg import SEGMENT_LABELS, read_source_headers
from infnet_monai.utils.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["DICOM_SR_FILE", "SR_MEASUREMENTS", "PRIVATE_SCHEME", "write_dicom_sr", "read_dicom_sr"]

DICOM_SR_FILE = "measurements.dcm"

SR_MEASUREMENTS: dict[str, dict[str, str]] = {
    "right lung": {"volume": "right_lung_volume_ml"},
    "left lung": {"volume": "left_lung_volume_ml"},
    "infection": {
        "volume": "infection_volume_ml",
        "lung involvement": "infection_percent",
        "right lung involvement": "right_lung_infection_percent",
        "left lung involvement": "left_lung_infection_percent",
        "lesion count": "lesion_count",
    },
    "ground-glass opacity": {"volume": "ggo_volume_ml", "lung involvement": "ggo_percent"},
    "consolidation": {"volume": "consolidation_volume_ml", "lung involvement": "consolidation_percent"},
}
"""Per segment label, the measurement names of the SR and the stats-row key each one reports."""

_REQUIRED_SEGMENTS = SEGMENT_LABELS[:3]
"""Segments every infnet-monai DICOM-SEG has; the class segments exist only with a class map."""

PRIVATE_SCHEME = "99INFNET"
"""Coding Scheme Designator of the local codes (the lung-involvement percentage), declared in every SR written."""

_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_EVIDENCE_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_SR_SERIES_NUMBER = 9902  # the DICOM-SEG is 9901
_DEVICE_UID_ENTROPY = ["infnet-monai"]  # a fixed, reproducible UID for the device observer (the software)


def _concepts():
    from highdicom.sr import CodedConcept

    lung = CodedConcept("39607008", "SCT", "Lung")
    involvement = CodedConcept("LUNGINVOLVED", PRIVATE_SCHEME, "Percentage of lung volume involved")
    percent = CodedConcept("%", "UCUM", "percent")
    # name -> (concept, unit, finding site or None)
    return {
        "volume": (CodedConcept("118565006", "SCT", "Volume"), CodedConcept("ml", "UCUM", "milliliter"), None),
        "lung involvement": (involvement, percent, lung),
        "right lung involvement": (involvement, percent, CodedConcept("3341006", "SCT", "Right lung")),
        "left lung involvement": (involvement, percent, CodedConcept("44029006", "SCT", "Left lung")),
        "lesion count": (
            CodedConcept("246206008", "SCT", "Number of lesions"), CodedConcept("{lesions}", "UCUM", "lesions"), None
        ),
    }


def _procedure():
    from highdicom.sr import CodedConcept

    # LOINC 24627-2 "CT Chest" (as in the LOINC/RSNA radiology playbook). Not SCT 418272005, which is "CT angiography".
    return CodedConcept("24627-2", "LN", "CT Chest")


def _value(row: Mapping[str, Any], key: str) -> float | int | None:
    """The row's value for ``key``, or None when it is missing, null or NaN (never reported)."""
    v = row.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        number = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"stats row value {key}={v!r} is not a number") from None
    if not math.isfinite(number):
        return None
    if key == "lesion_count":
        return int(v)
    return number


def _read_segmentation(segmentation):
    import pydicom

    if isinstance(segmentation, pydicom.Dataset):
        return segmentation, "the segmentation"
    path = Path(segmentation)
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True), str(path)
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise ValueError(f"{path}: cannot read the DICOM-SEG ({e})") from e


def _check_segmentation(seg, name: str, sources, source_files) -> dict[str, int]:
    """Segment numbers by label; raises ValueError when ``seg`` is no DICOM-SEG of the source series."""
    if str(seg.get("SOPClassUID", "")) != _SEGMENTATION_STORAGE:
        raise ValueError(f"{name} is not a DICOM Segmentation (SOP Class UID {seg.get('SOPClassUID', 'missing')})")
    for ds, f in zip(sources, source_files):
        missing = [a for a in _EVIDENCE_ATTRIBUTES if not ds.get(a)]
        if missing:
            raise ValueError(f"{f}: the DICOM header lacks {', '.join(missing)}, which a DICOM SR needs as evidence")
    if str(seg.StudyInstanceUID) != str(sources[0].StudyInstanceUID):
        raise ValueError(
            f"{name} belongs to study {seg.StudyInstanceUID}, the source series to {sources[0].StudyInstanceUID}: "
            "write the SEG of this series first"
        )
    referenced = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    if str(sources[0].SeriesInstanceUID) not in referenced:
        raise ValueError(f"{name} does not reference the source series {sources[0].SeriesInstanceUID}")
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    missing = [label for label in _REQUIRED_SEGMENTS if label not in numbers]
    if missing:
        raise ValueError(f"{name} lacks the segment(s) {', '.join(repr(m) for m in missing)} the measurements need")
    return numbers


def _referenced_segment(hd, seg, number: int):
    frames = seg.get("PerFrameFunctionalGroupsSequence", [])
    if any(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number for f in frames):
        return hd.sr.ReferencedSegment.from_segmentation(seg, number)
    # an empty segment has no frames (the SEG omits empty frames): it derives from the whole source series
    series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(series),
    )


def _measurements(hd, label: str, row: Mapping[str, Any], algorithm) -> list:
    concepts = _concepts()
    volume_method = hd.sr.CodedConcept("126030", "DCM", "Sum of segmented voxel method for volume")
    out = []
    for name, key in SR_MEASUREMENTS.get(label, {}).items():
        value = _value(row, key)
        if value is None:
            continue
        concept, unit, site = concepts[name]
        out.append(hd.sr.Measurement(
            name=concept, value=value, unit=unit, algorithm_id=algorithm,
            method=volume_method if name == "volume" else None,
            finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
        ))
    return out


def write_dicom_sr(
    path: str | os.PathLike,
    segmentation: str | os.PathLike | Any,
    source_files: Sequence[str | os.PathLike],
    row: Mapping[str, Any],
    software_version: str,
    model_name: str | None = None,
    source_headers: Sequence | None = None,
) -> Path:
    """Write the case's burden figures as a TID 1500 Measurement Report (Comprehensive 3D SR) referencing the SEG.

    The SR joins the source study (Study Instance UID, patient and study attributes copied from the source headers;
    type-2 attributes an anonymised series dropped are written empty, as for the DICOM-SEG), in a new series. Its
    evidence is the SEG and the source images the SEG's segments derive from. See the module docstring for the
    concepts and units.

    Args:
        path: the file to write (atomically), normally ``OUTPUT/<case_id>/measurements.dcm``.
        segmentation: ``segmentation.dcm`` written by :func:`~infnet_monai.io.dicom_seg.write_dicom_seg` for this
            series, as a path or a pydicom Dataset.
        source_files: the source series' DICOM files (as given to ``write_dicom_seg``).
        row: the case's stats row (keys of :data:`SR_MEASUREMENTS`; missing, null or NaN values are left out).
        software_version: infnet-monai version, recorded as the algorithm version.
        model_name: the model (checkpoint) name, recorded as an algorithm parameter ``model=<name>`` when given.
        source_headers: the headers of ``source_files`` as :func:`~infnet_monai.io.dicom_seg.read_source_headers`
            gives them, when the caller has read them already (for the SEG); read here when ``None``.

    Returns:
        ``path``.

    Raises:
        ValueError: the SEG is not a DICOM-SEG of this series, lacks a segment the row needs, or the source headers
            lack the identifiers an SR needs.
    """
    import highdicom as hd
    import pydicom
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    if not source_files:
        raise ValueError("write_dicom_sr needs the source series' files (none given)")
    seg, name = _read_segmentation(segmentation)
    sources = read_source_headers(source_files) if source_headers is None else list(source_headers)
    if len(sources) != len(source_files):
        raise ValueError(f"{len(sources)} source headers given for {len(source_files)} source files")
    numbers = _check_segmentation(seg, name, sources, source_files)
    for label in SEGMENT_LABELS[3:]:
        needed = [k for k in SR_MEASUREMENTS[label].values() if _value(row, k) is not None]
        if needed and label not in numbers:
            raise ValueError(
                f"{name} has no {label!r} segment but the stats row has {', '.join(needed)}: the SEG was written "
                "without the class map"
            )

    parameters = [f"model={model_name}"] if model_name else None
    algorithm = hd.sr.AlgorithmIdentification(
        name="infnet-monai", version=software_version or "unknown", parameters=parameters,
        family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"),
    )
    groups = []
    for segment in seg.SegmentSequence:
        label, number = str(segment.SegmentLabel), int(segment.SegmentNumber)
        regions = segment.get("AnatomicRegionSequence", [])
        anatomy = [hd.sr.FindingSite(hd.sr.CodedConcept.from_dataset(r)) for r in regions]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
            referenced_segment=_referenced_segment(hd, seg, number),
            finding_category=hd.sr.CodedConcept.from_dataset(segment.SegmentedPropertyCategoryCodeSequence[0]),
            finding_type=hd.sr.CodedConcept.from_dataset(segment.SegmentedPropertyTypeCodeSequence[0]),
            finding_sites=anatomy or None,
            measurements=_measurements(hd, label, row, algorithm) or None,
        ))
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=pydicom.uid.generate_uid(entropy_srcs=_DEVICE_UID_ENTROPY), name="infnet-monai",
            manufacturer_name="infnet-monai", model_name="Inf-Net (MONAI)",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_procedure(), imaging_measurements=groups,
    )
    scheme = CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="infnet-monai local codes", responsible_organization="infnet-monai",
    )
    with warnings.catch_warnings(record=True) as caught:  # highdicom's remarks on the source's own attributes
        warnings.simplefilter("always")
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources, seg], content=report, series_instance_uid=hd.UID(), series_number=_SR_SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="infnet-monai",
            manufacturer_model_name="Inf-Net (MONAI)", software_versions=software_version or "unknown",
            device_serial_number="none", series_description="infnet-monai lung infection measurements",
            is_complete=True, is_final=False, coding_schemes=[scheme],
        )
    for w in caught:
        logger.debug("highdicom: %s", w.message)
    return atomic_write(path, lambda tmp: sr.save_as(tmp))


def _measurement_name(concept, site) -> str:
    key = (concept.value, concept.scheme_designator, site.value if site is not None else None)
    for name, (c, _, s) in _concepts().items():
        if (c.value, c.scheme_designator, s.value if s is not None else None) == key:
            return name
    return str(concept.meaning) + (f" ({site.meaning})" if site is not None else "")


def _algorithm(measurement) -> dict[str, Any]:
    names = {"111001": "name", "111003": "version", "111002": "parameters"}
    out: dict[str, Any] = {"parameters": []}
    for item in measurement[0].get("ContentSequence", []):
        field = names.get(str(item.ConceptNameCodeSequence[0].CodeValue))
        if field == "parameters":
            out["parameters"].append(str(item.TextValue))
        elif field is not None:
            out[field] = str(item.TextValue)
    return out


def read_dicom_sr(path: str | os.PathLike) -> dict[str, Any]:
    """Read back an SR written by :func:`write_dicom_sr`.

    Returns:
        dict with

        - ``measurements``: ``{segment label: {measurement name: (value, UCUM unit)}}``, names as in
          :data:`SR_MEASUREMENTS` (a concept this module does not write is named by its code meaning);
        - ``segment_numbers``: ``{segment label: segment number in the SEG}``;
        - ``segmentation_sop_instance_uid``: the referenced SEG's SOP Instance UID;
        - ``algorithm``: ``{"name", "version", "parameters"}`` of the first measurement.

    Raises:
        ValueError: ``path`` is no TID 1500 measurement report with segment references.
    """
    import highdicom as hd
    import pydicom

    try:
        sr = hd.sr.srread(str(path))
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, AttributeError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable DICOM SR ({e})") from e
    if not isinstance(sr.content, hd.sr.MeasurementReport):
        raise ValueError(f"{path}: the SR is not a TID 1500 measurement report")
    out: dict[str, Any] = {"measurements": {}, "segment_numbers": {}, "segmentation_sop_instance_uid": None}
    out["algorithm"] = {}
    seg_uids = set()
    for group in sr.content.get_volumetric_roi_measurement_groups():
        label = group.tracking_identifier
        reference = group.referenced_segment
        if reference is None or label is None:
            raise ValueError(f"{path}: a measurement group has no segment reference or tracking identifier")
        seg_uids.add(str(reference.referenced_sop_instance_uid))
        (number,) = reference.referenced_segment_numbers
        out["segment_numbers"][label] = int(number)
        values = out["measurements"].setdefault(label, {})
        for m in group.get_measurements():
            sites = m.finding_sites
            name = _measurement_name(m.name, sites[0].value if sites else None)
            values[name] = (int(m.value) if name == "lesion count" else m.value, str(m.unit.value))
            if not out["algorithm"]:
                out["algorithm"] = _algorithm(m)
    if len(seg_uids) > 1:
        raise ValueError(f"{path}: the measurements reference several segmentations ({', '.join(sorted(seg_uids))})")
    out["segmentation_sop_instance_uid"] = seg_uids.pop() if seg_uids else None
    return out
