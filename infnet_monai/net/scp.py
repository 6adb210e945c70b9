"""The node's listening side: a DICOM Storage SCP (pynetdicom) with C-ECHO that spools CT images.

An association is refused at once (A-ASSOCIATE-RJ) when its calling AE title is not allowed from the peer's address
(``--allow AE@host``: the title and the address must both match; "calling AE title not recognised", permanent), or
when the spool is full ("local limit exceeded", transient: the sender tries again later, nothing is lost). Only CT
Image Storage, Enhanced CT Image Storage and Legacy Converted Enhanced CT Image Storage are accepted (with
Verification); other SOP classes are refused in the presentation context negotiation.

Each C-STORE is written to the spool as it arrived (its encoded bytes, no re-encoding) once its Study, Series and SOP
Instance UIDs are known valid (:func:`~infnet_monai.net.peers.check_uid`); the answer is success only once the
instance is on the disk. Refusals: ``0xA700`` out of resources (spool full), ``0xA900`` data set does not match SOP
class, ``0xC000`` cannot understand (an invalid UID, an unreadable data set).

One log line per association at its end: the calling AE and address, how it ended, what it stored and for which
series (UIDs only: no patient data in the log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from infnet_monai.defaults import NODE_AE_TITLE, NODE_HOST, NODE_PORT
from infnet_monai.io import CT_SOP_CLASS_UIDS
from infnet_monai.net.peers import AllowedCaller, normal_address
from infnet_monai.net.spool import Spool

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "DEFAULT_AE_TITLE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "StorageSCP",
]

logger = logging.getLogger(__name__)

DEFAULT_AE_TITLE, DEFAULT_HOST, DEFAULT_PORT = NODE_AE_TITLE, NODE_HOST, NODE_PORT
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
"""What the SCP accepts: the uncompressed syntaxes and the compressed ones that the loader decodes (SimpleITK / GDCM,
pydicom). A sender whose files use another syntax transcodes or is refused in the negotiation."""

_VERIFICATION = "1.2.840.10008.1.1"
_STATUS_OUT_OF_RESOURCES = 0xA700
_STATUS_NOT_MATCHING = 0xA900
_STATUS_CANNOT_UNDERSTAND = 0xC000


@dataclass
class _AssociationLog:
    caller: str
    refused: str = ""
    stored: int = 0
    refused_instances: int = 0
    first_refusal: str = ""
    echoes: int = 0
    series: set[tuple[str, str]] = field(default_factory=set)


class StorageSCP:
    """Receive CT images into a :class:`~infnet_monai.net.spool.Spool`.

    Args:
        spool: the open spool.
        ae_title: the node's AE title; an association addressed to another called AE title is refused.
        host: address to listen on (:data:`DEFAULT_HOST`).
        port: TCP port (0: any free one, see :attr:`port`).
        allowed: the calling AEs allowed (title and host); everything else is refused.
        timeout_s: ACSE, DIMSE and network timeouts (an association idle for this long is closed).
    """

    def __init__(
        self,
        spool: Spool,
        ae_title: str = DEFAULT_AE_TITLE,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        allowed: Sequence[AllowedCaller] = (),
        timeout_s: float = 60.0,
    ) -> None:
        self.spool = spool
        self.ae_title = ae_title
        self.host = host
        self.requested_port = int(port)
        self.allowed = tuple(allowed)
        self.timeout_s = float(timeout_s)
        self._server = None
        self._log: dict[int, _AssociationLog] = {}
        self._log_lock = threading.Lock()

    # ------------------------------------------------------------------ life
    def start(self) -> "StorageSCP":
        """Listen (in background threads) until :meth:`stop`.

        Raises:
            ValueError: the address cannot be bound (in use, not local, no permission).
        """
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.require_called_aet = True
        ae.add_supported_context(_VERIFICATION)
        for uid in sorted(CT_SOP_CLASS_UIDS):
            ae.add_supported_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES))
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        try:
            self._server = ae.start_server((self.host, self.requested_port), block=False, evt_handlers=handlers)
        except OSError as e:
            raise ValueError(
                f"cannot listen on {self.host}:{self.requested_port}: {e.strerror or e}; choose another --port or --host."
            ) from e
        logger.info("listening as %s on %s:%d", self.ae_title, self.host, self.port)
        return self

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose for port 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self.requested_port

    def stop(self) -> None:
        """Stop listening and end the open associations (an instance not yet acknowledged is sent again by its
        sender; the acknowledged ones are on the disk)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ------------------------------------------------------------------ policy
    def allowed_caller(self, ae_title: str, address: str) -> AllowedCaller | None:
        """The ``--allow`` entry of a calling AE title at an address, else ``None``."""
        return next((entry for entry in self.allowed if entry.matches(ae_title, address)), None)

    # ------------------------------------------------------------------ handlers
    def _on_requested(self, event) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = normal_address(str(assoc.requestor.address))
        record = _AssociationLog(caller=f"{calling}@{address}")
        with self._log_lock:
            self._log[id(assoc)] = record
        if self.allowed_caller(calling, address) is None:
            record.refused = "calling AE not allowed from this address (--allow)"
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent; service user; calling AE title not recognised
        elif not self.spool.has_room():
            record.refused = f"spool full ({self.spool.root})"
            assoc.acse.send_reject(0x02, 0x03, 0x02)  # transient; service provider; local limit exceeded
        if record.refused:
            assoc.kill()  # as pynetdicom's own refusals: the reject is sent, then the connection ends

    def _on_echo(self, event) -> int:
        record = self._record(event.assoc)
        if record is not None:
            record.echoes += 1
        return 0x0000

    def _on_store(self, event) -> int:
        record = self._record(event.assoc)
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        try:
            ds = event.dataset
            study_uid, series_uid = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
            shown = f"instance {sop_uid[:64]!r}"
            if str(ds.get("SOPClassUID", "")) != str(request.AffectedSOPClassUID):
                return self._refused(record, _STATUS_NOT_MATCHING, f"{shown}: SOPClassUID not the request's")
            if str(ds.get("SOPInstanceUID", "")) != sop_uid:
                return self._refused(record, _STATUS_CANNOT_UNDERSTAND, f"{shown}: SOPInstanceUID not the request's")
            data = event.encoded_dataset(include_meta=True)
        except Exception as e:  # noqa: BLE001 - whatever a peer sends, the node answers and goes on
            reason = f"instance {sop_uid[:64]!r}: unreadable data set ({type(e).__name__})"
            return self._refused(record, _STATUS_CANNOT_UNDERSTAND, reason)
        try:
            self.spool.store(data, study_uid, series_uid, sop_uid, record.caller if record is not None else "?")
        except ValueError as e:
            return self._refused(record, _STATUS_CANNOT_UNDERSTAND, str(e))
        except OSError as e:  # the spool is full (SpoolFullError), or its disk failed
            return self._refused(record, _STATUS_OUT_OF_RESOURCES, str(e))
        if record is not None:
            record.stored += 1
            record.series.add((str(study_uid).rstrip("\0 "), str(series_uid).rstrip("\0 ")))
        return 0x0000

    @staticmethod
    def _refused(record: _AssociationLog | None, status: int, reason: str) -> int:
        """Answer ``status``; the association's log line counts the refusal and names the first one's reason."""
        if record is None:
            logger.warning("instance refused (status 0x%04X): %s", status, reason)
            return status
        logger.debug("%s: instance refused (status 0x%04X): %s", record.caller, status, reason)
        record.refused_instances += 1
        if not record.first_refusal:
            record.first_refusal = f"status 0x{status:04X}: {reason}"
        return status

    def _record(self, assoc) -> _AssociationLog | None:
        with self._log_lock:
            return self._log.get(id(assoc))

    def _on_close(self, event) -> None:
        assoc = event.assoc
        with self._log_lock:
            record = self._log.pop(id(assoc), None)
        if record is None:
            return  # the connection closed before an association was asked for
        if assoc.is_rejected and not record.refused:
            record.refused = f"called AE title other than {self.ae_title}, or too many associations at once"
        if record.refused:
            logger.warning("association from %s refused: %s", record.caller, record.refused)
            return
        # an A-ABORT and a connection dropped without one both end it before its release (pynetdicom may set
        # is_aborted only after the connection closed)
        ended = "released" if assoc.is_released else "aborted"
        if ended != "released":
            for study_uid, series_uid in record.series:
                self.spool.mark_interrupted(study_uid, series_uid)
        series = ", ".join(sorted(s for _, s in record.series)) or "none"
        parts = [f"{record.stored} instance(s) stored"]
        if record.refused_instances:
            parts.append(f"{record.refused_instances} refused (the first: {record.first_refusal})")
        if record.echoes:
            parts.append(f"{record.echoes} echo(es)")
        log = logger.info if ended == "released" and not record.refused_instances else logger.warning
        log("association from %s %s: %s; series: %s", record.caller, ended, ", ".join(parts), series)
