"""Sending results: C-STORE of the outbox's objects (``segmentation.dcm``, ``measurements.dcm``) to their destinations,
with retries, one log line per object.

An object leaves the outbox only when its destination answered the C-STORE with success (or a warning status, which
still means stored); anything else leaves it there, for the next try and the next start.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from infnet_monai.net.peers import Peer
from infnet_monai.net.spool import Outbox

__all__ = [
    "DEFAULT_SEND_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "STORED_STATUSES",
    "ResultSender",
    "association_outcome",
    "new_ae",
]

logger = logging.getLogger(__name__)

DEFAULT_SEND_RETRIES = 3
"""Tries per object and pass (``--send-retries``), one after the other with doubling waits (1 s, 2 s, ...)."""
DEFAULT_TIMEOUT_S = 30.0
"""ACSE, DIMSE and network timeout of the node's own associations (seconds)."""
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
"""C-STORE statuses that mean the peer stored the object: success, and the warnings coercion of data elements,
elements discarded, data set does not match SOP class."""
_RETRY_WAIT_S = 1.0


def new_ae(ae_title: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """A pynetdicom application entity with the node's AE title and timeouts."""
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = float(timeout_s)
    return ae


def association_outcome(assoc) -> str:
    """Why an association that was asked for is not established: ``"rejected"``, ``"aborted"`` or ``"failed"``
    (no answer, connection refused)."""
    if assoc.is_rejected:
        return "rejected"
    if assoc.is_aborted:
        return "aborted"
    return "failed (no connection, or no answer)"


class ResultSender:
    """Send what the outbox holds.

    Args:
        outbox: the spool's :class:`~infnet_monai.net.spool.Outbox`.
        calling_ae: the node's AE title, the calling AE of its associations.
        retries: tries per object in one pass (:data:`DEFAULT_SEND_RETRIES`).
        timeout_s: timeouts of the associations.
        retry_wait_s: wait before the second try; doubled before each next one.
    """

    def __init__(
        self,
        outbox: Outbox,
        calling_ae: str,
        retries: int = DEFAULT_SEND_RETRIES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_wait_s: float = _RETRY_WAIT_S,
    ) -> None:
        if int(retries) < 1:
            raise ValueError(f"send retries must be >= 1, got {retries}.")
        self.outbox = outbox
        self.calling_ae = calling_ae
        self.retries = int(retries)
        self.timeout_s = float(timeout_s)
        self.retry_wait_s = float(retry_wait_s)

    def send_pending(self, stop: threading.Event | None = None) -> tuple[int, int]:
        """One pass over the outbox: every destination gets up to ``retries`` tries for its objects.

        Args:
            stop: when set, no further try starts (the objects stay in the outbox).

        Returns:
            ``(objects sent, objects kept in the outbox)``.
        """
        stop = stop if stop is not None else threading.Event()
        sent = kept = 0
        for peer, files in self.outbox.pending():
            remaining = files
            for attempt in range(1, self.retries + 1):
                if stop.is_set():
                    break
                remaining = self._send(peer, remaining, attempt)
                if not remaining or (attempt < self.retries and stop.wait(self.retry_wait_s * 2 ** (attempt - 1))):
                    break
            sent += len(files) - len(remaining)
            if remaining:
                kept += len(remaining)
                logger.warning(
                    "%d result(s) for %s kept in %s; they are sent again later and at the next start",
                    len(remaining), peer, remaining[0].parent,
                )
        return sent, kept

    def _send(self, peer: Peer, files: list[Path], attempt: int) -> list[Path]:
        """Try ``files`` once over one association; the files not stored."""
        import pydicom
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        headers, left = [], []
        for path in files:
            try:
                tags = ["SOPClassUID", "SOPInstanceUID", "Modality"]
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
                headers.append((path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.get("Modality", "?")),
                                str(ds.file_meta.TransferSyntaxUID)))
            except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError) as e:
                logger.error("%s: unreadable result, not sent (%s); it stays in the outbox", path, e)
                left.append(path)
        if not headers:
            return left
        ae = new_ae(self.calling_ae, self.timeout_s)
        contexts: dict[str, list[str]] = {}
        for _, sop_class, _, _, syntax in headers:
            syntaxes = contexts.setdefault(sop_class, [])
            for uid in (syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                if uid not in syntaxes:
                    syntaxes.append(uid)
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(sop_class, syntaxes)
        tries = f"try {attempt} of {self.retries}"
        try:
            assoc = ae.associate(peer.host, int(peer.port), ae_title=peer.ae_title)
        except (OSError, RuntimeError, ValueError) as e:
            logger.warning("send to %s failed (%s): %s; %d object(s) waiting", peer, tries, e, len(headers))
            return left + [h[0] for h in headers]
        if not assoc.is_established:
            logger.warning("send to %s failed (%s): association %s; %d object(s) waiting", peer, tries,
                           association_outcome(assoc), len(headers))  # fmt: skip
            return left + [h[0] for h in headers]
        try:
            for i, (path, _, sop_uid, modality, _) in enumerate(headers):
                try:
                    status = assoc.send_c_store(path)
                    code = int(status.Status) if status is not None and "Status" in status else None
                except (OSError, RuntimeError, ValueError, AttributeError) as e:
                    code, why = None, f"{type(e).__name__}: {e}"
                else:
                    why = "no answer" if code is None else f"status 0x{code:04X}"
                if code in STORED_STATUSES:
                    self.outbox.sent(path)
                    logger.info("sent %s %s to %s", modality, sop_uid, peer)
                    continue
                logger.warning("send of %s %s to %s failed (%s): %s", modality, sop_uid, peer, tries, why)
                left.append(path)
                if not assoc.is_established:
                    left += [h[0] for h in headers[i + 1 :]]
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        return left
