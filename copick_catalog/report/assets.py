"""The report page's stylesheet and scripts, inlined into every page so it needs no network and no files.

Python strings rather than package files: the page must work from a plain ``pip install`` and from any
copy of one HTML file. The scripts read the data the renderer embeds as JSON and build the interactive
heat map from it; they put names into the page only through ``textContent`` and attribute values,
never as markup.
"""

from __future__ import annotations

CSS = """
:root { --fg: #1d2330; --muted: #5d6675; --line: #dde1e7; --bg: #ffffff; --panel: #f6f7f9; --accent: #0b5cad;
  --miss: #f4cfc8; --ok: #2e7d32; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: var(--muted); font-size: 12.5px; word-break: break-all; }
nav { position: sticky; top: 0; z-index: 2; background: var(--bg); border-bottom: 1px solid var(--line);
  padding: 6px 28px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { margin: 22px 0 30px; }
h2 { font-size: 17px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 14px 0 6px; }
p.note, .empty { color: var(--muted); font-size: 12.5px; margin: 4px 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .n { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card.bad .n { color: var(--bad); }
.side { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.scroll { max-height: 420px; overflow: auto; border: 1px solid var(--line); border-radius: 4px;
  width: fit-content; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.path { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
td.zero { color: var(--bad); }
tr:nth-child(even) td { background: #fbfbfc; }
.sev-error { color: var(--bad); font-weight: 600; }
.sev-warning { color: #8a5a00; }
.st-ok { color: var(--ok); } .st-failed { color: var(--bad); font-weight: 600; }
.controls { display: flex; flex-wrap: wrap; gap: 18px; margin: 6px 0 10px; align-items: center; }
.controls select { font: inherit; padding: 2px 6px; }
.heatmap { width: 100%; overflow-x: auto; }
.heatmap svg text { font-size: 11px; fill: var(--fg); }
.heatmap svg text.band { fill: var(--muted); }
.heatmap rect.cell:hover { stroke: #000; stroke-width: 1; }
.tip { position: absolute; z-index: 5; pointer-events: none; background: #1d2330; color: #fff; font-size: 12px;
  padding: 4px 8px; border-radius: 4px; white-space: pre; }
.legend { display: flex; gap: 4px; align-items: center; font-size: 12px; color: var(--muted); margin: 6px 0; }
.legend i { display: inline-block; width: 18px; height: 12px; border-radius: 2px; }
svg.chart text { font-size: 11.5px; fill: var(--fg); }
svg.chart text.tick { fill: var(--muted); font-size: 11px; }
svg.chart text.val { fill: var(--muted); }
svg.chart line.grid { stroke: var(--line); stroke-width: 1; }
svg.meter { vertical-align: middle; }
svg.meter .meter-bg { fill: var(--miss); } svg.meter .meter-fg { fill: var(--ok); }
details summary { cursor: pointer; color: var(--accent); }
.names { font-family: ui-monospace, monospace; font-size: 12px; max-height: 160px; overflow: auto;
  word-break: break-word; color: var(--muted); }
#js-error { background: #fde7e4; color: var(--bad); padding: 8px 28px; font-weight: 600; }
@media print { nav { display: none; } .scroll { max-height: none; overflow: visible; } }
"""

#: Runs first: makes any script failure visible on the page (and to tests) instead of a silent blank.
ERROR_HOOK_JS = """
window.addEventListener("error", function (ev) {
  var msg = String((ev && ev.message) || "script error");
  document.documentElement.setAttribute("data-js-error", msg);
  var banner = document.getElementById("js-error");
  if (banner) { banner.hidden = false; banner.textContent = "This page's script failed: " + msg; }
});
"""

#: The coverage heat map: one SVG cell per run and object, recoloured when the user or measure changes.
HEATMAP_JS = r"""
(function () {
  "use strict";
  var root = document.documentElement;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var hm = data.heatmap;
  var nr = hm.runs.length, no = hm.objects.length;
  var userSel = document.getElementById("hm-user");
  var measureSel = document.getElementById("hm-measure");
  var box = document.getElementById("heatmap");
  var tip = document.getElementById("hm-tip");
  var legendBox = document.getElementById("hm-legend");
  var summaryBox = document.getElementById("hm-summary");
  var tableBox = document.getElementById("hm-table");
  var tableDetails = document.getElementById("hm-table-box");
  var SVG = "http://www.w3.org/2000/svg";
  var fmt = function (v) { return Number(v).toLocaleString("en-US"); };

  function el(name, attrs, text) {
    var node = name.indexOf("svg:") === 0 ? document.createElementNS(SVG, name.slice(4)) : document.createElement(name);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]); }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Dense matrices, cell index r * no + o; "" is every user, "0", "1", ... index hm.users.
  function dense(cells) {
    var m = { picks: new Float64Array(nr * no), points: new Float64Array(nr * no) };
    cells.forEach(function (c) { m.picks[c[0] * no + c[1]] += c[2]; m.points[c[0] * no + c[1]] += c[3]; });
    return m;
  }
  var perUser = hm.users.map(function () { return []; });
  hm.user_cells.forEach(function (c) { perUser[c[0]].push(c.slice(1)); });
  var matrices = new Map([["", dense(hm.all)]]);
  function matrixFor(key) {
    if (!matrices.has(key)) matrices.set(key, dense(perUser[Number(key)] || []));
    return matrices.get(key);
  }

  userSel.appendChild(el("option", { value: "" }, "all users"));
  hm.users.forEach(function (u, i) { userSel.appendChild(el("option", { value: String(i) }, u)); });

  function color(v, max) {
    if (v <= 0) return "#f4cfc8";
    var t = max > 1 ? Math.log(1 + v) / Math.log(1 + max) : 1;
    var lo = [198, 219, 239], hi = [8, 48, 107];
    var c = lo.map(function (a, i) { return Math.round(a + (hi[i] - a) * t); });
    return "rgb(" + c.join(",") + ")";
  }

  var cells = [];
  var builtWidth = -1;
  function build() {
    var avail = Math.max(360, box.clientWidth || 960);
    if (avail === builtWidth) return false;
    builtWidth = avail;
    var labelW = 130, ch = 16, bandGap = 22;
    var cw = Math.max(3, Math.min(24, Math.floor((avail - labelW) / Math.max(1, nr))));
    var perBand = Math.max(1, Math.floor((avail - labelW) / cw));
    var bands = Math.max(1, Math.ceil(nr / perBand));
    var names = cw >= 12 ? 74 : 0;  // room for run names under the cells when they are wide enough to label
    var bandH = bandGap + no * ch + 6 + names;
    var width = labelW + Math.min(Math.max(nr, 1), perBand) * cw;
    var svg = el("svg:svg", { width: width, height: bands * bandH, role: "img", "aria-label": "coverage heat map" });
    cells = new Array(nr * no);
    for (var b = 0; b < bands; b++) {
      var first = b * perBand, last = Math.min(nr, first + perBand) - 1, y0 = b * bandH;
      if (nr) {
        var label = bands > 1 || nr > 1 ? "runs " + (first + 1) + "\u2013" + (last + 1) + ": " + hm.runs[first] +
          " \u2026 " + hm.runs[last] : hm.runs[first];
        svg.appendChild(el("svg:text", { x: labelW, y: y0 + 14, "class": "band" }, label));
      }
      for (var o = 0; o < no; o++) {
        var yo = y0 + bandGap + o * ch;
        svg.appendChild(el("svg:text", { x: labelW - 6, y: yo + 12, "text-anchor": "end" }, hm.objects[o]));
        for (var r = first; r <= last; r++) {
          var rect = el("svg:rect", {
            "class": "cell", x: labelW + (r - first) * cw, y: yo, width: cw > 4 ? cw - 1 : cw, height: ch - 1,
            "data-run": hm.runs[r], "data-object": hm.objects[o]
          });
          cells[r * no + o] = rect;
          svg.appendChild(rect);
        }
      }
      if (names) {
        for (var q = first; q <= last; q++) {
          var nx = labelW + (q - first) * cw + cw / 2 - 3, ny = y0 + bandGap + no * ch + 4;
          var name = hm.runs[q].length > 11 ? hm.runs[q].slice(0, 10) + "\u2026" : hm.runs[q];
          svg.appendChild(el("svg:text", { x: nx, y: ny, transform: "rotate(90 " + nx + " " + ny + ")",
            "class": "band" }, name));
        }
      }
    }
    box.replaceChildren(svg);
    return true;
  }

  function legend(max, what) {
    legendBox.replaceChildren();
    var add = function (fill, text) {
      var sw = el("i", {}); sw.style.background = fill;
      legendBox.appendChild(sw); legendBox.appendChild(el("span", {}, text));
    };
    add(color(0, max), "none");
    if (max > 0) {
      [1, Math.sqrt(max), max].forEach(function (v, i) {
        if (i === 1 && (max < 4)) return;
        add(color(v, max), (i === 1 ? "\u2248" : "") + fmt(Math.round(v)));
      });
    }
    legendBox.appendChild(el("span", {}, " " + what + " per run and object (log scale)"));
  }

  function summary(m) {
    var t = el("table", { id: "hm-summary-table" });
    var head = el("tr", {});
    ["object", "runs with picks", "runs lacking", "pick files", "points"].forEach(function (h, i) {
      head.appendChild(el("th", i ? { "class": "num" } : {}, h));
    });
    t.appendChild(head);
    for (var o = 0; o < no; o++) {
      var withPicks = 0, files = 0, pts = 0;
      for (var r = 0; r < nr; r++) {
        var p = m.picks[r * no + o];
        if (p > 0) withPicks++;
        files += p; pts += m.points[r * no + o];
      }
      var tr = el("tr", { "data-object": hm.objects[o] });
      tr.appendChild(el("td", {}, hm.objects[o]));
      [withPicks, nr - withPicks, files, pts].forEach(function (v, i) {
        tr.appendChild(el("td", { "class": "num" + (i === 1 && v > 0 ? " zero" : ""), "data-value": v }, fmt(v)));
      });
      t.appendChild(tr);
    }
    summaryBox.replaceChildren(t);
  }

  function table(m) {
    if (!tableDetails.open) return;
    var t = el("table", {});
    var head = el("tr", {});
    head.appendChild(el("th", {}, "run"));
    hm.objects.forEach(function (o) { head.appendChild(el("th", { "class": "num" }, o + " (files / points)")); });
    t.appendChild(head);
    for (var r = 0; r < nr; r++) {
      var tr = el("tr", {});
      tr.appendChild(el("td", {}, hm.runs[r]));
      for (var o = 0; o < no; o++) {
        var p = m.picks[r * no + o];
        tr.appendChild(el("td", { "class": "num" + (p ? "" : " zero") }, fmt(p) + " / " + fmt(m.points[r * no + o])));
      }
      t.appendChild(tr);
    }
    tableBox.replaceChildren(t);
  }

  function recolor() {
    var m = matrixFor(userSel.value);
    var what = measureSel.value === "points" ? "points" : "picks";
    var vals = m[what], max = 0, i;
    for (i = 0; i < vals.length; i++) if (vals[i] > max) max = vals[i];
    for (i = 0; i < cells.length; i++) {
      cells[i].setAttribute("fill", color(vals[i], max));
      cells[i].setAttribute("data-picks", m.picks[i]);
      cells[i].setAttribute("data-points", m.points[i]);
    }
    legend(max, what === "points" ? "points" : "pick files");
    summary(m);
    table(m);
    root.setAttribute("data-heatmap-user", userSel.value);
  }

  box.addEventListener("mousemove", function (ev) {
    var t = ev.target;
    if (!t || !t.classList || !t.classList.contains("cell")) { tip.hidden = true; return; }
    tip.textContent = t.getAttribute("data-run") + " \u00b7 " + t.getAttribute("data-object") + "\n" +
      fmt(t.getAttribute("data-picks")) + " pick files, " + fmt(t.getAttribute("data-points")) + " points";
    tip.style.left = (ev.pageX + 14) + "px";
    tip.style.top = (ev.pageY + 14) + "px";
    tip.hidden = false;
  });
  box.addEventListener("mouseleave", function () { tip.hidden = true; });
  userSel.addEventListener("change", recolor);
  measureSel.addEventListener("change", recolor);
  tableDetails.addEventListener("toggle", function () { table(matrixFor(userSel.value)); });
  var pending = 0;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () { if (build()) recolor(); }, 150);
  });

  build();
  recolor();
  root.setAttribute("data-ready", "1");
})();
"""

__all__ = ["CSS", "ERROR_HOOK_JS", "HEATMAP_JS"]
