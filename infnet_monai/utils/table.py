"""The cohort's burden table as plain text: what ``infnet-covid segment`` and the bundle's run print at the end.

Import-light (no torch, no MONAI): the command line imports it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

__all__ = ["STATUSES", "TABLE_COLUMNS", "format_burden_table", "outcome_counts"]

STATUSES: tuple[str, ...] = ("ok", "no_lung", "error")
"""A case's outcomes: ``ok`` (measured), ``no_lung`` (read and segmented, but no lungs in it: not a finding, not a
failure) and ``error`` (failed: the row says why; the only status that makes the exit code 1)."""

TABLE_COLUMNS = (
    ("case_id", "case"),
    ("status", "status"),
    ("lung_volume_ml", "lung mL"),
    ("infection_volume_ml", "infection mL"),
    ("infection_percent", "% lung"),
    ("right_lung_infection_percent", "% right"),
    ("left_lung_infection_percent", "% left"),
    ("lesion_count", "lesions"),
    ("largest_lesion_ml", "largest mL"),
    ("slices_with_infection", "slices"),
)


def _fmt(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.1f}"
    return str(value)


def format_burden_table(rows: Sequence[dict]) -> str:
    """Plain-text table of the main burden columns (errors are listed below it)."""
    table = [[title for _, title in TABLE_COLUMNS]]
    table += [[_fmt(row.get(key)) for key, _ in TABLE_COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in table]
    lines += [f"{row.get('status') or 'error'} {row['case_id']}: {row.get('error')}" for row in rows if row.get("status") != "ok"]
    return "\n".join(lines)


def outcome_counts(rows: Sequence[dict]) -> str:
    """``"9 case(s): 7 ok, 1 no_lung, 1 failed"``: the cases by outcome (status ``error`` counted as failed), the one
    wording of the log, the printed summary and ``report.html``; any other status the rows hold follows by name."""
    counts = Counter(str(r.get("status", "") or "error") for r in rows)
    parts = [f"{counts[name]} {'failed' if name == 'error' else name}" for name in STATUSES]
    parts += [f"{counts[name]} {name}" for name in sorted(set(counts) - set(STATUSES))]
    return f"{len(rows)} case(s): " + ", ".join(parts)
