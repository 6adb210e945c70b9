"""Finding the CT cases of a cohort: NIfTI files and DICOM series folders.

:func:`discover_cases` turns an input path into a sorted list of :class:`CTCase` records, one per case:

- a single ``.nii`` / ``.nii.gz`` file is one case;
- a folder that directly contains DICOM files (with or without a ``.dcm`` extension) is one case; when it holds
  several series the axial CT series with the most slices is chosen, the others are listed in ``CTCase.notes``;
- a cohort folder is scanned recursively (symlinks followed, loops avoided) and yields every NIfTI file and every
  DICOM folder found at any depth.

Hidden files and folders (name starting with ``.``), ``__MACOSX`` folders, ``DICOMDIR`` index files and files with
a known non-image extension (``.json``, ``.csv``, ``.txt``, ...) are ignored. Folders passed in ``exclude`` (for
example the pipeline's output folder when it lies inside the input folder) are never scanned.

Case ids are made from the path relative to the scanned folder (parts joined with ``_``) and are safe to use as
file names; see :func:`sanitize_case_id`.

Nothing here reads pixel data: only DICOM headers (``stop_before_pixels``), so discovery is cheap. Pixel data and
geometry are checked when a case is loaded (:func:`infnet_monai.io.volume.load_ct`).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

__all__ = [
    "CTCase",
    "discover_cases",
    "sanitize_case_id",
    "read_dicom_header",
    "instance_numbers_by_z",
    "is_nifti_path",
    "CT_SOP_CLASS_UIDS",
    "MAX_CASE_ID_LENGTH",
]

logger = logging.getLogger(__name__)

MAX_CASE_ID_LENGTH = 100
"""Longest case id returned by :func:`sanitize_case_id` (characters)."""

CT_SOP_CLASS_UIDS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)
"""SOP classes that identify a CT image when the ``Modality`` tag is missing (stripped headers)."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_IGNORED_SUFFIXES = frozenset(
    {
        ".json", ".csv", ".tsv", ".txt", ".md", ".rst", ".log", ".xml", ".html", ".htm", ".pdf", ".yaml", ".yml",
        ".ini", ".cfg", ".toml", ".py", ".sh", ".bat", ".exe", ".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z",
        ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".svg", ".npy", ".npz", ".pt", ".pth", ".ckpt",
        ".h5", ".hdf5", ".pkl", ".mha", ".mhd", ".nrrd", ".raw", ".img", ".hdr", ".xls", ".xlsx", ".doc", ".docx",
        ".db", ".sqlite", ".lock", ".tmp",
    }
)  # fmt: skip
_IGNORED_NAMES = frozenset({"dicomdir", "__macosx", "thumbs.db", "desktop.ini"})
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
_AXIAL_MIN_NZ = 0.9  # |z component| of the slice normal above which a series counts as axial
_POSITION_DECIMALS = 3  # slice positions are compared at 1 um


@dataclass
class CTCase:
    """One CT case found by :func:`discover_cases`.

    Attributes:
        case_id: unique, file-name safe identifier (see :func:`sanitize_case_id`).
        source_path: the NIfTI file, or the folder holding the DICOM series.
        kind: ``"nifti"`` or ``"dicom"``.
        files: the NIfTI file, or the DICOM files of the chosen series sorted by position along the slice normal
            (ascending, i.e. inferior to superior for a usual axial series). Empty when ``error`` is set.
        patient_id: DICOM ``PatientID`` as stored (``None`` if absent or empty, always ``None`` for NIfTI). It is
            untrusted text: never build a path from it without :func:`sanitize_case_id`.
        series_instance_uid: DICOM ``SeriesInstanceUID`` of the chosen series (``None`` if absent/empty or NIfTI).
        notes: human-readable remarks, e.g. alternative series that were ignored.
        error: why the case cannot be loaded (e.g. a folder with only MR series), else ``None``. A cohort runner
            reports it; :func:`infnet_monai.io.volume.load_ct` raises ``CaseError`` with it.
    """

    case_id: str
    source_path: Path
    kind: str
    files: tuple[Path, ...]
    patient_id: str | None = None
    series_instance_uid: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None


def sanitize_case_id(name: str) -> str:
    """Make ``name`` safe to use as a case id and as a file or folder name on any platform.

    Accents are transliterated to ASCII where Unicode allows it (``"Müller"`` -> ``"Muller"``), every character
    outside ``[A-Za-z0-9._-]`` becomes ``_``, leading dots are removed (no hidden names, never ``.`` or ``..``),
    Windows device names get a ``_`` prefix, and the result is cut to :data:`MAX_CASE_ID_LENGTH` characters.

    Args:
        name: any text, e.g. a file name, a relative path or a DICOM PatientID such as ``"../../x"``.

    Returns:
        a non-empty id matching ``[A-Za-z0-9_-][A-Za-z0-9._-]*`` (``"case"`` when nothing usable remains).
    """
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    text = text.lstrip(".")
    if text.split(".")[0].lower() in _WINDOWS_RESERVED:
        text = "_" + text
    text = text[:MAX_CASE_ID_LENGTH]
    return text or "case"


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a NIfTI extension (``.nii`` or ``.nii.gz``, any case)."""
    return Path(path).name.lower().endswith(_NIFTI_SUFFIXES)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_dicom_header(path: str | os.PathLike) -> Dataset | None:
    """Read the header of ``path`` if it is a DICOM image file, else return ``None``.

    A file with the ``DICM`` marker after its 128-byte preamble is parsed with
    ``pydicom.dcmread(stop_before_pixels=True)``. Files without the marker (headerless / ACR-NEMA style) are parsed
    with ``force=True`` as a fallback and accepted only when they hold ``PixelData``, ``Rows`` and ``Columns``.
    Files that are DICOM but not images (``DICOMDIR``, structured reports, ...) give ``None``.

    Args:
        path: file to probe.

    Returns:
        the dataset without pixel data (with deferred pixel data for headerless files), or ``None``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        logger.warning("%s: cannot be read (%s); skipped.", path, e)
        return None
    if len(head) < 132:
        return None
    try:
        if head[128:132] == b"DICM":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        else:
            ds = pydicom.dcmread(path, force=True, defer_size="1 KB")
            if "PixelData" not in ds:
                return None
    except Exception as e:  # InvalidDicomError, OSError, ...; pydicom may raise anything on random bytes
        logger.debug("%s: not readable as DICOM (%s: %s).", path, type(e).__name__, e)
        return None
    try:  # an image has a positive size; a forced parse of garbage can also fail lazily here
        if int(ds.Rows) < 1 or int(ds.Columns) < 1:
            return None
    except Exception:
        return None
    return ds


def instance_numbers_by_z(files: Sequence[str | os.PathLike]) -> dict[float, int]:
    """The InstanceNumber of each image of a DICOM series by its table position: ``{z in mm (rounded to 0.1): n}``
    from ``ImagePositionPatient``; images without either are left out. A viewer finds a slice by these numbers."""
    out: dict[float, int] = {}
    for f in files:
        ds = read_dicom_header(f)
        position, number = (_floats(ds, "ImagePositionPatient", 3), ds.get("InstanceNumber")) if ds is not None else (None, None)
        if position is not None and number is not None:
            try:
                out[round(float(position[2]), 1)] = int(number)
            except (TypeError, ValueError):
                continue
    return out


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword, None)
    except Exception:
        return None
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _floats(ds: Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    try:
        value = ds.get(keyword, None)
        if value is None:
            return None
        out = tuple(float(v) for v in value)
    except Exception:
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _modality(ds: Dataset) -> str | None:
    modality = _text(ds, "Modality")
    if modality:
        return modality.upper()
    if _text(ds, "SOPClassUID") in CT_SOP_CLASS_UIDS:
        return "CT"
    return None


@dataclass
class _Series:
    uid: str | None
    modality: str | None
    orientation: tuple[float, ...] | None
    rows: int
    columns: int
    description: str | None
    slices: list[tuple[Path, Dataset]] = field(default_factory=list)

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
        ipp = _floats(ds, "ImagePositionPatient", 3)
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
        elif self.is_axial:
            plane = "axial"
        else:
            plane = "not axial"
        desc = f", '{self.description}'" if self.description else ""
        return (
            f"series {self.uid or '<no SeriesInstanceUID>'} ({self.modality or 'modality unknown'}, {plane}, "
            f"{self.n_slices} slices, {self.columns}x{self.rows}{desc})"
        )


def _group_series(slices: Iterable[tuple[Path, Dataset]]) -> list[_Series]:
    """Split the DICOM images of one folder into series (UID, image size and orientation must agree)."""
    groups: dict[tuple, _Series] = {}
    for path, ds in slices:
        uid = _text(ds, "SeriesInstanceUID")
        orientation = _floats(ds, "ImageOrientationPatient", 6)
        rounded = None if orientation is None else tuple(round(v, 3) for v in orientation)
        rows, columns = int(ds.Rows), int(ds.Columns)
        key = (uid or "", rows, columns, rounded)
        if key not in groups:
            groups[key] = _Series(uid, None, orientation, rows, columns, _text(ds, "SeriesDescription"))
        groups[key].slices.append((path, ds))
    series = list(groups.values())
    for s in series:
        modalities = Counter(_modality(ds) for _, ds in s.slices)
        s.modality = modalities.most_common(1)[0][0]
    return sorted(series, key=lambda s: (s.uid or "", s.rows, s.columns, s.orientation or ()))


def _dicom_case(folder: Path, slices: list[tuple[Path, Dataset]], case_id: str) -> CTCase:
    """Choose the series of a DICOM folder and build its :class:`CTCase`."""
    series = _group_series(slices)
    candidates = [s for s in series if s.modality in (None, "CT") and s.is_axial]
    first_ds = slices[0][1]
    if not candidates:
        found = "; ".join(s.describe() for s in series)
        error = (
            f"{folder}: no axial CT series among the DICOM files of this folder (found: {found}). "
            "Only axial CT series can be segmented: put the axial CT series in this folder or remove the folder "
            "from the input."
        )
        logger.warning("%s", error)
        return CTCase(
            case_id=case_id,
            source_path=folder,
            kind="dicom",
            files=(),
            patient_id=_text(first_ds, "PatientID"),
            series_instance_uid=None,
            notes=tuple(f"ignored {s.describe()}" for s in series),
            error=error,
        )
    chosen = max(candidates, key=lambda s: (s.n_slices, s.modality == "CT", len(s.slices)))
    notes = []
    for s in series:
        if s is chosen:
            continue
        if s.modality not in (None, "CT"):
            reason = "not CT"
        elif not s.is_axial:
            reason = "not axial"
        else:
            reason = "fewer slices"
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
    return CTCase(
        case_id=case_id,
        source_path=folder,
        kind="dicom",
        files=chosen.sorted_files(),
        patient_id=_text(chosen_ds, "PatientID"),
        series_instance_uid=chosen.uid,
        notes=tuple(notes),
    )


def _is_excluded(path: Path, excluded: Sequence[Path]) -> bool:
    return any(path == ex or ex in path.parents for ex in excluded)


def _candidate_file(name: str) -> bool:
    lower = name.lower()
    if name.startswith(".") or lower in _IGNORED_NAMES:
        return False
    if lower.endswith(_NIFTI_SUFFIXES):
        return True
    return Path(lower).suffix not in _IGNORED_SUFFIXES


def _unique_ids(raw_ids: Sequence[str]) -> list[str]:
    """Sanitise ids and make them unique (case-insensitively) with ``-2``, ``-3``, ... suffixes."""
    taken: set[str] = set()
    out = []
    for raw in raw_ids:
        base = sanitize_case_id(raw)
        candidate, n = base, 1
        while candidate.casefold() in taken:
            n += 1
            suffix = f"-{n}"
            candidate = base[: MAX_CASE_ID_LENGTH - len(suffix)] + suffix
        taken.add(candidate.casefold())
        out.append(candidate)
    return out


def discover_cases(input_path: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[CTCase]:
    """Find the CT cases under ``input_path``.

    Args:
        input_path: a ``.nii``/``.nii.gz`` file, a DICOM series folder, or a cohort folder holding NIfTI files
            and/or DICOM series folders at any depth.
        exclude: folders never scanned (e.g. the output folder when it lies inside ``input_path``).

    Returns:
        the cases sorted by their path relative to ``input_path``. A DICOM folder without a usable series is
        returned with ``error`` set rather than dropped, so that it can be reported. An empty list (with a
        warning logged) when nothing was found.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        ValueError: ``input_path`` is a file that is not NIfTI (e.g. one DICOM file instead of its folder).
    """
    root = Path(input_path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder. Check the input path.")
    if root.is_file():
        if is_nifti_path(root):
            return [CTCase(sanitize_case_id(_nifti_stem(root)), root, "nifti", (root,))]
        if read_dicom_header(root) is not None:
            raise ValueError(
                f"{root}: is a single DICOM file. Pass the folder that holds the whole series (or a cohort folder)."
            )
        raise ValueError(
            f"{root}: not a NIfTI file (.nii/.nii.gz) nor a folder. Pass a NIfTI file, a DICOM series folder or a "
            "cohort folder."
        )

    excluded = [Path(p).expanduser().resolve() for p in exclude]
    found: list[tuple[tuple[str, ...], str, Path, list[tuple[Path, Dataset]] | None]] = []
    visited: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        real = folder.resolve()
        if real in visited or _is_excluded(real, excluded):
            dirnames[:] = []
            if real in visited:
                logger.debug("%s: already scanned (symlink loop or duplicate link); skipped.", folder)
            else:
                logger.info("%s: excluded from the scan.", folder)
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in _IGNORED_NAMES)
        rel_parts = folder.relative_to(root).parts
        dicom_slices: list[tuple[Path, Dataset]] = []
        for name in sorted(filenames):
            if not _candidate_file(name):
                continue
            path = folder / name
            if not path.is_file():
                continue
            if is_nifti_path(name):
                found.append((rel_parts + (_nifti_stem(path),), "nifti", path, None))
                continue
            ds = read_dicom_header(path)
            if ds is not None:
                dicom_slices.append((path, ds))
        if dicom_slices:
            found.append((rel_parts or (root.resolve().name,), "dicom", folder, dicom_slices))

    found.sort(key=lambda item: (item[0], item[1]))
    ids = _unique_ids(["_".join(parts) for parts, _, _, _ in found])
    cases = []
    for case_id, (_, kind, path, slices) in zip(ids, found):
        if kind == "nifti":
            cases.append(CTCase(case_id, path, "nifti", (path,)))
        else:
            assert slices is not None
            cases.append(_dicom_case(path, slices, case_id))
    if not cases:
        logger.warning("%s: no NIfTI file and no DICOM series found.", root)
    else:
        logger.info("%s: %d case(s) found.", root, len(cases))
    return cases
