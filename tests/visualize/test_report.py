"""The cohort report: content, self-containedness, and rendering in a real headless browser (Chromium)."""

import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from infnet_monai.stats.followup import followup_rows
from infnet_monai.visualize import overview_image, write_overview, write_report

BROWSER_ENV = "INFNET_REQUIRE_BROWSER"
"""Set to 1 (``.ci/run`` does, after installing Debian's chromium when missing): no browser is a failure."""


ZONES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower")
TIMELINE_RGB = (148, 103, 189)  # the report's timeline colour, #9467bd


def _zones(scores, percent_nan=()):
    """A ``zones`` dict: zone i has 100 + i mL of lung, scores[i] mL infected, scores[i] lesions."""
    return {z: {"lung_volume_ml": 100.0 + i, "infection_volume_ml": float(scores[i]),
                "infection_percent": math.nan if z in percent_nan else 100.0 * scores[i] / (100.0 + i),
                "score": scores[i], "lesion_count": scores[i]} for i, z in enumerate(ZONES)}


def _cohort(tmp_path, followup=False):
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
    if followup:  # the same patient scanned again, with the zone figures of newer runs
        rows[0].update(patient_id="P<1>", study_date="20200301", zone_score=6, zones=_zones([1, 1, 1, 1, 1, 1]))
        rows.append({"case_id": "p01 later", "status": "ok", "patient_id": "P<1>", "study_date": "20200315",
                     "infection_volume_ml": 30.0, "infection_percent": 8.0, "zone_score": 11,
                     "zones": _zones([2, 2, 2, 2, 2, 1])})
    write_overview(tmp_path / "p01" / "overview.png", overview_image(hu, lung, infection, np.diag([0.8, 0.8, 5, 1]), row=rows[0], title="p01"))
    provenance = {"model": "model.pt", "command line": "infnet-covid segment in -o out"}
    return write_report(rows, tmp_path, provenance, followup=followup_rows(rows) if followup else None)


def test_report_lists_every_case_and_stays_offline(tmp_path):
    page = _cohort(tmp_path).read_text(encoding="utf-8")
    assert "p01" in page and "p02 &lt;bad&gt;" in page and "not a NIfTI file" in page  # escaped, failed case listed
    assert "http" not in page and "//" not in re.sub(r"<!DOCTYPE html>", "", page)  # no external URL of any kind
    assert re.findall(r'src="([^"]+)"', page) == ["p01/overview.png"]
    assert 'href="p01/overview.png"' in page and "infnet-covid segment in -o out" in page
    assert page.count("<svg") == 2


def _browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.parametrize("followup", [False, True], ids=["plain", "zones_and_followup"])
def test_report_renders_in_headless_chromium(tmp_path, followup):
    browser = _browser()
    if browser is None:
        if os.environ.get(BROWSER_ENV) == "1":
            pytest.fail(f"{BROWSER_ENV}=1 but no chromium found")
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    report = _cohort(tmp_path, followup)
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
    timeline = ((pixels == TIMELINE_RGB).all(1)).sum()
    if followup:
        assert dom.count("<details") == 2 and "zone score 11 of 30" in dom and "P&lt;1&gt;" in dom
        assert timeline > 100, timeline  # the patient's timeline (SVG line and points) is drawn
    else:
        assert timeline == 0 and "zone score" not in dom and "Follow-up" not in dom


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


def test_old_rows_without_zone_or_followup_keys_render_as_before(tmp_path):
    page = _cohort(tmp_path).read_text(encoding="utf-8")
    assert "zone score" not in page and "<details" not in page and "Follow-up" not in page
    assert page.count("<svg") == 2 and page.count("<th>") == 2 + 10 + 1  # case, status, 10 figures, checks


def test_zone_table_per_case_and_zone_score_column(tmp_path):
    rows = [
        {"case_id": "c<1>", "status": "ok", "infection_percent": 4.0, "zone_score": 9,
         "zones": _zones([0, 1, 2, 3, 2, 1], percent_nan=("left_lower",))},
        {"case_id": "old", "status": "ok", "infection_percent": 1.0},  # a row of an older run: no zone figures
        {"case_id": "bad", "status": "error", "error": "x", "zones": _zones([5] * 6)},  # failed: no zone table
    ]
    page = write_report(rows, tmp_path).read_text(encoding="utf-8")
    head = re.search(r"<h2>Cases</h2>\s*<table[^>]*><tr>(.*?)</tr>", page).group(1)
    assert "<th>left (%)</th><th>zone score (0-30)</th><th>GGO (mL)</th>" in head
    case_rows = re.findall(r'<tr class="(?:ok|error)">(.*?)</tr>', page)
    assert [re.findall(r"<td>([^<]*)</td>", r)[4] for r in case_rows] == ["9", "", ""]  # zone score cell
    assert page.count("<details") == 1
    details = page[page.index("<details") : page.index("</details>")]
    assert "<summary>c&lt;1&gt;: zone score 9 of 30</summary>" in details and "c<1>" not in page
    assert '<tr><td class="text">right lower</td><td>102</td><td>2</td><td>1.96</td><td>2</td><td>2</td></tr>' in details
    assert '<tr><td class="text">left lower</td><td>105</td><td>1</td><td>nan</td><td>1</td><td>1</td></tr>' in details
    assert details.count('<td class="text">') == 6 and "<th>zone score 9 (0-30)</th>" in details
    assert page.count("not the lobe-based CT severity score") == 1  # the note, once
    assert page.index("Zone score: each lung") < page.index("<details")


def test_zone_total_from_the_zones_when_the_row_lacks_it(tmp_path):
    rows = [{"case_id": "a", "status": "ok", "zones": _zones([1, 2, 3, 4, 5, 0])}]
    page = write_report(rows, tmp_path).read_text(encoding="utf-8")
    assert "<summary>a: zone score 15 of 30</summary>" in page and "zone score (0-30)</th><th>GGO" not in page


def _followup_cohort():
    return [
        {"case_id": "s2", "status": "ok", "patient_id": "<P&1>", "study_date": "20200311",
         "infection_volume_ml": 30.0, "infection_percent": 6.0, "zone_score": 9},
        {"case_id": "s1", "status": "ok", "patient_id": "<P&1>", "study_date": "20200301",
         "infection_volume_ml": 10.0, "infection_percent": 2.0, "zone_score": 6},
        {"case_id": "s3 <x>", "status": "ok", "patient_id": "<P&1>", "study_date": "20200401",
         "infection_volume_ml": 29.5, "infection_percent": 5.5, "zone_score": 9},
        {"case_id": "u1", "status": "ok", "patient_id": "U", "infection_volume_ml": 1.0, "infection_percent": 0.5},
        {"case_id": "u2", "status": "ok", "patient_id": "U", "infection_volume_ml": 0.5, "infection_percent": 0.25},
    ]


def test_followup_table_and_timelines_escaped_and_offline(tmp_path):
    rows = _followup_cohort()
    page = write_report(rows, tmp_path, followup=followup_rows(rows)).read_text(encoding="utf-8")
    section = page[page.index("<h2>Follow-up</h2>") : page.index("<h2>Overviews</h2>")]
    assert "stable when the infection volume changed by less than 1 mL or by less than 10 % of the baseline" in section
    assert "<th>baseline zone score</th><th>follow-up zone score</th><th>zone score change</th>" in section
    table_rows = re.findall(r"<tr><td.*?</tr>", section)
    assert len(table_rows) == 3
    assert ('<td class="text">&lt;P&amp;1&gt;</td><td class="text">s1</td><td class="text">s2</td>'
            '<td class="text">2020-03-01</td><td class="text">2020-03-11</td><td>10</td><td>10</td><td>30</td>'
            "<td>+20</td><td>+200</td><td>2</td><td>6</td><td>+4</td><td>6</td><td>9</td><td>+3</td>"
            '<td class="text progression">progression</td>') in table_rows[0]
    assert "<td>-0.50</td>" in table_rows[1] and ">stable</td>" in table_rows[1] and "s3 &lt;x&gt;" in table_rows[1]
    assert "no study date for u1, u2" in table_rows[2]
    assert "<P&1>" not in page and "s3 <x>" not in page
    svgs = re.findall(r'<svg class="chart timeline".*?</svg>', section, re.S)
    assert len(svgs) == 2 and page.count("<svg") == 4  # one timeline per patient beside the two charts
    dated, undated = svgs
    assert "patient &lt;P&amp;1&gt;: infection (% of lung) by study date" in dated
    cx = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', dated)]
    assert cx == pytest.approx([50.0, 50.0 + 370.0 * 10 / 31, 420.0], abs=0.05)  # days from the first: 0, 10, 31
    assert [t for t in re.findall(r'text-anchor="middle">([^<]*)</text>', dated) if t.startswith("2020")] == [
        "2020-03-01", "2020-03-11", "2020-04-01"]
    assert "patient U: infection (% of lung) by scan order" in undated and ">scan 2</text>" in undated
    assert "http" not in page and "//" not in re.sub(r"<!DOCTYPE html>", "", page) and page.count("<script") == 1


def test_followup_of_pairs_with_unknown_cases_and_no_comparison(tmp_path):
    rows = _followup_cohort()
    pairs = [("s1", "gone <y>")]
    page = write_report(rows, tmp_path, followup=followup_rows(rows, pairs)).read_text(encoding="utf-8")
    assert "follow-up case gone &lt;y&gt; is not in the cohort" in page
    assert page.count("<svg") == 2 and "No timeline: no compared scan has an infection %." in page
    page = write_report(rows, tmp_path, followup=[]).read_text(encoding="utf-8")
    assert "<h2>Follow-up</h2><p>No comparison" in page and page.count("<svg") == 2


def _no_lung_cohort(tmp_path):
    """An ok case, a no_lung case (an abdomen: its overview shows what the scan holds) and a failed one."""
    shape = (40, 30, 12)
    hu = np.full(shape, 40.0, dtype=np.float32)
    nothing = np.zeros(shape, dtype=np.uint8)
    long_error = "/data/" + "deep/" * 40 + "p03.dcm: the series has a gap of 12.5 mm between slices 45 and 46 " * 3
    rows = [
        {"case_id": "ok1", "status": "ok", "infection_percent": 1.0},
        {"case_id": "abdomen", "status": "no_lung", "error": "/data/abdomen.nii.gz: no lung found (0.0 mL of lung)"},
        {"case_id": "broken", "status": "error", "error": long_error},
        {"case_id": "ok2", "status": "ok", "infection_percent": 2.0},
    ]
    for case_id in ("ok1", "abdomen"):
        write_overview(tmp_path / case_id / "overview.png", overview_image(hu, nothing, nothing, np.diag([0.8, 0.8, 5, 1])))
    return rows, long_error


def test_report_counts_no_lung_apart_from_failures_and_shows_its_overview(tmp_path):
    from infnet_monai.utils.table import outcome_counts

    rows, _ = _no_lung_cohort(tmp_path)
    page = write_report(rows, tmp_path).read_text(encoding="utf-8")
    assert "<p>4 case(s): 2 ok, 1 no_lung, 1 failed." in page  # the same words as the log and the summary
    assert "no_lung: read and segmented, but no lung found (not a failure" in page
    assert outcome_counts(rows + [{"case_id": "x", "status": "skipped"}]) == "5 case(s): 2 ok, 1 no_lung, 1 failed, 1 skipped"
    assert outcome_counts([]) == "0 case(s): 0 ok, 0 no_lung, 0 failed"
    assert re.findall(r'src="([^"]+)"', page) == ["ok1/overview.png", "abdomen/overview.png"]
    assert "<figcaption>abdomen (no_lung)</figcaption>" in page and "<figcaption>ok1</figcaption>" in page
    charts = page[page.index("<h2>Charts</h2>") : page.index("<h2>Overviews</h2>")]
    assert "abdomen" not in charts  # its figures are not a finding


def test_case_table_wraps_long_cells_and_puts_the_message_under_the_row(tmp_path):
    rows, long_error = _no_lung_cohort(tmp_path)
    page = write_report(rows, tmp_path).read_text(encoding="utf-8")
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    text_rule = re.search(r"td\.text \{([^}]*)\}", style).group(1)
    assert "overflow-wrap: anywhere" in text_rule  # long ids, paths and messages break instead of widening
    assert re.search(r"table \{[^}]*max-width: 100%", style)
    table = page[page.index('<table class="cases">') : page.index("</table>", page.index('<table class="cases">'))]
    n_columns = re.search(r"<tr>(.*?)</tr>", table).group(1).count("<th>")
    assert "<th>error</th>" not in table
    message = f'<tr class="message error"><td class="text message" colspan="{n_columns}">error: {long_error}</td></tr>'
    assert message in table  # the whole width of the table, on its own line under the case's row
    assert table.index('<td class="text">broken</td>') < table.index(message)
    assert '<tr class="message no_lung"><td class="text message"' in table
    assert '<td class="text status">no_lung</td>' in table and re.search(r"td\.status \{[^}]*nowrap", style)
    assert table.count('class="text message"') == 2  # ok cases have no message line


def test_report_fits_a_1400_pixel_window_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get(BROWSER_ENV) == "1":
            pytest.fail(f"{BROWSER_ENV}=1 but no chromium found")
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    rows, _ = _no_lung_cohort(tmp_path)
    rows[0].update(case_id="ok1", zone_score=3, qc_flags=["lungs_cut_by_scan", "trachea_in_lung", "infection_outside_thorax"],
                   infection_volume_ml=1234.5, lung_volume_ml=5432.1, seconds=123.4, nodule_like_lesion_count=3)
    report = write_report(rows, tmp_path, {"command line": "infnet-covid segment " + "/a/long/path" * 60})
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", report.resolve().as_uri()]
    dom = subprocess.run(flags, capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-rendered="2"' in body, body  # the no_lung case's overview renders too
    width = int(re.search(r'data-scroll-width="(\d+)"', body).group(1))
    assert width <= 1400, f"the page is {width} px wide in a 1400 px window: the case table overflows"
