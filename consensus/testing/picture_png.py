"""The PNG of a :class:`~quorumboard.consensus.testing.picture.Timeline`, drawn with matplotlib
(the ``plots`` extra). Imported only when a PNG is asked for: without matplotlib a chaos run
still writes its data and the HTML page.

Only drawing lives here; what is drawn (bands, bars, series, the violation window, which label
goes in which row, the legend) comes from :mod:`~quorumboard.consensus.testing.picture`. As the
experiment report does, the figure is built with the object API on an explicit Agg canvas (no
pyplot: no global figure registry, never a display), under matplotlib's default style (a
user's matplotlibrc cannot change it), and saved without the ``Software`` text chunk, so the same
timeline gives the same bytes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from matplotlib import style as mpl_style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from quorumboard.consensus.testing.picture import (
    COLORS,
    Timeline,
    fault_color,
    legend,
    place_labels,
)

__all__ = ["draw_png", "figure"]

WIDTH_IN = 14.0
DPI = 100
LANE_IN = 0.16
LANES_IN_MAX = 7.0
CHART_IN = 1.7
LABEL_ROW_IN = 0.2
LABEL_FONT_PT = 8
LANE_TICKS_MAX = 40


def draw_png(t: Timeline, path: Path) -> Path:
    """Draw ``t`` into ``path`` (PNG): fault labels in rows above, one lane per client, then
    ok/s with availability, then p50/p99 latency (log scale), all on one time axis; the
    legend under them."""
    with mpl_style.context("default"):
        fig = figure(t)
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def figure(t: Timeline) -> Figure:
    """The figure :func:`draw_png` saves (tests measure where its labels landed). Call it
    under ``matplotlib.style.context("default")`` for the picture ``draw_png`` makes."""
    lanes_in = min(LANES_IN_MAX, max(1.2, len(t.lanes) * LANE_IN))
    charts = 2 if t.series is not None else 0
    fig = Figure(figsize=(WIDTH_IN, 1.0), dpi=DPI)
    FigureCanvasAgg(fig)  # attaches the Agg canvas explicitly: never a GUI backend
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    # Left and right margins in inches (lane names; the availability axis).
    left_in, right_in = 0.9, 0.75
    axis_px = (WIDTH_IN - left_in - right_in) * DPI
    labelled = t.labelled()
    texts = [fig.text(0, 0, b.label, fontsize=LABEL_FONT_PT) for b in labelled]
    widths_s = [(tx.get_window_extent(renderer).width + 6) / axis_px * t.end_s for tx in texts]
    for tx in texts:
        tx.remove()
    places = place_labels(t, widths_s)
    n_rows = max((p[1] + 1 for p in places if p is not None), default=0)
    strip_in = max(1, n_rows) * LABEL_ROW_IN
    heights = [strip_in, lanes_in, *([CHART_IN] * charts)]
    top_in, gap_in, bottom_in = 0.45, 0.12, 0.95
    height_in = top_in + sum(heights) + gap_in * (len(heights) - 1) + bottom_in
    fig.set_size_inches(WIDTH_IN, height_in)
    axes: list[Axes] = []
    y_in = height_in - top_in
    for h in heights:
        y_in -= h
        axes.append(fig.add_axes((left_in / WIDTH_IN, y_in / height_in,
                                  (WIDTH_IN - left_in - right_in) / WIDTH_IN, h / height_in),
                                 sharex=axes[0] if axes else None))
        y_in -= gap_in
    fig.suptitle(t.title, x=left_in / WIDTH_IN, y=1 - 0.12 / height_in, ha="left", va="top",
                 fontsize=11)
    strip, lanes_ax, *chart_axes = axes
    strip.set_xlim(0, t.end_s)
    _label_strip(strip, t, places, n_rows)
    _lanes(lanes_ax, t)
    if t.series is not None:
        _throughput(chart_axes[0], t)
        _latency(chart_axes[1], t)
    data_axes = [lanes_ax, *chart_axes]
    for ax in data_axes:
        for band in t.faults:
            ax.axvspan(t.clamp(band.start_s), max(t.clamp(band.end_s), t.clamp(band.start_s)),
                       color=fault_color(band.kind), zorder=0, linewidth=0)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("seconds since the first operation")
    span = t.mark_span()
    if span is not None:
        for ax in data_axes:
            ax.add_patch(Rectangle((span[0], 0), span[1] - span[0], 1,
                                   transform=ax.get_xaxis_transform(), fill=False,
                                   edgecolor=COLORS["mark"], linewidth=2.2, zorder=6,
                                   clip_on=False))
    _legend(fig, t)
    return fig


def _label_strip(ax: Axes, t: Timeline, places: list[tuple[float, int] | None],
                 n_rows: int) -> None:
    """Each fault's label in its row, over a tick of its kind's tint as long as the fault."""
    ax.set_ylim(max(1, n_rows), 0)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    left_out = 0
    for band, place in zip(t.labelled(), places, strict=True):
        if place is None:
            left_out += 1
            continue
        at_s, row = place
        start, end = t.clamp(band.start_s), t.clamp(band.end_s)
        is_mark = band is t.mark
        if not is_mark:
            ax.add_patch(Rectangle((start, row + 0.72), max(end - start, t.end_s * 0.002),
                                   0.22, color=fault_color(band.kind), linewidth=0))
        ax.text(at_s, row + 0.62, band.label, fontsize=LABEL_FONT_PT,
                color=COLORS["mark"] if is_mark else COLORS["text"], va="bottom", ha="left",
                clip_on=False)
    if left_out:
        ax.text(1.0, 1.02, f"{left_out} fault label(s) left out: see summary.json",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                color=COLORS["axis"])


def _lanes(ax: Axes, t: Timeline) -> None:
    """One lane per client: a bar per operation, coloured by how it ended. Bars get an edge in
    their own colour so a 5 ms operation is still a visible pixel wide."""
    per: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for bar in t.bars:
        a = t.clamp(bar.start_s)
        per[(bar.lane, bar.kind)].append((a, max(t.clamp(bar.end_s) - a, 0.0)))
    order = {"ok": 0, "info": 1, "fail": 2}  # failures drawn last: on top
    for (lane, kind), spans in sorted(per.items(), key=lambda kv: order.get(kv[0][1], 3)):
        color = COLORS.get(kind, COLORS["axis"])
        ax.broken_barh(spans, (lane + 0.15, 0.7), facecolors=color, edgecolors=color,
                       linewidth=0.4, zorder=2 + order.get(kind, 3))
    n = len(t.lanes)
    ax.set_ylim(n, 0)
    step = max(1, math.ceil(n / LANE_TICKS_MAX))
    ax.set_yticks([k + 0.5 for k in range(0, n, step)], [t.lanes[k] for k in range(0, n, step)],
                  fontsize=7)
    ax.tick_params(axis="y", length=0)
    ax.set_ylabel("client")


def _throughput(ax: Axes, t: Timeline) -> None:
    assert t.series is not None
    s = t.series
    ax.step(s.starts_s, s.ok_per_s, where="post", color=COLORS["throughput"], linewidth=1.1,
            label="ok/s")
    ax.set_ylabel("ok completions/s")
    ax.set_ylim(0, max(max(s.ok_per_s, default=0.0) * 1.1, 1.0))
    twin = ax.twinx()
    avail = [math.nan if v is None else 100 * v for v in s.availability]
    twin.plot(s.mids_s, avail, color=COLORS["availability"], linewidth=1.1, linestyle="--",
              label="availability % (ok / invoked)")
    twin.set_ylim(0, 105)
    twin.set_ylabel("availability %")
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [str(ln.get_label()) for ln in lines], loc="lower left", fontsize=7,
              framealpha=0.9)


def _latency(ax: Axes, t: Timeline) -> None:
    assert t.series is not None
    s = t.series
    for name, values in (("p50", s.latency_p50_ms), ("p99", s.latency_p99_ms)):
        ax.plot(s.mids_s, [math.nan if v is None else max(v, 0.01) for v in values],
                color=COLORS[name], linewidth=1.1, label=f"latency {name} (ok operations, "
                "by invocation)")
    if any(v is not None for v in s.latency_p99_ms):
        ax.set_yscale("log")
    ax.set_ylabel("latency ms")
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)


def _legend(fig: Figure, t: Timeline) -> None:
    handles: list[Patch | Line2D] = []
    for e in legend(t):
        if e.style == "outline":
            handles.append(Patch(facecolor="none", edgecolor=e.color, linewidth=2,
                                 label=e.label))
        else:
            handles.append(Patch(facecolor=e.color, edgecolor="none",
                                 label=e.label if e.style == "bar" else f"fault: {e.label}"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.01),
               ncol=min(len(handles), 8), fontsize=8, frameon=False)
