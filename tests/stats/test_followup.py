"""Tests of infnet_monai.stats.followup on cohort rows made by hand: scan order, changes, trend rule, pairs file."""

from __future__ import annotations

import csv
import math

import pytest

from infnet_monai.stats.followup import (
    FOLLOWUP_COLUMNS,
    FOLLOWUP_FILE,
    STABLE_RELATIVE_CHANGE_PERCENT,
    STABLE_VOLUME_CHANGE_ML,
    followup_rows,
    infection_trend,
    read_pairs_csv,
    write_followup_csv,
)


def _row(case_id, patient_id="P1", study_date="", volume=10.0, percent=1.0, zone_score=None, status="ok", **extra):
    row = {"case_id": case_id, "status": status, "patient_id": patient_id, "study_date": study_date,
           "infection_volume_ml": volume, "infection_percent": percent, **extra}
    if zone_score is not None:
        row["zone_score"] = zone_score
    return row


def _pairs(out):
    return [(r["patient_id"], r["baseline_case_id"], r["followup_case_id"]) for r in out]


def test_columns_and_file_name():
    assert FOLLOWUP_FILE == "followup.csv"
    assert FOLLOWUP_COLUMNS == (
        "patient_id", "baseline_case_id", "followup_case_id", "baseline_study_date", "followup_study_date",
        "days_between", "baseline_infection_volume_ml", "followup_infection_volume_ml", "infection_volume_change_ml",
        "infection_volume_change_relative_percent", "baseline_infection_percent", "followup_infection_percent",
        "infection_percent_change_points", "infection_percent_change_relative_percent", "baseline_zone_score",
        "followup_zone_score", "zone_score_change", "trend", "note",
    )  # fmt: skip
    assert (STABLE_VOLUME_CHANGE_ML, STABLE_RELATIVE_CHANGE_PERCENT) == (1.0, 10.0)


def test_consecutive_scans_in_date_order_with_exact_changes():
    rows = [
        # case ids sort against the dates: the order must come from the dates
        _row("a_third", study_date="20200401", volume=30.0, percent=3.0, zone_score=9),
        _row("b_first", study_date="20200301", volume=50.0, percent=5.0, zone_score=12),
        _row("c_second", study_date="20200315", volume=40.0, percent=4.5, zone_score=10),
        _row("q1", patient_id="Q", study_date="20200101", volume=2.0, percent=0.5),
        _row("q2", patient_id="Q", study_date="20200102", status="error", error="unreadable"),  # failed: left out
        _row("x1", patient_id="", study_date="20200101"),  # no patient ID: never grouped
        _row("x2", patient_id="", study_date="20200201"),
        _row("s1", patient_id="  ", study_date="20200101"),  # blank patient ID is no patient ID
        _row("s2", patient_id="  ", study_date="20200201"),
    ]
    out = followup_rows(rows)
    assert _pairs(out) == [("P1", "b_first", "c_second"), ("P1", "c_second", "a_third")]
    assert all(tuple(r) == FOLLOWUP_COLUMNS for r in out)
    first, second = out
    assert first["baseline_study_date"] == "2020-03-01" and first["followup_study_date"] == "2020-03-15"
    assert first["days_between"] == 14 and second["days_between"] == 17
    assert first["baseline_infection_volume_ml"] == 50.0 and first["followup_infection_volume_ml"] == 40.0
    assert first["infection_volume_change_ml"] == -10.0
    assert first["infection_volume_change_relative_percent"] == -20.0
    assert first["baseline_infection_percent"] == 5.0 and first["followup_infection_percent"] == 4.5
    assert first["infection_percent_change_points"] == -0.5
    assert first["infection_percent_change_relative_percent"] == -10.0
    assert (first["baseline_zone_score"], first["followup_zone_score"], first["zone_score_change"]) == (12, 10, -2)
    assert first["trend"] == "regression" and first["note"] == ""
    assert second["infection_volume_change_ml"] == -10.0
    assert second["infection_volume_change_relative_percent"] == pytest.approx(-25.0, abs=1e-12)
    assert second["infection_percent_change_points"] == -1.5
    assert second["zone_score_change"] == -1 and second["trend"] == "regression"


def test_scans_without_a_date_come_last_in_case_id_order():
    rows = [_row("a_undated_2"), _row("a_undated_1"), _row("z_dated", study_date="20210105")]
    out = followup_rows(rows)
    assert _pairs(out) == [("P1", "z_dated", "a_undated_1"), ("P1", "a_undated_1", "a_undated_2")]
    assert out[0]["baseline_study_date"] == "2021-01-05" and out[0]["followup_study_date"] == ""
    assert out[0]["days_between"] == "" and out[1]["days_between"] == ""
    assert out[0]["note"] == "no study date for a_undated_1: days between unknown"
    assert out[1]["note"] == "no study date for a_undated_1, a_undated_2: days between unknown"


def test_same_patient_twice_on_the_same_date():
    rows = [_row("scan_b", study_date="20200301", volume=12.0, series_instance_uid="1.2.3"),
            _row("scan_a", study_date="20200301", volume=10.0, series_instance_uid="1.2.3")]
    (out,) = followup_rows(rows)
    assert (out["baseline_case_id"], out["followup_case_id"]) == ("scan_a", "scan_b")  # same date: case id order
    assert out["days_between"] == 0
    assert out["note"] == "same study date; same series instance UID: the same scan twice?"
    assert out["infection_volume_change_ml"] == 2.0 and out["trend"] == "progression"  # 2 mL and 20 %


def test_unreadable_study_date_is_a_missing_one_with_a_note():
    rows = [_row("a", study_date="2020-03-01"), _row("b", study_date="01/03/2020"), _row("c", study_date="20200230")]
    out = followup_rows(rows)
    assert _pairs(out) == [("P1", "a", "b"), ("P1", "b", "c")]  # ISO is read; the others sort as undated
    assert out[0]["baseline_study_date"] == "2020-03-01" and out[0]["followup_study_date"] == ""
    assert "study date '01/03/2020' of b unreadable (expected YYYYMMDD)" in out[0]["note"]
    assert "study date '20200230' of c unreadable" in out[1]["note"]


def test_zero_baseline_gives_nan_relative_change_and_absolute_trend():
    rows = [_row("a", study_date="20200101", volume=0.0, percent=0.0, zone_score=0),
            _row("b", study_date="20200108", volume=3.0, percent=0.25, zone_score=2)]
    (out,) = followup_rows(rows)
    assert out["infection_volume_change_ml"] == 3.0 and math.isnan(out["infection_volume_change_relative_percent"])
    assert out["infection_percent_change_points"] == 0.25
    assert math.isnan(out["infection_percent_change_relative_percent"])
    assert out["trend"] == "progression" and out["zone_score_change"] == 2


def test_old_rows_without_new_keys_give_empty_dates_and_zone_scores():
    rows = [{"case_id": c, "status": "ok", "patient_id": "P", "infection_volume_ml": v, "infection_percent": p}
            for c, v, p in (("a", "12.5", "1.5"), ("b", "10", "nan"))]  # as read back from burden.csv: strings
    (out,) = followup_rows(rows)
    assert out["baseline_study_date"] == out["days_between"] == ""
    assert out["baseline_zone_score"] == out["followup_zone_score"] == out["zone_score_change"] == ""
    assert out["infection_volume_change_ml"] == -2.5 and out["infection_volume_change_relative_percent"] == -20.0
    assert math.isnan(out["infection_percent_change_points"])  # an empty lung's percent is not defined
    assert out["trend"] == "regression"


def test_a_withheld_zone_score_gives_no_zone_change_and_a_note():
    reason = "the scan does not cover the whole lung (lungs_cut_by_scan): zones by lung height are not defined"
    rows = [_row("a", study_date="20200101", volume=10.0, zone_score=7),
            _row("b", study_date="20200108", volume=20.0, zone_score=None, zones_withheld=reason)]
    rows[1]["zone_score"] = None  # stats.json: null
    (out,) = followup_rows(rows)
    assert out["baseline_zone_score"] == 7 and out["followup_zone_score"] == "" and out["zone_score_change"] == ""
    assert out["note"] == f"no zone score for b: {reason}"
    assert out["infection_volume_change_ml"] == 10.0 and out["trend"] == "progression"  # the rest as usual
    # as read back from burden.csv: empty cells
    as_csv = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]
    as_csv[0]["zones_withheld"] = ""
    (out_csv,) = followup_rows(as_csv)
    assert (out_csv["followup_zone_score"], out_csv["zone_score_change"], out_csv["note"]) == ("", "", out["note"])


@pytest.mark.parametrize(
    "baseline, followup, trend",
    [
        (2.0, 3.0, "progression"),  # exactly 1 mL (and 50 %): not below the volume threshold
        (2.0, 2.75, "stable"),  # 0.75 mL, though 37.5 %
        (100.0, 110.0, "progression"),  # exactly 10 % (and 10 mL): not below the relative threshold
        (100.0, 109.5, "stable"),  # 9.5 %, though 9.5 mL
        (100.0, 90.0, "regression"),
        (100.0, 91.0, "stable"),
        (5.0, 4.0, "regression"),  # 1 mL and 20 % less
        (0.0, 0.5, "stable"),  # from nothing: the volume alone decides
        (0.0, 1.0, "progression"),
        (0.0, 0.0, "stable"),
        (math.nan, 3.0, ""),
        (None, 3.0, ""),
    ],
)
def test_trend_rule_edges(baseline, followup, trend):
    assert infection_trend(baseline, followup) == trend


def test_pairs_give_exactly_those_comparisons_and_notes_for_bad_cases():
    rows = [
        _row("early", study_date="20200301", volume=20.0, zone_score=5),
        _row("late", study_date="20200311", volume=25.0, zone_score=6),
        _row("other", patient_id="P2", study_date="20200320", volume=20.0),
        _row("broken", status="error", error="not a NIfTI file"),
    ]
    pairs = [("late", "early"), ("early", "other"), ("early", "missing"), ("broken", "late"), ("nowhere", "gone")]
    out = followup_rows(rows, pairs)
    assert [(r["baseline_case_id"], r["followup_case_id"]) for r in out] == pairs  # no more, no fewer, in order
    reverse, mixed, unknown, failed, both = out
    assert reverse["days_between"] == -10 and reverse["infection_volume_change_ml"] == -5.0
    assert reverse["note"] == "the follow-up scan is dated before the baseline"
    assert mixed["patient_id"] == "P1" and mixed["note"] == "different patient IDs: P1 (baseline), P2 (follow-up)"
    assert unknown["note"] == "follow-up case missing is not in the cohort"
    assert failed["note"] == "baseline case broken did not succeed (status error)"
    assert both["note"] == "baseline case nowhere is not in the cohort; follow-up case gone is not in the cohort"
    assert unknown["patient_id"] == "P1" and both["patient_id"] == ""
    figures = [c for c in FOLLOWUP_COLUMNS if c not in ("patient_id", "baseline_case_id", "followup_case_id", "note")]
    for r in (unknown, failed, both):
        assert all(r[c] == "" for c in figures), r


def test_empty_pairs_give_no_comparison_and_auto_needs_two_scans():
    rows = [_row("a", study_date="20200101"), _row("b", patient_id="P2")]
    assert followup_rows(rows, []) == []
    assert followup_rows(rows) == []


def test_read_pairs_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("\ufeffbaseline_case_id, followup_case_id ,comment\n a , b ,first\n\nb,c\n", encoding="utf-8")
    assert read_pairs_csv(path) == [("a", "b"), ("b", "c")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("baseline,followup_case_id\na,b\n", "line 1: the header lacks the column(s) baseline_case_id"),
        ("baseline_case_id,followup_case_id\na,b\nc,\n", "line 3: empty followup_case_id"),
        ("baseline_case_id,followup_case_id\na,b\nc\n", "line 3: empty followup_case_id"),  # a short line
        ("baseline_case_id,followup_case_id\n,b\n", "line 2: empty baseline_case_id"),
        ("baseline_case_id,followup_case_id\na,b\n\nc, c\n", "line 4: case 'c' is paired with itself"),
    ],
)
def test_read_pairs_csv_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "my pairs.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_pairs_csv(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_write_followup_csv_round_trip_and_header_always(tmp_path):
    rows = [_row("a", study_date="20200101", volume=0.0, zone_score=1),
            _row("b", study_date="20200131", volume=1.0 / 3.0, zone_score=3)]
    path = write_followup_csv(followup_rows(rows), tmp_path / "out" / FOLLOWUP_FILE)
    assert path == tmp_path / "out" / FOLLOWUP_FILE
    with open(path, newline="", encoding="utf-8") as f:
        (back,) = list(csv.DictReader(f))
    assert tuple(back) == FOLLOWUP_COLUMNS
    assert back["baseline_study_date"] == "2020-01-01" and back["days_between"] == "30"
    assert back["infection_volume_change_ml"] == "0.333333"  # as burden.csv writes figures
    assert back["infection_volume_change_relative_percent"] == "nan"  # relative to 0: not defined
    assert back["zone_score_change"] == "2" and back["trend"] == "stable" and back["note"] == ""
    empty = write_followup_csv([], tmp_path / "empty.csv")
    assert empty.read_text(encoding="utf-8").splitlines() == [",".join(FOLLOWUP_COLUMNS)]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["empty.csv", FOLLOWUP_FILE]  # no .part left
