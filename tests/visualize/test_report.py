"""The cohort report: content, self-containedness, and rendering in a real headless browser (Chromium)."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from infnet_monai.visualize import overview_image, write_overview, write_report

BROWSER_ENV = "INFNET_REQUIRE_BROWSER"
"""Set to 1 (``.ci/run`` does, after installing Debian's chromium when missing): no browser is a failure."""


def _cohort(tmp_path):
    shape = (40, 30, 12)
    hu = np.full(shape, 40.0, dtype=np.float32)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[24:36, 6:24, 2:10], lung[4:16, 6:24, 2:10] = 1, 2
    hu[lung > 0] = -850.0
    infection = np.zeros(shape, dtype=np.uint8)
    infection[26:30, 8:12, 4:8] = 1
    rows = [
        {"case_id": "p01", "status": "ok", "error": "", "infection_volume_ml": 12.5, "infection_percent": 3.2,
         "right_lung_infection_percent": 5.0, "left_lung_infection_percent": 1.1, "lesion_count": 2},
        {"case_id": "p02 <bad>", "status": "error", "error": "/data/p02.nii.gz: not a NIfTI file"},
    ]
    write_overview(tmp_path / "p01" / "overview.png", overview_image(hu, lung, infection, np.diag([0.8, 0.8, 5, 1]), row=rows[0], title="p01"))
    return write_report(rows, tmp_path, {"model": "model.pt", "command line": "infnet-covid segment in -o out"})


def test_report_lists_every_case_and_stays_offline(tmp_path):
    page = _cohort(tmp_path).read_text(encoding="utf-8")
    assert "p01" in page and "p02 &lt;bad&gt;" in page and "not a NIfTI file" in page  # escaped, failed case listed
    assert "http" not in page and "//" not in re.sub(r"<!DOCTYPE html>", "", page)  # no external URL of any kind
    assert re.findall(r'src="([^"]+)"', page) == ["p01/overview.png"]
    assert 'href="p01/overview.png"' in page and "infnet-covid segment in -o out" in page
    assert page.count("<svg") == 2


def _browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_report_renders_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get(BROWSER_ENV) == "1":
            pytest.fail(f"{BROWSER_ENV}=1 but no chromium found")
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    report = _cohort(tmp_path)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    url = report.resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images="1"' in body and 'data-images-rendered="1"' in body, body  # the overview picture loaded
    assert dom.count("<tr") >= 2 + 3 and "p01" in dom and "not a NIfTI file" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1200,2000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert ((pixels == (214, 39, 40)).all(1)).sum() > 50  # the per-case infection bar (SVG) is drawn
    assert ((pixels < 40).all(1)).sum() > 1000  # the overview thumbnail (dark) is on the page


def test_flagged_cases_carry_their_flags_in_table_chart_and_legend(tmp_path):
    rows = [
        {"case_id": "covid", "status": "ok", "infection_percent": 2.8, "qc_flags": []},
        {"case_id": "abdomen", "status": "ok", "infection_percent": 5.8, "qc_flags": ["lungs_cut_by_scan"]},
        {"case_id": "resumed", "status": "ok", "infection_percent": 0.4, "qc_flags": "trachea_in_lung;infection_outside_thorax"},
    ]
    page = write_report(rows, tmp_path).read_text(encoding="utf-8")
    charts = page[page.index("<svg") :]
    assert "abdomen [lungs_cut_by_scan]" in charts and "resumed [trachea_in_lung, infection_outside_thorax]" in charts
    assert "covid [" not in charts
    assert '<td class="text flags">lungs_cut_by_scan</td>' in page
    assert "the scan cuts the lungs" in page and "covers more than 2% of the trachea" in page


def test_report_names_the_command_that_made_each_case(tmp_path):
    rows = [
        {"case_id": "a", "status": "ok", "command_line": "infnet-covid segment in -o out"},
        {"case_id": "b", "status": "ok", "command_line": "infnet-covid segment in -o out"},
        {"case_id": "c", "status": "ok", "command_line": "infnet-covid segment in -o out --threshold 0.4"},
        {"case_id": "d", "status": "error", "error": "x"},
    ]
    page = write_report(rows, tmp_path, {"this run's command line": "infnet-covid segment in -o out --resume"}).read_text()
    assert "infnet-covid segment in -o out (2 cases); infnet-covid segment in -o out --threshold 0.4 (1 case)" in page
    assert "--resume" in page  # this run's own command, beside the ones that made the masks
