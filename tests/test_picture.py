"""The chaos timeline's pictures (consensus/testing/picture.py, picture_png.py) from hand-made
timelines: the pure part (label rows, series, legend, the SVG) and the matplotlib PNG, whose
pixels are read back: the violation window's colour is there when a violation is drawn and
nowhere otherwise, each fault kind's tint is there, and fault labels never overlap."""

from __future__ import annotations

import functools
import itertools
import random
from pathlib import Path

import pytest
from matplotlib import style as mpl_style
from pngcheck import pixels_near, read_png

from quorumboard.consensus.testing.picture import (
    COLORS,
    FAULT_COLORS,
    LABEL_ROWS_MAX,
    Band,
    Bar,
    Timeline,
    label_rows,
    legend,
    place_labels,
    series_of,
    to_svg,
)
from quorumboard.consensus.testing.picture_png import DPI, WIDTH_IN, draw_png, figure
from quorumboard.consensus.testing.summary import Span


def test_label_rows_never_overlap_and_are_bounded() -> None:
    # [0, 5] and [3, 4] overlap; [5, 6] starts where the first ends; [4.5, 9] overlaps both
    rows = label_rows([0.0, 3.0, 5.0, 4.5], [5.0, 1.0, 1.0, 4.5])
    assert rows == [0, 1, 0, 1], "[3, 4] ended before 4.5: row 1 is free again"
    # ten labels all at once: LABEL_ROWS_MAX rows, the rest left out
    crowded = label_rows([1.0] * 10, [2.0] * 10)
    assert sorted(r for r in crowded if r is not None) == list(range(LABEL_ROWS_MAX))
    assert crowded.count(None) == 10 - LABEL_ROWS_MAX
    with pytest.raises(ValueError, match="one width"):
        label_rows([1.0], [])
    # a label that would run past the end of the run ends there instead
    t = Timeline("t", ["c0"], 10.0, faults=[Band(1.0, 2.0, "a", "kill"),
                                              Band(9.0, 9.5, "b", "kill")])
    assert place_labels(t, [3.0, 3.0]) == [(1.0, 0), (7.0, 0)]


def _span(start_s: float, end_s: float | None, kind: str = "ok") -> Span:
    return Span(process="c0", f="cas", key="k", start_s=start_s, end_s=end_s, kind=kind)


def test_series_in_buckets() -> None:
    spans = [_span(0.1, 0.2), _span(0.3, 0.35), _span(0.5, 1.5),  # bucket 0 (0..1 s)
             _span(1.1, 1.3, "fail"), _span(1.2, None, "info"),     # bucket 1
             _span(3.5, 3.6)]                                        # bucket 3
    s = series_of(spans, 4.0, buckets=4)
    assert s.bucket_s == 1.0 and s.starts_s == (0.0, 1.0, 2.0, 3.0)
    # ok completions by completion time: 0.2, 0.35 | 1.5 | - | 3.6
    assert s.ok_per_s == (2.0, 1.0, 0.0, 1.0)
    # availability of what was invoked in the bucket; none invoked: None
    assert s.availability == (1.0, 0.0, None, 1.0)
    assert s.latency_p50_ms[0] == pytest.approx(100.0)
    assert s.latency_p99_ms[0] == pytest.approx(1000.0)
    assert s.latency_p50_ms[1] is None and s.latency_p50_ms[3] == pytest.approx(100.0)


@functools.cache
def _timeline(mark: bool, *, faults: int = 12, lanes: int = 6) -> Timeline:
    """A 60 s run: ``lanes`` clients with short operations (a few failures), a fault of each
    kind in turn every 5 s, and (``mark``) a violation window at 24.2-24.5 s. Not modified by
    any test: cached."""
    rng = random.Random(7)
    spans: list[Span] = []
    for c in range(lanes):
        t = 0.0
        while t < 60:
            latency = rng.expovariate(1 / 0.03) + (2.0 if 7 <= t < 10 else 0.0)
            kind = "fail" if rng.random() < 0.01 else "ok"
            spans.append(Span(process=f"c{c}", f="cas", key="k", start_s=t, end_s=t + latency,
                              kind=kind))
            t += latency + 0.08
    kinds = list(FAULT_COLORS)
    bands = [Band(2 + 5 * i, 5 + 5 * i, f"{kinds[i % len(kinds)]} isolate-leader",
                  kinds[i % len(kinds)]) for i in range(faults)]
    return Timeline(
        "cas-register <x6> & more", [*(f"c{i}" for i in range(lanes)), "final"], 60.0,
        [Bar(int(s.process[1:]), s.start_s, s.end_s or 60.0, s.kind) for s in spans], bands,
        Band(24.2, 24.5, "violation on k3") if mark else None, series_of(spans, 60.0))


def test_svg_is_escaped_bounded_and_outlines_only_a_violation() -> None:
    t = Timeline("<run> & more", ["c0", "final"], 10.0,
                 [Bar(0, -1.0, 99.0, "ok"), Bar(1, 2.0, 2.0, "info")],
                 [Band(1.0, 2.0, "kill <leader>", "kill")], Band(3.0, 4.0, "violation"))
    assert t.clamp(-5.0) == 0.0 and t.clamp(50.0) == 10.0
    svg = to_svg(t)
    assert "&lt;run&gt; &amp; more" in svg and "kill &lt;leader&gt;" in svg and "<run>" not in svg
    assert f'stroke="{COLORS["mark"]}"' in svg and FAULT_COLORS["kill"] in svg
    assert COLORS["mark"] not in to_svg(_timeline(mark=False))
    assert f'stroke="{COLORS["mark"]}"' in to_svg(_timeline(mark=True))
    with pytest.raises(ValueError, match="lanes"):
        Timeline("empty", [], 1.0)


def test_legend_names_each_fault_kind_and_the_window_only_with_a_violation() -> None:
    with_mark, without = legend(_timeline(mark=True)), legend(_timeline(mark=False))
    assert [e.label for e in with_mark if e.style == "band"] == list(FAULT_COLORS)
    assert [e.style for e in with_mark].count("outline") == 1
    assert all(e.style != "outline" for e in without)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, bytes]:
    folder = tmp_path_factory.mktemp("pictures")
    return {mark: draw_png(_timeline(mark), folder / f"{mark}.png").read_bytes()
            for mark in (True, False)}


def test_png_size_and_the_violation_window_colour(pngs: dict[bool, bytes]) -> None:
    for mark, data in pngs.items():
        width, height, pixels = read_png(data)
        assert width == WIDTH_IN * DPI and 500 < height < 1400, (width, height)
        assert b"Software" not in data, "no tool name in the file"
        assert pixels_near(pixels, COLORS["ok"]) > 5_000, "the operations are drawn"
        assert pixels_near(pixels, COLORS["fail"]) > 20, "the failures are drawn"
        for kind, tint in FAULT_COLORS.items():
            assert pixels_near(pixels, tint, 3) > 2_000, f"{kind} band"
        window = pixels_near(pixels, COLORS["mark"])
        if mark:
            # outlined over the lanes and both charts: at least two vertical edges each
            assert window > 2 * 3 * 300, window
        else:
            assert window == 0, window


def test_png_is_the_same_for_the_same_timeline(pngs: dict[bool, bytes], tmp_path: Path) -> None:
    assert draw_png(_timeline(True), tmp_path / "again.png").read_bytes() == pngs[True]


def test_png_fault_labels_do_not_overlap() -> None:
    """Twelve 3 s faults, each label wider than its band: without rows they would overlap
    (as the hand-drawn picture's did); the labels' drawn boxes are measured."""
    with mpl_style.context("default"):
        fig = figure(_timeline(mark=True))
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        strip = fig.axes[0]
        boxes = [tx.get_window_extent(renderer) for tx in strip.texts
                 if "isolate-leader" in tx.get_text() or "violation" in tx.get_text()]
    assert len(boxes) == 13, "every label found room"
    rows = {round(b.y0) for b in boxes}
    assert len(rows) > 1, "the labels needed more than one row"
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
