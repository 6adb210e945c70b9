"""Finding the CT cases of a cohort: NIfTI files and DICOM series folders.

:func:`discover_cases` turns an input path into a sorted list of :class:`CTCase` records, one per case:

- a single ``.nii`` / ``.nii.gz`` file is one case;
- a folder that directly contains DICOM files (with or without a ``.dcm`` extension) is one case; when it holds
  several series the axial CT series with the most slices is chosen, the others are listed in ``CTCase.notes``;
- a cohort folder is scanned recursively (symlinks followed, loops avoided) and yields every NIfTI file and every
  DICOM folder found at any depth.

Hidden files and folders (name starting with ``.``), ``__MACOSX`` folders, ``DICOMDIR`` index files and files with
a known non-image extension (``.json``, ``.csv``, ``.txt``, ...) are ignored. DICOM files that are no part of a CT
volume are passed over with their reason (``skipped``): localizers (ImageType LOCALIZER, SCOUT, TOPOGRAM), secondary
captures and screenshots, radiation dose reports and other objects without an image. Only CT is taken: without a
``Modality`` tag the SOP class tells the modality (an MR image is not CT). A derived series (ImageType DERIVED: a
reformat, MIP, slab average) is chosen only when the folder holds no original one; a ``BodyPartExamined`` other than
the chest (:data:`~infnet_monai.io.dicom_grouping.CHEST_BODY_PARTS`) becomes a note. Folders passed in ``exclude`` (for
example the pipeline's output folder when it lies inside the input folder) are never scanned.

Case ids are made from the path relative to the scanned folder (parts joined with ``_``) and are safe to use as
file names; see :func:`sanitize_case_id`.

Nothing here reads pixel data: only DICOM headers (``stop_before_pixels``), so discovery is cheap; a deflated header
is inflated within a bound (:func:`infnet_monai.io.budget.read_dicom`), never whole. Pixel data and
geometry are checked when a case is loaded (:func:`infnet_monai.io.volume.load_ct`), from the header fields that
discovery read: each file's header is parsed once per run (:class:`~infnet_monai.io.dicom_headers.SliceHeader`,
carried in ``CTCase.headers``). Reading one file's header is :mod:`infnet_monai.io.dicom_headers`, grouping a
folder's images into series and choosing one :mod:`infnet_monai.io.dicom_grouping`; this module walks the input and
builds the cases.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from infnet_monai.io.dicom_headers import (
    PassOver,
    SliceHeader,
    header_text,
    not_a_ct_volume,
    probe_dicom_file,
    read_slice_header,
    slice_header,
)
from infnet_monai.io.dicom_grouping import choose_series, dicom_like
from infnet_monai.utils.deprecation import moved_names

__all__ = [
    "CTCase",
    "discover_cases",
    "sanitize_case_id",
    "current_headers",
    "instance_numbers_by_z",
    "is_nifti_path",
    "MAX_CASE_ID_LENGTH",
]

logger = logging.getLogger(__name__)

MOVED_NAMES = {
    **{
        name: f"infnet_monai.io.dicom_headers.{name}"
        for name in (
            "CT_SOP_CLASS_UIDS", "HeaderError", "field_value", "pixel_data_fields", "read_dicom_header",
            "has_dicm_marker", "modality_from_sop_class",
        )
    },
    "CHEST_BODY_PARTS": "infnet_monai.io.dicom_grouping.CHEST_BODY_PARTS",
}  # fmt: skip
"""Names that this module held in 0.10.0 and 0.11.0 -> where they are now (:class:`SliceHeader` and
:func:`read_slice_header`, which discovery uses, are still found here; their home is
:mod:`~infnet_monai.io.dicom_headers`). Series grouping lives in :mod:`~infnet_monai.io.dicom_grouping`."""

__getattr__ = moved_names(__name__, MOVED_NAMES)

MAX_CASE_ID_LENGTH = 100
"""Longest case id returned by :func:`sanitize_case_id` (characters)."""

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
_IGNORED_NAMES = frozenset(
    {"dicomdir", "__macosx", "thumbs.db", "desktop.ini", "readme", "license", "licence", "copying", "notice", "authors",
     "changelog", "changes", "makefile"}
)  # fmt: skip
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)

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
        dropped: files of the folder left out of the chosen series, each ``"name: reason"`` (unreadable, empty, or
            of another series, size or orientation); a case that then fails names them, since a dropped slice
            is the likely cause of a gap.
        study_date: DICOM ``StudyDate`` (``YYYYMMDD``) of the chosen series, ``None`` if absent or NIfTI; orders a
            patient's scans for the follow-up table.
        error: why the case cannot be loaded (e.g. a folder with only MR series), else ``None``. A cohort runner
            reports it; :func:`infnet_monai.io.volume.load_ct` raises ``CaseError`` with it.
        headers: for a DICOM case from :func:`discover_cases`, the header fields of each file of ``files`` (same
            order) that discovery read, so that the loader does not parse the headers again; empty otherwise (the
            loader then reads them). Not part of the case's equality or repr.
    """

    case_id: str
    source_path: Path
    kind: str
    files: tuple[Path, ...]
    patient_id: str | None = None
    series_instance_uid: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None
    dropped: tuple[str, ...] = field(default_factory=tuple)
    study_date: str | None = None
    headers: tuple[SliceHeader, ...] = field(default_factory=tuple, repr=False, compare=False)


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

def instance_numbers_by_z(files: Sequence[str | os.PathLike] | CTCase) -> dict[float, int]:
    """The InstanceNumber of each image of a DICOM series by its table position: ``{z in mm (rounded to 0.1): n}``
    from ``ImagePositionPatient``; images without either are left out. A viewer finds a slice by these numbers.

    Args:
        files: the series' files, or a :class:`CTCase`, whose headers read at discovery are used for the files that
            have not changed since (the others are read again).
    """
    out: dict[float, int] = {}
    for header in current_headers(files) if isinstance(files, CTCase) else map(read_slice_header, files):
        instance = header.field("instance") if header is not None else None
        if instance is not None:
            out[instance[0]] = instance[1]
    return out


def current_headers(case: CTCase) -> list[SliceHeader | None]:
    """The :class:`SliceHeader` of each file of ``case``: the one discovery read while the file is unchanged since
    (same size and modification time), else read again (``None`` for a file that is no longer a DICOM image)."""
    carried = {header.path: header for header in case.headers}
    out = []
    for path in case.files:
        header = carried.get(Path(path))
        out.append(header if header is not None and header.is_current() else read_slice_header(path))
    return out

def _dicom_case(
    folder: Path,
    slices: list[tuple[Path, Dataset]],
    case_id: str,
    unreadable: Sequence[tuple[Path, str]] = (),
    read_at: dict[Path, tuple[tuple[int, int], int | None]] | None = None,
) -> CTCase:
    """Choose the series of a DICOM folder (:func:`~infnet_monai.io.dicom_grouping.choose_series`) and build its
    :class:`CTCase`; ``read_at`` gives each file's stamp and pixel data offset (see :class:`SliceHeader`) for the
    headers the case carries (none without it)."""
    if not slices:
        named = "; ".join(f"{p.name}: {r}" for p, r in unreadable[:5]) + ("; ..." if len(unreadable) > 5 else "")
        return CTCase(
            case_id=case_id, source_path=folder, kind="dicom", files=(),
            error=f"{folder}: no readable DICOM image among its {len(unreadable)} file(s) ({named}). The files are "
            "damaged or not DICOM: export the series again.",
            dropped=tuple(f"{p.name}: {r}" for p, r in unreadable),
        )  # fmt: skip
    choice = choose_series(folder, slices, unreadable)
    chosen = choice.chosen
    if chosen is None:
        return CTCase(
            case_id=case_id, source_path=folder, kind="dicom", files=(),
            patient_id=header_text(slices[0][1], "PatientID"), series_instance_uid=None, notes=tuple(choice.notes),
            error=choice.error, dropped=tuple(choice.dropped),
        )  # fmt: skip
    chosen_ds = chosen.slices[0][1]
    files = chosen.sorted_files()
    headers: tuple[SliceHeader, ...] = ()
    if read_at is not None and all(path in read_at for path in files):
        datasets = dict(chosen.slices)
        headers = tuple(slice_header(path, datasets[path], *read_at[path]) for path in files)
    return CTCase(
        case_id=case_id,
        source_path=folder,
        kind="dicom",
        files=files,
        headers=headers,
        patient_id=header_text(chosen_ds, "PatientID"),
        series_instance_uid=chosen.uid,
        notes=tuple(choice.notes),
        dropped=tuple(choice.dropped),
        study_date=header_text(chosen_ds, "StudyDate"),
    )

OUTPUT_LOCK_NAME = ".infnet-covid.lock"
"""The lock file every infnet-covid output folder holds (:data:`infnet_monai.pipeline.runner.LOCK_FILE`)."""


def _is_output_folder(folder: Path, filenames: Sequence[str]) -> bool:
    """Whether ``folder`` holds outputs of a run: an output folder (its lock file) or one case's outputs."""
    names = set(filenames)
    return OUTPUT_LOCK_NAME in names or {"stats.json", "infection.nii.gz"} <= names


def _not_regular(path: Path) -> str:
    """What ``path``, which is not a regular file, is: a broken link, a device, a FIFO, a socket, ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken link" if path.is_symlink() else "gone (deleted while the folder was scanned)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a special file"
    return f"{kind}{' (through a link)' if path.is_symlink() else ''}, not a regular file"


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


def discover_cases(
    input_path: str | os.PathLike,
    exclude: Sequence[str | os.PathLike] = (),
    skipped: list[tuple[Path, str]] | None = None,
) -> list[CTCase]:
    """Find the CT cases under ``input_path``.

    Args:
        input_path: a ``.nii``/``.nii.gz`` file, a DICOM series folder, or a cohort folder holding NIfTI files
            and/or DICOM series folders at any depth.
        exclude: folders never scanned (e.g. the output folder when it lies inside ``input_path``). A folder
            holding the lock file of an infnet-covid output folder, or a case folder with ``stats.json`` beside
            ``infection.nii.gz``, is never scanned either: earlier outputs are not inputs.
        skipped: when given, gets ``(path, reason)`` for every path passed over (hidden files and folders, broken
            links, devices and FIFOs, unreadable folders, earlier outputs, and DICOM files that are no part of a CT
            volume: localizers, secondary captures and screenshots, dose reports and other objects without an image);
            they are also logged.

    Returns:
        the cases sorted by their path relative to ``input_path``. A DICOM folder without a usable series is
        returned with ``error`` set rather than dropped, so that it can be reported. An empty list (with a
        warning logged) when nothing was found.

    Raises:
        FileNotFoundError: ``input_path`` does not exist (or is a broken link).
        ValueError: ``input_path`` is a file that is not NIfTI (e.g. one DICOM file instead of its folder), or
            neither a regular file nor a folder (a device, a FIFO).
    """
    root = Path(input_path).expanduser()
    if not root.exists():
        if root.is_symlink():
            raise FileNotFoundError(f"{root}: a broken link (it points to {os.readlink(root)}). Check the input path.")
        raise FileNotFoundError(f"{root}: no such file or folder. Check the input path.")
    if not root.is_file() and not root.is_dir():
        raise ValueError(
            f"{root}: {_not_regular(root)} nor a folder. Pass a NIfTI file, a DICOM series folder or a cohort folder."
        )
    if root.is_file():
        if is_nifti_path(root):
            return [CTCase(sanitize_case_id(_nifti_stem(root)), root, "nifti", (root,))]
        ds, reason, _, _ = probe_dicom_file(root)
        if ds is not None:
            raise ValueError(
                f"{root}: is a single DICOM file. Pass the folder that holds the whole series (or a cohort folder)."
            )
        if isinstance(reason, PassOver):
            raise ValueError(f"{root}: {reason}. Pass a NIfTI file, a DICOM series folder or a cohort folder.")
        raise ValueError(
            f"{root}: not a NIfTI file (.nii/.nii.gz) nor a folder. Pass a NIfTI file, a DICOM series folder or a "
            "cohort folder."
        )

    excluded = [Path(p).expanduser().resolve() for p in exclude]
    passed_over: list[tuple[Path, str]] = []
    found: list[tuple[tuple[str, ...], str, Path, list[tuple[Path, Dataset]] | None, list[tuple[Path, str]]]] = []
    visited: set[Path] = set()
    read_at: dict[Path, tuple[tuple[int, int], int | None]] = {}

    def unreadable_folder(e: OSError) -> None:
        passed_over.append((Path(e.filename or "?"), f"unreadable folder ({e.strerror or e})"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable_folder):
        folder = Path(dirpath)
        real = folder.resolve()
        if real in visited or _is_excluded(real, excluded) or _is_output_folder(folder, filenames):
            dirnames[:] = []
            if real in visited:
                logger.debug("%s: already scanned (symlink loop or duplicate link); skipped.", folder)
            elif _is_excluded(real, excluded):
                logger.info("%s: excluded from the scan.", folder)
            else:
                passed_over.append((folder, "outputs of an earlier infnet-covid run, not CT input"))
            continue
        visited.add(real)
        passed_over += [(folder / d, "hidden folder") for d in sorted(dirnames) if d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in _IGNORED_NAMES)
        rel_parts = folder.relative_to(root).parts
        dicom_slices: list[tuple[Path, Dataset]] = []
        unreadable: list[tuple[Path, str]] = []
        has_nifti = False
        for name in sorted(filenames):
            path = folder / name
            if name.startswith(".") and not name.startswith((".infnet-covid", ".write-test")):
                passed_over.append((path, "hidden file"))
                continue
            if not _candidate_file(name):
                continue
            if not path.is_file():
                passed_over.append((path, _not_regular(path)))
                continue
            if is_nifti_path(name):
                has_nifti = True
                found.append((rel_parts + (_nifti_stem(path),), "nifti", path, None, []))
                continue
            ds, reason, stamp, pixel_offset = probe_dicom_file(path)
            if ds is not None and stamp is not None:  # a stamp whenever the file could be opened
                reason = not_a_ct_volume(ds)
                if reason:
                    passed_over.append((path, reason))
                    continue
                dicom_slices.append((path, ds))
                read_at[path] = (stamp, pixel_offset)
            elif isinstance(reason, PassOver):
                passed_over.append((path, reason))
            elif dicom_like(path) or path.stat().st_size == 0:
                unreadable.append((path, reason))
            else:
                passed_over.append((path, reason))
        if dicom_slices or (unreadable and not has_nifti):
            found.append((rel_parts or (root.resolve().name,), "dicom", folder, dicom_slices, unreadable))
        else:
            passed_over += unreadable
    for path, reason in passed_over:
        logger.info("%s: skipped (%s).", path, reason)
    if passed_over:
        logger.warning(
            "%d path(s) under %s were passed over (hidden, broken links, unreadable, not CT); the log lists them "
            "at INFO level (-v), and --strict makes each an error row.", len(passed_over), root,
        )
    if skipped is not None:
        skipped.extend(passed_over)

    found.sort(key=lambda item: (item[0], item[1]))
    ids = _unique_ids(["_".join(parts) for parts, _, _, _, _ in found])
    cases = []
    for case_id, (_, kind, path, slices, unreadable) in zip(ids, found):
        if kind == "nifti":
            cases.append(CTCase(case_id, path, "nifti", (path,)))
        else:
            assert slices is not None
            cases.append(_dicom_case(path, slices, case_id, unreadable, read_at))
    if not cases:
        logger.warning("%s: no NIfTI file and no DICOM series found.", root)
    else:
        logger.info("%s: %d case(s) found.", root, len(cases))
    return cases
