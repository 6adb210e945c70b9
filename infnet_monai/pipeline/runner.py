"""A cohort: :class:`CohortRunner` finds the cases, skips the finished ones, shares them out among torchrun ranks,
segments each with a :class:`~infnet_monai.pipeline.predictor.VolumePredictor`, writes it with a
:class:`~infnet_monai.pipeline.writer.CaseWriter`, and keeps ``burden.csv`` and ``report.html``.

A failing case never stops the run: its row says ``status`` error with a message that names the file.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from filelock import FileLock

from infnet_monai.io.cases import CTCase, discover_cases, sanitize_case_id
from infnet_monai.io.outputs import (
    CSV_FILE,
    case_fields,
    completed_row,
    json_value,
    remove_stale_parts,
    write_csv_atomic,
    write_text_atomic,
)
from infnet_monai.io.volume import CaseError
from infnet_monai.pipeline.distributed import DistEnv, case_bytes, gather_rows, shard_by_size, start
from infnet_monai.pipeline.predictor import VolumePredictor
from infnet_monai.pipeline.writer import CaseWriter, disk_error
from infnet_monai.stats.anatomy import largest_axial_section_cm2
from infnet_monai.stats.followup import FOLLOWUP_FILE, followup_rows, read_pairs_csv, write_followup_csv
from infnet_monai.utils.preflight import LOCK_FILE, OutputLock, OutputLockedError, check_input
from infnet_monai.utils.validation import check_flag
from infnet_monai.utils.table import format_burden_table, outcome_counts
from infnet_monai.visualize.report import REPORT_FILE, write_report

__all__ = [
    "LOCK_FILE", "MIN_LUNG_ML", "MIN_LUNG_SECTION_CM2", "CohortReport", "CohortRunner", "OutputLockedError", "case_error_message", "one_line",
]

logger = logging.getLogger(__name__)

ROWS_FILE = ".infnet-covid.rows.rank{rank}.json"
"""Under torchrun, each rank's finished rows (``{case index: row}``), rewritten after every case; any rank then
merges all of them into ``burden.csv``, so a kill of any rank leaves a table of every finished case."""
MAX_ERROR_CHARS = 300
"""An error cell of ``burden.csv`` holds one line of at most this many characters (the log has the rest)."""
MIN_LUNG_ML = 2.0
"""A case whose lung mask holds less than this (mL; the lung mask's smallest part is 2 mL, so: an empty lung mask)
gets status ``no_lung``, not ``ok``: all air, no body, noise, an abdominal scan, or a field of view that misses the
lungs. Its masks are still written; its figures are not a finding."""


@dataclass
class CohortReport:
    """Outcome of a cohort run: one row per case, in input order."""

    rows: list[dict] = field(default_factory=list)
    output_dir: Path | None = None
    followup: list[dict] = field(default_factory=list)
    reporter: bool = True
    """Whether this process reports the cohort (a single process, or rank 0 of a torchrun job)."""

    @property
    def failed(self) -> list[dict]:
        """The rows of cases that failed (status ``error``); a case without lung (``no_lung``) is not a failure."""
        return [r for r in self.rows if r.get("status") == "error"]

    @property
    def exit_code(self) -> int:
        """1 when any case failed (status ``error``), else 0 (cases with status ``no_lung`` were read and segmented:
        they are listed under the table, not counted as failures)."""
        return 1 if self.failed else 0

    def counts(self) -> str:
        """``"N case(s): a ok, b no_lung, c failed"``: the one wording of outcomes in the log, the summary and the
        report."""
        return outcome_counts(self.rows)

    def summary(self) -> str:
        """The burden table (errors below it), the outcome counts and where the table and the report are: what the
        command line and the bundle's run print at the end."""
        lines = [format_burden_table(self.rows), self.counts()]
        if self.output_dir is not None:
            lines += [f"table: {self.output_dir / CSV_FILE}", f"report: {self.output_dir / REPORT_FILE}"]
            if self.followup:
                lines.insert(-1, f"follow-up: {self.output_dir / FOLLOWUP_FILE} ({len(self.followup)} comparison(s))")
        return "\n".join(lines)


MIN_LUNG_SECTION_CM2 = 20.0
"""A case whose lung mask covers less than this on its largest axial slice (cm2, both lungs) gets status ``no_lung``:
no chest has lungs that small in cross-section (a newborn's are about 30 cm2 at the carina), while air in the
paranasal sinuses, the mastoids or a bowel loop is. On the real scans of ``../shared/data/ct`` the smallest chest
value is 96 cm2 (the lung bases of ``abdomen_3mm``); the two-slice chest CT has 205 cm2, P001 379 cm2."""


class _DiskStop(Exception):
    """A case stopped by the disk (:func:`~infnet_monai.pipeline.writer.disk_error`): its error ``row`` goes into the
    table, then ``error`` stops the run."""

    def __init__(self, row: dict, error: BaseException) -> None:
        super().__init__(str(error))
        self.row, self.error = row, error


def _root_cause(e: BaseException) -> BaseException:
    """The exception a MONAI ``Compose`` wrapped (``RuntimeError("applying transform ...")``), else ``e``."""
    while isinstance(e, RuntimeError) and str(e).startswith("applying transform") and e.__cause__ is not None:
        e = e.__cause__
    return e


def case_error_message(case: CTCase, raised: BaseException, output_dir: Path) -> str:
    """One line (at most :data:`MAX_ERROR_CHARS`) for the row of a case that failed with ``raised``, naming the
    file, and the files left out of its series (the likely cause of a gap). Paths inside the folder that holds the
    case are written from there (``case 7/IM0031.dcm``): the row's ``source_path`` has the whole path, so a deep
    folder does not push the problem itself past the cell's limit; the log line keeps the whole paths."""
    text = _case_error_text(case, raised, output_dir).replace(str(Path(case.source_path).parent) + os.sep, "")
    if not case.dropped:
        return one_line(text)
    dropped = one_line(f" Left out of the series: {'; '.join(case.dropped)}.", MAX_ERROR_CHARS // 2)
    return one_line(text, MAX_ERROR_CHARS - len(dropped) - 1) + " " + dropped  # the likely cause is never cut off


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line of at most ``limit`` characters (a CSV cell; the log keeps the whole text)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _case_error_text(case: CTCase, raised: BaseException, output_dir: Path) -> str:
    e = _root_cause(raised)
    if isinstance(e, OSError) and getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device while writing outputs under '{output_dir}'; free space and rerun with --resume."
    if disk_error(e) is not None:
        return f"the disk failed while writing outputs under '{output_dir}' ({e}); rerun with --resume once it works."
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
        classes: whether the predictor makes the GGO / consolidation map (``--resume`` redoes a case stored without
            it).
        save_probability: ask the predictor for the probability, written as ``probability.nii.gz`` (``--resume``
            redoes a case stored without it).
        device: where the predictor's network runs (under torchrun, the process group's backend follows it).
        env: the ``torchrun`` job this process belongs to (:func:`~infnet_monai.utils.launch.dist_env`), or ``None``
            for a single process: each rank takes its share of the cases, rank 0 locks OUTPUT and writes the table,
            and only rank 0 draws progress bars.
    """

    def __init__(
        self,
        predictor: VolumePredictor,
        writer: CaseWriter,
        settings: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        *,
        classes: bool = False,
        save_probability: bool = False,
        device: torch.device | str = "cpu",
        env: DistEnv | None = None,
    ) -> None:
        self.predictor = predictor
        self.writer = writer
        self.settings = dict(settings or {})
        self.provenance = dict(provenance or {})
        self.classes = check_flag(classes, "classes")
        self.save_probability = check_flag(save_probability, "save_probability")
        self.device = torch.device(device)
        self.env = env

    def run(
        self,
        input_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        resume: bool = False,
        progress: Callable[[Iterable], Iterable] | None = None,
        slice_progress: Callable[[str, int, int], None] | None = None,
        strict: bool = False,
        pairs: str | os.PathLike | None = None,
        lock: OutputLock | None = None,
    ) -> CohortReport:
        """Segment every case under ``input_path`` (a NIfTI file, a DICOM series folder, or a cohort folder of both)
        into ``output_dir``.

        Args:
            input_path: file or folder.
            output_dir: output folder (may lie inside the input folder; it is then not scanned, nor is any folder
                holding earlier outputs).
            resume: skip cases whose outputs are complete.
            progress: wraps the iterable of this process's cases (e.g. ``tqdm``).
            slice_progress: called as ``(case_id, slices done, slices with lung)`` after every batch of slices.
            strict: every path passed over while looking for cases (hidden files, broken links, unreadable
                folders) becomes an error row; by default they are only logged.
            pairs: a CSV of ``baseline_case_id,followup_case_id`` comparisons for ``followup.csv``; by default the
                scans of each ``patient_id`` are compared in date order.
            lock: ``output_dir``'s :class:`~infnet_monai.utils.preflight.OutputLock`, already held by the caller (the
                command line takes it before importing torch); by default the run takes it itself, before scanning
                the input, and lets it go at the end.

        Returns:
            :class:`CohortReport`; ``report.exit_code`` is 0 when all cases succeeded, else 1.

        Raises:
            OutputLockedError: another run holds ``output_dir``.
            ValueError: ``output_dir`` lies inside a DICOM series folder of the input.
        """
        input_path, output_dir, resume = Path(input_path), Path(output_dir), check_flag(resume, "resume")
        strict = check_flag(strict, "strict")
        comparisons = read_pairs_csv(pairs) if pairs is not None else None
        check_input(input_path)
        env = self.env
        if env is not None and env.rank != 0:  # one set of bars: rank 0's
            progress = slice_progress = None
        joined = start(env, self.device) if env is not None else False
        taken = None
        try:
            if lock is None or not lock.held:  # the lock first: a busy OUTPUT is refused before the input is scanned
                taken = lock = self._lock(input_path, output_dir, env)
            skipped: list[tuple[Path, str]] = []
            cases = discover_cases(input_path, exclude=[output_dir], skipped=skipped)
            _check_not_in_series(cases, output_dir)
            if strict:
                cases += _skipped_cases(skipped, input_path, {c.case_id.casefold() for c in cases})
            if not cases:
                raise FileNotFoundError(f"no NIfTI (.nii, .nii.gz) or DICOM CT found under '{input_path}'.")
            remove_stale_parts(output_dir, (CSV_FILE,))  # only now: another run's temporary files are its own
            return self._run_cases(cases, output_dir, resume, progress, slice_progress, env, comparisons)
        finally:
            if taken is not None:
                taken.release()  # and OUTPUT itself when this run made it and wrote nothing there
            if joined:
                dist.destroy_process_group()

    @staticmethod
    def _lock(input_path: Path, output_dir: Path, env) -> OutputLock | None:
        """The output folder checked and locked by the only process or by rank 0 (its ranks share the folder); every
        rank of a refused job raises the refusal."""
        lock, refusal = None, None
        if env is None or env.rank == 0:
            try:
                lock = OutputLock(output_dir, input_path).acquire()
            except (OutputLockedError, OSError, ValueError) as e:
                refusal = e
        if env is not None:
            shared = [refusal]
            dist.broadcast_object_list(shared, src=0)
            refusal = shared[0]
        if refusal is not None:
            raise refusal
        return lock

    def _run_cases(self, cases, output_dir: Path, resume, progress, slice_progress, env, pairs=None) -> CohortReport:
        """This rank's share of ``cases`` (all of them in one process), then the cohort's table and report.
        ``burden.csv`` is rewritten (atomically) after every finished case: a killed run leaves a table of every
        case finished so far."""
        mine = shard_by_size([case_bytes(c.files) for c in cases], env.world_size)[env.rank] if env else range(len(cases))
        rank = (env.rank, env.world_size) if env else (0, 1)
        report = CohortReport(output_dir=output_dir, reporter=env is None or env.rank == 0)
        rows: dict[int, dict] = {}
        index = {id(cases[i]): i for i in mine}
        todo = [cases[i] for i in mine]
        for case in progress(todo) if progress is not None else todo:  # the bar itself drives the loop: it ends at N/N
            i = index[id(case)]

            def table_with(row: dict, i: int = i) -> None:  # before the case's stats.json is published
                self._write_partial_table({**rows, i: row}, output_dir, env)

            try:
                rows[i] = self._one_case(case, output_dir, resume, slice_progress, rank, table_with)
            except _DiskStop as stop:  # the disk is full or failing: the row is kept, the run stops (exit 3)
                rows[i] = stop.row
                try:
                    self._write_partial_table(rows, output_dir, env)
                finally:
                    raise stop.error
            self._write_partial_table(rows, output_dir, env)
        report.rows = gather_rows(rows, len(cases)) if env else [rows[j] for j in range(len(cases))]
        if env is None or env.rank == 0:
            write_csv_atomic(report.rows, output_dir / CSV_FILE)
            report.followup = followup_rows(report.rows, pairs)
            if report.followup or pairs is not None:
                write_followup_csv(report.followup, output_dir / FOLLOWUP_FILE)
            self._write_report(report)
        if env is not None:
            dist.barrier()
            (output_dir / ROWS_FILE.format(rank=env.rank)).unlink(missing_ok=True)  # the final table holds them
        logger.info("%s; table %s", report.counts(), output_dir / CSV_FILE)
        return report

    @staticmethod
    def _write_partial_table(rows: dict[int, dict], output_dir: Path, env) -> None:
        """``burden.csv`` with every case finished so far: this process's rows, or under torchrun every rank's rows
        file (this rank's rewritten first), merged under a file lock so that ranks never interleave."""
        if env is None:
            write_csv_atomic([rows[j] for j in sorted(rows)], output_dir / CSV_FILE)
            return
        stored = {str(k): {key: json_value(v) for key, v in row.items()} for k, row in rows.items()}
        write_text_atomic(json.dumps(stored), output_dir / ROWS_FILE.format(rank=env.rank))
        with FileLock(str(output_dir / (ROWS_FILE.format(rank="s") + ".lock"))):
            merged: dict[int, dict] = {}
            for part in sorted(output_dir.glob(ROWS_FILE.format(rank="*"))):
                try:
                    merged.update({int(k): v for k, v in json.loads(part.read_text(encoding="utf-8")).items()})
                except (OSError, ValueError) as e:  # a rank's file of an older run, or one being replaced
                    logger.debug("%s not merged: %s", part, e)
            write_csv_atomic([merged[j] for j in sorted(merged)], output_dir / CSV_FILE)

    def _one_case(
        self, case: CTCase, output_dir: Path, resume, slice_progress, rank: tuple[int, int], before_stats=None
    ) -> dict:
        if resume:
            row = completed_row(
                case, output_dir, classes=self.classes, probability=self.save_probability,
                promised=self.writer.promised(case),
            )
            if row is not None:
                logger.info("%s: already complete, skipped (--resume)", case.case_id)
                self.writer.write_resumed(case, output_dir / case.case_id, row)
                return row
        progress = (lambda d, t, c=case.case_id: slice_progress(c, d, t)) if slice_progress else None
        try:
            row = self.segment_case(case, output_dir, progress, rank, before_stats)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one bad case (e.g. nibabel's HeaderDataError) never stops the run
            message = case_error_message(case, e, output_dir)
            logger.error("%s (%s): %s", case.case_id, case.source_path, _case_error_text(case, e, output_dir))
            row = case_fields(case)
            row.update({"status": "error", "error": message})
            if disk_error(e) is not None:
                raise _DiskStop(row, disk_error(e)) from e
            return row
        if row["status"] == "ok":
            logger.info("%s: done in %.1f s (%d slices inferred)", case.case_id, row["seconds"], row.get("slices_inferred", 0))
        else:
            logger.warning("%s: %s: %s", case.case_id, row["status"], row["error"])
        return row

    def segment_case(
        self,
        case: CTCase,
        output_dir: str | os.PathLike,
        progress: Callable[[int, int], None] | None = None,
        rank: tuple[int, int] = (0, 1),
        before_stats: Callable[[dict], None] | None = None,
    ) -> dict:
        """Segment and write one case under ``output_dir/<case_id>/``; return its row (status ``ok``, or
        ``no_lung`` when the lung mask holds less than :data:`MIN_LUNG_ML`).

        Raises:
            CaseError: the input is unusable (the message names the file and the problem).
        """
        started = time.time()
        if case.error:
            raise CaseError(case.error)
        self._check_case_folder(Path(output_dir) / case.case_id)
        result = self.predictor(case, keep_probability=self.save_probability, progress=progress)
        row = case_fields(case)
        row.update(result.row)
        row["status"], row["error"] = "ok", ""
        lung_ml = float(row.get("lung_volume_ml", 0.0) or 0.0)
        section = largest_axial_section_cm2(result.lung, result.affine) if result.affine is not None else math.nan
        row["largest_lung_section_cm2"] = round(section, 1)
        if not lung_ml >= MIN_LUNG_ML:
            row["status"] = "no_lung"
            row["error"] = one_line(
                f"{case.source_path}: no lung found ({lung_ml:.1f} mL of lung, under {MIN_LUNG_ML:g} mL): the image "
                "shows no chest (all air, no body, noise, or a field of view that misses the lungs), so its figures "
                "are not a finding. Check that this is the chest CT meant."
            )
        elif section < MIN_LUNG_SECTION_CM2:
            row["status"] = "no_lung"
            row["error"] = one_line(
                f"{case.source_path}: what was found as lung ({lung_ml:.1f} mL) covers at most {section:.1f} cm2 of an "
                f"axial slice, under the {MIN_LUNG_SECTION_CM2:g} cm2 of any chest's lungs: air in sinuses, ears or "
                "bowel, not lungs, so its figures are not a finding. Check that this is the chest CT meant."
            )
        row.update(self.settings)
        row["notes"] = list(case.notes)
        row["dropped_files"] = list(case.dropped)
        row["rank"], row["world_size"] = rank
        return self.writer.write(case, result, Path(output_dir) / case.case_id, row, started=started, before_stats=before_stats)

    def _check_case_folder(self, case_dir: Path) -> None:
        """Refuse a case folder that already holds files other than this writer's outputs (e.g. the DICOM series
        folder of the same name when OUTPUT is the input's folder): nothing is written among foreign files."""
        if not case_dir.is_dir():
            return
        ours = set(self.writer.files)
        foreign = sorted(p.name for p in case_dir.iterdir() if p.name not in ours and not p.name.startswith("."))
        if foreign:
            raise CaseError(
                f"{case_dir}: the case's output folder already holds other files ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}), e.g. an input series of the same name; nothing is written "
                "there. Choose an output folder outside the input."
            )

    def _write_report(self, report: CohortReport) -> None:
        try:
            write_report(report.rows, report.output_dir, self.provenance, report.followup if report.followup else None)
        except OSError as e:
            logger.warning("report.html not written: %s", e)


def _check_not_in_series(cases: list[CTCase], output_dir: Path) -> None:
    """Refuse an output folder inside a DICOM series folder of the input, or a case folder that would be one: the
    outputs would be written among the source images."""
    out = output_dir.resolve()
    for case in cases:
        if case.kind != "dicom":
            continue
        folder = Path(case.source_path).resolve()
        target = out / case.case_id
        if out == folder or folder in out.parents or target == folder:
            raise ValueError(
                f"the outputs would be written into the DICOM series folder '{case.source_path}' (OUTPUT "
                f"'{output_dir}', case folder '{output_dir / case.case_id}'); choose an output folder outside the "
                "input's series folders."
            )


def _skipped_cases(skipped: list[tuple[Path, str]], root: Path, taken: set[str]) -> list[CTCase]:
    """Error cases for the paths passed over during discovery (``--strict``)."""
    cases = []
    for path, reason in skipped:
        try:
            name = str(path.relative_to(root)) if root.is_dir() else path.name
        except ValueError:
            name = path.name
        case_id, n = sanitize_case_id(name), 1
        while case_id.casefold() in taken:
            n += 1
            case_id = f"{sanitize_case_id(name)}-{n}"
        taken.add(case_id.casefold())
        error = f"{path}: passed over ({reason}); --strict makes this an error. Remove it or make it readable."
        cases.append(CTCase(case_id=case_id, source_path=path, kind="skipped", files=(), error=error))
    return cases
