"""``infnet-covid serve``: a DICOM node that segments the chest CT series sent to it and sends the results back.

:class:`DicomNode` ties the parts together: the :class:`~infnet_monai.net.scp.StorageSCP` spools what arrives
(:class:`~infnet_monai.net.spool.Spool`); the node's loop completes series that got no instance for ``idle_seconds``,
segments them one at a time with one model in memory (:class:`~infnet_monai.net.worker.CaseWorker`), and sends
``segmentation.dcm`` and ``measurements.dcm`` to the destinations (``--send-to``, and the calling AE when its
``--allow`` entry has a port).

Faults: a dropped association leaves what it stored spooled (the series completes and is segmented like any other;
a resend of it, even after that, makes it be segmented again whole); a series still receiving ``series_timeout_s``
after its first instance is set aside with an error row; a full spool refuses new associations (out of resources)
and keeps what it has; SIGTERM finishes the case being segmented, then stops (its results are sent at the next
start); a kill or a restart loses nothing: every spooled series and unsent result is picked up at start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infnet_monai.defaults import (
    NODE_AE_TITLE,
    NODE_HOST,
    NODE_IDLE_SECONDS,
    NODE_MAX_SPOOL_GB,
    NODE_PORT,
    NODE_SEND_RETRIES,
    NODE_SERIES_TIMEOUT_S,
)
from infnet_monai.net.peers import AllowedCaller, Peer
from infnet_monai.net.spool import SeriesEntry, Spool
from infnet_monai.utils.preflight import OutputLock

__all__ = ["DISK_PAUSE_S", "RESEND_INTERVAL_S", "DicomNode", "NodeSettings", "check_folders", "check_times", "serve"]

logger = logging.getLogger(__name__)

RESEND_INTERVAL_S = 60.0
"""While serving, results that could not be sent are tried again this often (and at every start)."""
DISK_PAUSE_S = 60.0
"""After OUTPUT's disk filled up or failed, the node waits this long before it segments again (the case stays
queued)."""
_POLL_S = 0.5


def check_folders(output_dir: Path, spool_dir: Path) -> None:
    """Refuse a spool inside OUTPUT (the runner never reads inputs under OUTPUT) or an OUTPUT inside the spool.

    Raises:
        ValueError: naming both folders.
    """
    out, spool = output_dir.expanduser().resolve(), spool_dir.expanduser().resolve()
    if out == spool or out in spool.parents or spool in out.parents:
        raise ValueError(
            f"the spool '{spool_dir}' and OUTPUT '{output_dir}' must be separate folders, neither inside the other."
        )


def check_times(idle_seconds: float, series_timeout_s: float) -> None:
    """Refuse a completion time and a series timeout that cannot work together.

    Raises:
        ValueError: ``idle_seconds`` is not > 0, or ``series_timeout_s`` is not longer than it.
    """
    if not idle_seconds > 0 or not series_timeout_s > idle_seconds:
        raise ValueError(
            f"--idle-seconds must be > 0 and --series-timeout longer than it, got {idle_seconds:g} and "
            f"{series_timeout_s:g}."
        )


@dataclass(frozen=True)
class NodeSettings:
    """How the node is reached, when a series is complete and where its results go: ``infnet-covid serve``'s options,
    checked when made.

    Attributes:
        ae_title: the node's AE title (also the calling AE of its sends).
        host: address to listen on.
        port: TCP port (0: any free port, for tests).
        send_to: destinations of every result.
        idle_seconds: a series is complete when no instance of it arrived for this long.
        series_timeout_s: a series still receiving this long after its first instance is set aside (error row).
        send_retries: tries per result and pass.

    Raises:
        ValueError: the times cannot work together (:func:`check_times`), or ``send_retries`` < 1.
    """

    ae_title: str = NODE_AE_TITLE
    host: str = NODE_HOST
    port: int = NODE_PORT
    send_to: tuple[Peer, ...] = ()
    idle_seconds: float = NODE_IDLE_SECONDS
    series_timeout_s: float = NODE_SERIES_TIMEOUT_S
    send_retries: int = NODE_SEND_RETRIES

    def __post_init__(self) -> None:
        check_times(self.idle_seconds, self.series_timeout_s)
        if int(self.send_retries) < 1:
            raise ValueError(f"--send-retries must be >= 1, got {self.send_retries}.")
        object.__setattr__(self, "send_to", tuple(self.send_to))


class DicomNode:
    """A Storage SCP and the worker that segments what it spools.

    Args:
        segmenter: the one :class:`~infnet_monai.pipeline.segment.CTSegmenter` (model loaded once).
        output_dir: OUTPUT (``OUTPUT/<SeriesInstanceUID>/``, ``burden.csv``, ``report.html``).
        spool: the open spool.
        lock: OUTPUT's lock, held.
        settings: the AE title, address, port, destinations, completion times and tries (port 0: a free one, see
            :attr:`port`).
        allowed: calling AEs allowed (with a port: also a destination for what they send).
        timeout_s: timeouts of the node's associations.
    """

    def __init__(
        self,
        segmenter: Any,
        output_dir: str | os.PathLike,
        spool: Spool,
        lock: OutputLock,
        settings: NodeSettings = NodeSettings(),
        allowed: Sequence[AllowedCaller] = (),
        timeout_s: float = 30.0,
    ) -> None:
        from infnet_monai.net.scp import StorageSCP
        from infnet_monai.net.worker import CaseWorker

        self.settings = settings
        self.spool = spool
        self.allowed = tuple(allowed)
        self.send_to = settings.send_to
        self.idle_seconds = float(settings.idle_seconds)
        self.series_timeout_s = float(settings.series_timeout_s)
        self.worker = CaseWorker(segmenter, output_dir, spool, lock, settings.ae_title, settings.send_retries, timeout_s)
        self.scp = StorageSCP(spool, settings.ae_title, settings.host, settings.port, self.allowed,
                              timeout_s=max(timeout_s, 60.0))
        self._paused_until = 0.0
        self._next_send = 0.0  # at start: the results a former run could not send

    @property
    def port(self) -> int:
        return self.scp.port

    def start(self) -> "DicomNode":
        """Listen, and say what the spool holds from before (it is all picked up)."""
        receiving, queued, unsent = self.spool.receiving(), self.spool.queued(), self.spool.outbox.count()
        if receiving or queued or unsent:
            logger.info(
                "spool %s holds %d receiving series, %d complete series to segment and %d result(s) to send; picked up",
                self.spool.root, len(receiving), len(queued), unsent,
            )
        if not self.allowed:
            logger.warning("no --allow entry: every association is refused")
        self.scp.start()
        return self

    def close(self) -> None:
        """Stop listening (the spool and OUTPUT's lock are the caller's)."""
        self.scp.stop()

    def run(self, stop: threading.Event) -> None:
        """Complete, segment and send until ``stop`` is set; the case being segmented then is finished first."""
        while not stop.is_set():
            worked = False
            try:
                worked = self.step()
                if time.monotonic() >= self._next_send and not stop.is_set():
                    self._next_send = time.monotonic() + RESEND_INTERVAL_S
                    self.worker.send_pending(stop)
            except Exception:  # noqa: BLE001 - a service goes on; what failed is tried again on the next round
                logger.exception("the node's loop failed; going on")
            if not worked:
                stop.wait(_POLL_S)

    def step(self, now: float | None = None) -> bool:
        """Complete the idle series, set aside the timed-out ones, and segment the first complete series; whether
        a series was segmented."""
        completed, timed_out = self.spool.complete_idle(self.idle_seconds, self.series_timeout_s, now)
        for entry in completed:
            aborted = entry.meta.get("interrupted")
            logger.info(
                "series %s of study %s complete: %d instance(s) from %s%s", entry.series_uid, entry.study_uid,
                entry.instance_count(), ", ".join(entry.meta.get("callers", ["?"])),
                "; an association that sent it was aborted, it may lack instances" if aborted else "",
            )  # fmt: skip
        for entry in timed_out:
            self.worker.error(
                entry.series_uid,
                f"series {entry.series_uid} of study {entry.study_uid} was still receiving instances "
                f"{self.series_timeout_s:g} s after its first one (--series-timeout): it never completed and was not "
                f"segmented; its {entry.instance_count()} instance(s) are kept in {entry.folder} for a while. Send it "
                "again in one go.",
                series_instance_uid=entry.series_uid,
            )
        self.spool.remove_expired(now)
        if time.monotonic() < self._paused_until:
            return False
        entry = self.spool.take()
        if entry is None:
            return False
        self._segment(entry)
        return True

    def _segment(self, entry: SeriesEntry) -> None:
        try:
            rows = self.worker.segment(entry.folder, empty_is_error=False)
        except OSError as e:
            self.spool.requeue(entry)
            self._paused_until = time.monotonic() + DISK_PAUSE_S
            logger.error("series %s: OUTPUT could not be written (%s); it stays queued, tried again in %g s",
                         entry.series_uid, e, DISK_PAUSE_S)  # fmt: skip
            return
        except Exception as e:  # noqa: BLE001 - cases fail inside the worker; this is anything else: set aside
            logger.debug("series %s", entry.series_uid, exc_info=True)
            self.spool.finish(entry, "failed")
            self.worker.error(entry.series_uid, f"series {entry.series_uid}: not segmented: {type(e).__name__}: {e}",
                              series_instance_uid=entry.series_uid)  # fmt: skip
            return
        except BaseException:
            self.spool.requeue(entry)  # interrupted: the series is segmented at the next start
            raise
        self.spool.finish(entry, "done")
        destinations = self.destinations(entry)
        for row in rows:
            self.worker.queue_results(row, destinations)
        self._next_send = 0.0  # send now

    def destinations(self, entry: SeriesEntry) -> list[Peer]:
        """Where the results of a series go: every ``send_to`` peer, and each caller that sent it whose ``--allow``
        entry has a port."""
        out = list(self.send_to)
        for caller in entry.meta.get("callers", []):
            title, _, address = str(caller).rpartition("@")
            for allowed in self.allowed:
                if allowed.peer.port is not None and allowed.matches(title, address) and allowed.peer not in out:
                    out.append(allowed.peer)
        return out


def serve(
    output_dir: str | os.PathLike,
    spool_dir: str | os.PathLike,
    segment_options: dict,
    settings: NodeSettings = NodeSettings(),
    allow: Sequence[Peer] = (),
    max_spool_gb: float = NODE_MAX_SPOOL_GB,
    stop: threading.Event | None = None,
) -> int:
    """Run the node until SIGTERM, SIGINT (``KeyboardInterrupt``) or ``stop``.

    The spool and OUTPUT are locked, and the ``--allow`` hosts resolved, before the model is loaded: a busy folder
    or a wrong host is answered at once. SIGTERM finishes the case being segmented; SIGINT leaves it queued.

    Args:
        output_dir: OUTPUT.
        spool_dir: the spool folder.
        segment_options: :class:`~infnet_monai.pipeline.segment.SegmentConfig` fields (the model, the device, ...).
        settings: as :class:`DicomNode`.
        allow: the calling AEs allowed, resolved here (a wrong host is refused before the model is loaded).
        max_spool_gb: bound of the spool.
        stop: set to stop the node (as SIGTERM does).

    Returns:
        0 once stopped.
    """
    output_dir, spool_dir = Path(output_dir), Path(spool_dir)
    if not max_spool_gb > 0:
        raise ValueError(f"--max-spool-gb must be > 0, got {max_spool_gb:g}.")
    check_folders(output_dir, spool_dir)
    allowed = [AllowedCaller.resolve(p) for p in allow]
    stop = stop if stop is not None else threading.Event()
    with Spool(spool_dir, int(max_spool_gb * 2**30)) as spool, OutputLock(output_dir, spool_dir) as lock:
        from infnet_monai.pipeline.segment import CTSegmenter

        segmenter = CTSegmenter(**segment_options)
        node = DicomNode(segmenter, output_dir, spool, lock, settings, allowed)
        previous = None
        if threading.current_thread() is threading.main_thread():
            def on_term(signum, frame) -> None:
                logger.info("SIGTERM: finishing the case being segmented, then stopping")
                stop.set()

            previous = signal.signal(signal.SIGTERM, on_term)
        node.start()
        try:
            node.run(stop)
        finally:
            node.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        logger.info("stopped; spool %s holds %d series to segment and %d result(s) to send",
                    spool_dir, len(spool.queued()) + len(spool.receiving()), spool.outbox.count())  # fmt: skip
    return 0
