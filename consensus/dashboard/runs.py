"""A finished run's folder as the dashboard's views: a chaos run (``quorumboard chaos --out``)
or an experiment sweep (``quorumboard experiment run`` / ``report``).

Only files the run wrote are read, by fixed names, and only pictures named like the ones
those commands draw are served (no path from a request ever reaches the file system)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from pydantic import ValidationError

from quorumboard.consensus.dashboard.models import (
    BlockView,
    ChaosView,
    ExperimentView,
    FindingRow,
    SourceView,
)
from quorumboard.consensus.errors import InvalidCommand
from quorumboard.consensus.testing.summary import OpWindowStats

__all__ = ["RunFolder", "open_run"]

FILE_BYTES_MAX = 16 * 2**20
"""A report, verdict or summary larger than this is refused rather than read."""
PICTURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.png$")
PICTURE_BYTES_MAX = 64 * 2**20
TIMELINE_SVG = "timeline.svg"
CSV_ROWS_MAX = 2_000
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")


def _read_text(path: Path) -> str:
    if path.stat().st_size > FILE_BYTES_MAX:
        raise InvalidCommand(f"{path}: larger than {FILE_BYTES_MAX} bytes")
    return path.read_text(encoding="utf-8", errors="replace")


class RunFolder:
    """One run's folder; :func:`open_run` picks the kind."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind

    def source(self) -> SourceView:
        return SourceView(kind="chaos" if self.kind == "chaos" else "experiment",
                          title=self.path.name)

    # ---------------------------------------------------------------------------- chaos

    def chaos(self) -> ChaosView:
        """The verdict, the figures of every window (whole run, quiet time, each fault) and
        where the timeline picture is."""
        from quorumboard.consensus.testing.chaos import ChaosReport
        from quorumboard.consensus.testing.summary import RunSummary

        try:
            report = ChaosReport.model_validate_json(_read_text(self.path / "verdict.json"))
        except (OSError, ValidationError) as exc:
            raise InvalidCommand(f"{self.path / 'verdict.json'}: not a chaos verdict "
                                 f"({type(exc).__name__})") from None
        windows: list[OpWindowStats] = []
        duration = None
        summary_path = self.path / "summary.json"
        if summary_path.is_file():
            try:
                summary = RunSummary.model_validate_json(_read_text(summary_path))
            except ValidationError as exc:
                raise InvalidCommand(f"{summary_path}: not a run summary ({exc.error_count()} "
                                     "errors)") from None
            duration = summary.duration_s
            windows = [summary.total, summary.quiet, *summary.faults]
        timeline = None
        if self.timeline_svg() is not None:
            timeline = f"/run/{TIMELINE_SVG}"
        elif (self.path / "timeline.png").is_file():
            timeline = "/run/timeline.png"
        return ChaosView(verdict=report.verdict, linearizable=report.linearizable,
                         converged=report.converged, operations=report.operations,
                         faults_injected=report.faults_injected, problems=report.problems,
                         findings=[FindingRow(check=f.check, verdict=f.verdict, detail=f.detail)
                                   for f in report.findings],
                         explanation=report.explanation, duration_s=duration,
                         windows=windows, timeline=timeline)

    def timeline_svg(self) -> str | None:
        """The timeline picture ``timeline.html`` holds (the one SVG element it has)."""
        page = self.path / "timeline.html"
        if self.kind != "chaos" or not page.is_file():
            return None
        text = _read_text(page)
        start, end = text.find("<svg"), text.rfind("</svg>")
        if start < 0 or end < start:
            return None
        svg = text[start:end + len("</svg>")]
        if "xmlns=" not in svg[:200]:  # an SVG served as a file needs its namespace
            svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
        return svg

    # ----------------------------------------------------------------------- experiment

    def experiment(self) -> ExperimentView:
        """The report (``report.md``) as blocks: headings, paragraphs, its tables and its
        plots in the report's order; the cell table of ``summary.csv`` when there is no
        report yet; and every plot of the folder."""
        plots = [f"/run/{p.name}" for p in sorted(self.path.glob("*.png"))
                 if PICTURE_NAME.match(p.name)]
        report = self.path / "report.md"
        if report.is_file():
            blocks = _markdown_blocks(_read_text(report))
        else:
            blocks = [BlockView(kind="heading", level=1, text=f"Sweep {self.path.name}"),
                      BlockView(kind="text", text="No report.md yet: run 'quorumboard "
                                "experiment report' on this folder for the full report.")]
            cells = self.path / "summary.csv"
            if cells.is_file():
                rows = list(csv.reader(io.StringIO(_read_text(cells))))[:CSV_ROWS_MAX]
                blocks.append(BlockView(kind="table", rows=rows))
            blocks += [BlockView(kind="plot", src=src, text=src.rsplit("/", 1)[-1])
                       for src in plots]
        title = next((b.text for b in blocks if b.kind == "heading"), self.path.name)
        return ExperimentView(title=title, blocks=blocks, plots=plots)

    # ------------------------------------------------------------------------- pictures

    def picture(self, name: str) -> bytes | None:
        """A PNG of the folder by its bare name (``None``: no such picture)."""
        if not PICTURE_NAME.match(name):
            return None
        path = self.path / name
        if not path.is_file() or path.stat().st_size > PICTURE_BYTES_MAX:
            return None
        return path.read_bytes()


def _markdown_blocks(text: str) -> list[BlockView]:
    """The report's markdown, as far as the page needs it: ``#`` headings, tables of ``|``
    rows (the ``---`` rule dropped), images as plots, and the rest as paragraphs."""
    blocks: list[BlockView] = []
    table: list[list[str]] = []
    para: list[str] = []

    def flush() -> None:
        if table:
            blocks.append(BlockView(kind="table", rows=list(table)))
            table.clear()
        if para:
            blocks.append(BlockView(kind="text", text=" ".join(para)))
            para.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            if para:
                flush()
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                table.append(cells)
            continue
        if table:
            flush()
        image = _IMAGE.match(line)
        if line.startswith("#"):
            flush()
            level = len(line) - len(line.lstrip("#"))
            blocks.append(BlockView(kind="heading", level=min(level, 4),
                                    text=line.lstrip("#").strip()))
        elif image:
            flush()
            name = image.group(2)
            if PICTURE_NAME.match(name):
                blocks.append(BlockView(kind="plot", text=image.group(1), src=f"/run/{name}"))
        elif not line:
            flush()
        elif line.startswith(("- ", "* ")):  # a list item: a paragraph of its own
            flush()
            para.append("• " + line[2:])
        else:
            para.append(line)
    flush()
    return blocks


def open_run(path: Path) -> RunFolder:
    """The run folder at ``path``: a chaos run if it holds ``verdict.json``, an experiment if
    it holds ``results.jsonl`` or ``report.md``; anything else is refused, naming why."""
    if not path.is_dir():
        raise InvalidCommand(f"--run {path}: no such folder")
    if (path / "verdict.json").is_file():
        return RunFolder(path, "chaos")
    if any((path / name).is_file() for name in ("results.jsonl", "report.md", "summary.csv")):
        return RunFolder(path, "experiment")
    raise InvalidCommand(f"--run {path}: neither a chaos run's folder (verdict.json, from "
                         "'quorumboard chaos --out') nor an experiment's (results.jsonl or "
                         "report.md, from 'quorumboard experiment')")
