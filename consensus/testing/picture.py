"""A picture of a run: operations per client on a time axis, faults as bands, a violation window
marked. Rendered as a self-contained SVG (for the HTML page) and as a PNG, both without any
plotting library: the PNG is rasterized here (filled rectangles and a 3x5 pixel font) and
compressed with zlib. Pure: returns bytes and text, writes nothing.
"""

from __future__ import annotations

import html
import struct
import zlib
from dataclasses import dataclass, field

__all__ = ["Band", "Bar", "Timeline", "to_png", "to_svg"]

Color = tuple[int, int, int]
COLORS: dict[str, Color] = {
    "ok": (46, 160, 67), "fail": (207, 34, 46), "info": (230, 150, 0),
    "fault": (255, 221, 221), "mark": (180, 0, 0), "axis": (90, 90, 90),
    "text": (30, 30, 30), "bg": (255, 255, 255), "lane": (246, 246, 246),
}
LANES_MAX = 512
BARS_MAX = 2_000_000
WIDTH_PX = 1400
LANE_PX = 12
LEFT_PX = 90
TOP_PX = 40
FONT_SCALE = 2


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
    """A time span across every lane: a fault (``label``) or the violation window."""

    start_s: float
    end_s: float
    label: str


@dataclass
class Timeline:
    title: str
    lanes: list[str]
    end_s: float
    bars: list[Bar] = field(default_factory=list)
    faults: list[Band] = field(default_factory=list)
    mark: Band | None = None

    def __post_init__(self) -> None:
        if not 0 < len(self.lanes) <= LANES_MAX:
            raise ValueError(f"a timeline has 1..{LANES_MAX} lanes, not {len(self.lanes)}")
        if len(self.bars) > BARS_MAX:
            raise ValueError(f"a timeline has at most {BARS_MAX} bars")
        self.end_s = max(self.end_s, 1e-3)

    def x(self, t_s: float) -> int:
        usable = WIDTH_PX - LEFT_PX - 10
        return LEFT_PX + round(max(0.0, min(t_s, self.end_s)) / self.end_s * usable)

    def y(self, lane: int) -> int:
        return TOP_PX + lane * LANE_PX

    @property
    def height(self) -> int:
        return TOP_PX + len(self.lanes) * LANE_PX + 30


def _tick_step(end_s: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if end_s / step <= 12:
            return step
    return end_s / 10


# ------------------------------------------------------------------------------------ SVG


def to_svg(t: Timeline) -> str:
    """The timeline as an SVG element (fault labels and lane names as text, bars with a
    tooltip naming the lane and times)."""
    w, h = WIDTH_PX, t.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" font-family="monospace" font-size="10">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="4" y="14" font-size="13">{html.escape(t.title)}</text>']
    for i, name in enumerate(t.lanes):
        y = t.y(i)
        if i % 2 == 0:
            out.append(f'<rect x="{LEFT_PX}" y="{y}" width="{w - LEFT_PX - 10}" '
                       f'height="{LANE_PX}" fill="#f6f6f6"/>')
        out.append(f'<text x="4" y="{y + LANE_PX - 2}">{html.escape(name)}</text>')
    for band in t.faults:
        x0, x1 = t.x(band.start_s), max(t.x(band.end_s), t.x(band.start_s) + 1)
        out.append(f'<rect x="{x0}" y="{TOP_PX - 14}" width="{x1 - x0}" '
                   f'height="{len(t.lanes) * LANE_PX + 14}" fill="#ffdddd" opacity="0.8">'
                   f'<title>{html.escape(band.label)} {band.start_s:.2f}-{band.end_s:.2f}s'
                   f'</title></rect>')
        out.append(f'<text x="{x0 + 2}" y="{TOP_PX - 4}">{html.escape(band.label)}</text>')
    hexes = {k: "#" + bytes(COLORS[k]).hex() for k in ("ok", "fail", "info")}
    for bar in t.bars:
        x0 = t.x(bar.start_s)
        x1 = max(t.x(bar.end_s), x0 + 1)
        out.append(f'<rect x="{x0}" y="{t.y(bar.lane) + 2}" width="{x1 - x0}" '
                   f'height="{LANE_PX - 4}" fill="{hexes.get(bar.kind, "#888")}"/>')
    if t.mark is not None:
        x0, x1 = t.x(t.mark.start_s), max(t.x(t.mark.end_s), t.x(t.mark.start_s) + 2)
        out.append(f'<rect x="{x0}" y="{TOP_PX - 2}" width="{x1 - x0}" '
                   f'height="{len(t.lanes) * LANE_PX + 4}" fill="none" stroke="#b40000" '
                   f'stroke-width="2"><title>{html.escape(t.mark.label)}</title></rect>')
    base = TOP_PX + len(t.lanes) * LANE_PX
    step = _tick_step(t.end_s)
    for k in range(int(t.end_s / step) + 1):
        x = t.x(k * step)
        out.append(f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 4}" stroke="#5a5a5a"/>')
        out.append(f'<text x="{x - 6}" y="{base + 15}">{k * step:g}s</text>')
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ PNG

# 3x5 glyphs: five rows of three cells, "#" = ink.
_GLYPHS: dict[str, str] = {
    "0": "###|# #|# #|# #|###", "1": " # |## | # | # |###", "2": "###|  #|###|#  |###",
    "3": "###|  #|###|  #|###", "4": "# #|# #|###|  #|  #", "5": "###|#  |###|  #|###",
    "6": "###|#  |###|# #|###", "7": "###|  #|  #|  #|  #", "8": "###|# #|###|# #|###",
    "9": "###|# #|###|  #|###", "A": " # |# #|###|# #|# #", "B": "## |# #|## |# #|## ",
    "C": " ##|#  |#  |#  | ##", "D": "## |# #|# #|# #|## ", "E": "###|#  |## |#  |###",
    "F": "###|#  |## |#  |#  ", "G": " ##|#  |# #|# #| ##", "H": "# #|# #|###|# #|# #",
    "I": "###| # | # | # |###", "J": "  #|  #|  #|# #| # ", "K": "# #|# #|## |# #|# #",
    "L": "#  |#  |#  |#  |###", "M": "# #|###|###|# #|# #", "N": "## |# #|# #|# #|# #",
    "O": " # |# #|# #|# #| # ", "P": "## |# #|## |#  |#  ", "Q": " # |# #|# #|## | ##",
    "R": "## |# #|## |# #|# #", "S": " ##|#  | # |  #|## ", "T": "###| # | # | # | # ",
    "U": "# #|# #|# #|# #|###", "V": "# #|# #|# #|# #| # ", "W": "# #|# #|###|###|# #",
    "X": "# #|# #| # |# #|# #", "Y": "# #|# #| # | # | # ", "Z": "###|  #| # |#  |###",
    "-": "   |   |###|   |   ", ".": "   |   |   |   | # ", ":": "   | # |   | # |   ",
    "/": "  #|  #| # |#  |#  ", "%": "# #|  #| # |#  |# #", "(": "  #| # | # | # |  #",
    ")": "#  | # | # | # |#  ", "_": "   |   |   |   |###", ",": "   |   |   | # |#  ",
    "=": "   |###|   |###|   ", " ": "   |   |   |   |   ", "+": "   | # |###| # |   ",
    "<": "  #| # |#  | # |  #", ">": "#  | # |  #| # |#  ",
}


def _glyph(ch: str) -> list[str]:
    return _GLYPHS.get(ch.upper(), _GLYPHS["-"]).split("|")


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rows = [bytearray(bytes(COLORS["bg"]) * width) for _ in range(height)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, x0), min(self.width, x1)
        if x1 <= x0:
            return
        run = bytes(color) * (x1 - x0)
        for y in range(max(0, y0), min(self.height, y1)):
            self.rows[y][x0 * 3:x1 * 3] = run

    def outline(self, x0: int, y0: int, x1: int, y1: int, color: Color, px: int = 2) -> None:
        self.rect(x0, y0, x1, y0 + px, color)
        self.rect(x0, y1 - px, x1, y1, color)
        self.rect(x0, y0, x0 + px, y1, color)
        self.rect(x1 - px, y0, x1, y1, color)

    def text(self, x: int, y: int, s: str, color: Color, scale: int = FONT_SCALE) -> None:
        for ch in s[:200]:
            for r, row in enumerate(_glyph(ch)):
                for c, cell in enumerate(row):
                    if cell == "#":
                        self.rect(x + c * scale, y + r * scale, x + (c + 1) * scale,
                                  y + (r + 1) * scale, color)
            x += 4 * scale

    def png(self) -> bytes:
        def chunk(tag: bytes, data: bytes) -> bytes:
            return (struct.pack(">I", len(data)) + tag + data
                    + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

        raw = b"".join(b"\x00" + bytes(row) for row in self.rows)
        head = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def to_png(t: Timeline) -> bytes:
    """The timeline as PNG bytes (labels upper-cased: the pixel font has no lower case)."""
    cv = _Canvas(WIDTH_PX, t.height)
    cv.text(4, 4, t.title, COLORS["text"])
    band_px = len(t.lanes) * LANE_PX
    for i, name in enumerate(t.lanes):
        if i % 2 == 0:
            cv.rect(LEFT_PX, t.y(i), WIDTH_PX - 10, t.y(i) + LANE_PX, COLORS["lane"])
        cv.text(4, t.y(i) + 1, name[:10], COLORS["text"])
    for band in t.faults:
        x0 = t.x(band.start_s)
        cv.rect(x0, TOP_PX - 14, max(t.x(band.end_s), x0 + 1), TOP_PX + band_px,
                COLORS["fault"])
        cv.text(x0 + 2, TOP_PX - 13, band.label[:24], COLORS["text"])
    for bar in t.bars:
        x0 = t.x(bar.start_s)
        cv.rect(x0, t.y(bar.lane) + 2, max(t.x(bar.end_s), x0 + 1), t.y(bar.lane) + LANE_PX - 2,
                COLORS.get(bar.kind, COLORS["axis"]))
    if t.mark is not None:
        x0 = t.x(t.mark.start_s)
        cv.outline(x0 - 2, TOP_PX - 3, max(t.x(t.mark.end_s), x0 + 2) + 2,
                   TOP_PX + band_px + 3, COLORS["mark"])
    base = TOP_PX + band_px
    step = _tick_step(t.end_s)
    for k in range(int(t.end_s / step) + 1):
        x = t.x(k * step)
        cv.rect(x, base, x + 1, base + 5, COLORS["axis"])
        cv.text(x - 6, base + 8, f"{k * step:g}S", COLORS["axis"])
    return cv.png()
