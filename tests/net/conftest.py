"""Fixtures of the DICOM node's tests: one tiny segmenter for the session, synthetic CT series, a node running in a
thread on a free loopback port, a storage SCP standing in for a PACS, and an SCU that sends files."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition, timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.1):
    """Poll ``condition()`` every ``interval_s`` until it is truthy (returned) or ``timeout_s`` passes (the test
    fails)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.fixture(scope="session")
def node_segmenter(tiny_model):
    """One segmenter for every node of the session (the model loads once), as ``serve`` builds it."""
    from infnet_monai.pipeline import CTSegmenter

    return CTSegmenter(tiny_model, device="cpu", batch_slices=8, classes=False, overview=False, backend="torch")


@pytest.fixture()
def make_series(tmp_path):
    """``make_series(name, seed=0)``: a synthetic chest CT series of 16 slices (one file each) with its own UIDs."""
    from infnet_monai.data.phantom import make_chest_phantom
    from infnet_monai.testing.dicom import write_dicom_series

    def make(name: str, seed: int = 0) -> list[Path]:
        phantom = make_chest_phantom(shape=(32, 32, 16), spacing_mm=(10.0, 10.0, 16.0), seed=seed)
        folder = write_dicom_series(np.round(phantom.volume_hu).astype(np.int16), phantom.affine, tmp_path / "sources" / name)
        return sorted(folder.iterdir())

    return make


def send_files(port: int, files, calling: str = "PACS", called: str = "INFNET", abort_after: int | None = None):
    """C-STORE ``files`` to the node over one association: ``(established, rejected, statuses)``; with
    ``abort_after``, the association is aborted after that many files (a client that drops it)."""
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(CT_IMAGE_STORAGE, [EXPLICIT_LE, IMPLICIT_LE])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False, assoc.is_rejected, []
    statuses = []
    try:
        for i, f in enumerate(files):
            if abort_after is not None and i == abort_after:
                assoc.abort()
                return True, False, statuses
            ds = f if isinstance(f, pydicom.Dataset) else pydicom.dcmread(f)
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if "Status" in status else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return True, False, statuses


class Receiver:
    """A storage SCP standing in for a PACS: it keeps what it receives."""

    def __init__(self, port: int = 0, ae_title: str = "PACS") -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.datasets = []
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = int(self.server.server_address[1])
        self.ae_title = ae_title

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.datasets.append(ds)
        return 0x0000

    def modalities(self) -> list[str]:
        return [str(ds.Modality) for ds in self.datasets]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture()
def start_node(node_segmenter):
    """``with start_node(root, allowed=[Peer...], send_to=[...], idle_seconds=..., max_bytes=...) as node``: a node
    on a free port, its loop in a thread (``run=False``: the test calls ``node.step()``); the spool is
    ``root/spool``, OUTPUT ``root/out``."""
    from infnet_monai.net.node import DicomNode, NodeSettings
    from infnet_monai.net.peers import AllowedCaller
    from infnet_monai.net.spool import DEFAULT_MAX_SPOOL_BYTES, Spool
    from infnet_monai.utils.preflight import OutputLock

    @contextlib.contextmanager
    def start(root: Path, allowed=(), send_to=(), idle_seconds=0.5, series_timeout_s=600.0, max_bytes=DEFAULT_MAX_SPOOL_BYTES,
              min_free_bytes=0, run=True):  # fmt: skip
        spool = Spool(root / "spool", max_bytes, min_free_bytes).open()
        lock = OutputLock(root / "out", root / "spool").acquire()
        settings = NodeSettings(
            port=0, send_to=send_to, idle_seconds=idle_seconds, series_timeout_s=series_timeout_s, send_retries=2
        )
        allowed = [AllowedCaller.resolve(p) for p in allowed]
        node = DicomNode(node_segmenter, root / "out", spool, lock, settings, allowed, timeout_s=5.0)
        node.worker.sender.retry_wait_s = 0.1
        stop = threading.Event()
        node.start()
        thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
        if run:
            thread.start()
        try:
            yield node
        finally:
            stop.set()
            if run:
                thread.join(120)
            node.close()
            lock.release()
            spool.close()

    return start


@pytest.fixture(scope="session")
def net():
    """The helpers of this folder's tests: ``send`` (:func:`send_files`), ``wait`` (:func:`wait_for`),
    ``free_port`` and ``Receiver``."""
    from types import SimpleNamespace

    return SimpleNamespace(send=send_files, wait=wait_for, free_port=free_port, Receiver=Receiver)
