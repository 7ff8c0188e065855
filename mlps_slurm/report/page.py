"""The report's HTML page: one self-contained file (inline CSS, no script, no network) whose figures are PNGs in a
folder beside it, linked by relative paths. Every text from a run (ids, models, messages, node names) is escaped."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Mapping

from mlps_slurm.report.collect import Report, Section

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2228;
       max-width: 1100px; margin: 24px auto; padding: 0 20px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 10px; padding-top: 12px;
     border-top: 2px solid #e3e7ec; } h3 { font-size: 16px; margin: 22px 0 6px; }
.sub { color: #59636e; margin: 0 0 18px; }
.verdict { display: inline-block; padding: 1px 9px; border-radius: 10px; font-weight: 600; font-size: 13px; }
.CLOSED, .success, .none { background: #dff3e4; color: #1a6b32; } .OPEN { background: #fff1cc; color: #7a5a00; }
.INVALID, .failed, .regressed { background: #fde0e0; color: #9b1c1c; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
th, td { border-bottom: 1px solid #e3e7ec; padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { color: #59636e; font-weight: 600; }
table.facts th { width: 150px; }
figure { margin: 18px 0 26px; } figure img { max-width: 100%; border: 1px solid #e3e7ec; border-radius: 4px; }
figcaption { color: #3b434c; font-size: 14px; max-width: 800px; } figcaption ul { margin: 4px 0 0 18px; padding: 0; }
ul.notes li { margin: 2px 0; } .problems { background: #fff4e5; border-left: 4px solid #f0a020; padding: 8px 14px; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
footer { color: #7b858f; font-size: 12px; margin-top: 40px; }
"""


def _badge(text: str) -> str:
    kind = text if text in ("CLOSED", "OPEN", "INVALID", "success", "failed", "none") else \
        ("regressed" if text not in ("-", "") else "")
    return f'<span class="verdict {kind}">{escape(text)}</span>' if kind else escape(text)


def _facts(section: Section) -> str:
    rows = []
    for key, value in section.facts:
        shown = _badge(value) if key in ("status", "rules verdict", "regressed") else escape(value)
        rows.append(f"<tr><th>{escape(key)}</th><td>{shown}</td></tr>")
    return f'<table class="facts">{"".join(rows)}</table>' if rows else ""


def _numeric(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _table(section: Section) -> str:
    if not section.rows:
        return "<p>No headline numbers: the run recorded no metric.</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in section.header)
    body = "".join("<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if _numeric(c) else f"<td>{escape(c)}</td>"
                                    for c in row) + "</tr>" for row in section.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(section: Section, files: Mapping[str, str]) -> str:
    out = []
    for f in section.figures:
        src = files.get(f.name)
        if src is None:
            continue
        notes = "".join(f"<li>{escape(n)}</li>" for n in f.notes)
        out.append(f'<figure><img src="{escape(src, quote=True)}" alt="{escape(f.title, quote=True)}" '
                   f'width="800" height="420"><figcaption><strong>{escape(f.title)}.</strong> {escape(f.caption)}'
                   f'{f"<ul>{notes}</ul>" if notes else ""}</figcaption></figure>')
    return "".join(out) or "<p>No figures: the results hold nothing to draw.</p>"


def render(report: Report, files: Mapping[str, str], tool_version: str) -> str:
    """The page; `files` maps each figure's name to its PNG's path relative to the page."""
    parts = [f"<h1>{escape(report.title)}</h1>", f'<p class="sub">{escape(report.subtitle)}</p>']
    if report.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in report.problems[:50])
        parts.append(f'<div class="problems"><strong>Left out of this report:</strong><ul class="notes">{items}</ul>'
                     "</div>")
    for section in report.sections:
        parts += [f"<h2>{escape(section.title)}</h2>", _facts(section), "<h3>Headline numbers</h3>", _table(section)]
        if section.notes:
            parts.append('<h3>Reasons, notes and findings</h3><ul class="notes">'
                         + "".join(f"<li>{escape(n)}</li>" for n in section.notes[:60]) + "</ul>")
        parts += ["<h3>Figures</h3>", _figures(section, files)]
        if section.text:
            parts.append(f"<details><summary>The results table as the finalize job wrote it</summary>"
                         f"<pre>{escape(section.text)}</pre></details>")
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    parts.append(f"<footer>Written by mlps-slurm {escape(tool_version)} at {now}. Figures: matplotlib PNGs in the "
                 "folder beside this page.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(report.title)}"
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
