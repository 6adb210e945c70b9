# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Follow-up of a patient's scans: how the infection changed from one scan to the next.

A cohort run gives one row per case (``burden.csv`` rows). :func:`followup_rows` turns them into comparisons, one
per pair of scans: either every patient's consecutive scans (the rows with status ``ok`` and a ``patient_id``, in
scan order: by ``study_date``, scans without a date last, then by ``case_id``), or exactly the pairs a user listed
in a CSV file (:func:`read_pairs_csv`). :func:`write_followup_csv` writes them to ``followup.csv``.

Each comparison gives the change of the infection volume (mL, and relative to the baseline in %), of the infected
percentage of the lung (in percentage points, and relative), of the zone score (0-30: six zones, the upper, middle
and lower thirds of each lung's own height, scored 0-5 each; a zone score, not the lobe-based CT severity score), and
a ``trend``: ``stable`` when the infection volume changed by less than :data:`STABLE_VOLUME_CHANGE_ML` or by less
than :data:`STABLE_RELATIVE_CHANGE_PERCENT` of the baseline, else ``progression`` (more infection) or
``regression`` (less).

A figure that cannot be had (a case without the column, a failed or unknown case, a missing date, a zone score
withheld because the scan cuts the lungs) is ``""``; one that is not defined (a change relative to a baseline of 0) is
``nan``. A withheld zone score is named in the ``note`` with the case's ``zones_withheld`` reason.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infnet_monai.utils.files import atomic_write

__all__ = [
    "FOLLOWUP_FILE",
    "FOLLOWUP_COLUMNS",
    "PAIRS_COLUMNS",
    "STABLE_VOLUME_CHANGE_ML",
    "STABLE_RELATIVE_CHANGE_PERCENT",
    "TRENDS",
    "read_pairs_csv",
    "followup_rows",
    "infection_trend",
    "write_followup_csv",
]

FOLLOWUP_FILE = "followup.csv"

FOLLOWUP_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "baseline_case_id",
    "followup_case_id",
    "baseline_study_date",
    "followup_study_date",
    "days_between",
    "baseline_infection_volume_ml",
    "followup_infection_volume_ml",
    "infection_volume_change_ml",
    "infection_volume_change_relative_percent",
    "baseline_infection_percent",
    "followup_infection_percent",
    "infection_percent_change_points",
    "infection_percent_change_relative_percent",
    "baseline_zone_score",
    "followup_zone_score",
    "zone_score_change",
    "trend",
    "note",
)
"""The columns of ``followup.csv``, in order; every row of :func:`followup_rows` has exactly these keys."""

PAIRS_COLUMNS: tuple[str, str] = ("baseline_case_id", "followup_case_id")
"""The header of a pairs file (:func:`read_pairs_csv`)."""

STABLE_VOLUME_CHANGE_ML = 1.0
"""An infection volume change smaller than this (mL, either way) is ``stable``: below what the masks resolve."""

STABLE_RELATIVE_CHANGE_PERCENT = 10.0
"""An infection volume change smaller than this share of the baseline volume (%, either way) is ``stable``."""

TRENDS: tuple[str, ...] = ("progression", "regression", "stable")

_DATE_DIGITS = re.compile(r"^(\d{4})[-.]?(\d{2})[-.]?(\d{2})$")  # DICOM DA (YYYYMMDD), ISO, old ACR-NEMA YYYY.MM.DD


def read_pairs_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The comparisons a user listed: a CSV file with the header ``baseline_case_id,followup_case_id``.

    One comparison per line; other columns are allowed and ignored, blank lines are skipped, spaces around ids are
    dropped.

    Args:
        path: the CSV file.

    Returns:
        ``(baseline_case_id, followup_case_id)`` per line, in file order.

    Raises:
        ValueError: the file is empty, its header lacks a column, or a line has an empty id or pairs a case with
            itself; the message names the file and the line.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: spreadsheet programs write a BOM
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty; write the header {','.join(PAIRS_COLUMNS)} on line 1")
        header = [h.strip() for h in header]
        missing = [c for c in PAIRS_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: line 1: the header lacks the column(s) {', '.join(missing)} (it has {','.join(header)}); "
                f"write the header {','.join(PAIRS_COLUMNS)}"
            )
        cols = [header.index(c) for c in PAIRS_COLUMNS]
        pairs = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            ids = [record[i].strip() if i < len(record) else "" for i in cols]
            for name, value in zip(PAIRS_COLUMNS, ids):
                if not value:
                    raise ValueError(f"{path}: line {reader.line_num}: empty {name}; give both case ids on each line")
            if ids[0] == ids[1]:
                raise ValueError(
                    f"{path}: line {reader.line_num}: case {ids[0]!r} is paired with itself; a follow-up compares two "
                    "different scans"
                )
            pairs.append((ids[0], ids[1]))
    return pairs


def _value(value: Any) -> float | None:
    """A figure of a row as a float (``nan`` kept: not defined), or ``None`` when the row does not have it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _study_date(row: dict) -> tuple[datetime.date | None, str]:
    """The row's ``study_date`` and a note when it is there but unreadable."""
    raw = str(row.get("study_date") or "").strip()
    if not raw:
        return None, ""
    m = _DATE_DIGITS.match(raw)
    try:
        if m is None:
            raise ValueError(raw)
        return datetime.date(*(int(g) for g in m.groups())), ""
    except ValueError:
        return None, f"study date {raw!r} of {row.get('case_id', '')} unreadable (expected YYYYMMDD)"


def _scan_order(row: dict) -> tuple:
    date, _ = _study_date(row)
    return (date is None, date or datetime.date.min, str(row.get("case_id", "")))


def _change(baseline: float | None, followup: float | None) -> tuple[Any, Any]:
    """``(followup - baseline, change / baseline * 100)``: ``""`` when a figure is missing, ``nan`` relative to 0."""
    if baseline is None or followup is None:
        return "", ""
    change = followup - baseline
    # multiply first: a change of 7 from 100 is then 7.0 %, not 7.000000000000001 %
    relative = change * 100.0 / baseline if baseline != 0 else math.nan
    return change, relative


def infection_trend(baseline_ml: float | None, followup_ml: float | None) -> str:
    """``progression``, ``regression`` or ``stable`` from the infection volumes of two scans (``""``: not known).

    Stable when the change is below :data:`STABLE_VOLUME_CHANGE_ML` mL or below
    :data:`STABLE_RELATIVE_CHANGE_PERCENT` % of the baseline (either way; a change exactly at a threshold is not
    below it); a change from a baseline of 0 is judged by its volume alone.

    Args:
        baseline_ml: infection volume of the earlier scan (mL).
        followup_ml: infection volume of the later scan (mL).
    """
    if baseline_ml is None or followup_ml is None or math.isnan(baseline_ml) or math.isnan(followup_ml):
        return ""
    change = followup_ml - baseline_ml
    if abs(change) < STABLE_VOLUME_CHANGE_ML:
        return "stable"
    if baseline_ml > 0 and abs(change) * 100.0 / baseline_ml < STABLE_RELATIVE_CHANGE_PERCENT:
        return "stable"
    return "progression" if change > 0 else "regression"


def _empty(patient_id: str, baseline_id: str, followup_id: str, note: str) -> dict:
    row = dict.fromkeys(FOLLOWUP_COLUMNS, "")
    row.update(patient_id=patient_id, baseline_case_id=baseline_id, followup_case_id=followup_id, note=note)
    return row


def _compare(baseline: dict, followup: dict) -> dict:
    b_id, f_id = str(baseline.get("case_id", "")), str(followup.get("case_id", ""))
    b_patient, f_patient = (str(r.get("patient_id") or "").strip() for r in (baseline, followup))
    notes = []
    if b_patient != f_patient:
        notes.append(f"different patient IDs: {b_patient or '(none)'} (baseline), {f_patient or '(none)'} (follow-up)")
    row = _empty(b_patient or f_patient, b_id, f_id, "")
    (b_date, b_note), (f_date, f_note) = _study_date(baseline), _study_date(followup)
    notes += [n for n in (b_note, f_note) if n]
    row["baseline_study_date"] = b_date.isoformat() if b_date else ""
    row["followup_study_date"] = f_date.isoformat() if f_date else ""
    if b_date and f_date:
        row["days_between"] = (f_date - b_date).days
        if b_date == f_date:
            notes.append("same study date")
        elif f_date < b_date:
            notes.append("the follow-up scan is dated before the baseline")
    else:
        undated = [case_id for case_id, date in ((b_id, b_date), (f_id, f_date)) if date is None]
        notes.append(f"no study date for {', '.join(undated)}: days between unknown")
    uid = str(baseline.get("series_instance_uid") or "")
    if uid and uid == str(followup.get("series_instance_uid") or ""):
        notes.append("same series instance UID: the same scan twice?")
    for key, change_key, relative_key in (
        ("infection_volume_ml", "infection_volume_change_ml", "infection_volume_change_relative_percent"),
        ("infection_percent", "infection_percent_change_points", "infection_percent_change_relative_percent"),
    ):
        b, f = _value(baseline.get(key)), _value(followup.get(key))
        row[f"baseline_{key}"] = "" if b is None else b
        row[f"followup_{key}"] = "" if f is None else f
        row[change_key], row[relative_key] = _change(b, f)
    b_score, f_score = _value(baseline.get("zone_score")), _value(followup.get("zone_score"))
    b_score, f_score = (None if s is None or math.isnan(s) else int(s) for s in (b_score, f_score))
    row["baseline_zone_score"] = "" if b_score is None else b_score
    row["followup_zone_score"] = "" if f_score is None else f_score
    row["zone_score_change"] = "" if b_score is None or f_score is None else f_score - b_score
    for case_id, r in ((b_id, baseline), (f_id, followup)):
        withheld = str(r.get("zones_withheld") or "").strip()
        if withheld:
            notes.append(f"no zone score for {case_id}: {withheld}")
    volumes = (_value(r.get("infection_volume_ml")) for r in (baseline, followup))
    row["trend"] = infection_trend(*volumes)
    row["note"] = "; ".join(notes)
    return row


def followup_rows(rows: Sequence[dict], pairs: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """The follow-up comparisons of a cohort (see the module docstring for the figures and the trend rule).

    Args:
        rows: the cohort's rows (``burden.csv`` keys; ``study_date`` ``YYYYMMDD`` and ``zone_score`` when present,
            ``None`` or ``""`` when withheld, with the reason in ``zones_withheld``).
        pairs: ``(baseline_case_id, followup_case_id)`` to compare (:func:`read_pairs_csv`). ``None``: every
            patient's consecutive scans, patients in ``patient_id`` order; only rows with status ``ok`` and a
            ``patient_id`` count, and a patient needs two of them.

    Returns:
        One dict per comparison with the keys :data:`FOLLOWUP_COLUMNS`. A pair naming a case that is not in
        ``rows`` or did not succeed gives a row with the ids, a ``note`` saying so and empty figures.
    """
    if pairs is None:
        patients: dict[str, list[dict]] = {}
        for r in rows:
            patient = str(r.get("patient_id") or "").strip()
            if r.get("status") == "ok" and patient:
                patients.setdefault(patient, []).append(r)
        out = []
        for patient in sorted(patients):
            scans = sorted(patients[patient], key=_scan_order)
            out += [_compare(a, b) for a, b in zip(scans, scans[1:])]
        return out
    by_id: dict[str, dict] = {}
    for r in rows:
        by_id.setdefault(str(r.get("case_id", "")), r)
    out = []
    for baseline_id, followup_id in pairs:
        found = [by_id.get(str(baseline_id)), by_id.get(str(followup_id))]
        problems = []
        for role, case_id, r in zip(("baseline", "follow-up"), (baseline_id, followup_id), found):
            if r is None:
                problems.append(f"{role} case {case_id} is not in the cohort")
            elif r.get("status") != "ok":
                problems.append(f"{role} case {case_id} did not succeed (status {r.get('status', '')})")
        if problems:
            patient = next((str(r.get("patient_id") or "").strip() for r in found if r is not None), "")
            out.append(_empty(patient, str(baseline_id), str(followup_id), "; ".join(problems)))
        else:
            out.append(_compare(*found))
    return out


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"  # as burden.csv writes its figures
    return value


def write_followup_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write ``rows`` (:func:`followup_rows`) to ``path`` atomically, columns :data:`FOLLOWUP_COLUMNS`.

    The header is written even when there is no comparison.

    Returns:
        ``path``.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FOLLOWUP_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k, "")) for k in FOLLOWUP_COLUMNS})
    text = buf.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)
