"""The DICOM node against a real PACS: Orthanc (the Debian package; ``.ci/run`` installs it when missing) started with
its own configuration on free loopback ports, holding a real chest CT series of ``../shared/data/ct`` uploaded through
its REST API.

Push: Orthanc sends the series to ``infnet-covid serve`` (a configured modality) and must then hold a SEG and an SR in
the same study, whose infection frames equal the node's NIfTI mask voxel for voxel. Pull: ``infnet-covid segment
--from-pacs`` retrieves the study from Orthanc by its StudyInstanceUID (and a missing accession number gives an
error row) and sends its results back.

Skipped where Orthanc is not installed, unless ``INFNET_REQUIRE_ORTHANC=1`` (``.ci/run`` sets it): then they fail.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

REQUIRE_ORTHANC_ENV = "INFNET_REQUIRE_ORTHANC"
"""Set to 1 (``.ci/run`` does): a missing Orthanc fails these tests instead of skipping them."""
SERIES = "lung_pet_ct_dx_A0001_chest_5mm"
"""A real chest CT of ``../shared/data/ct``: 64 axial slices of 5 mm, uncompressed, with full DICOM headers."""
NODE_AE, ORTHANC_AE = "INFNET", "ORTHANC"


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None)


class Orthanc:
    """An Orthanc process of this test module and its REST API."""

    def __init__(self, root: Path, binary: str, http_port: int, dicom_port: int, node_port: int) -> None:
        self.http_port, self.dicom_port, self.node_port = http_port, dicom_port, node_port
        config = {
            "Name": "infnet-test",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": ORTHANC_AE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomModalities": {"infnet": [NODE_AE, "127.0.0.1", node_port]},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomScuTimeout": 60,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = root / "orthanc.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=root)

    def request(self, path: str, data: bytes | dict | None = None, method: str | None = None):
        body = json.dumps(data).encode() if isinstance(data, dict) else data
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(req, timeout=120) as answer:
            raw = answer.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def is_up(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"Orthanc exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return self.request("/system").get("DicomAet") == ORTHANC_AE
        except OSError:
            return False

    def series_of_study(self, study_id: str) -> dict[str, list[str]]:
        """``{modality: [Orthanc series ids]}`` of a study."""
        out: dict[str, list[str]] = {}
        for series_id in self.request(f"/studies/{study_id}")["Series"]:
            modality = self.request(f"/series/{series_id}")["MainDicomTags"].get("Modality", "")
            out.setdefault(modality, []).append(series_id)
        return out

    def download_series(self, series_id: str, path: Path) -> Path:
        (instance,) = self.request(f"/series/{series_id}")["Instances"]
        path.write_bytes(self.request(f"/instances/{instance}/file"))
        return path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, data_dir, net):
    """Orthanc on free loopback ports, with the real series uploaded: ``(orthanc, study id, series id, files)``."""
    binary = _orthanc_binary()
    if binary is None:
        message = "Orthanc is not installed (Debian: apt-get install orthanc)"
        if os.environ.get(REQUIRE_ORTHANC_ENV) == "1":
            pytest.fail(f"{REQUIRE_ORTHANC_ENV}=1 but {message}")
        pytest.skip(f"{message}; set {REQUIRE_ORTHANC_ENV}=1 to make this a failure")
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), binary, net.free_port(), net.free_port(), net.free_port())
    try:
        net.wait(server.is_up, 60, "Orthanc to answer")
        files = sorted((data_dir / "ct" / SERIES).glob("*.dcm"))
        answers = [server.request("/instances", f.read_bytes()) for f in files]
        assert {a["Status"] for a in answers} == {"Success"}
        yield server, answers[0]["ParentStudy"], answers[0]["ParentSeries"], files
    finally:
        server.stop()


def _burden(out: Path) -> list[dict]:
    with open(out / "burden.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_results_match_the_masks(seg_path: Path, sr_path: Path, case_dir: Path, files: list[Path]) -> None:
    """The SEG's infection and lung frames equal the case's NIfTI masks voxel for voxel; the SR parses and references
    the SEG."""
    from infnet_monai.io.dicom_seg import read_dicom_seg
    from infnet_monai.io.dicom_sr import read_dicom_sr

    infection = nib.load(case_dir / "infection.nii.gz")
    mask = np.asarray(infection.dataobj) > 0
    lung = np.asarray(nib.load(case_dir / "lung.nii.gz").dataobj)
    back = read_dicom_seg(seg_path, files, infection.affine, mask.shape)
    np.testing.assert_array_equal(back["infection"], mask)
    np.testing.assert_array_equal(back["right lung"], lung == 1)
    np.testing.assert_array_equal(back["left lung"], lung == 2)
    assert (lung > 0).any()  # a chest CT: the frames compared are not all empty
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    assert read_dicom_sr(sr_path)["segmentation_sop_instance_uid"] == seg.SOPInstanceUID


def test_orthanc_sends_a_series_to_the_node_and_stores_the_seg_and_sr_it_gets_back(tmp_path, orthanc, tiny_model, net):
    server, study_id, series_id, files = orthanc
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    before = server.series_of_study(study_id)
    log = tmp_path / "serve.log"
    argv = [
        sys.executable, "-m", "infnet_monai.cli", "serve", "-o", str(tmp_path / "out"), "--spool", str(tmp_path / "spool"),
        "--port", str(server.node_port), "--ae-title", NODE_AE,
        "--allow", f"{ORTHANC_AE}@127.0.0.1:{server.dicom_port}",  # allowed, and the destination of its results
        "--idle-seconds", "1", "--model", str(tiny_model), "--device", "cpu", "--backend", "torch", "--no-classes",
        "--no-overview",
    ]  # fmt: skip
    with open(log, "w") as stderr:
        node = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        net.wait(lambda: "listening as INFNET" in log.read_text() or node.poll() is not None, 120, "the node to listen", 0.5)
        assert node.poll() is None, log.read_text()
        job = server.request("/modalities/infnet/store", {"Resources": [series_id], "Synchronous": True})
        assert (job["InstancesCount"], job["FailedInstancesCount"]) == (len(files), 0), job

        def with_results() -> dict | None:
            now = server.series_of_study(study_id)
            grown = all(len(now.get(m, [])) > len(before.get(m, [])) for m in ("SEG", "SR"))
            return now if grown else None

        # each poll is a few REST calls: not too often, Orthanc and the node share the cores with this test
        found = net.wait(with_results, 180, "Orthanc to hold the SEG and the SR in the study", interval_s=2.0)
        node.send_signal(signal.SIGTERM)
        assert node.wait(120) == 0, log.read_text()
    finally:
        if node.poll() is None:
            node.kill()
    new_seg = [s for s in found["SEG"] if s not in before.get("SEG", [])]
    new_sr = [s for s in found["SR"] if s not in before.get("SR", [])]
    assert len(new_seg) == len(new_sr) == 1  # in the same Orthanc study as the source series
    seg = server.download_series(new_seg[0], tmp_path / "seg.dcm")
    sr = server.download_series(new_sr[0], tmp_path / "sr.dcm")
    _check_results_match_the_masks(seg, sr, tmp_path / "out" / series_uid, files)
    (row,) = _burden(tmp_path / "out")
    assert (row["case_id"], row["status"], row["series_instance_uid"]) == (series_uid, "ok", series_uid)
    text = log.read_text()
    assert f"association from {ORTHANC_AE}@127.0.0.1 released: {len(files)} instance(s) stored" in text
    seg_uid = pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID
    assert f"sent SEG {seg_uid} to {ORTHANC_AE}@127.0.0.1:{server.dicom_port}" in text


def test_pull_mode_retrieves_the_study_from_orthanc_segments_it_and_sends_the_results_back(tmp_path, orthanc, tiny_model):
    from infnet_monai.cli import main

    server, study_id, _, files = orthanc
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    before = server.series_of_study(study_id)
    studies = tmp_path / "studies.txt"
    studies.write_text(f"# chest CT to segment\n{study_uid}\nNOSUCHACCESSION\n")
    pacs = f"{ORTHANC_AE}@127.0.0.1:{server.dicom_port}"
    argv = [
        "segment", "--from-pacs", pacs, "--studies", str(studies), "--send-to", pacs, "--ae-title", NODE_AE,
        "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--device", "cpu", "--backend", "torch",
        "--no-classes", "--no-overview", "-q",
    ]  # fmt: skip
    assert main(argv) == 1  # one study failed: the accession number Orthanc does not know
    rows = {r["case_id"]: r for r in _burden(tmp_path / "out")}
    assert sorted(rows) == sorted([study_uid, "NOSUCHACCESSION"])  # one row per study, errors included
    assert rows[study_uid]["status"] == "ok"
    assert rows["NOSUCHACCESSION"]["status"] == "error" and "not found on ORTHANC@127.0.0.1" in rows["NOSUCHACCESSION"]["error"]
    after = server.series_of_study(study_id)
    new_seg = [s for s in after["SEG"] if s not in before.get("SEG", [])]
    new_sr = [s for s in after["SR"] if s not in before.get("SR", [])]
    assert len(new_seg) == len(new_sr) == 1
    _check_results_match_the_masks(
        server.download_series(new_seg[0], tmp_path / "seg.dcm"), server.download_series(new_sr[0], tmp_path / "sr.dcm"),
        tmp_path / "out" / study_uid, files,
    )  # fmt: skip
    spool = tmp_path / "out.spool"
    assert not list((spool / "pull").iterdir()) and not list((spool / "outbox").rglob("*.dcm"))  # all sent, spool empty
