"""The cohort table of a DICOM node's OUTPUT, kept across cases and restarts.

``infnet-covid segment`` rewrites ``burden.csv`` with the rows of its own run. The node segments one series at a time,
over days, and restarts: its table must hold every case it ever wrote to OUTPUT. :class:`NodeTable` keeps those rows
in ``OUTPUT/.infnet-covid.node-rows.json`` (one row per case id; a series segmented again replaces its row) and writes
``burden.csv``, ``followup.csv`` (when a patient has several scans) and ``report.html`` from all of them after every
case, each atomically, with the same writers as ``segment``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infnet_monai.io.outputs import CSV_FILE, write_csv_atomic, write_text_atomic
from infnet_monai.stats.followup import FOLLOWUP_FILE, followup_rows, write_followup_csv
from infnet_monai.utils.table import outcome_counts
from infnet_monai.visualize.report import write_report

__all__ = ["NODE_ROWS_FILE", "NodeTable"]

logger = logging.getLogger(__name__)

NODE_ROWS_FILE = ".infnet-covid.node-rows.json"
"""In OUTPUT: every row the node wrote, by case id, in the order the cases were first seen (NaN kept as JSON's
``NaN``, which Python reads back)."""


def _plain(value: Any) -> Any:
    """A numpy scalar or array, a path or a set as what JSON can hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


class NodeTable:
    """Every case a node wrote into ``output_dir``, and the cohort files made from them.

    Args:
        output_dir: the node's OUTPUT (held with its :class:`~infnet_monai.utils.preflight.OutputLock`).
        provenance: what ``report.html`` lists under its provenance (the runner's).
    """

    def __init__(self, output_dir: str | os.PathLike, provenance: dict | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.provenance = dict(provenance or {})
        self.rows: dict[str, dict] = {}

    @property
    def path(self) -> Path:
        return self.output_dir / NODE_ROWS_FILE

    def load(self) -> "NodeTable":
        """Read the rows of earlier runs (none when the file is missing; an unreadable file is named in the log and
        set aside as ``.bad``, not overwritten silently)."""
        if not self.path.is_file():
            return self
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows.values()):
                raise ValueError("not an object of rows by case id")
        except (OSError, ValueError) as e:
            bad = self.path.with_name(self.path.name + ".bad")
            logger.error("%s: unreadable (%s); moved to %s, the table starts again from the next case", self.path, e, bad)
            os.replace(self.path, bad)
            return self
        self.rows = rows
        return self

    def record(self, row: dict, report: bool = True) -> None:
        """Add (or replace) the row of ``row["case_id"]``, store the rows, and rewrite ``burden.csv`` (and, with
        ``report``, ``followup.csv`` and ``report.html``)."""
        self.rows[str(row["case_id"])] = json.loads(json.dumps(row, default=_plain))  # as it reads back after a restart
        write_text_atomic(json.dumps(self.rows), self.path)
        self.write(report)

    def write(self, report: bool = True) -> None:
        """Write ``burden.csv`` from every row (and, with ``report``, ``followup.csv`` and ``report.html``)."""
        rows = self.all_rows()
        write_csv_atomic(rows, self.output_dir / CSV_FILE)
        if not report:
            return
        followup = followup_rows(rows)
        if followup:
            write_followup_csv(followup, self.output_dir / FOLLOWUP_FILE)
        try:
            write_report(rows, self.output_dir, self.provenance, followup or None)
        except OSError as e:
            logger.warning("report.html not written: %s", e)

    def all_rows(self) -> list[dict]:
        return list(self.rows.values())

    def counts(self, case_ids: Sequence[str] | None = None) -> str:
        """``"N case(s): a ok, b no_lung, c failed"`` over ``case_ids`` (default: every case)."""
        rows = self.all_rows() if case_ids is None else [self.rows[c] for c in case_ids if c in self.rows]
        return outcome_counts(rows)
