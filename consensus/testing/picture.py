"""A picture of a run, as data: operations per client on a time axis, faults as bands, the run's
throughput, availability and latency over time, and a violation's smallest failing window.

Pure (no I/O, no plotting library): everything a renderer needs is computed here, so it is
tested without one. Two renderers read a :class:`Timeline`: :func:`to_svg` (below: text, for the
HTML page, which the browser draws; no dependency) and
:mod:`quorumboard.consensus.testing.picture_png` (matplotlib, the ``plots`` extra, imported
only when a PNG is asked for). Both place fault labels with :func:`label_rows`, so no two labels
overlap whatever the font measures.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from quorumboard.consensus.testing.summary import Span

__all__ = ["COLORS", "FAULT_COLORS", "Band", "Bar", "LegendEntry", "Series", "Timeline",
           "label_rows", "legend", "place_labels", "series_of", "to_svg"]

COLORS: dict[str, str] = {
    "ok": "#2ea043", "fail": "#cf222e", "info": "#e69600", "mark": "#b40000",
    "axis": "#5a5a5a", "text": "#1e1e1e", "lane": "#f6f6f6", "throughput": "#1f6feb",
    "availability": "#2ea043", "p50": "#1f6feb", "p99": "#8250df",
}
"""One palette for both renderers. ``mark`` (the violation window) is used by nothing else, so
its presence in a picture says a violation was drawn."""
FAULT_COLORS: dict[str, str] = {
    "kill": "#f9c9c4", "pause": "#cfe0ff", "partition": "#e3d3f5", "delay": "#fff0a8",
    "loss": "#ffd9b3", "clock": "#c6ece6", "corrupt": "#e2d5c8",
}
"""A light tint per fault kind (bands are drawn under the operations)."""
FAULT_COLOR_OTHER = "#e6e6e6"
KIND_NAMES = {"ok": "ok", "fail": "fail (not applied)", "info": "indeterminate"}
LANES_MAX = 512
BARS_MAX = 2_000_000
LABEL_ROWS_MAX = 4
"""Fault labels stack in at most this many rows; a label that finds no room is left out (its
band is still drawn, in its kind's tint, and ``summary.json`` lists every fault)."""
SERIES_BUCKETS = 120

# The SVG's geometry (pixels).
WIDTH_PX = 1400
LANE_PX = 12
LEFT_PX = 90
RIGHT_PX = 90
LABEL_ROW_PX = 13
CHART_PX = 90
SVG_CHAR_PX = 6.2  # 10 px monospace: ~0.6 em per character


@dataclass(frozen=True, slots=True)
class Bar:
    """One operation: ``lane`` index, from invocation to completion (seconds), and its kind
    (``ok``, ``fail`` or ``info``; an ``info`` bar runs to the end of the run)."""

    lane: int
    start_s: float
    end_s: float
    kind: str


@dataclass(frozen=True, slots=True)
class Band:
    """A time span across every lane: a fault (``kind`` picks its tint, ``label`` says which)
    or the violation window."""

    start_s: float
    end_s: float
    label: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Series:
    """The run in buckets of ``bucket_s`` seconds from 0: ``ok/s`` counts ``ok`` completions in
    the bucket; availability and latency are of the operations *invoked* in it (so a fault's
    slow or failed operations show inside its band), ``None`` where nothing was invoked."""

    bucket_s: float
    starts_s: tuple[float, ...]
    ok_per_s: tuple[float, ...]
    availability: tuple[float | None, ...]
    latency_p50_ms: tuple[float | None, ...]
    latency_p99_ms: tuple[float | None, ...]

    @property
    def mids_s(self) -> list[float]:
        return [s + self.bucket_s / 2 for s in self.starts_s]


@dataclass
class Timeline:
    title: str
    lanes: list[str]
    end_s: float
    bars: list[Bar] = field(default_factory=list)
    faults: list[Band] = field(default_factory=list)
    mark: Band | None = None
    series: Series | None = None

    def __post_init__(self) -> None:
        if not 0 < len(self.lanes) <= LANES_MAX:
            raise ValueError(f"a timeline has 1..{LANES_MAX} lanes, not {len(self.lanes)}")
        if len(self.bars) > BARS_MAX:
            raise ValueError(f"a timeline has at most {BARS_MAX} bars")
        self.end_s = max(self.end_s, 1e-3)

    def clamp(self, t_s: float) -> float:
        return max(0.0, min(t_s, self.end_s))

    def labelled(self) -> list[Band]:
        """The bands whose labels are drawn: every fault, then the violation window."""
        return [*self.faults, *([self.mark] if self.mark else [])]

    def fault_kinds(self) -> list[str]:
        """The kinds of fault drawn, in order of first appearance (the legend's order)."""
        return list(dict.fromkeys(b.kind for b in self.faults))

    def mark_span(self) -> tuple[float, float] | None:
        """The violation window, clamped and widened to be visible (at least 0.4 % of the
        run: a window of a few operations lasts milliseconds)."""
        if self.mark is None:
            return None
        a, b = self.clamp(self.mark.start_s), self.clamp(self.mark.end_s)
        pad = max(0.0, self.end_s * 0.004 - (b - a)) / 2
        return max(0.0, a - pad), min(self.end_s, b + pad)


def fault_color(kind: str) -> str:
    return FAULT_COLORS.get(kind, FAULT_COLOR_OTHER)


@dataclass(frozen=True, slots=True)
class LegendEntry:
    label: str
    color: str
    style: str  # bar | band | outline


def legend(t: Timeline) -> list[LegendEntry]:
    """What the picture's colours mean: the operation kinds, each fault kind drawn, and the
    violation window only when there is one (its colour appears in no picture without)."""
    out = [LegendEntry(KIND_NAMES[k], COLORS[k], "bar") for k in ("ok", "fail", "info")]
    out += [LegendEntry(kind or "fault", fault_color(kind), "band") for kind in t.fault_kinds()]
    if t.mark is not None:
        out.append(LegendEntry("smallest failing window", COLORS["mark"], "outline"))
    return out


def label_rows(starts_s: Sequence[float], widths_s: Sequence[float],
               rows_max: int = LABEL_ROWS_MAX) -> list[int | None]:
    """The row of each label (or ``None``: left out) so that no two labels in a row overlap.
    Label ``i`` covers ``[starts_s[i], starts_s[i] + widths_s[i]]`` on the time axis (the
    renderer converts its text's measured width to seconds); labels are placed by start time,
    each in the lowest row where the previous label has ended."""
    if len(starts_s) != len(widths_s):
        raise ValueError("one width per label")
    row_end: list[float] = []
    out: list[int | None] = [None] * len(starts_s)
    for i in sorted(range(len(starts_s)), key=lambda k: starts_s[k]):
        start, stop = starts_s[i], starts_s[i] + max(0.0, widths_s[i])
        row = next((r for r, end in enumerate(row_end) if end <= start), None)
        if row is None and len(row_end) < rows_max:
            row = len(row_end)
            row_end.append(stop)
        elif row is not None:
            row_end[row] = stop
        out[i] = row
    return out


def place_labels(t: Timeline, widths_s: Sequence[float]) -> list[tuple[float, int] | None]:
    """Where each label of :meth:`Timeline.labelled` goes: ``(start_s, row)``, or ``None``
    (left out). A label starts at its band, or ends at the run's end if it would run past it."""
    bands = t.labelled()
    if len(bands) != len(widths_s):
        raise ValueError("one width per label")
    starts = [max(0.0, min(t.clamp(b.start_s), t.end_s - w)) for b, w in zip(bands, widths_s,
                                                                             strict=True)]
    return [None if row is None else (start, row)
            for start, row in zip(starts, label_rows(starts, widths_s), strict=True)]


def _percentile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))]


def series_of(spans: Sequence[Span], end_s: float, buckets: int = SERIES_BUCKETS) -> Series:
    """Throughput, availability and latency over time (see :class:`Series`)."""
    end_s = max(end_s, 1e-3)
    buckets = max(1, min(buckets, 10_000))
    bucket_s = end_s / buckets

    def at(t_s: float) -> int:
        return max(0, min(buckets - 1, math.floor(t_s / bucket_s)))

    ok_done = [0] * buckets
    invoked = [0] * buckets
    ok_invoked = [0] * buckets
    lat: list[list[float]] = [[] for _ in range(buckets)]
    for s in spans:
        b = at(s.start_s)
        invoked[b] += 1
        if s.kind == "ok" and s.end_s is not None:
            ok_invoked[b] += 1
            ok_done[at(s.end_s)] += 1
            lat[b].append((s.end_s - s.start_s) * 1000)
    for vals in lat:
        vals.sort()
    return Series(
        bucket_s=bucket_s,
        starts_s=tuple(k * bucket_s for k in range(buckets)),
        ok_per_s=tuple(n / bucket_s for n in ok_done),
        availability=tuple(ok / n if n else None
                           for ok, n in zip(ok_invoked, invoked, strict=True)),
        latency_p50_ms=tuple(_percentile(v, 0.5) for v in lat),
        latency_p99_ms=tuple(_percentile(v, 0.99) for v in lat))


def tick_step(end_s: float, ticks_max: int = 12) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if end_s / step <= ticks_max:
            return step
    return end_s / 10


# ------------------------------------------------------------------------------------ SVG

SvgLine = tuple[list[float], list[float | None], str, str]
"""x values (seconds), y values (``None`` breaks the line), colour, name."""


def to_svg(t: Timeline) -> str:
    """The timeline as one SVG element for the HTML page: fault labels in rows above the lanes
    (no overlap), lanes of operations, then ok/s with availability and p50/p99 latency; every
    bar and band has a tooltip."""
    usable = WIDTH_PX - LEFT_PX - RIGHT_PX

    def x(t_s: float) -> float:
        return round(LEFT_PX + t.clamp(t_s) / t.end_s * usable, 1)

    labels = t.labelled()
    places = place_labels(t, [(len(b.label) * SVG_CHAR_PX + 8) / usable * t.end_s
                              for b in labels])
    n_rows = max((p[1] + 1 for p in places if p is not None), default=0)
    top = 24 + n_rows * LABEL_ROW_PX + 4
    lanes_h = len(t.lanes) * LANE_PX
    charts_top = top + lanes_h + 26
    height = charts_top + (2 * (CHART_PX + 22) if t.series else 0) + 24 + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
           f'viewBox="0 0 {WIDTH_PX} {height}" font-family="monospace" font-size="10">',
           f'<rect width="{WIDTH_PX}" height="{height}" fill="white"/>',
           f'<text x="4" y="14" font-size="13">{html.escape(t.title)}</text>']
    bottom = height - 44
    for band in t.faults:
        x0 = x(band.start_s)
        out.append(f'<rect x="{x0}" y="{top}" width="{max(x(band.end_s) - x0, 1)}" '
                   f'height="{bottom - top}" fill="{fault_color(band.kind)}">'
                   f'<title>{html.escape(band.label)} {band.start_s:.2f}-{band.end_s:.2f}s'
                   f'</title></rect>')
    for band, place in zip(labels, places, strict=True):
        if place is not None:
            color = COLORS["mark"] if band is t.mark else COLORS["text"]
            out.append(f'<text x="{x(place[0]) + 1}" y="{24 + (place[1] + 1) * LABEL_ROW_PX}" '
                       f'fill="{color}">{html.escape(band.label)}</text>')
    for i, name in enumerate(t.lanes):
        y = top + i * LANE_PX
        if i % 2 == 0:
            out.append(f'<rect x="{LEFT_PX}" y="{y}" width="{usable}" height="{LANE_PX}" '
                       f'fill="{COLORS["lane"]}" opacity="0.5"/>')
        out.append(f'<text x="4" y="{y + LANE_PX - 2}">{html.escape(name)}</text>')
    for bar in t.bars:
        x0 = x(bar.start_s)
        out.append(f'<rect x="{x0}" y="{top + bar.lane * LANE_PX + 2}" '
                   f'width="{max(x(bar.end_s) - x0, 1)}" height="{LANE_PX - 4}" '
                   f'fill="{COLORS.get(bar.kind, COLORS["axis"])}"/>')
    out += _svg_axis(t, x, top + lanes_h)
    if t.series is not None:
        s = t.series
        mids = s.mids_s
        out += _svg_chart(x, charts_top, "ok/s", max(s.ok_per_s, default=0.0),
                          [(mids, _opt(s.ok_per_s), COLORS["throughput"], "ok/s")],
                          right=("availability", [(mids, _opt(s.availability),
                                                   COLORS["availability"], "availability")]))
        out += _svg_chart(x, charts_top + CHART_PX + 22, "latency ms (log)", max(
            (v for v in s.latency_p99_ms if v is not None), default=0.0),
            [(mids, _opt(s.latency_p50_ms), COLORS["p50"], "p50"),
             (mids, _opt(s.latency_p99_ms), COLORS["p99"], "p99")], log=True)
        out += _svg_axis(t, x, bottom)
    span = t.mark_span()
    if span is not None and t.mark is not None:
        x0 = x(span[0])
        out.append(f'<rect x="{x0 - 1}" y="{top - 2}" width="{max(x(span[1]) - x0, 2) + 2}" '
                   f'height="{bottom - top + 4}" fill="none" stroke="{COLORS["mark"]}" '
                   f'stroke-width="2"><title>{html.escape(t.mark.label)}</title></rect>')
    out += _svg_legend(legend(t), height - 8)
    out.append("</svg>")
    return "\n".join(out)


def _svg_legend(entries: list[LegendEntry], y: int) -> list[str]:
    out, x0 = [], float(LEFT_PX)
    for e in entries:
        fill, stroke = ("none", e.color) if e.style == "outline" else (e.color, "none")
        out.append(f'<rect x="{x0}" y="{y - 9}" width="14" height="10" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="2"/>'
                   f'<text x="{x0 + 18}" y="{y}">{html.escape(e.label)}</text>')
        x0 += 18 + len(e.label) * SVG_CHAR_PX + 16
    return out


def _svg_axis(t: Timeline, x: Callable[[float], float], base: int) -> list[str]:
    step = tick_step(t.end_s)
    out = [f'<line x1="{LEFT_PX}" y1="{base}" x2="{x(t.end_s)}" y2="{base}" '
           f'stroke="{COLORS["axis"]}"/>']
    for k in range(int(t.end_s / step) + 1):
        xk = x(k * step)
        out.append(f'<line x1="{xk}" y1="{base}" x2="{xk}" y2="{base + 4}" '
                   f'stroke="{COLORS["axis"]}"/>')
        out.append(f'<text x="{xk - 6}" y="{base + 15}">{k * step:g}s</text>')
    return out


def _svg_chart(x: Callable[[float], float], top: int, title: str, y_max: float,
               lines: list[SvgLine], right: tuple[str, list[SvgLine]] | None = None,
               log: bool = False) -> list[str]:
    """A small line chart under the lanes: left axis 0..``y_max`` (``log``: 1..``y_max`` on a
    log scale: a paused leader's seconds would flatten everything else); ``right``: lines on a
    0..1 axis (availability). A ``None`` value breaks the line."""
    out = [f'<rect x="{LEFT_PX}" y="{top}" width="{WIDTH_PX - LEFT_PX - RIGHT_PX}" '
           f'height="{CHART_PX}" fill="none" stroke="#d0d0d0"/>',
           f'<text x="4" y="{top + 10}">{html.escape(title)}</text>',
           f'<text x="4" y="{top + 22}" fill="{COLORS["axis"]}">max {y_max:.4g}</text>']
    if log:
        lines = [(xs, [None if v is None else math.log10(max(v, 1.0)) for v in ys], c, n)
                 for xs, ys, c, n in lines]
        y_max = math.log10(max(y_max, 1.0))
    y_max = y_max or 1.0
    every: list[tuple[SvgLine, float]] = [(line, y_max) for line in lines]
    if right is not None:
        at = WIDTH_PX - RIGHT_PX + 4
        out.append(f'<text x="{at}" y="{top + 10}">{html.escape(right[0])} 1</text>'
                   f'<text x="{at}" y="{top + CHART_PX}">0</text>')
        every += [(line, 1.0) for line in right[1]]
    for (xs, ys, color, name), scale in every:
        parts: list[str] = []
        for xv, yv in zip(xs, ys, strict=True):
            if yv is None:
                if len(parts) > 1:
                    out.append(_polyline(parts, color, name))
                parts = []
                continue
            parts.append(f"{x(xv)},{round(top + CHART_PX - yv / scale * CHART_PX, 1)}")
        if parts:
            out.append(_polyline(parts, color, name))
    return out


def _opt(values: Sequence[float | None]) -> list[float | None]:
    return list(values)


def _polyline(points: list[str], color: str, name: str) -> str:
    return (f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" '
            f'stroke-width="1.2"><title>{html.escape(name)}</title></polyline>')
