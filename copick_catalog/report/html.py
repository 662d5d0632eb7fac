"""Render the report's data (:func:`copick_catalog.report.data.gather`) as one self-contained HTML page.

Everything is inline (stylesheet, scripts, SVG charts, the data as JSON), so the file opens offline
and can be mailed or archived as it is. Names in the project come from files and configs and may be
anything, ``<script>`` included: every one is escaped where it enters markup, the embedded JSON
cannot close its script element, and a Content-Security-Policy lets only this page's own scripts
(carrying a per-page nonce) run, and nothing load from the network.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from . import charts
from .assets import CSS, ERROR_HOOK_JS, HEATMAP_JS


def csp(nonce: str) -> str:
    """The page's Content-Security-Policy: no network at all, scripts and styles only with ``nonce``."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )


def embed_json(data: Any) -> str:
    """JSON safe inside a ``<script type="application/json">``: no ``<``, ``>`` or ``&`` left to close it."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def render(data: dict[str, Any], *, nonce: str | None = None) -> str:
    """The whole page for ``data``; ``nonce`` (random by default) is what the CSP lets run."""
    nonce = nonce or secrets.token_urlsafe(18)
    e = escape
    s = data["summary"]
    sections = [
        ("summary", "Summary", _summary(data)),
        ("coverage", "Coverage: runs \u00d7 objects", _coverage(data)),
        ("lacking", "Runs lacking each object", _lacking(data)),
        ("users", "Users and sessions", _users(data)),
        ("progress", "Progress over time", _progress(data)),
        ("tomograms", "Tomograms", _tomograms(data)),
        ("errors", f"Open index errors ({s['open_errors']} errors, {s['open_warnings']} warnings)", _errors(data)),
        ("index-runs", "Last index runs", _index_runs(data)),
    ]
    nav = "".join(f'<a href="#{sid}">{e(title.split(" (")[0])}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{e(title)}</h2>{html}</section>' for sid, title, html in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(csp(nonce))}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(data['project'])} \u2014 copick campaign report</title>"
        f'<style nonce="{nonce}">{CSS}</style></head><body>'
        '<div id="js-error" role="alert" hidden></div>'
        f'<script nonce="{nonce}">{ERROR_HOOK_JS}</script>'
        f"<header><h1>{e(data['project'])}</h1>"
        f'<div class="meta">campaign report generated {e(_when(data["generated_at"]))} \u00b7 config '
        f"{e(data['config'])} \u00b7 catalog {e(data['db'])}</div></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        '<div id="hm-tip" class="tip" hidden></div>'
        f'<script type="application/json" id="report-data">{embed_json(data)}</script>'
        f'<script nonce="{nonce}">{HEATMAP_JS}</script>'
        "</body></html>\n"
    )


def render_index(projects: Sequence[dict[str, Any]], db: str, generated_at: float, *, nonce: str | None = None) -> str:
    """The page of a catalog's projects: one row each (runs, pick files, points, open errors, last index),
    linking to that project's own report. ``projects`` rows carry those fields plus ``href``."""
    nonce = nonce or secrets.token_urlsafe(18)
    e = escape
    head = ("project", "runs", "pick files", "points", "open errors", "last index")
    rows = "".join(
        f'<tr data-project="{e(p["name"])}"><td><a href="{e(p["href"])}">{e(p["name"])}</a></td>'
        f'<td class="num">{p["runs"]:,}</td><td class="num">{p["pick_files"]:,}</td>'
        f'<td class="num">{p["points"]:,}</td><td class="num">{p["open_errors"]:,}</td>'
        f"<td>{e(_when(p['last_indexed_at']) if p['last_indexed_at'] else 'never')}</td></tr>"
        for p in projects
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(csp(nonce))}">'
        '<link rel="icon" href="data:,">'
        f"<title>{len(projects)} projects \u2014 copick campaign reports</title>"
        f'<style nonce="{nonce}">{CSS}</style></head><body>'
        f"<header><h1>{len(projects)} projects</h1>"
        f'<div class="meta">generated {e(_when(generated_at))} \u00b7 catalog {e(db)}</div></header>'
        f'<main><section id="projects"><table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
        f"<tbody>{rows}</tbody></table></section></main></body></html>\n"
    )


# ---------------------------------------------------------------------- sections


def _summary(data: dict[str, Any]) -> str:
    s = data["summary"]
    last = s["last_index"]
    cards = [
        ("runs", _n(s["runs"]), ""),
        ("tomograms", _n(s["tomograms"]), ""),
        ("pick files", _n(s["pick_files"]), ""),
        ("points", _n(s["points"]), ""),
        ("users", _n(s["users"]), ""),
        ("objects", _n(s["objects"]), ""),
        ("open errors", _n(s["open_errors"]), "bad" if s["open_errors"] else ""),
    ]
    html = '<div class="cards">' + "".join(
        f'<div class="card {cls}" data-key="{escape(k)}"><div class="n">{v}</div><div class="k">{escape(k)}</div></div>'
        for k, v, cls in cards
    )
    html += "</div>"
    if last:
        when = last["finished_at"] or last["started_at"]
        html += (
            f'<p class="note">Last index: {escape(_when(when))} by {escape(str(last["trigger"]))}, '
            f"{escape(str(last['status']))}, {last['duration_s'] or 0:.1f} s ({last['added']} added, "
            f"{last['changed']} changed, {last['removed']} removed, {last['errors']} errors)."
        )
    else:
        html += '<p class="note">Never indexed: run <code>copick-catalog index CONFIG</code>.'
    extras = []
    if s["index_running"]:
        extras.append("an index run is working on the catalog right now")
    extras.append("a watch daemon keeps it current" if s["daemon_running"] else "no watch daemon is running")
    html += " " + escape("; ".join(extras).capitalize()) + f". Also in the catalog: {_n(s['meshes'])} meshes, "
    html += f"{_n(s['segmentations'])} segmentations.</p>"
    return html


def _coverage(data: dict[str, Any]) -> str:
    hm = data["heatmap"]
    return (
        '<p class="note">One cell per run and object: its pick files (or points) by the selected user; '
        "light red means none. Hover a cell for its numbers; the table under the map lists them all.</p>"
        '<div class="controls"><label>User <select id="hm-user"></select></label>'
        '<label>Show <select id="hm-measure"><option value="picks">pick files</option>'
        '<option value="points">points</option></select></label></div>'
        '<div id="hm-legend" class="legend"></div>'
        f'<div id="heatmap" class="heatmap" data-runs="{len(hm["runs"])}" data-objects="{len(hm["objects"])}">'
        "</div>"
        '<noscript><p class="note">The heat map needs JavaScript; the tables below hold the same numbers '
        "for all users.</p></noscript>"
        '<h3>For the selected user</h3><div id="hm-summary"></div>'
        '<details id="hm-table-box"><summary>Numbers per run and object (table)</summary>'
        '<div id="hm-table" class="scroll"></div></details>'
    )


def _lacking(data: dict[str, Any]) -> str:
    runs = data["summary"]["runs"] or 0
    rows = []
    order = {o["name"]: i for i, o in enumerate(data["objects"])}
    coverage = sorted(data["coverage"], key=lambda c: order.get(c["object_name"], len(order)))
    for c in coverage:
        names = data["lacking"].get(c["object_name"])
        done = c["runs_with_picks"] / runs if runs else 0.0
        listing = (
            f'<details><summary>{_n(len(names))} runs</summary><div class="names">{escape(", ".join(names))}</div>'
            "</details>"
            if names
            else ("none" if names is not None else "")
        )
        rows.append(
            [
                escape(c["object_name"]),
                _num(c["runs_with_picks"]),
                _num(c["runs_lacking"], zero_is_good=True),
                f"{charts.meter(done)} {done * 100:.0f} %",
                _num(c["picks"]),
                _num(c["points"]),
                listing,
            ]
        )
    return _table(
        ["object", "runs with picks", "runs lacking", "done", "pick files", "points", "lacking runs"],
        rows,
        numeric={1, 2, 4, 5},
        row_attrs=[f'data-object="{escape(c["object_name"])}"' for c in coverage],
    )


def _users(data: dict[str, Any]) -> str:
    users = data["users"]
    bars = charts.hbars([(u["user_id"], u["points"]) for u in users], unit=" points")
    per_user = _table(
        ["user", "pick files", "points"],
        [[escape(u["user_id"]), _num(u["picks"]), _num(u["points"])] for u in users],
        numeric={1, 2},
        row_attrs=[f'data-user="{escape(u["user_id"])}"' for u in users],
    )
    objects = [o["name"] for o in data["objects"]]
    cell: dict[tuple[str, str], dict[str, Any]] = {(r["user_id"], r["object_name"]): r for r in data["user_objects"]}
    by_object = _table(
        ["user", *objects],
        [
            [escape(u["user_id"])]
            + [
                f"{_n(cell[(u['user_id'], o)]['picks'])} / {_n(cell[(u['user_id'], o)]['points'])}"
                if (u["user_id"], o) in cell
                else '<span class="zero">\u2013</span>'
                for o in objects
            ]
            for u in users
        ],
        numeric=set(range(1, len(objects) + 1)),
    )
    sessions = _table(
        ["user", "session", "kind", "pick files", "points"],
        [
            [
                escape(r["user_id"]),
                escape(r["session_id"]),
                "tool" if r["session_id"] == "0" else "person",
                _num(r["picks"]),
                _num(r["points"]),
            ]
            for r in data["user_sessions"]
        ],
        numeric={3, 4},
        row_attrs=[
            f'data-user="{escape(r["user_id"])}" data-session="{escape(r["session_id"])}"'
            for r in data["user_sessions"]
        ],
    )
    return (
        f'<div class="side"><div><h3>Points per user</h3>{bars}</div><div><h3>Totals</h3>{per_user}</div></div>'
        f"<h3>Pick files / points per user and object</h3>{by_object}"
        f'<h3>Per user and session</h3><p class="note">Session 0 is a tool (copick\'s convention).</p>'
        f'<div class="scroll">{sessions}</div>'
    )


def _progress(data: dict[str, Any]) -> str:
    rows = data["timeline"]["rows"]
    dated = [r for r in rows if r["bucket"] is not None]
    undated = sum(r["picks"] for r in rows if r["bucket"] is None)
    total: dict[float, int] = {}
    per_user: dict[str, list[tuple[float, float]]] = {}
    points_day: dict[float, int] = {}
    for r in dated:
        total[r["bucket"]] = total.get(r["bucket"], 0) + r["picks"]
        points_day[r["bucket"]] = points_day.get(r["bucket"], 0) + r["points"]
        per_user.setdefault(r["user_id"], []).append((r["bucket"], r["picks"]))
    series: list[tuple[str, Sequence[tuple[float, float]]]] = [("all users", sorted(total.items()))]
    series += sorted(per_user.items())
    html = (
        '<p class="note">Pick files by the day (UTC) their file was last saved: the catalog keeps each '
        "file's modification time, not when it was first written, so a file edited later counts on its "
        "last day. Running totals per user.</p>"
    )
    if undated:
        html += f'<p class="note">{_n(undated)} pick files have no modification time (their storage gave none).</p>'
    html += charts.cumulative(series)
    days = _table(
        ["day (UTC)", "pick files saved", "points"],
        [[_day(b), _num(n), _num(points_day[b])] for b, n in sorted(total.items(), reverse=True)],
        numeric={1, 2},
        row_attrs=[f'data-day="{_day(b)}"' for b in sorted(total, reverse=True)],
    )
    week = data["week"]["rows"]
    week_table = _table(
        ["user", "object", "pick files", "points"],
        [[escape(r["user_id"]), escape(r["object_name"]), _num(r["picks"]), _num(r["points"])] for r in week],
        numeric={2, 3},
        empty="no pick file was saved in the last 7 days",
    )
    return (
        html
        + f'<div class="side"><div><h3>Per day</h3><div class="scroll">{days}</div></div>'
        + f"<div><h3>Saved in the last 7 days (since {escape(_when(data['week']['since']))})</h3>{week_table}"
        + "</div></div>"
    )


def _tomograms(data: dict[str, Any]) -> str:
    return _table(
        ["voxel size (\u00c5)", "tomogram type", "runs"],
        [[f"{r['voxel_size']:.3f}", escape(r["tomo_type"]), _num(r["runs"])] for r in data["tomogram_types"]],
        numeric={0, 2},
        empty="no tomograms in the catalog",
    )


def _errors(data: dict[str, Any]) -> str:
    errs = data["errors"]
    rows = [
        [
            f'<span class="sev-{escape(r["severity"])}">{escape(r["severity"])}</span>',
            escape(r["layer"]),
            f'<span class="path">{escape(r["path"])}</span>',
            escape(r["kind"]),
            escape(r["message"]),
            escape(_when(r["last_seen"])),
        ]
        for r in errs["rows"]
    ]
    html = _table(["severity", "layer", "path", "kind", "problem", "last seen"], rows, empty="no open index errors")
    if errs["total"] > len(errs["rows"]):
        html += f'<p class="note">First {_n(len(errs["rows"]))} of {_n(errs["total"])}: see copick-catalog errors.</p>'
    return f'<div class="scroll">{html}</div>' if rows else html


def _index_runs(data: dict[str, Any]) -> str:
    rows = [
        [
            escape(_when(r["started_at"])),
            escape(str(r["trigger"])),
            f'<span class="st-{escape(str(r["status"]))}">{escape(str(r["status"]))}</span>',
            f"{r['duration_s']:.2f} s" if r["duration_s"] is not None else "",
            _num(r["added"]),
            _num(r["changed"]),
            _num(r["removed"]),
            _num(r["unchanged"]),
            _num(r["errors"], zero_is_good=True),
            escape(str(r["host"] or "")),
        ]
        for r in data["index_runs"]
    ]
    return _table(
        ["started", "trigger", "status", "took", "added", "changed", "removed", "unchanged", "errors", "host"],
        rows,
        numeric={3, 4, 5, 6, 7, 8},
        row_attrs=[f'data-index-run="{int(r["id"])}"' for r in data["index_runs"]],
        empty="never indexed",
    )


# ---------------------------------------------------------------------- helpers


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: set[int] | None = None,
    row_attrs: Sequence[str] | None = None,
    empty: str = "nothing to show",
) -> str:
    """A table from already-escaped cell HTML (headers are escaped here)."""
    numeric = numeric or set()
    body = []
    for i, row in enumerate(rows):
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        tds = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{attrs}>{tds}</tr>")
    if not body:
        return f'<p class="empty">{escape(empty)}</p>'
    ths = "".join(
        f'<th class="num">{escape(h)}</th>' if j in numeric else f"<th>{escape(h)}</th>" for j, h in enumerate(head)
    )
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _n(value: Any) -> str:
    return f"{int(value or 0):,}"


def _num(value: Any, *, zero_is_good: bool = False) -> str:
    """A count for a numeric cell, with its exact value in ``data-value`` (for people's scripts and tests)."""
    v = int(value or 0)
    cls = ' class="zero"' if v == 0 and not zero_is_good else ""
    return f'<span{cls} data-value="{v}">{v:,}</span>'


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


__all__ = ["csp", "embed_json", "render"]
