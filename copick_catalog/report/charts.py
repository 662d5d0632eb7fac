"""Small inline SVG charts for the report: horizontal bars, cumulative lines over time, a progress meter.

Generated here rather than by a plotting library so the page stays one dependency-free file that opens
anywhere, offline. Every label is escaped (names come from files); every mark carries a ``<title>`` so
hovering shows the exact number, and the page puts the same numbers in a table next to each chart.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

#: Colours for series with no colour of their own (colour-blind friendly, after Okabe & Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")


def _num(value: float) -> str:
    """A number as people read it: thousands separated, no trailing ``.0``."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def hbars(items: Sequence[tuple[str, float]], *, width: int = 520, unit: str = "", color: str = PALETTE[0]) -> str:
    """One horizontal bar per ``(label, value)``, longest first as given; labels left, values right."""
    if not items:
        return '<p class="empty">nothing to show</p>'
    row, label_w, value_w = 22, 150, 90
    top = max((v for _, v in items), default=0) or 1
    plot = width - label_w - value_w
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{row * len(items) + 4}" '
        f'viewBox="0 0 {width} {row * len(items) + 4}">'
    ]
    for i, (label, value) in enumerate(items):
        y = i * row + 2
        w = max(1.0, plot * value / top) if value > 0 else 0.0
        text = f"{label}: {_num(value)}{unit}"
        parts.append(
            f"<g><title>{escape(text)}</title>"
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="lbl">{escape(_clip(label, 22))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" rx="2" fill="{color}"></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="val">{escape(_num(value))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def meter(fraction: float, *, width: int = 120, height: int = 12) -> str:
    """A small progress bar (done share of a whole), with the percentage as its tooltip."""
    f = min(1.0, max(0.0, fraction))
    return (
        f'<svg class="meter" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{f * 100:.1f} %</title>"
        f'<rect width="{width}" height="{height}" rx="3" class="meter-bg"></rect>'
        f'<rect width="{width * f:.1f}" height="{height}" rx="3" class="meter-fg"></rect></svg>'
    )


def cumulative(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    width: int = 760,
    height: int = 260,
    y_label: str = "pick files",
) -> str:
    """Step lines of running totals over time: one per ``(name, [(epoch seconds, amount), ...])``.

    The first series is drawn thicker (the total); each step's ``<title>`` gives its date and total.
    """
    points = [t for _, pts in series for t, _ in pts]
    if not points:
        return '<p class="empty">no modification times to plot</p>'
    left, right, top, bottom = 64, 150, 12, 34
    t0, t1 = min(points), max(points)
    if t1 - t0 < 86400:
        t0, t1 = t0 - 43200, t1 + 43200
    totals = [sum(v for _, v in pts) for _, pts in series]
    ymax = _nice(max(totals) or 1)
    pw, ph = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + pw * (t - t0) / (t1 - t0)

    def y(v: float) -> float:
        return top + ph * (1 - v / ymax)

    parts = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for k in range(5):  # horizontal grid with y values
        v = ymax * k / 4
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"></line>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{_num(v)}</text>'
        )
    for t in _date_ticks(t0, t1):
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + ph}" class="grid"></line>'
            f'<text x="{x(t):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{label}</text>'
        )
    parts.append(
        f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
        f'text-anchor="middle" class="tick">{escape(y_label)}</text>'
    )
    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        run, path, marks = 0.0, [f"M{x(t0):.1f},{y(0):.1f}"], []
        for t, v in sorted(pts):
            path.append(f"H{x(t):.1f}")
            run += v
            path.append(f"V{y(run):.1f}")
            day = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")
            marks.append(
                f'<circle cx="{x(t):.1f}" cy="{y(run):.1f}" r="3" fill="{color}">'
                f"<title>{escape(name)}, {day}: +{_num(v)}, {_num(run)} in all</title></circle>"
            )
        path.append(f"H{x(t1):.1f}")
        thick = 3 if i == 0 else 1.6
        parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{color}" stroke-width="{thick}"></path>')
        parts.extend(marks)
        ly = top + 14 + 18 * i
        if ly < height - 8:  # a legend entry per series while there is room; the table lists them all
            parts.append(
                f'<rect x="{left + pw + 14}" y="{ly - 9}" width="12" height="4" fill="{color}"></rect>'
                f'<text x="{left + pw + 32}" y="{ly - 3}" class="lbl">{escape(_clip(name, 16))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _nice(value: float) -> float:
    """The next round number above ``value`` (1, 2, 2.5 or 5 times a power of ten), for an axis top."""
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def _date_ticks(t0: float, t1: float, n: int = 5) -> list[float]:
    """About ``n`` midnights (UTC) between ``t0`` and ``t1``, evenly spaced in whole days."""
    days = max(1, math.ceil((t1 - t0) / 86400 / n))
    first = math.ceil(t0 / 86400) * 86400
    return [t for t in (first + k * days * 86400 for k in range(n + 2)) if t <= t1]


__all__ = ["PALETTE", "cumulative", "hbars", "meter"]
