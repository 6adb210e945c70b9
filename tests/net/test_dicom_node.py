"""The DICOM node over the network, in this process: pynetdicom SCUs send synthetic and real CT series to a node on a
free loopback port (the tiny model of ``tests/conftest.py``), a storage SCP stands in for the PACS that gets the
results. What is checked does not depend on the model's weights: the SEG against the NIfTI mask of the same run,
rows, refusals, files and log lines."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from infnet_monai.net.peers import Peer
from infnet_monai.testing.asserts import assert_masks_equal

PACS = "PACS"


def _rows(out: Path) -> list[dict]:
    path = out / "burden.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _series_uid(files) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _echo(port: int, calling: str = PACS, called: str = "INFNET"):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return assoc, None
    status = assoc.send_c_echo()
    assoc.release()
    return assoc, int(status.Status)


def test_a_series_sent_to_the_node_comes_back_as_seg_and_sr(tmp_path, start_node, make_series, receiver, net):
    from infnet_monai.io.dicom_seg import read_dicom_seg
    from infnet_monai.io.dicom_sr import read_dicom_sr

    files = make_series("a")
    series_uid = _series_uid(files)
    # the calling AE's --allow entry has a port: the results go back to it
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1", receiver.port)]) as node:
        assert _echo(node.port)[1] == 0x0000
        established, _, statuses = net.send(node.port, files)
        assert established and statuses == [0x0000] * len(files)
        net.wait(  # the PACS holds a result before its answer reaches the node, which then empties the outbox
            lambda: len(receiver.datasets) == 2 and node.spool.outbox.count() == 0,
            what="the SEG and the SR at the PACS and taken out of the outbox",
        )
    seg, sr = sorted(receiver.datasets, key=lambda ds: ds.Modality)
    assert (seg.Modality, sr.Modality) == ("SEG", "SR")
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID
    case_dir = tmp_path / "out" / series_uid
    for ds, name in ((seg, "seg.dcm"), (sr, "sr.dcm")):
        ds.save_as(tmp_path / name, enforce_file_format=True)
    infection = nib.load(case_dir / "infection.nii.gz")
    mask = np.asarray(infection.dataobj) > 0
    back = read_dicom_seg(tmp_path / "seg.dcm", files, infection.affine, mask.shape)
    assert_masks_equal(back["infection"], mask)
    assert mask.any()  # the random tiny model marks infection: the comparison is not between two empty masks
    assert read_dicom_sr(tmp_path / "sr.dcm")["segmentation_sop_instance_uid"] == seg.SOPInstanceUID
    (row,) = _rows(tmp_path / "out")
    assert (row["case_id"], row["status"], row["series_instance_uid"]) == (series_uid, "ok", series_uid)
    assert (tmp_path / "spool" / "done" / str(source.StudyInstanceUID) / series_uid).is_dir()
    assert (tmp_path / "out" / "report.html").is_file()


def test_unknown_calling_aes_other_hosts_and_other_called_titles_are_refused(tmp_path, start_node, make_series, net, caplog):
    files = make_series("b")
    allowed = [Peer(PACS, "127.0.0.1"), Peer("ELSEWHERE", "127.0.0.2")]
    caplog.set_level(logging.INFO, logger="infnet_monai")
    with start_node(tmp_path, allowed=allowed) as node:
        for calling, called in (("INTRUDER", "INFNET"), ("ELSEWHERE", "INFNET"), (PACS, "NOT_INFNET")):
            established, rejected, _ = net.send(node.port, files, calling=calling, called=called)
            assert (established, rejected) == (False, True), (calling, called)
        assert _echo(node.port)[1] == 0x0000  # the allowed one still gets through
        net.wait(lambda: "released" in caplog.text, what="the log line of the echo association")
    assert not any((tmp_path / "spool" / "incoming").iterdir())
    assert "association from INTRUDER@127.0.0.1 refused: calling AE not allowed" in caplog.text
    assert "association from ELSEWHERE@127.0.0.1 refused: calling AE not allowed" in caplog.text
    assert "association from PACS@127.0.0.1 refused: called AE title other than INFNET" in caplog.text


def test_the_spool_never_writes_outside_its_folder_whatever_uids_an_instance_carries(tmp_path, start_node, make_series, net):
    files = make_series("c")[:4]
    evil = []
    for i, (study, series) in enumerate((("../../../escape", None), (None, "../../escape"), ("1.2/../..", None))):
        ds = pydicom.dcmread(files[i])
        if study is not None:
            ds.StudyInstanceUID = study
        if series is not None:
            ds.SeriesInstanceUID = series
        evil.append(ds)
    before = sorted(p for p in tmp_path.rglob("*") if "spool" not in p.parts and "out" not in p.parts)
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")]) as node:
        established, _, statuses = net.send(node.port, evil)
    assert established and statuses == [0xC000] * 3  # "cannot understand": refused, the association goes on
    assert sorted(p for p in tmp_path.rglob("*") if "spool" not in p.parts and "out" not in p.parts) == before
    assert not list((tmp_path / "spool").rglob("*.dcm"))


def test_a_dropped_association_then_a_resend_give_one_whole_series(tmp_path, start_node, make_series, net, caplog):
    files = make_series("d")
    series_uid = _series_uid(files)
    caplog.set_level(logging.INFO, logger="infnet_monai")
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")]) as node:
        established, _, statuses = net.send(node.port, files, abort_after=8)  # the client drops it mid-series
        assert established and statuses == [0x0000] * 8
        first = net.wait(lambda: _rows(tmp_path / "out"), what="the row of the partial series")
        assert first[0]["shape"] == "32x32x8"  # what was stored is segmented once idle, the node goes on
        assert "association from PACS@127.0.0.1 aborted: 8 instance(s) stored" in caplog.text
        assert "an association that sent it was aborted, it may lack instances" in caplog.text
        established, _, statuses = net.send(node.port, files)  # the sender tries again, whole
        assert statuses == [0x0000] * 16
        rows = net.wait(lambda: [r for r in _rows(tmp_path / "out") if r["shape"] == "32x32x16"], what="the row of the whole series")
    assert len(_rows(tmp_path / "out")) == 1 and rows[0]["case_id"] == series_uid  # the row was replaced
    stats = json.loads((tmp_path / "out" / series_uid / "stats.json").read_text())
    assert stats["shape"] == [32, 32, 16]


def test_a_restart_segments_the_spooled_series_and_sends_the_unsent_results(tmp_path, start_node, make_series, net):
    files = make_series("e")
    series_uid = _series_uid(files)
    destination = Peer(PACS, "127.0.0.1", net.free_port())  # nothing listens there yet
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")], idle_seconds=300) as node:
        assert net.send(node.port, files)[2] == [0x0000] * 16
    # stopped before the series completed: a new node finds it, segments it, and cannot send the results
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")], send_to=[destination]) as node:
        net.wait(lambda: _rows(tmp_path / "out"), what="the series spooled before the restart")
        net.wait(lambda: node.spool.outbox.count() == 2 and node.worker.sender.retries, what="the results kept")
        time.sleep(0.5)  # the retries end
    assert _rows(tmp_path / "out")[0]["case_id"] == series_uid
    assert sorted(p.name for p in (tmp_path / "spool" / "outbox").rglob("*.dcm"))  # kept on disk
    receiver = net.Receiver(port=destination.port)
    try:
        with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")], send_to=[destination]) as node:
            # the receiver holds a result before its answer reaches the node, which then empties the outbox
            net.wait(
                lambda: len(receiver.datasets) == 2 and node.spool.outbox.count() == 0,
                what="the results sent at the next start and taken out of the outbox",
            )
        assert sorted(receiver.modalities()) == ["SEG", "SR"]
        assert len(_rows(tmp_path / "out")) == 1  # not segmented twice
    finally:
        receiver.stop()


def test_a_full_spool_refuses_associations_and_instances_as_out_of_resources(tmp_path, start_node, make_series, net):
    files = make_series("f")[:4]
    # the disk is short of the space the spool keeps free: new associations are refused, transiently
    with start_node(tmp_path / "a", allowed=[Peer(PACS, "127.0.0.1")], min_free_bytes=2**62) as node:
        assoc, _ = _echo(node.port)
        assert assoc.is_rejected
        assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.diagnostic) == (0x02, 0x02)  # transient, local limit exceeded
    # the bound is reached during an association: the instance is refused as out of resources, nothing is half kept
    with start_node(tmp_path / "b", allowed=[Peer(PACS, "127.0.0.1")], max_bytes=1000) as node:
        established, _, statuses = net.send(node.port, files[:2])
    assert established and statuses == [0xA700, 0xA700]
    assert not list((tmp_path / "b" / "spool").rglob("*.dcm")) and not _rows(tmp_path / "b" / "out")


def test_a_series_that_never_completes_gets_an_error_row(tmp_path, start_node, make_series):
    files = make_series("g")[:4]
    series_uid = _series_uid(files)
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")], idle_seconds=30, series_timeout_s=60, run=False) as node:
        for f in files:
            ds = pydicom.dcmread(f)
            node.spool.store(f.read_bytes(), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, "PACS@127.0.0.1")
        (entry,) = node.spool.receiving()
        meta = entry.folder.parent / f"{series_uid}.json"  # it began 61 s ago and its last instance just came
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "first": time.time() - 61}))
        assert node.step() is False
    (row,) = _rows(tmp_path / "out")
    assert (row["case_id"], row["status"]) == (series_uid, "error")
    assert "still receiving instances 60 s after its first one (--series-timeout)" in row["error"]
    assert len(list((tmp_path / "spool" / "failed").rglob("*.dcm"))) == 4


def test_a_real_series_without_modality_is_taken_as_ct_by_its_sop_class(tmp_path, start_node, data_dir, receiver, net, caplog):
    files = sorted((data_dir / "ct" / "chest_2slice_dicom").glob("*.dcm"))
    assert "Modality" not in pydicom.dcmread(files[0], stop_before_pixels=True)
    caplog.set_level(logging.INFO, logger="infnet_monai")
    with start_node(tmp_path, allowed=[Peer(PACS, "127.0.0.1")], send_to=[Peer(PACS, "127.0.0.1", receiver.port)]) as node:
        assert net.send(node.port, files)[2] == [0x0000, 0x0000]
        (row,) = net.wait(lambda: _rows(tmp_path / "out"), what="the row of the real series")
        net.wait(lambda: "no segmentation.dcm / measurements.dcm to send" in caplog.text, what="the log line")
    assert row["status"] == "ok" and row["shape"].endswith("x2")
    assert receiver.datasets == []  # a source without Modality gets no DICOM-SEG (stats.json notes why)


def test_serve_on_sigterm_finishes_the_case_then_stops_and_logs_no_patient_data(tmp_path, tiny_model, make_series, net):
    files = make_series("h")
    series_uid = _series_uid(files)
    port = net.free_port()
    log = tmp_path / "serve.log"
    argv = [
        sys.executable, "-m", "infnet_monai.cli", "serve", "-o", str(tmp_path / "out"), "--port", str(port),
        "--allow", f"{PACS}@127.0.0.1", "--idle-seconds", "0.5", "--model", str(tiny_model), "--device", "cpu",
        "--backend", "torch", "--no-classes", "--no-overview",
    ]  # fmt: skip
    with open(log, "w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        net.wait(lambda: "listening as INFNET" in log.read_text() or proc.poll() is not None, 120, "the node to listen")
        assert proc.poll() is None, log.read_text()
        assert net.send(port, files)[2] == [0x0000] * 16
        net.wait(lambda: "complete: 16 instance(s)" in log.read_text(), 60, "the series to complete")
        proc.send_signal(signal.SIGTERM)  # while its case is being segmented
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert (tmp_path / "out" / series_uid / "stats.json").is_file()  # the case was finished, not dropped
    assert [r["case_id"] for r in _rows(tmp_path / "out")] == [series_uid]
    assert "SIGTERM: finishing the case being segmented, then stopping" in text and "stopped; spool" in text
    assert "association from PACS@127.0.0.1 released: 16 instance(s) stored" in text
    assert (tmp_path / "out.spool" / "done").is_dir()  # the default spool lies beside OUTPUT
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    for phi in (str(ds.PatientName), str(ds.PatientID)):
        assert phi not in text  # the UIDs only, no patient data in the log at default verbosity
