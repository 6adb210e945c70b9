"""The cohort report: ``OUTPUT/report.html``, one self-contained page that opens offline.

It holds the provenance of the run (model, version, window, threshold, command line), a table of every case
(failed ones with their error, and the anatomical self-checks each case failed, with their meaning), two charts drawn as inline SVG (infection % per case; right against left lung) and
thumbnails that link to each case's ``overview.png``. Pictures are linked by relative paths inside OUTPUT; there is
no external URL, no script or style from elsewhere.
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

__all__ = ["REPORT_FILE", "OVERVIEW_FILE", "write_report", "report_html"]

REPORT_FILE = "report.html"
OVERVIEW_FILE = "overview.png"

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; }
td.text { text-align: left; }
tr.error td { background: #fde8e8; }
.thumbs { display: flex; flex-wrap: wrap; gap: 1em; }
.thumbs figure { margin: 0; width: 260px; }
.thumbs img { width: 260px; border: 1px solid #999; }
.chart { margin: 0.5em 0 1.5em; }
"""

# the browser test reads these attributes after load: how many pictures there are and how many rendered
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-rendered', imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length);
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


def _bars(rows: Sequence[dict], series: Sequence[tuple[str, str, str]], title: str) -> str:
    """A horizontal bar chart in SVG: one group per case, one bar per ``(key, label, colour)`` of ``series``."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return f"<p>{html.escape(title)}: no successful case.</p>"
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
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _COLUMNS)
    lines = [f"<table><tr><th>case</th><th>status</th>{head}<th>checks failed</th><th>error</th></tr>"]
    for r in rows:
        case_id = str(r.get("case_id", ""))
        name = html.escape(case_id)
        if (output_dir / case_id / OVERVIEW_FILE).is_file():
            name = f'<a href="{html.escape(case_id)}/{OVERVIEW_FILE}">{name}</a>'
        cells = "".join(f"<td>{_cell(r.get(key))}</td>" for key, _ in _COLUMNS)
        status = html.escape(str(r.get("status", "")))
        error = html.escape(str(r.get("error", "") or ""))
        flags = html.escape(", ".join(_flags(r)))
        lines.append(f'<tr class="{status}"><td class="text">{name}</td><td class="text">{status}</td>{cells}'
                     f'<td class="text flags">{flags}</td><td class="text">{error}</td></tr>')
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


def _thumbnails(rows: Sequence[dict], output_dir: Path) -> str:
    figures = []
    for r in rows:
        case_id = str(r.get("case_id", ""))
        if r.get("status") != "ok" or not (output_dir / case_id / OVERVIEW_FILE).is_file():
            continue
        href = f"{html.escape(case_id)}/{OVERVIEW_FILE}"
        figures.append(f'<figure><a href="{href}"><img src="{href}" alt="overview of {html.escape(case_id)}"></a>'
                       f"<figcaption>{html.escape(case_id)}</figcaption></figure>")
    return '<div class="thumbs">' + "\n".join(figures) + "</div>" if figures else "<p>No overview pictures.</p>"


def report_html(rows: Sequence[dict], output_dir: str | os.PathLike, provenance: dict | None = None) -> str:
    """The report page for ``rows`` (``burden.csv`` rows, failed cases included) under ``output_dir``."""
    output_dir = Path(output_dir)
    provenance = dict(provenance or {})
    provenance.setdefault("written", datetime.datetime.now().isoformat(timespec="seconds"))
    made_by = Counter(r["command_line"] for r in rows if r.get("status") == "ok" and r.get("command_line"))
    if made_by:  # a --resume run reports cases that an earlier command made: each case's own command is in stats.json
        provenance["masks made by"] = "; ".join(f"{cmd} ({n} case{'s' if n > 1 else ''})" for cmd, n in made_by.items())
    n_ok = sum(1 for r in rows if r.get("status") == "ok")
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
        f"<p>{len(rows)} case(s): {n_ok} ok, {len(rows) - n_ok} failed. Research use only; not a medical device.</p>",
        f"<h2>Provenance</h2><table>{prov}</table>",
        "<h2>Cases</h2>", _table(rows, output_dir), _flag_legend(rows),
        "<h2>Charts</h2>", per_case, sides,
        "<h2>Overviews</h2>", _thumbnails(rows, output_dir),
        "</body></html>",
    ])


def write_report(rows: Sequence[dict], output_dir: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Write ``output_dir/report.html`` atomically (see :func:`report_html`)."""
    page = report_html(rows, output_dir, provenance)
    return atomic_write(Path(output_dir) / REPORT_FILE, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
