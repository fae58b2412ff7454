"""Plotting primitives for the sweep report (matplotlib, Agg, deterministic PNGs).

Only drawing lives here; :mod:`agents.report` decides what data each plot shows. Figures are
built with the object API on an explicit Agg canvas (no pyplot: no global figure registry, no
GUI backend, safe in threads), under matplotlib's default style (a user's matplotlibrc cannot
change the output), and saved without the ``Software`` PNG text chunk; PNG carries no creation
time, so the same data gives byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matplotlib import style as mpl_style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["Series", "box_plot", "grouped_bars", "line_plot"]

LineStyle = Literal["solid", "dashed", "dotted"]
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
_SIZE = (7.0, 4.5)
_DPI = 100


@dataclass(frozen=True)
class Series:
    """One line: points (with optional ± error bars). Series sharing ``color_key`` share a
    colour (e.g. observed speedup and Amdahl's curve of one p level)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    yerr: Sequence[float] | None = None
    color_key: str = ""
    style: LineStyle = "solid"
    marker: str | None = "o"


def _colors(keys: Sequence[str]) -> dict[str, str]:
    """Colour per key in order of first appearance (stable across runs)."""
    out: dict[str, str] = {}
    for k in keys:
        if k not in out:
            out[k] = _PALETTE[len(out) % len(_PALETTE)]
    return out


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=_SIZE, dpi=_DPI)
    FigureCanvasAgg(fig)  # attaches the Agg canvas explicitly
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


def line_plot(path: Path, series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
              integer_x: bool = True, ideal: bool = False,
              empty_message: str = "no data") -> Path:
    """Lines with markers and ± error bars; ``ideal`` adds the dotted y = x line (linear
    speedup). With no points at all the figure says ``empty_message``."""
    with mpl_style.context("default"):
        fig, ax = _figure()
        ax.set_title(title)
        drawn = [s for s in series if len(s.xs) > 0]
        if not drawn:
            _no_data(ax, empty_message)
            return _save(fig, path)
        colors = _colors([s.color_key or s.label for s in drawn])
        xs_all = sorted({float(x) for s in drawn for x in s.xs})
        if ideal:
            ax.plot(xs_all, xs_all, linestyle="dotted", color="0.5", label="linear (y = n)")
        for s in drawn:
            color = colors[s.color_key or s.label]
            if s.yerr is not None:
                ax.errorbar(list(s.xs), list(s.ys), yerr=list(s.yerr), color=color,
                            linestyle=s.style, marker=s.marker, capsize=3, label=s.label)
            else:
                ax.plot(list(s.xs), list(s.ys), color=color, linestyle=s.style,
                        marker=s.marker, label=s.label)
        if integer_x:
            ax.set_xticks(list(range(math.ceil(xs_all[0]), math.floor(xs_all[-1]) + 1)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return _save(fig, path)


def grouped_bars(path: Path, categories: Sequence[str], groups: Mapping[str, Sequence[float]],
                 *, title: str, ylabel: str, empty_message: str = "no data") -> Path:
    """For each category a cluster of bars, one per group (``groups[g][i]`` is group g's value
    of ``categories[i]``)."""
    with mpl_style.context("default"):
        fig, ax = _figure()
        ax.set_title(title)
        if not categories or not groups:
            _no_data(ax, empty_message)
            return _save(fig, path)
        names = list(groups)
        colors = _colors(names)
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(categories))]
            ax.bar(xs, list(groups[name]), width=width, color=colors[name], label=name)
        ax.set_xticks(list(range(len(categories))))
        ax.set_xticklabels(list(categories), rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return _save(fig, path)


def box_plot(path: Path, groups: Mapping[str, Sequence[float]], *, title: str, ylabel: str,
             empty_message: str = "no data",
             censored: Mapping[str, tuple[int, int]] | None = None) -> Path:
    """A box per group with its points overlaid (groups are small: every point is shown).
    ``censored``: group -> (recovered, total): every group of it gets a slot labelled
    "k/total recovered", and a group with no value (none recovered) a marker at the top
    instead of being left out."""
    censored = dict(censored or {})
    with mpl_style.context("default"):
        fig, ax = _figure()
        ax.set_title(title)
        names = sorted({g for g, vals in groups.items() if len(vals) > 0} | set(censored))
        if not names:
            _no_data(ax, empty_message)
            return _save(fig, path)
        data = [list(groups.get(g, ())) for g in names]
        labels = [f"{g}\n{censored[g][0]}/{censored[g][1]} recovered" if g in censored else g
                  for g in names]
        top = max((v for vals in data for v in vals), default=1.0) * 1.08 or 1.0
        filled = [i for i, vals in enumerate(data, start=1) if vals]
        if filled:
            ax.boxplot([data[i - 1] for i in filled], positions=filled)
        colors = _colors(names)
        for i, (name, vals) in enumerate(zip(names, data, strict=True), start=1):
            if vals:
                ax.scatter([i] * len(vals), vals, color=colors[name], zorder=3, s=18)
            else:  # censored: nothing recovered, the recovery time is above every observed one
                ax.scatter([i], [top], marker="^", color=colors[name], zorder=3, s=60)
                ax.annotate("none recovered", (i, top), textcoords="offset points",
                            xytext=(0, -14), ha="center", fontsize=8)
        ax.set_xticks(range(1, len(names) + 1), labels)
        ax.set_xlim(0.5, len(names) + 0.5)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        return _save(fig, path)
