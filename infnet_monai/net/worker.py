"""The node's one worker: a single segmenter (one model in memory) that segments spooled folders one at a time into
OUTPUT with the cohort runner of ``infnet-covid segment``, keeps the node's table, and queues and sends the results.

A spooled folder (a series in serve mode, a study in pull mode) is one case: discovery picks its CT series
(:func:`~infnet_monai.io.discover_cases`), and :meth:`CohortRunner.segment_case
<infnet_monai.pipeline.runner.CohortRunner.segment_case>` writes ``OUTPUT/<case_id>/`` exactly as ``segment`` does
(masks, ``stats.json``, ``segmentation.dcm``, ``measurements.dcm``, ...). The case id is the folder's name: the
SeriesInstanceUID in serve mode, the StudyInstanceUID in pull mode. A failing case gives an error row with the
runner's message, like ``segment``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from infnet_monai.io import discover_cases
from infnet_monai.io.outputs import CSV_FILE, case_fields, remove_stale_parts
from infnet_monai.net.peers import Peer
from infnet_monai.net.scu import DEFAULT_SEND_RETRIES, DEFAULT_TIMEOUT_S, ResultSender
from infnet_monai.net.spool import Spool
from infnet_monai.net.table import NodeTable
from infnet_monai.pipeline.runner import case_error_message, one_line
from infnet_monai.pipeline.writer import disk_error
from infnet_monai.utils.preflight import OutputLock

__all__ = ["RESULT_FIELDS", "CaseWorker"]

logger = logging.getLogger(__name__)

RESULT_FIELDS = ("dicom_seg_path", "dicom_sr_path")
"""The row fields of the results a node sends, in sending order (the SR references the SEG)."""


class CaseWorker:
    """Segment spooled folders into one OUTPUT, one at a time.

    Args:
        segmenter: a :class:`~infnet_monai.pipeline.segment.CTSegmenter` (its runner, predictor and writer).
        output_dir: OUTPUT, held with ``lock``.
        spool: the open spool (its outbox holds the results to send).
        lock: OUTPUT's lock, held.
        calling_ae: the node's AE title.
        send_retries: tries per result and pass.
        timeout_s: timeouts of the sending associations.
    """

    def __init__(
        self,
        segmenter,
        output_dir: str | os.PathLike,
        spool: Spool,
        lock: OutputLock,
        calling_ae: str,
        send_retries: int = DEFAULT_SEND_RETRIES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not lock.held:
            raise ValueError(f"the lock of OUTPUT '{output_dir}' must be held before the node writes there.")
        self.runner = segmenter.runner
        self.output_dir = Path(output_dir)
        self.spool = spool
        self.lock = lock
        self.sender = ResultSender(spool.outbox, calling_ae, send_retries, timeout_s)
        self.table = NodeTable(self.output_dir, self.runner.provenance).load()
        remove_stale_parts(self.output_dir, (CSV_FILE,))
        if self.table.rows:
            self.table.write()  # a kill between a case and its table leaves it behind: made whole again here

    def segment(self, folder: Path, empty_is_error: bool = True) -> list[dict]:
        """Segment the case in ``folder`` (a spooled series or study) into OUTPUT and record its row.

        Args:
            folder: a folder of DICOM instances.
            empty_is_error: a folder without a CT volume (localizers only, say) gets an error row; else it is only
                logged (a localizer series that a PACS sends along with the CT of its study is no failure).

        Returns:
            the rows (status ok, no_lung or error) as the table holds them: one (discovery makes one case of a
            folder of files), none for a folder without a CT volume and not ``empty_is_error``.

        Raises:
            OSError: the disk of OUTPUT is full or failing (the row is recorded; the folder should stay queued).
        """
        cases = discover_cases(folder)
        if cases:
            return [self._segment_case(case) for case in cases]
        message = (
            f"{folder}: no CT volume among its {sum(1 for _ in folder.glob('*.dcm'))} instance(s) (localizers, "
            "screenshots or dose reports only?); nothing segmented."
        )
        if not empty_is_error:
            logger.info("%s", message)
            return []
        return [self.error(folder.name, message)]

    def _segment_case(self, case) -> dict:
        try:
            # burden.csv gets the row before stats.json marks the case finished, as in segment
            row = self.runner.segment_case(case, self.output_dir, before_stats=lambda r: self.table.record(r, report=False))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one bad case never stops the node, as in segment
            logger.error("%s: %s", case.case_id, case_error_message(case, e, self.output_dir))
            row = case_fields(case)
            row.update({"status": "error", "error": case_error_message(case, e, self.output_dir)})
            self.table.record(row)
            stop = disk_error(e)
            if stop is not None:
                raise stop from e
            return self.table.rows[case.case_id]
        self.table.record(row)
        if row["status"] == "ok":
            logger.info("%s: segmented in %.1f s", case.case_id, float(row.get("seconds", 0.0)))
        else:
            logger.warning("%s: %s: %s", case.case_id, row["status"], row.get("error", ""))
        return self.table.rows[case.case_id]

    def error(self, case_id: str, message: str, **fields: str) -> dict:
        """Record an error row for a case that could not be segmented (``fields``: more ``burden.csv`` fields)."""
        row = {"case_id": case_id, "status": "error", "error": one_line(message), **fields}
        logger.error("%s: %s", case_id, message)
        self.table.record(row)
        return self.table.rows[case_id]

    def queue_results(self, row: dict, destinations: Sequence[Peer]) -> int:
        """Put the case's ``segmentation.dcm`` and ``measurements.dcm`` into the outbox of every destination;
        the number of objects queued."""
        import pydicom

        if not destinations:
            return 0
        queued = 0
        for field_name in RESULT_FIELDS:
            path = row.get(field_name)
            if not path or not Path(path).is_file():
                continue
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                sop_uid = str(header.SOPInstanceUID)
                for peer in destinations:
                    self.spool.outbox.add(Path(path), sop_uid, peer)
                    queued += 1
            except (OSError, ValueError, AttributeError) as e:  # the result stays in OUTPUT: say so
                logger.error("%s: %s not queued for sending (%s); send it by hand", row["case_id"], path, e)
        if queued:
            logger.info("%s: %d result(s) queued for %s", row["case_id"], queued, ", ".join(str(p) for p in destinations))
        elif row.get("status") != "error":
            logger.warning("%s: no segmentation.dcm / measurements.dcm to send (its stats.json notes why)", row["case_id"])
        return queued

    def send_pending(self, stop: threading.Event | None = None) -> tuple[int, int]:
        """One pass over the outbox
        (:meth:`ResultSender.send_pending <infnet_monai.net.scu.ResultSender.send_pending>`)."""
        return self.sender.send_pending(stop)
