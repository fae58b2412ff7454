"""Static checks are part of the suite: ruff on everything, mypy --strict on the packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff_clean() -> None:
    r = _run("ruff", "check", "consensus", "agents", "tests", "bench", "proofs")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_clean() -> None:
    r = _run("mypy", "--strict", "consensus", "agents", "bench", "proofs")
    assert r.returncode == 0, r.stdout + r.stderr


def test_pure_modules_import_no_io() -> None:
    """The pure rooms (architecture rule): no sockets, threads, clocks, randomness, os or
    pysyncobj in the modules apply() and the policies live in."""
    forbidden = {"socket", "threading", "time", "random", "os", "pysyncobj", "asyncio",
                 "subprocess", "secrets", "datetime"}
    for name in ("model", "policies", "state", "leases", "errors", "invariant", "protocol",
                 "frames", "checker", "summary", "picture", "checks", "policy_ops"):
        source = (ROOT / "consensus" / f"{name}.py").read_text()
        for line in source.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0]
                assert top not in forbidden, f"consensus/{name}.py imports {top}: {line!r}"


def test_agents_use_only_the_public_consensus_api() -> None:
    """agents/ builds on consensus as a user would: ``from consensus import <public name>``."""
    import ast

    import consensus

    public = set(consensus.__all__)
    for path in sorted((ROOT / "agents").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("consensus"):
                assert node.module == "consensus", f"{path.name} imports {node.module}"
                names = {a.name for a in node.names}
                assert names <= public, f"{path.name} imports non-public {names - public}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("consensus.") for a in node.names), path.name


def test_agent_metrics_and_models_are_pure() -> None:
    """Metrics are recounts of the event log: no I/O, no clock, no randomness."""
    forbidden = {"socket", "threading", "time", "random", "os", "asyncio", "subprocess",
                 "consensus", "pathlib"}
    for name in ("metrics", "actions", "spec", "tasks"):
        source = (ROOT / "agents" / f"{name}.py").read_text()
        # tasks: a seeded DAG generator and the file loader; metrics: a seeded bootstrap
        allowed = {"tasks": {"random", "pathlib"}, "metrics": {"random"}}.get(name, set())
        for line in source.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0]
                assert top not in forbidden - allowed, f"agents/{name}.py imports {top}"
