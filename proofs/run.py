"""Re-check every model and proof and print one table: ``python -m proofs.run [--large]``.

Rows come from ``checks(large)`` of each module in :data:`MODULES`; a module that is missing or
fails to import becomes an error row (so the table never silently shrinks). A row PASSes when
the tool's verdict is what the row expects: ``holds`` for a property, a counterexample for a
negative control. Exit status 0 only if every row passed.

It installs what it needs first: SPIN via apt-get when we are root and apt-get exists (else it
prints the exact command), z3 via ``pip install z3-solver`` into this interpreter.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Final

from quorumboard.proofs.common import Check, Outcome
from quorumboard.proofs.spin_runner import SPIN_INSTALL_HINT

__all__ = ["MODULES", "collect", "ensure_spin", "ensure_tools", "main", "run_checks"]

MODULES: Final = ("quorumboard.proofs.raft_checks", "quorumboard.proofs.spin_lease_checks", "quorumboard.proofs.z3_checks")
INSTALL_TIMEOUT_S: Final = 600.0
APT_INSTALL: Final = ("apt-get", "install", "-y", "--no-install-recommends", "spin")


def _error_run(message: str) -> Callable[[], Outcome]:
    def run() -> Outcome:
        return Outcome("error", None, 0.0, message)

    return run


def collect(large: bool, modules: Sequence[str] = MODULES) -> list[Check]:
    """Every module's rows; a module that cannot be loaded is one error row."""
    rows: list[Check] = []
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
            rows.extend(module.checks(large))
        except Exception as exc:  # missing module, import error, a broken checks(): one row
            rows.append(Check(
                name=module_name, property=f"rows of {module_name}", tool="-", bound="-",
                expect="holds", run=_error_run(f"{type(exc).__name__}: {exc}"),
            ))
    return rows


def _run_quiet(argv: Sequence[str]) -> bool:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  {' '.join(argv)}: {exc}", file=sys.stderr)
        return False
    if done.returncode != 0:
        print(f"  {' '.join(argv)} failed:\n{done.stderr[-800:]}", file=sys.stderr)
    return done.returncode == 0


def ensure_spin() -> None:
    """Install SPIN with apt-get when it is missing and we are root; else say how."""
    if shutil.which("spin"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("spin not found: installing it with apt-get", file=sys.stderr)
        if not _run_quiet(APT_INSTALL):
            # The package lists may be missing or stale (a fresh container): refresh once.
            _run_quiet(("apt-get", "update"))
            _run_quiet(APT_INSTALL)
    if not shutil.which("spin"):
        print(f"{SPIN_INSTALL_HINT}; the SPIN rows will fail until then", file=sys.stderr)


def _ensure_z3() -> None:
    if importlib.util.find_spec("z3") is not None:
        return
    print("z3 not found: installing z3-solver into this interpreter", file=sys.stderr)
    _run_quiet((sys.executable, "-m", "pip", "install", "z3-solver"))
    importlib.invalidate_caches()
    if importlib.util.find_spec("z3") is None:
        print(f"z3 is missing: run `{sys.executable} -m pip install z3-solver`", file=sys.stderr)


def ensure_tools(rows: Sequence[Check]) -> None:
    """Install the tools the selected rows use (best effort; a failed install fails rows)."""
    tools = {row.tool for row in rows}
    if "spin" in tools:
        ensure_spin()
    if "z3" in tools:
        _ensure_z3()


def _guarded(row: Check) -> Outcome:
    started = time.monotonic()
    try:
        return row.run()
    except Exception as exc:  # a crashing check is a failed row, not a crashed runner
        return Outcome("error", None, round(time.monotonic() - started, 3),
                       f"{type(exc).__name__}: {exc}")


def run_checks(rows: Sequence[Check], jobs: int = 2) -> list[Outcome]:
    """Run every row; SPIN rows (subprocesses) on ``jobs`` threads, the rest (z3, in-process
    and not thread-safe across contexts) one at a time on this thread meanwhile."""
    outcomes: dict[int, Outcome] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_guarded, row): i for i, row in enumerate(rows) if row.tool == "spin"}
        for i, row in enumerate(rows):
            if row.tool != "spin":
                outcomes[i] = _guarded(row)
        for future, i in futures.items():
            outcomes[i] = future.result()
    return [outcomes[i] for i in range(len(rows))]


def _verdict(row: Check, outcome: Outcome) -> str:
    if row.passed(outcome):
        return "PASS holds" if row.expect == "holds" else "PASS counterexample found (expected)"
    if outcome.verdict == "error":
        return "FAIL error"
    if row.expect == "holds":
        return "FAIL counterexample found"
    return "FAIL no counterexample (control not refuted)"


def _states_time(outcome: Outcome) -> str:
    states = "-" if outcome.states is None else f"{outcome.states:,}"
    return f"{states} / {outcome.time_s:.1f} s"


_PROPERTY_COLUMN_CHARS = 60
_BOUND_COLUMN_CHARS = 36


def render_table(rows: Sequence[Check], outcomes: Sequence[Outcome]) -> str:
    """The table: property · tool · bound · states / time · verdict (plus the row name).

    Long property and bound texts wrap inside their column so the table fits a terminal; the
    whole text of every row is in ``--json``."""
    header = ("name", "property", "tool", "bound", "states / time", "verdict")
    wrap_at = (0, _PROPERTY_COLUMN_CHARS, 0, _BOUND_COLUMN_CHARS, 0, 0)
    cells = [
        [textwrap.wrap(str(cell), w) or [""] if w else [str(cell)]
         for cell, w in zip(line, wrap_at, strict=True)]
        for line in (
            (row.name, row.property, row.tool, row.bound, _states_time(out), _verdict(row, out))
            for row, out in zip(rows, outcomes, strict=True))
    ]
    widths = [max([len(h)] + [len(part) for line in cells for part in line[c]])
              for c, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    for line in cells:
        height = max(len(parts) for parts in line)
        for i in range(height):
            out.append(fmt.format(*(parts[i] if i < len(parts) else "" for parts in line))
                       .rstrip())
    failures = [
        f"--- {row.name}: {o.detail}" for row, o in zip(rows, outcomes, strict=True)
        if not row.passed(o)
    ]
    return "\n".join(out + (["", *failures] if failures else []))


def _as_json(rows: Sequence[Check], outcomes: Sequence[Outcome]) -> str:
    return json.dumps([
        {
            "name": row.name, "property": row.property, "tool": row.tool, "bound": row.bound,
            "expect": row.expect, "verdict": out.verdict, "passed": row.passed(out),
            "states": out.states, "time_s": out.time_s, "detail": out.detail,
        }
        for row, out in zip(rows, outcomes, strict=True)
    ], indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs.run", description=__doc__.split("\n")[0])
    parser.add_argument("--large", action="store_true", help="the larger bounds (minutes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only rows whose name matches (exact, prefix or glob); repeatable")
    parser.add_argument("--jobs", type=int, default=2, help="SPIN searches in parallel (default 2)")
    parser.add_argument("--no-install", action="store_true", help="do not install missing tools")
    args = parser.parse_args(argv)

    if not args.no_install:
        _ensure_z3()  # before collecting: proofs.z3_checks imports z3 to build its rows
    rows = collect(args.large)
    if args.only:
        rows = [r for r in rows if any(
            r.name == p or r.name.startswith(p) or fnmatch.fnmatch(r.name, p) for p in args.only)]
        if not rows:
            print(f"no row matches {args.only}", file=sys.stderr)
            return 2
    if not args.no_install:
        ensure_tools(rows)
    started = time.monotonic()
    outcomes = run_checks(rows, jobs=args.jobs)
    if args.json:
        print(_as_json(rows, outcomes))
    else:
        print(render_table(rows, outcomes))
        passed = sum(r.passed(o) for r, o in zip(rows, outcomes, strict=True))
        print(f"\n{passed}/{len(rows)} rows passed in {time.monotonic() - started:.1f} s"
              f" ({'large' if args.large else 'default'} bounds)")
    return 0 if all(r.passed(o) for r, o in zip(rows, outcomes, strict=True)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
