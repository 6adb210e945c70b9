"""Pull mode, ``infnet-covid segment --from-pacs AE@host:port --studies LIST``: retrieve each listed study from a PACS
with C-GET into the spool, segment its chest CT as one case, and send the results with ``--send-to``.

For each line of LIST (a StudyInstanceUID, or an AccessionNumber: a line that is a UID with at least one dot is taken
as a StudyInstanceUID), a C-FIND at study level finds the study (an accession number may name several), a C-FIND at
series level its CT series, and one C-GET per CT series brings their instances into ``SPOOL/pull/<study>/``. The
folder is one case (``OUTPUT/<StudyInstanceUID>/``): discovery takes its axial CT series with the most slices and
notes the others, so ``burden.csv`` gets one row per study, and an error row for a study that cannot be found,
retrieved or segmented. The study's folder leaves the spool once it is segmented.

The node's own AE title is the calling AE of the C-FIND and C-GET associations; the PACS must allow it to query and
retrieve (in Orthanc: a ``DicomModalities`` entry, whose ``AllowFind`` and ``AllowGet`` are on by default).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from infnet_monai.defaults import NODE_AE_TITLE, NODE_MAX_SPOOL_GB, NODE_SEND_RETRIES
from infnet_monai.net.peers import Peer, is_uid
from infnet_monai.net.spool import Spool, SpoolFullError
from infnet_monai.utils.preflight import OutputLock

__all__ = ["PullError", "pull_studies", "read_study_keys"]

logger = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
_GET_OK = (0x0000, 0xB000)  # success; warning (some sub-operations failed)


class PullError(RuntimeError):
    """A study could not be found or retrieved (the message names the PACS and the study)."""


def read_study_keys(path: str | os.PathLike) -> list[str]:
    """The study keys of a ``--studies`` file: one StudyInstanceUID or AccessionNumber per line; blank lines and
    lines starting with ``#`` are skipped; a key listed twice is taken once.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it holds no key, or a key with a backslash or a control character (it would not make a query).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"--studies file '{path}' does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--studies file '{path}' cannot be read as text: {e}.") from e
    keys: list[str] = []
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if "\\" in key or "*" in key or "?" in key or any(ord(c) < 32 for c in key) or len(key) > 64:
            raise ValueError(
                f"{path}, line {number}: {key[:80]!r} is no StudyInstanceUID or AccessionNumber (at most 64 "
                "characters, no backslash, wildcard or control character)."
            )
        if key not in keys:
            keys.append(key)
    if not keys:
        raise ValueError(f"--studies file '{path}' lists no study (one StudyInstanceUID or AccessionNumber a line).")
    return keys


def _is_study_uid(key: str) -> bool:
    return "." in key and is_uid(key)


class _Pacs:
    """Query and retrieve from one PACS, one association per request."""

    def __init__(self, pacs: Peer, ae_title: str, timeout_s: float) -> None:
        self.pacs = pacs
        self.ae_title = ae_title
        self.timeout_s = timeout_s

    def _associate(self, ae, what: str):
        from infnet_monai.net.scu import association_outcome

        try:
            assoc = ae.associate(self.pacs.host, int(self.pacs.port), ae_title=self.pacs.ae_title)
        except (OSError, RuntimeError, ValueError) as e:
            raise PullError(f"{what}: no association with {self.pacs} ({e})") from e
        if not assoc.is_established:
            raise PullError(f"{what}: association with {self.pacs} {association_outcome(assoc)}")
        return assoc

    def find(self, query, what: str) -> list:
        """The identifiers a study-root C-FIND answers."""
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        from infnet_monai.net.scu import new_ae

        ae = new_ae(self.ae_title, self.timeout_s)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae, what)
        found = []
        try:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                code = int(status.Status) if status is not None and "Status" in status else None
                if code in _PENDING:
                    if identifier is not None:
                        found.append(identifier)
                elif code == 0x0000:
                    break
                else:
                    raise PullError(f"{what}: {self.pacs} answered the C-FIND with " + (
                        "nothing (timeout or abort)" if code is None else f"status 0x{code:04X}"))
        finally:
            if assoc.is_established:
                assoc.release()
        return found

    def study_uids(self, key: str) -> list[str]:
        """The StudyInstanceUIDs a key names (a StudyInstanceUID, or an AccessionNumber)."""
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        if _is_study_uid(key):
            query.StudyInstanceUID = key
        else:
            query.AccessionNumber = key
            query.StudyInstanceUID = ""
        uids = []
        for identifier in self.find(query, f"study {key}"):
            uid = str(identifier.get("StudyInstanceUID", "")).rstrip("\0 ")
            if not is_uid(uid):
                logger.warning("study %s: %s answered an invalid StudyInstanceUID %r; ignored", key, self.pacs, uid[:80])
            elif uid not in uids:
                uids.append(uid)
        return uids

    def ct_series(self, study_uid: str) -> list[tuple[str, str]]:
        """``(SeriesInstanceUID, number of instances or "")`` of every CT series of a study."""
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.Modality = ""
        query.NumberOfSeriesRelatedInstances = ""
        series = []
        for identifier in self.find(query, f"study {study_uid}"):
            uid = str(identifier.get("SeriesInstanceUID", "")).rstrip("\0 ")
            if str(identifier.get("Modality", "")).strip().upper() == "CT" and is_uid(uid):
                series.append((uid, str(identifier.get("NumberOfSeriesRelatedInstances", ""))))
        return series

    def get_series(self, spool: Spool, study_uid: str, series_uid: str) -> int:
        """C-GET one series into the study's pull folder; the number of instances stored.

        Raises:
            PullError: the retrieval failed or brought nothing.
        """
        from pydicom import Dataset
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

        from infnet_monai.io import CT_SOP_CLASS_UIDS
        from infnet_monai.net.scp import ACCEPTED_TRANSFER_SYNTAXES
        from infnet_monai.net.scu import new_ae

        what = f"series {series_uid} of study {study_uid}"
        stored, refused = [0], []

        def on_store(event) -> int:
            try:
                ds = event.dataset
                if str(ds.get("StudyInstanceUID", "")).rstrip("\0 ") != study_uid:
                    refused.append("an instance of another study")
                    return 0xC000
                if str(ds.get("SOPInstanceUID", "")) != str(event.request.AffectedSOPInstanceUID):
                    refused.append("an instance whose SOPInstanceUID is not the request's")
                    return 0xC000
                data = event.encoded_dataset(include_meta=True)
                spool.store_pulled(data, study_uid, event.request.AffectedSOPInstanceUID)
            except SpoolFullError as e:
                refused.append(str(e))
                return 0xA700
            except Exception as e:  # noqa: BLE001 - an instance the spool refuses is counted, the rest go on
                refused.append(f"{type(e).__name__}: {e}")
                return 0xC000
            stored[0] += 1
            return 0x0000

        ae = new_ae(self.ae_title, self.timeout_s)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        for uid in sorted(CT_SOP_CLASS_UIDS):
            ae.add_requested_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES))
            roles.append(build_role(uid, scp_role=True))
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        try:
            assoc = ae.associate(self.pacs.host, int(self.pacs.port), ae_title=self.pacs.ae_title, ext_neg=roles,
                                 evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
        except (OSError, RuntimeError, ValueError) as e:
            raise PullError(f"{what}: no association with {self.pacs} ({e})") from e
        if not assoc.is_established:
            from infnet_monai.net.scu import association_outcome

            raise PullError(f"{what}: association with {self.pacs} {association_outcome(assoc)}")
        final = None
        try:
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                if status is None or "Status" not in status:
                    final = None
                    break
                final = status
                if int(status.Status) not in _PENDING:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        if refused:
            logger.warning("%s: %d instance(s) not spooled, e.g. %s", what, len(refused), refused[0])
        if final is None:
            raise PullError(
                f"{what}: {self.pacs} did not finish the C-GET (timeout or abort); {stored[0]} instance(s) came"
            )
        code = int(final.Status)
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        if code not in _GET_OK or stored[0] == 0:
            raise PullError(
                f"{what}: C-GET from {self.pacs} ended with status 0x{code:04X}, {stored[0]} instance(s) stored"
                + (f", {failed} failed" if failed else "") + (f" ({refused[0]})" if refused else "")
            )
        if failed:
            logger.warning("%s: %d instance(s) failed to come (status 0x%04X); segmented with the %d that came",
                           what, failed, code, stored[0])  # fmt: skip
        return stored[0]


def pull_studies(
    output_dir: str | os.PathLike,
    spool_dir: str | os.PathLike,
    segment_options: dict,
    pacs: Peer,
    keys: Sequence[str],
    ae_title: str = NODE_AE_TITLE,
    send_to: Sequence[Peer] = (),
    resume: bool = False,
    send_retries: int = NODE_SEND_RETRIES,
    max_spool_gb: float = NODE_MAX_SPOOL_GB,
    timeout_s: float = 30.0,
) -> list[dict]:
    """Retrieve, segment and (with ``send_to``) send back each study of ``keys``, one at a time.

    Args:
        output_dir: OUTPUT (``OUTPUT/<StudyInstanceUID>/``, ``burden.csv`` with the node's rows, ``report.html``).
        spool_dir: the spool (the studies are retrieved under ``pull/``; unsent results wait in ``outbox/``).
        segment_options: :class:`~infnet_monai.pipeline.segment.SegmentConfig` fields.
        pacs: the PACS to query and retrieve from.
        keys: StudyInstanceUIDs or AccessionNumbers (:func:`read_study_keys`).
        ae_title: the node's AE title (calling AE of every association).
        send_to: destinations of ``segmentation.dcm`` and ``measurements.dcm``.
        resume: skip studies whose row in OUTPUT is ok or no_lung and whose outputs are there.
        send_retries: tries per result and pass.
        max_spool_gb: bound of the spool.
        timeout_s: timeouts of the associations.

    Returns:
        this run's rows, one per study found (or per key that found none), errors included.

    Raises:
        OSError: OUTPUT's disk is full or failing (the rows so far are in ``burden.csv``).
    """
    from infnet_monai.io import sanitize_case_id
    from infnet_monai.net.node import check_folders

    output_dir, spool_dir = Path(output_dir), Path(spool_dir)
    check_folders(output_dir, spool_dir)
    if pacs.port is None:
        raise ValueError(f"--from-pacs '{pacs}' needs a port: AE@host:port.")
    with Spool(spool_dir, int(max_spool_gb * 2**30)) as spool, OutputLock(output_dir, spool_dir) as lock:
        from infnet_monai.net.worker import CaseWorker
        from infnet_monai.pipeline.segment import CTSegmenter

        worker = CaseWorker(CTSegmenter(**segment_options), output_dir, spool, lock, ae_title, send_retries, timeout_s)
        worker.send_pending()  # what an earlier run could not send
        source = _Pacs(pacs, ae_title, timeout_s)
        rows: list[dict] = []
        for key in keys:
            try:
                study_uids = source.study_uids(key)
            except PullError as e:
                rows.append(worker.error(sanitize_case_id(key), str(e)))
                continue
            if not study_uids:
                message = f"study {key}: not found on {pacs} (C-FIND answered nothing)."
                rows.append(worker.error(sanitize_case_id(key), message))
                continue
            for study_uid in study_uids:
                rows += _pull_one(worker, spool, source, study_uid, send_to, resume)
        worker.send_pending()
    return rows


def _pull_one(worker, spool: Spool, source: _Pacs, study_uid: str, send_to: Sequence[Peer], resume: bool) -> list[dict]:
    done = worker.table.rows.get(study_uid)
    finished = done is not None and done.get("status") in ("ok", "no_lung")
    if resume and finished and (worker.output_dir / study_uid / "stats.json").is_file():
        logger.info("study %s: already segmented, skipped (--resume)", study_uid)
        return [done]
    spool.remove_pulled(study_uid)  # leftovers of an interrupted run
    try:
        series = source.ct_series(study_uid)
        if not series:
            raise PullError(f"study {study_uid}: {source.pacs} lists no CT series in it")
        count = sum(source.get_series(spool, study_uid, uid) for uid, _ in series)
    except PullError as e:
        spool.remove_pulled(study_uid)
        return [worker.error(study_uid, str(e))]
    logger.info("study %s: %d instance(s) of %d CT series retrieved from %s", study_uid, count, len(series), source.pacs)
    rows = worker.segment(spool.pulled_folder(study_uid))
    for row in rows:
        worker.queue_results(row, send_to)
    worker.send_pending()
    spool.remove_pulled(study_uid)
    return rows
