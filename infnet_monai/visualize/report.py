"""The cohort report: ``OUTPUT/report.html``, one self-contained page that opens offline.

It holds the count of cases by outcome (one vocabulary, the ``status`` of ``burden.csv``: ``ok``; ``no_lung``, a
scan read and segmented in which no lung was found, which is not a failure; ``error``, a failed case), the provenance
of the run (model, version, window, threshold, command line), a table of every case (the message of a failed or
no_lung case on a line of its own under its row, and the anatomical self-checks each case failed, with their
meaning), the zone score of each case with its six zones when the rows have them, two charts drawn as inline SVG
(infection % per case; right against left lung), the follow-up comparisons of patients scanned more than once with a
timeline per patient (inline SVG) when given, and thumbnails that link to the ``overview.png`` of each ok or no_lung
case. Long cells (case ids, messages, command lines) wrap, so that the tables fit the page's width. Pictures are
linked by relative paths inside OUTPUT; there is no external URL, no script or style from elsewhere.
"""

from __future__ import annotations

import datetime
import html
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from infnet_monai.utils.files import atomic_write
from infnet_monai.utils.table import outcome_counts

__all__ = ["REPORT_FILE", "OVERVIEW_FILE", "write_report", "report_html"]

REPORT_FILE = "report.html"
OVERVIEW_FILE = "overview.png"

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; max-width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; }
th.text { text-align: left; }
td.text { text-align: left; overflow-wrap: anywhere; word-break: break-word; }
td.status { white-space: nowrap; }
td.message { padding-left: 2em; }
tr.error td { background: #fde8e8; }
tr.no_lung td { background: #fff6dd; }
.thumbs { display: flex; flex-wrap: wrap; gap: 1em; }
.thumbs figure { margin: 0; width: 260px; }
.thumbs img { width: 260px; border: 1px solid #999; }
.chart { margin: 0.5em 0 1.5em; }
details.zones { margin: 0.25em 0; }
details.zones table { margin: 0.25em 0 0.75em 1.5em; }
td.progression { color: #b00; }
td.regression { color: #060; }
.timelines { display: flex; flex-wrap: wrap; gap: 1em; }
"""

# the browser test reads these attributes after load: how many pictures there are, how many rendered, and how
# wide the page is (wider than the window: something does not fit)
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-rendered', imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length);
  document.body.setAttribute('data-scroll-width', document.documentElement.scrollWidth);
});
"""

_COLUMNS = (
    ("infection_volume_ml", "infection (mL)"),
    ("infection_percent", "infection (% of lung)"),
    ("right_lung_infection_percent", "right (%)"),
    ("left_lung_infection_percent", "left (%)"),
    ("ggo_volume_ml", "GGO (mL)"),
    ("consolidation_volume_ml", "consolidation (mL)"),
    ("lesion_count", "lesions"),
    ("nodule_like_lesion_count", "nodule-like lesions (kept apart)"),
    ("lung_volume_ml", "lung (mL)"),
    ("seconds", "seconds"),
)

_ZONE_SCORE_COLUMN = ("zone_score", "zone score (0-30)")
"""Shown after ``left (%)`` when a row has it (rows of older runs do not)."""

_ZONES = (
    ("right_upper", "right upper"),
    ("right_middle", "right middle"),
    ("right_lower", "right lower"),
    ("left_upper", "left upper"),
    ("left_middle", "left middle"),
    ("left_lower", "left lower"),
)

_ZONE_COLUMNS = (
    ("lung_volume_ml", "lung (mL)"),
    ("infection_volume_ml", "infection (mL)"),
    ("infection_percent", "infection (% of zone)"),
    ("score", "zone score (0-5)"),
    ("lesion_count", "lesions"),
)

_ZONE_NOTE = (
    "Zone score: each lung is split into the upper, middle and lower thirds of its own height; each of the six zones "
    "scores 0 (no infection), 1 (under 5 %), 2 (5-25 %), 3 (26-50 %), 4 (51-75 %) or 5 (over 75 %) by the share of "
    "it that is infected, 0-30 in all. It is a zone score on thirds of each lung, not the lobe-based CT severity score."
)

_FOLLOWUP_COLUMNS = (
    ("patient_id", "patient"),
    ("baseline_case_id", "baseline case"),
    ("followup_case_id", "follow-up case"),
    ("baseline_study_date", "baseline date"),
    ("followup_study_date", "follow-up date"),
    ("days_between", "days"),
    ("baseline_infection_volume_ml", "baseline infection (mL)"),
    ("followup_infection_volume_ml", "follow-up infection (mL)"),
    ("infection_volume_change_ml", "change (mL)"),
    ("infection_volume_change_relative_percent", "change (% of baseline)"),
    ("baseline_infection_percent", "baseline (% of lung)"),
    ("followup_infection_percent", "follow-up (% of lung)"),
    ("infection_percent_change_points", "change (points)"),
    ("baseline_zone_score", "baseline zone score"),
    ("followup_zone_score", "follow-up zone score"),
    ("zone_score_change", "zone score change"),
    ("trend", "trend"),
    ("note", "note"),
)
_FOLLOWUP_TEXT = {"patient_id", "baseline_case_id", "followup_case_id", "baseline_study_date", "followup_study_date",
                  "trend", "note"}
_FOLLOWUP_SIGNED = {"infection_volume_change_ml", "infection_volume_change_relative_percent",
                    "infection_percent_change_points", "zone_score_change"}

_STATUS_NOTE = ("ok: segmented; no_lung: read and segmented, but no lung found (not a failure: check that the scan is "
                "the chest CT meant); error: the case failed (its message is under its row).")

_TIMELINE_COLOUR = "#9467bd"
"""The colour of the follow-up timelines (the browser test looks for it)."""


def _flags(row: dict) -> list[str]:
    """The case's failed anatomical self-checks (``qc_flags``: a list, or ``;``-joined as read back from a table)."""
    flags = row.get("qc_flags") or []
    if isinstance(flags, str):
        flags = [f for f in flags.split(";") if f]
    return [str(f) for f in flags]


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _cell(value) -> str:
    v = _number(value)
    if v is None:
        return "" if value in (None, "") else html.escape(str(value))
    return f"{int(v)}" if float(v).is_integer() else f"{v:.2f}"


def _signed(value) -> str:
    """:func:`_cell` with a ``+`` before a rise: a change reads as one."""
    v = _number(value)
    return ("+" if v is not None and v > 0 else "") + _cell(value)


def _has(rows: Sequence[dict], key: str) -> bool:
    return any(r.get(key) not in (None, "") for r in rows)


def _bars(rows: Sequence[dict], series: Sequence[tuple[str, str, str]], title: str) -> str:
    """A horizontal bar chart in SVG: one group per ``ok`` case (a no_lung case's figures are not a finding), one bar
    per ``(key, label, colour)`` of ``series``."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return f"<p>{html.escape(title)}: no case with status ok.</p>"
    values = [[_number(r.get(key)) or 0.0 for key, _, _ in series] for r in ok]
    top = max(max(v) for v in values) or 1.0
    bar, gap, label_w, plot_w = 12, 8, 360, 520
    group = bar * len(series) + gap
    height = 30 + group * len(ok) + 20
    out = [f'<svg class="chart" width="{label_w + plot_w + 80}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="0" y="16" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    for i, (r, vals) in enumerate(zip(ok, values)):
        y0 = 30 + i * group
        flags = _flags(r)  # a flagged case is never ranked without its flag
        label = f'{r.get("case_id", "")}' + (f' [{", ".join(flags)}]' if flags else "")
        colour_attr = ' fill="#b00"' if flags else ""
        out.append(f'<text x="{label_w - 6}" y="{y0 + bar}" font-size="12" text-anchor="end"{colour_attr}>'
                   f'{html.escape(label)}</text>')
        for j, ((_, label, colour), v) in enumerate(zip(series, vals)):
            w = plot_w * v / top
            y = y0 + j * bar
            out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{colour}">'
                       f'<title>{html.escape(label)}: {v:.2f}%</title></rect>')
            out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 3}" font-size="10">{v:.2f}%</text>')
    legend_y = height - 6
    for j, (_, label, colour) in enumerate(series):
        x = label_w + j * 160
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="{legend_y}" font-size="11">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _table(rows: Sequence[dict], output_dir: Path) -> str:
    """The case table; a case's message (the error of a failed case, why a no_lung case has no lung) is a line of
    its own under its row, spanning the table: a long message wraps there instead of widening the table."""
    columns = _COLUMNS
    if _has(rows, _ZONE_SCORE_COLUMN[0]):
        at = [key for key, _ in _COLUMNS].index("left_lung_infection_percent") + 1
        columns = _COLUMNS[:at] + (_ZONE_SCORE_COLUMN,) + _COLUMNS[at:]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    width = len(columns) + 3  # case, status, figures, checks failed
    lines = [f'<table class="cases"><tr><th>case</th><th>status</th>{head}<th>checks failed</th></tr>']
    for r in rows:
        case_id = str(r.get("case_id", ""))
        name = html.escape(case_id)
        if (output_dir / case_id / OVERVIEW_FILE).is_file():
            name = f'<a href="{html.escape(case_id)}/{OVERVIEW_FILE}">{name}</a>'
        cells = "".join(f"<td>{_cell(r.get(key))}</td>" for key, _ in columns)
        status = html.escape(str(r.get("status", "")))
        error = html.escape(str(r.get("error", "") or ""))
        flags = html.escape(", ".join(_flags(r)))
        lines.append(f'<tr class="{status}"><td class="text">{name}</td><td class="text status">{status}</td>{cells}'
                     f'<td class="text flags">{flags}</td></tr>')
        if error:
            lines.append(f'<tr class="message {status}"><td class="text message" colspan="{width}">'
                         f"{status or 'message'}: {error}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _flag_legend(rows: Sequence[dict]) -> str:
    """What each failed self-check of the cohort means (none: an empty string)."""
    from infnet_monai.stats.anatomy import QC_FLAGS

    seen = sorted({f for r in rows for f in _flags(r)})
    if not seen:
        return ""
    items = "".join(f"<li><b>{html.escape(f)}</b>: {html.escape(QC_FLAGS.get(f, f))}</li>" for f in seen)
    return f"<p>Anatomical self-checks that cases failed (their figures need a look at the overview):</p><ul>{items}</ul>"


def _zone_tables(rows: Sequence[dict]) -> str:
    """The zone score note, then one collapsed table of the six zones per successful case that has them (no zone
    figure in the rows: an empty string)."""
    zoned = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("zones"), dict)]
    if not zoned and not _has(rows, _ZONE_SCORE_COLUMN[0]):
        return ""
    parts = ["<h2>Zones</h2>", f"<p>{html.escape(_ZONE_NOTE)}</p>"]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _ZONE_COLUMNS)
    for r in zoned:
        zones = r["zones"]
        total = r.get("zone_score")
        if total in (None, ""):
            scores = [_number((zones.get(z) or {}).get("score")) for z, _ in _ZONES]
            total = "" if None in scores else sum(scores)
        case_id = html.escape(str(r.get("case_id", "")))
        lines = [f'<details class="zones"><summary>{case_id}: zone score {_cell(total)} of 30</summary>',
                 f"<table><tr><th>zone</th>{head}</tr>"]
        for key, label in _ZONES:
            zone = zones.get(key) or {}
            cells = "".join(f"<td>{_cell(zone.get(k))}</td>" for k, _ in _ZONE_COLUMNS)
            lines.append(f'<tr><td class="text">{html.escape(label)}</td>{cells}</tr>')
        lines.append(f'<tr><th class="text">total</th><td colspan="3"></td><th>zone score {_cell(total)} (0-30)</th>'
                     "<td></td></tr></table></details>")
        parts.append("\n".join(lines))
    if not zoned:
        parts.append("<p>No per-zone figures in these rows.</p>")
    return "\n".join(parts)


def _scan_points(followup: Sequence[dict]) -> dict[str, dict[str, tuple[str, float]]]:
    """Per patient (``"patient ID"``), ``case_id -> (ISO study date or "", infection %)`` of the scans the comparisons
    name; a comparison without a patient ID is one of its own (``"cases A and B"``)."""
    patients: dict[str, dict[str, tuple[str, float]]] = {}
    for f in followup:
        patient_id = str(f.get("patient_id") or "")
        pair = f'cases {f.get("baseline_case_id", "")} and {f.get("followup_case_id", "")}'
        patient = f"patient {patient_id}" if patient_id else pair
        for side in ("baseline", "followup"):
            pct = _number(f.get(f"{side}_infection_percent"))
            if pct is not None:
                scans = patients.setdefault(patient, {})
                scans[str(f.get(f"{side}_case_id", ""))] = (str(f.get(f"{side}_study_date") or ""), pct)
    return patients


def _timeline(patient: str, scans: dict[str, tuple[str, float]]) -> str:
    """Infection % of one patient's scans, against the study date when every scan has one, else the scan order."""
    order = sorted(scans.items(), key=lambda item: (item[1][0] == "", item[1][0], item[0]))
    dates = []
    for _, (date, _) in order:
        try:
            dates.append(datetime.date.fromisoformat(date))
        except ValueError:
            break
    by_date = len(dates) == len(order) and len(set(dates)) > 1
    left, right, top, bottom, width, height = 50, 420, 36, 150, 460, 200
    if by_date:
        span = (dates[-1] - dates[0]).days
        xs = [left + (right - left) * (d - dates[0]).days / span for d in dates]
        ticks = [d.isoformat() for d in dates]
    else:
        n = len(order)
        xs = [left + (right - left) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
        ticks = [f"scan {i + 1}" for i in range(n)]
    y_top = max(pct for _, (_, pct) in order) * 1.1 or 1.0
    ys = [bottom - (bottom - top) * pct / y_top for _, (_, pct) in order]
    title = f"{patient}: infection (% of lung) by {'study date' if by_date else 'scan order'}"
    out = [f'<svg class="chart timeline" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="0" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#888"/>',
           f'<line x1="{left}" y1="{bottom}" x2="{right + 10}" y2="{bottom}" stroke="#888"/>',
           f'<text x="{left - 4}" y="{bottom + 4}" font-size="10" text-anchor="end">0%</text>',
           f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{y_top:.1f}%</text>']
    if len(order) > 1:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{points}" fill="none" stroke="{_TIMELINE_COLOUR}" stroke-width="3"/>')
    for (case_id, (date, pct)), x, y, tick in zip(order, xs, ys, ticks):
        tip = f"{case_id}: {pct:.2f}% of lung" + (f" ({date})" if date else "")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{_TIMELINE_COLOUR}"><title>{html.escape(tip)}</title>'
                   "</circle>")
        out.append(f'<text x="{x:.1f}" y="{y - 10:.1f}" font-size="10" text-anchor="middle">{pct:.2f}%</text>')
        for dy, text in ((16, tick), (30, case_id)):  # the date (or scan number), then the case under it
            out.append(f'<text x="{x:.1f}" y="{bottom + dy}" font-size="10" text-anchor="middle">'
                       f"{html.escape(text)}</text>")
    out.append("</svg>")
    return "\n".join(out)


def _followup_section(followup: Sequence[dict]) -> str:
    """The comparisons of :func:`~infnet_monai.stats.followup.followup_rows` as a table, then a timeline per patient."""
    from infnet_monai.stats.followup import STABLE_RELATIVE_CHANGE_PERCENT, STABLE_VOLUME_CHANGE_ML

    if not followup:
        return "<h2>Follow-up</h2><p>No comparison: no patient has two successful scans with a patient ID.</p>"
    rule = (f"Trend: stable when the infection volume changed by less than {STABLE_VOLUME_CHANGE_ML:g} mL or by less "
            f"than {STABLE_RELATIVE_CHANGE_PERCENT:g} % of the baseline volume; otherwise progression (more infection) "
            "or regression (less). Changes are follow-up minus baseline.")
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _FOLLOWUP_COLUMNS)
    lines = [f"<table><tr>{head}</tr>"]
    for f in followup:
        cells = []
        for key, _ in _FOLLOWUP_COLUMNS:
            value = f.get(key)
            if key in _FOLLOWUP_TEXT:
                trend = f" {html.escape(str(value))}" if key == "trend" and value else ""
                cells.append(f'<td class="text{trend}">{html.escape(str(value or ""))}</td>')
            else:
                cells.append(f"<td>{_signed(value) if key in _FOLLOWUP_SIGNED else _cell(value)}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</table>")
    timelines = [_timeline(patient, scans) for patient, scans in sorted(_scan_points(followup).items())]
    charts = '<div class="timelines">' + "\n".join(timelines) + "</div>"
    if not timelines:
        charts = "<p>No timeline: no compared scan has an infection %.</p>"
    return "\n".join(["<h2>Follow-up</h2>", f"<p>{html.escape(rule)}</p>", "\n".join(lines), charts])


def _thumbnails(rows: Sequence[dict], output_dir: Path) -> str:
    """A linked thumbnail of the overview of each ok or no_lung case that has one (a no_lung case's picture shows
    what the scan holds instead of lungs); the caption names a no_lung case's status."""
    figures = []
    for r in rows:
        case_id = str(r.get("case_id", ""))
        status = r.get("status")
        if status not in ("ok", "no_lung") or not (output_dir / case_id / OVERVIEW_FILE).is_file():
            continue
        href = f"{html.escape(case_id)}/{OVERVIEW_FILE}"
        caption = html.escape(case_id) + ("" if status == "ok" else f" ({status})")
        figures.append(f'<figure><a href="{href}"><img src="{href}" alt="overview of {html.escape(case_id)}"></a>'
                       f"<figcaption>{caption}</figcaption></figure>")
    return '<div class="thumbs">' + "\n".join(figures) + "</div>" if figures else "<p>No overview pictures.</p>"


def report_html(
    rows: Sequence[dict],
    output_dir: str | os.PathLike,
    provenance: dict | None = None,
    followup: Sequence[dict] | None = None,
) -> str:
    """The report page for ``rows`` (``burden.csv`` rows, failed cases included) under ``output_dir``.

    Args:
        rows: one dict per case; ``zone_score`` and ``zones`` are shown when present.
        output_dir: the run's output folder (the overview pictures are linked relative to it).
        provenance: what the provenance table lists (``written`` is added when missing).
        followup: the comparisons of :func:`~infnet_monai.stats.followup.followup_rows`; ``None``: no follow-up
            section (an empty list: a section saying there is no comparison).
    """
    output_dir = Path(output_dir)
    provenance = dict(provenance or {})
    provenance.setdefault("written", datetime.datetime.now().isoformat(timespec="seconds"))
    made_by = Counter(r["command_line"] for r in rows if r.get("status") == "ok" and r.get("command_line"))
    if made_by:  # a --resume run reports cases that an earlier command made: each case's own command is in stats.json
        provenance["masks made by"] = "; ".join(f"{cmd} ({n} case{'s' if n > 1 else ''})" for cmd, n in made_by.items())
    prov = "".join(
        f'<tr><th class="text">{html.escape(str(k))}</th><td class="text">{html.escape(str(v))}</td></tr>'
        for k, v in provenance.items()
    )
    per_case = _bars(rows, [("infection_percent", "infection % of lung", "#d62728")], "Infection per case (% of lung)")
    sides = _bars(
        rows,
        [("right_lung_infection_percent", "right lung", "#1f9bd1"), ("left_lung_infection_percent", "left lung", "#e6b800")],
        "Right against left lung (% of each lung infected)",
    )
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>infnet-covid cohort report</title>',
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        "<h1>infnet-covid cohort report</h1>",
        f"<p>{html.escape(outcome_counts(rows))}. Research use only; not a medical device.</p>",
        f'<p class="statuses">{html.escape(_STATUS_NOTE)}</p>',
        f"<h2>Provenance</h2><table>{prov}</table>",
        "<h2>Cases</h2>", _table(rows, output_dir), _flag_legend(rows), _zone_tables(rows),
        "<h2>Charts</h2>", per_case, sides,
        "" if followup is None else _followup_section(followup),
        "<h2>Overviews</h2>", _thumbnails(rows, output_dir),
        "</body></html>",
    ])


def write_report(rows: Sequence[dict], output_dir: str | os.PathLike, provenance: dict | None = None,
                 followup: Sequence[dict] | None = None) -> Path:
    """Write ``output_dir/report.html`` atomically (see :func:`report_html`)."""
    page = report_html(rows, output_dir, provenance, followup)
    return atomic_write(Path(output_dir) / REPORT_FILE, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
