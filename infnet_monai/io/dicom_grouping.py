"""Grouping the DICOM images of one folder into series and choosing the series to segment.

:func:`infnet_monai.io.cases.discover_cases` reads the headers of a folder's files and hands the images here:
:func:`group_series` splits them by SeriesInstanceUID, image size and orientation, :func:`choose_series` takes the
axial CT series with the most slices (an original acquisition before a derived reformat, MIP or slab average) and
says why every other series and every stray file was left out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from infnet_monai.io.dicom_headers import (
    has_dicm_marker,
    header_floats,
    header_text,
    image_type,
    joined_values,
    modality_from_sop_class,
)

__all__ = [
    "CHEST_BODY_PARTS",
    "DicomSeries",
    "SeriesChoice",
    "choose_series",
    "dicom_like",
    "dropped_files",
    "group_series",
    "series_modality",
]

logger = logging.getLogger(__name__)

CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "TORSO", "TRUNK", "BODY")
"""Words of a ``BodyPartExamined`` value that cover the lungs (``CHEST_ABDOMEN``, ``WHOLEBODY``, ``PARTIALBODY`` ...);
a value with none of them (``HEAD``, ``ABDOMEN``, ``PELVIS``, ``KNEE``, ...) becomes a note on the case."""

_AXIAL_MIN_NZ = 0.9  # |z component| of the slice normal above which a series counts as axial
_POSITION_DECIMALS = 3  # slice positions are compared at 1 um


def series_modality(ds: Dataset) -> str | None:
    """``Modality``, or when it is missing the modality of the SOP class (``None`` when unknown)."""
    modality = header_text(ds, "Modality")
    if modality:
        return modality.upper()
    return modality_from_sop_class(header_text(ds, "SOPClassUID"))


@dataclass
class DicomSeries:
    """The images of one folder that share a SeriesInstanceUID, an image size and an orientation."""

    uid: str | None
    modality: str | None
    orientation: tuple[float, ...] | None
    rows: int
    columns: int
    description: str | None
    slices: list[tuple[Path, Dataset]] = field(default_factory=list)
    image_type: tuple[str, ...] = ()  # the most common ImageType of its images

    @property
    def is_derived(self) -> bool:
        """Whether the series is derived from other images (ImageType DERIVED: a reformat, MIP, average, ...)."""
        return bool(self.image_type) and self.image_type[0] == "DERIVED"

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        n = np.cross(np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:]))
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 1e-6 else None

    @property
    def is_axial(self) -> bool:
        n = self.normal
        return n is not None and abs(float(n[2])) > _AXIAL_MIN_NZ

    def _position(self, ds: Dataset) -> float | None:
        n = self.normal
        ipp = header_floats(ds, "ImagePositionPatient", 3)
        if n is None or ipp is None:
            return None
        return round(float(np.dot(np.asarray(ipp), n)), _POSITION_DECIMALS)

    @property
    def n_slices(self) -> int:
        """Number of unique slice positions (number of files when positions are unknown)."""
        positions = [self._position(ds) for _, ds in self.slices]
        if any(p is None for p in positions):
            return len(self.slices)
        return len(set(positions))

    def sorted_files(self) -> tuple[Path, ...]:
        def key(item: tuple[Path, Dataset]) -> tuple:
            path, ds = item
            position = self._position(ds)
            try:
                instance = int(ds.get("InstanceNumber", 0) or 0)
            except (TypeError, ValueError):
                instance = 0
            return (position if position is not None else 0.0, instance, str(path))

        return tuple(path for path, _ in sorted(self.slices, key=key))

    def describe(self) -> str:
        if self.orientation is None:
            plane = "orientation unknown"
        elif self.normal is None:
            plane = "degenerate ImageOrientationPatient " + "/".join(f"{v:g}" for v in self.orientation)
        elif self.is_axial:
            plane = "axial"
        else:
            plane = "not axial"
        desc = f", '{self.description}'" if self.description else ""
        return (
            f"series {self.uid or '<no SeriesInstanceUID>'} ({self.modality or 'modality unknown'}, {plane}, "
            f"{self.n_slices} slices, {self.columns}x{self.rows}{desc})"
        )


def group_series(slices: Iterable[tuple[Path, Dataset]]) -> list[DicomSeries]:
    """Split the DICOM images of one folder into series (UID, image size and orientation must agree)."""
    groups: dict[tuple, DicomSeries] = {}
    for path, ds in slices:
        uid = header_text(ds, "SeriesInstanceUID")
        orientation = header_floats(ds, "ImageOrientationPatient", 6)
        rounded = None if orientation is None else tuple(round(v, 3) for v in orientation)
        rows, columns = int(ds.Rows), int(ds.Columns)
        key = (uid or "", rows, columns, rounded)
        if key not in groups:
            groups[key] = DicomSeries(uid, None, orientation, rows, columns, header_text(ds, "SeriesDescription"))
        groups[key].slices.append((path, ds))
    series = list(groups.values())
    for s in series:
        modalities = Counter(series_modality(ds) for _, ds in s.slices)
        s.modality = modalities.most_common(1)[0][0]
        s.image_type = Counter(image_type(ds) for _, ds in s.slices).most_common(1)[0][0]
    return sorted(series, key=lambda s: (s.uid or "", s.rows, s.columns, s.orientation or ()))


_DICOM_SUFFIXES = frozenset({"", ".dcm", ".dicom", ".ima", ".img"})
_DROPPED_NAMED = 10  # files of an ignored series named one by one up to this count (a stray slice, not a series)


def dicom_like(path: Path) -> bool:
    """Whether a file that did not read as a DICOM image was probably meant to be one (its name or its marker)."""
    suffix = path.suffix.lower()
    return suffix in _DICOM_SUFFIXES or suffix[1:].isdigit() or has_dicm_marker(path)


def dropped_files(series: list[DicomSeries], chosen: DicomSeries | None, unreadable: Sequence[tuple[Path, str]]) -> list[str]:
    """``"name: reason"`` for every file of the folder left out of ``chosen``: the unreadable ones and the files of
    small ignored series (a stray slice of another size, orientation or series)."""
    out = [f"{path.name}: {reason}" for path, reason in unreadable]
    if chosen is None:
        return out  # the case's error describes every series found
    for s in series:
        if s is chosen or len(s.slices) > _DROPPED_NAMED:
            continue
        if s.uid != chosen.uid:
            why = f"another series ({s.uid or 'no SeriesInstanceUID'})"
        elif (s.rows, s.columns) != (chosen.rows, chosen.columns):
            why = f"another image size ({s.columns}x{s.rows}, the series has {chosen.columns}x{chosen.rows})"
        else:
            why = "another orientation (ImageOrientationPatient)"
        out += [f"{path.name}: {why}" for path, _ in s.slices]
    return out


@dataclass
class SeriesChoice:
    """What :func:`choose_series` found in a folder's DICOM images.

    Attributes:
        series: every series of the folder, sorted by UID, image size and orientation.
        chosen: the series to segment, ``None`` when the folder holds no axial CT series.
        notes: ``"ignored <series>: <reason>"`` for every other series, and a note when ``BodyPartExamined`` is not
            the chest.
        dropped: ``"<file name>: <reason>"`` for the files left out (unreadable ones, stray slices of small series).
        error: why nothing can be segmented (with ``chosen`` ``None``).
    """

    series: list[DicomSeries]
    chosen: DicomSeries | None
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    error: str | None = None


def choose_series(
    folder: Path, slices: list[tuple[Path, Dataset]], unreadable: Sequence[tuple[Path, str]] = ()
) -> SeriesChoice:
    """Group the DICOM images ``slices`` of ``folder`` (at least one) into series and choose the one to segment: the
    axial CT series with the most slices, an original one before a derived one (the module docstring)."""
    series = group_series(slices)
    candidates = [s for s in series if s.modality in (None, "CT") and s.is_axial]
    if not candidates:
        found = "; ".join(s.describe() for s in series)
        error = (
            f"{folder}: no axial CT series among the DICOM files of this folder (found: {found}). "
            "Only axial CT series can be segmented: put the axial CT series in this folder or remove the folder "
            "from the input."
        )
        logger.warning("%s", error)
        return SeriesChoice(
            series, None, [f"ignored {s.describe()}" for s in series], dropped_files(series, None, unreadable), error
        )
    # a reformat, MIP or slab average (ImageType DERIVED) may have more slices than the acquisition it was made from,
    # but not its voxels: the original series is taken when the folder holds one
    originals = [s for s in candidates if not s.is_derived]
    ranked = originals or candidates

    def rank(s: DicomSeries) -> tuple:
        return s.n_slices, s.modality == "CT", len(s.slices)

    chosen = max(ranked, key=rank)
    notes = []
    for s in series:
        if s is chosen:
            continue
        if s.modality not in (None, "CT"):
            reason = "not CT"
        elif not s.is_axial:
            reason = "not axial"
        elif s not in ranked:
            reason = f"derived (ImageType {joined_values(s.image_type)}), and the folder holds an original series"
        elif s.n_slices < chosen.n_slices:
            reason = "fewer slices"
        elif rank(s) < rank(chosen):
            why = "has a Modality tag" if s.modality != chosen.modality else "has more files"
            reason = f"as many slices ({s.n_slices}) as the chosen series, which {why}"
        else:
            reason = (
                f"as many slices ({s.n_slices}) as the chosen series: a tie (e.g. a native and a contrast phase), "
                "broken by SeriesInstanceUID order; keep only the series to segment in the folder to choose it"
            )
            logger.warning(
                "%s: %s and %s tie at %d slices; took the first.", folder, chosen.describe(), s.describe(), s.n_slices
            )
        notes.append(f"ignored {s.describe()}: {reason}")
    if len(series) > 1:
        logger.info(
            "%s: %d series in this folder; chose %s. Ignored: %s",
            folder,
            len(series),
            chosen.describe(),
            "; ".join(notes),
        )
    chosen_ds = chosen.slices[0][1]
    body_part = header_text(chosen_ds, "BodyPartExamined")
    if body_part and not any(word in body_part.upper() for word in CHEST_BODY_PARTS):
        notes.append(f"BodyPartExamined is {body_part!r}, not the chest: check that the scan covers the lungs")
        logger.info("%s: %s", folder, notes[-1])
    dropped = dropped_files(series, chosen, unreadable)
    if dropped:
        logger.warning("%s: %d file(s) left out of the series: %s", folder, len(dropped), "; ".join(dropped[:5]))
    return SeriesChoice(series, chosen, notes, dropped)
