"""Run one Promela model through SPIN and turn pan's report into a :class:`proofs.common.Outcome`.

Why a parser and not pan's exit status: ``pan`` exits 0 whether or not it found an error, and it
also exits 0 when the search stopped at the depth limit (an *incomplete* search that proves
nothing). So the verdict is read from pan's text:

* ``errors: N`` with N > 0 (an ``assertion violated``, ``acceptance cycle``, ``invalid end state``
  or ``non-progress cycle`` line names the kind) ⇒ ``violated``; the trail is replayed with
  ``spin -t -p`` and a short summary of the steps (the model's ``printf`` events, or the last
  steps) goes into ``detail``;
* ``errors: 0`` after a complete full-state-space search ⇒ ``holds``;
* ``errors: 0`` but ``max search depth too small``, a bitstate search, out of memory, a timeout or
  a compile error ⇒ ``error`` (the tool did not decide). Hash-compact (``-DHC``) is reported as
  ``holds`` with ``probabilistic`` in ``detail``, never silently as exhaustive.

Everything happens in a fresh temporary directory (the model and its sibling ``.pml``/``.h`` files
are copied there), so no ``pan.*`` or ``.trail`` file lands in the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from quorumboard.proofs.common import Outcome, Verdict

__all__ = [
    "SPIN_INSTALL_HINT",
    "PanReport",
    "ToolMissing",
    "parse_pan_output",
    "require_spin",
    "run_spin",
    "summarize_trail",
]

SPIN_INSTALL_HINT: Final = "SPIN is not installed: run `sudo apt-get install -y spin` (Debian/Ubuntu)"
GCC_INSTALL_HINT: Final = "gcc is not installed (pan is C): run `sudo apt-get install -y gcc`"

DEFAULT_TIMEOUT_S: Final = 120.0
DEFAULT_MAX_DEPTH: Final = 100_000
DEFAULT_MEMORY_MB: Final = 2048
TRAIL_SUMMARY_LINES: Final = 24
_OUTPUT_TAIL_CHARS: Final = 1500

_ERROR_KINDS: Final = (
    ("assertion violated", re.compile(r"^pan:\d*:?\s*(assertion violated.*?)(?: \(at depth \d+\))?$", re.M)),
    ("acceptance cycle", re.compile(r"^pan:\d*:?\s*(acceptance cycle.*?)(?: \(at depth \d+\))?$", re.M)),
    ("non-progress cycle", re.compile(r"^pan:\d*:?\s*(non-progress cycle.*?)(?: \(at depth \d+\))?$", re.M)),
    ("invalid end state", re.compile(r"^pan:\d*:?\s*(invalid end state.*?)(?: \(at depth \d+\))?$", re.M)),
)


class ToolMissing(RuntimeError):
    """A tool the check needs is not on PATH; the message is the install command."""


@dataclass(frozen=True, slots=True)
class PanReport:
    """What one pan run said, parsed from its text output."""

    errors: int | None
    states_stored: int | None
    depth_reached: int | None
    error_kind: str | None
    error_text: str | None
    depth_limited: bool
    full_search: bool
    hash_compact: bool
    out_of_memory: bool
    trail_written: bool
    elapsed_s: float | None

    @property
    def complete(self) -> bool:
        """Every reachable state was visited: errors-free, no depth cut-off, no bitstate, no OOM."""
        return (
            self.errors == 0
            and self.full_search
            and not self.depth_limited
            and not self.out_of_memory
        )


def _int(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text, re.M)
    return int(match.group(1)) if match else None


def parse_pan_output(text: str) -> PanReport:
    """Parse pan's stdout (SPIN 6.x). Pure: unit-tested on captured outputs."""
    error_kind: str | None = None
    error_text: str | None = None
    for kind, pattern in _ERROR_KINDS:
        match = pattern.search(text)
        if match:
            error_kind, error_text = kind, match.group(1).strip()
            break
    elapsed = re.search(r"^pan: elapsed time ([0-9.e+-]+) seconds", text, re.M)
    return PanReport(
        errors=_int(r"errors: (\d+)", text),
        states_stored=_int(r"^\s*(\d+) states, stored", text),
        depth_reached=_int(r"depth reached (\d+)", text),
        error_kind=error_kind,
        error_text=error_text,
        depth_limited="max search depth too small" in text,
        full_search="Full statespace search for:" in text,
        hash_compact=re.search(r"^Hash-Compact \d+ search for:", text, re.M) is not None,
        out_of_memory="pan: out of memory" in text or "error: out of memory" in text,
        trail_written=re.search(r"^pan: wrote .*\.trail", text, re.M) is not None,
        elapsed_s=float(elapsed.group(1)) if elapsed else None,
    )


_STEP_LINE: Final = re.compile(r"^\s*\d+:\s+proc\s")
_NOISE_LINE: Final = re.compile(r"^\s*\d+:\s+proc \d+ terminates|^(ltl |Never claim|starting claim|spin: )")


def summarize_trail(replay: str, max_lines: int = TRAIL_SUMMARY_LINES) -> str:
    """Short summary of ``spin -t -p`` output: the model's printf events (if it prints any),
    else the last steps; always the failed assertion and the trail length."""
    events: list[str] = []
    steps: list[str] = []
    notes: list[str] = []
    for raw in replay.splitlines():
        line = raw.rstrip()
        if line.startswith("spin: trail ends after"):
            notes.append(line.removeprefix("spin: "))
            break
        if line.startswith("spin: ") and "assert" in line:
            notes.append(line.removeprefix("spin: "))
        elif _STEP_LINE.match(line):
            steps.append(" ".join(line.split()))
        elif "START OF CYCLE" in line:
            events.append("<<< start of cycle >>>")
            steps.append("<<< start of cycle >>>")
        elif line.strip() and not _NOISE_LINE.match(line):
            events.append(line.strip())
    body = events if events else steps
    if len(body) > max_lines:
        body = [f"... {len(body) - max_lines} earlier lines omitted", *body[-max_lines:]]
    return "\n".join([*body, *notes])


def require_spin() -> tuple[str, str]:
    """Paths of ``spin`` and ``gcc``; :class:`ToolMissing` with the install command otherwise."""
    spin = shutil.which("spin")
    if spin is None:
        raise ToolMissing(SPIN_INSTALL_HINT)
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise ToolMissing(GCC_INSTALL_HINT)
    return spin, cc


def _macro_flags(macros: Mapping[str, str | int | None] | Sequence[str]) -> list[str]:
    if isinstance(macros, Mapping):
        return [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in macros.items()]
    return [m if m.startswith("-D") else f"-D{m}" for m in macros]


def _tail(text: str) -> str:
    return text[-_OUTPUT_TAIL_CHARS:].strip()


def run_spin(
    model_path: Path | str,
    macros: Mapping[str, str | int | None] | Sequence[str] = (),
    ltl: str | None = None,
    *,
    acceptance: bool | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    hash_bits: int | None = None,
    cc_flags: Sequence[str] = (),
    pan_flags: Sequence[str] = (),
    opt: str = "-O1",
) -> Outcome:
    """Check ``model_path`` exhaustively with SPIN and return the verdict.

    ``macros``: preprocessor macros for the *model* (``{"BUG_X": None, "MAXTERM": 3}`` or
    ``["BUG_X", "MAXTERM=3"]``), passed to ``spin -a`` and again to the trail replay.
    ``ltl``: name of an ``ltl name { ... }`` block to check (``pan -N name``); without it, any
    claims in the model are compiled out (``-DNOCLAIM``) and only ``assert``s and invalid end
    states are checked, so a forgotten claim cannot change what a row means.
    ``acceptance``: search for acceptance cycles (``pan -a``, needed for liveness / any LTL that
    is not a pure safety property). Defaults to True when ``ltl`` is given (always sound), else
    False, in which case pan is compiled with ``-DSAFETY`` (faster, same verdict on safety).
    ``cc_flags``: extra pan compile flags (``-DCOLLAPSE`` is lossless; ``-DHC`` / ``-DBITSTATE``
    are not exhaustive and the verdict says so). ``max_depth``: pan ``-m``; a search that hits it
    is reported as ``error`` (incomplete), never ``holds``. ``timeout_s`` bounds the whole run.
    ``opt``: gcc optimisation for pan; -O1 because a pan.c of a few thousand lines costs ~5 s of
    CPU at -O2 and ~2 s at -O1, which outweighs -O2's faster search below a few million states.

    Never raises for tool failures: a missing spin/gcc, a compile error, a timeout or an
    unparsable report become ``Outcome(verdict="error", detail=...)``.
    """
    started = time.monotonic()
    model = Path(model_path).resolve()

    def done(verdict: Verdict, states: int | None, detail: str) -> Outcome:
        return Outcome(verdict, states, round(time.monotonic() - started, 3), detail)

    def remaining() -> float:
        return max(1.0, timeout_s - (time.monotonic() - started))

    try:
        spin, cc = require_spin()
    except ToolMissing as exc:
        return done("error", None, str(exc))
    if not model.is_file():
        return done("error", None, f"model not found: {model}")
    if acceptance is None:
        acceptance = ltl is not None
    defines = _macro_flags(macros)

    with tempfile.TemporaryDirectory(prefix="qb-spin-") as tmp:
        work = Path(tmp)
        # Bounded by the model directory's listing.
        for sibling in model.parent.iterdir():
            if sibling.is_file() and sibling.suffix in (".pml", ".h", ".prm"):
                shutil.copy2(sibling, work / sibling.name)
        name = model.name
        try:
            gen = subprocess.run(
                [spin, *defines, "-a", name],
                cwd=work, capture_output=True, text=True, timeout=remaining(), check=False,
            )
            if gen.returncode != 0 or not (work / "pan.c").exists():
                return done("error", None, f"spin -a failed:\n{_tail(gen.stdout + gen.stderr)}")
            # -w: gcc warns about indexing arrays with _pid in code shared by all processes.
            compile_flags = [opt, "-w", f"-DMEMLIM={memory_mb}", "-DXUSAFE", *cc_flags]
            if ltl is None:
                compile_flags.append("-DNOCLAIM")
            if not acceptance:
                compile_flags.append("-DSAFETY")
            comp = subprocess.run(
                [cc, *compile_flags, "-o", "pan", "pan.c"],
                cwd=work, capture_output=True, text=True, timeout=remaining(), check=False,
            )
            if comp.returncode != 0:
                return done("error", None, f"pan did not compile:\n{_tail(comp.stderr)}")
            args = ["./pan", "-n", f"-m{max_depth}"]
            if hash_bits is not None:
                args.append(f"-w{hash_bits}")
            if acceptance:
                args.append("-a")
            if ltl is not None:
                args += ["-N", ltl]
            args += list(pan_flags)
            pan = subprocess.run(
                args, cwd=work, capture_output=True, text=True, timeout=remaining(), check=False,
            )
        except subprocess.TimeoutExpired:
            return done("error", None, f"timed out after {timeout_s:.0f} s (raise timeout_s or cut the bound)")
        report = parse_pan_output(pan.stdout)
        states = report.states_stored
        search = "full state space" if report.full_search else "bitstate (NOT exhaustive)"
        if report.hash_compact:
            search = "hash-compact (probabilistic, not strictly exhaustive)"
        depth = f"depth {report.depth_reached} of max {max_depth}"
        if report.errors is None:
            return done("error", states, f"pan exited {pan.returncode}; unparsable output:\n{_tail(pan.stdout + pan.stderr)}")
        if report.errors > 0:
            trail = work / f"{name}.trail"
            summary = "(no trail written)"
            if trail.exists():
                # The trail records which claim was used; spin's -N would mean a claim *file*.
                replay_args = [spin, *defines, "-t", "-p"]
                try:
                    replay = subprocess.run(
                        [*replay_args, name],
                        cwd=work, capture_output=True, text=True, timeout=remaining(), check=False,
                    )
                    summary = summarize_trail(replay.stdout)
                except subprocess.TimeoutExpired:
                    summary = "(trail replay timed out)"
            head = report.error_text or report.error_kind or "error"
            return done("violated", states, f"counterexample: {head}; trail: {'yes' if trail.exists() else 'no'}\n{summary}")
        if report.out_of_memory:
            return done("error", states, f"pan ran out of memory ({memory_mb} MB): search incomplete")
        if report.depth_limited:
            return done("error", states, f"search incomplete: max depth {max_depth} too small (raise max_depth)")
        if report.hash_compact:
            return done("holds", states, f"{search}, {depth}, errors: 0")
        if not report.full_search:
            return done("error", states, f"no verdict: {search} search, errors: 0 proves nothing")
        return done("holds", states, f"exhaustive: {search}, {depth}, errors: 0")
