"""A cohort: :class:`CohortRunner` finds the cases, skips the finished ones, shares them out among torchrun ranks,
segments each with a :class:`~infnet_monai.pipeline.predictor.VolumePredictor`, writes it with a
:class:`~infnet_monai.pipeline.writer.CaseWriter`, and keeps ``burden.csv`` and ``report.html``.

A failing case never stops the run: its row says ``status`` error with a message that names the file.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist
from filelock import FileLock, Timeout

from infnet_monai.io.cases import CTCase, discover_cases
from infnet_monai.io.outputs import CSV_FILE, case_fields, check_output_dir, completed_row, remove_stale_parts, write_csv_atomic
from infnet_monai.io.volume import CaseError
from infnet_monai.pipeline.distributed import case_bytes, dist_env, gather_rows, shard_by_size, start
from infnet_monai.pipeline.predictor import VolumePredictor
from infnet_monai.pipeline.writer import CaseWriter
from infnet_monai.utils.validation import check_flag
from infnet_monai.utils.table import format_burden_table
from infnet_monai.visualize.report import REPORT_FILE, write_report

__all__ = ["LOCK_FILE", "CohortReport", "CohortRunner", "OutputLockedError", "case_error_message"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".infnet-covid.lock"
"""Held in OUTPUT while a run writes there (by rank 0 of a torchrun job): a second run on the same OUTPUT is refused
instead of redoing every case and racing the first over its files. The operating system releases it when the process
ends, killed or not."""
MAX_ERROR_CHARS = 600
"""An error cell of ``burden.csv`` holds one line of at most this many characters (the log has the rest)."""


class OutputLockedError(RuntimeError):
    """Another run is writing to the same output folder."""


@dataclass
class CohortReport:
    """Outcome of a cohort run: one row per case, in input order."""

    rows: list[dict] = field(default_factory=list)
    output_dir: Path | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") != "ok"]

    @property
    def exit_code(self) -> int:
        """0 when every case succeeded, 1 when any failed."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        """The burden table (errors below it) and where the table and the report are: what the command line and the
        bundle's run print at the end."""
        lines = [format_burden_table(self.rows)]
        if self.output_dir is not None:
            lines += [f"table: {self.output_dir / CSV_FILE}", f"report: {self.output_dir / REPORT_FILE}"]
        return "\n".join(lines)


def _root_cause(e: BaseException) -> BaseException:
    """The exception a MONAI ``Compose`` wrapped (``RuntimeError("applying transform ...")``), else ``e``."""
    while isinstance(e, RuntimeError) and str(e).startswith("applying transform") and e.__cause__ is not None:
        e = e.__cause__
    return e


def case_error_message(case: CTCase, raised: BaseException, output_dir: Path) -> str:
    """One line (at most :data:`MAX_ERROR_CHARS`) for the row of a case that failed with ``raised``, naming the
    file."""
    text = " ".join(_case_error_text(case, raised, output_dir).split())  # a CSV cell on one line
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _case_error_text(case: CTCase, raised: BaseException, output_dir: Path) -> str:
    e = _root_cause(raised)
    if isinstance(e, OSError) and getattr(e, "errno", None) == errno.ENOSPC:
        return f"no space left on the device while writing outputs under '{output_dir}'; free space and rerun with --resume."
    if isinstance(e, CaseError):
        return str(e)  # CaseError messages already name the file
    if isinstance(e, OSError):
        return f"{case.source_path}: {type(e).__name__}: {e}"
    return f"{case.source_path}: unexpected {type(e).__name__}: {e}"  # anything unexpected gets the case's path in front


class CohortRunner:
    """Segment every case under a folder and keep the cohort's table.

    Args:
        predictor: maps a case to its :class:`~infnet_monai.pipeline.predictor.CaseResult`.
        writer: writes a case's files and ``stats.json``.
        settings: fields written in every finished case's row (the model, the threshold, the window, ...).
        provenance: what ``report.html`` lists under its provenance (version, model, device, command line, ...).
    """

    def __init__(
        self,
        predictor: VolumePredictor,
        writer: CaseWriter,
        settings: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.predictor = predictor
        self.writer = writer
        self.settings = dict(settings or {})
        self.provenance = dict(provenance or {})

    @property
    def with_classes(self) -> bool:
        """Whether the cases get the GGO / consolidation map (``--resume`` redoes a case stored without it)."""
        return getattr(self.predictor.network_fn, "classes", None) is not None

    def run(
        self,
        input_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        resume: bool = False,
        progress: Callable[[Iterable], Iterable] | None = None,
        slice_progress: Callable[[str, int, int], None] | None = None,
    ) -> CohortReport:
        """Segment every case under ``input_path`` (a NIfTI file, a DICOM series folder, or a cohort folder of both)
        into ``output_dir``.

        Args:
            input_path: file or folder.
            output_dir: output folder (may lie inside the input folder; it is then not scanned).
            resume: skip cases whose outputs are complete.
            progress: wraps the iterable of this process's cases (e.g. ``tqdm``).
            slice_progress: called as ``(case_id, slices done, slices with lung)`` after every batch of slices.

        Returns:
            :class:`CohortReport`; ``report.exit_code`` is 0 when all cases succeeded, else 1.
        """
        input_path, output_dir, resume = Path(input_path), Path(output_dir), check_flag(resume, "resume")
        if not input_path.exists():
            raise FileNotFoundError(f"input '{input_path}' does not exist.")
        check_output_dir(input_path, output_dir)
        cases = discover_cases(input_path, exclude=[output_dir])
        if not cases:
            raise FileNotFoundError(f"no NIfTI (.nii, .nii.gz) or DICOM CT found under '{input_path}'.")
        env = dist_env()
        joined = start(env, self.predictor.device) if env is not None else False
        lock = None
        try:
            lock = self._lock(output_dir, env)
            remove_stale_parts(output_dir, (CSV_FILE,))  # only now: another run's temporary files are its own
            return self._run_cases(cases, output_dir, resume, progress, slice_progress, env)
        finally:
            if lock is not None:
                lock.release()
            if joined:
                dist.destroy_process_group()

    @staticmethod
    def _lock(output_dir: Path, env) -> FileLock | None:
        """The output folder's lock, taken by the only process or by rank 0 (its ranks share the folder); every rank
        of a refused job raises :class:`OutputLockedError`."""
        lock, refusal = None, ""
        if env is None or env.rank == 0:
            lock = FileLock(str(output_dir / LOCK_FILE))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                lock, refusal = None, (
                    f"another infnet-covid run is writing to '{output_dir}' (it holds {output_dir / LOCK_FILE}); wait "
                    "for it to finish, or choose another output folder."
                )
        if env is not None:
            shared = [refusal]
            dist.broadcast_object_list(shared, src=0)
            refusal = shared[0]
        if refusal:
            raise OutputLockedError(refusal)
        return lock

    def _run_cases(self, cases, output_dir: Path, resume, progress, slice_progress, env) -> CohortReport:
        """This rank's share of ``cases`` (all of them in one process), then the cohort's table and report."""
        mine = shard_by_size([case_bytes(c.files) for c in cases], env.world_size)[env.rank] if env else range(len(cases))
        rank = (env.rank, env.world_size) if env else (0, 1)
        report = CohortReport(output_dir=output_dir)
        rows: dict[int, dict] = {}
        index = {id(cases[i]): i for i in mine}
        todo = [cases[i] for i in mine]
        for case in progress(todo) if progress is not None else todo:  # the bar itself drives the loop: it ends at N/N
            i = index[id(case)]
            rows[i] = self._one_case(case, output_dir, resume, slice_progress, rank)
            if env is None:  # one process: the table grows case by case; with several, rank 0 writes it at the end
                report.rows = [rows[j] for j in sorted(rows)]
                write_csv_atomic(report.rows, output_dir / CSV_FILE)
        report.rows = gather_rows(rows, len(cases)) if env else [rows[j] for j in range(len(cases))]
        if env is None or env.rank == 0:
            write_csv_atomic(report.rows, output_dir / CSV_FILE)
            self._write_report(report)
        if env is not None:
            dist.barrier()
        n_bad = len(report.failed)
        logger.info("%d case(s): %d ok, %d failed; table %s", len(cases), len(cases) - n_bad, n_bad, output_dir / CSV_FILE)
        return report

    def _one_case(self, case: CTCase, output_dir: Path, resume, slice_progress, rank: tuple[int, int]) -> dict:
        if resume:
            row = completed_row(case, output_dir, classes=self.with_classes, probability=self.writer.save_probability)
            if row is not None:
                logger.info("%s: already complete, skipped (--resume)", case.case_id)
                self.writer.write_resumed(case, output_dir / case.case_id, row)
                return row
        progress = (lambda d, t, c=case.case_id: slice_progress(c, d, t)) if slice_progress else None
        try:
            row = self.segment_case(case, output_dir, progress, rank)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one bad case (e.g. nibabel's HeaderDataError) never stops the run
            message = case_error_message(case, e, output_dir)
            logger.error("%s (%s): %s", case.case_id, case.source_path, message)
            row = case_fields(case)
            row.update({"status": "error", "error": message})
            return row
        logger.info("%s: done in %.1f s (%d slices inferred)", case.case_id, row["seconds"], row.get("slices_inferred", 0))
        return row

    def segment_case(
        self,
        case: CTCase,
        output_dir: str | os.PathLike,
        progress: Callable[[int, int], None] | None = None,
        rank: tuple[int, int] = (0, 1),
    ) -> dict:
        """Segment and write one case under ``output_dir/<case_id>/``; return its row.

        Raises:
            CaseError: the input is unusable (the message names the file and the problem).
        """
        started = time.time()
        if case.error:
            raise CaseError(case.error)
        result = self.predictor(case, keep_probability=self.writer.save_probability, progress=progress)
        row = case_fields(case)
        row.update(result.row)
        row["status"], row["error"] = "ok", ""
        row.update(self.settings)
        row["notes"] = list(case.notes)
        row["rank"], row["world_size"] = rank
        return self.writer.write(case, result, Path(output_dir) / case.case_id, row, started=started)

    def _write_report(self, report: CohortReport) -> None:
        try:
            write_report(report.rows, report.output_dir, self.provenance)
        except OSError as e:
            logger.warning("report.html not written: %s", e)
