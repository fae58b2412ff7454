"""What every proof or model check reports, so one runner can tabulate SPIN and z3 alike.

A check either establishes a property (``expect="holds"``) or is a negative control: a planted
bug the tool must refute with a counterexample (``expect="violated"``). A row passes only when the
tool's verdict matches what was expected, so a checker that silently stopped finding anything
fails its negative controls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Check", "Outcome", "Verdict"]

Verdict = Literal["holds", "violated", "error"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A tool's answer: ``holds`` (exhaustive at the bound / unsat negation), ``violated`` (a
    counterexample was found: ``detail`` says where), or ``error`` (the tool failed to decide)."""

    verdict: Verdict
    states: int | None
    time_s: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the table: what is claimed, which tool, at which bound."""

    name: str
    property: str
    tool: str
    bound: str
    expect: Literal["holds", "violated"]
    run: Callable[[], Outcome]

    def passed(self, outcome: Outcome) -> bool:
        return outcome.verdict == self.expect
