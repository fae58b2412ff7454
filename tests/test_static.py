"""Static checks are part of the suite: ruff on everything, mypy --strict on the packages."""

from __future__ import annotations

import os
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


def test_mypy_strict_clean(tmp_path: Path) -> None:
    """mypy sees the packages under their installed names (``quorumboard.consensus`` ...): the
    editable install maps them with an import hook mypy does not run, so the check reads them
    through a view of symlinks laid out as they install."""
    view = tmp_path / "view"
    (view / "quorumboard").mkdir(parents=True)
    for package in ("consensus", "agents", "proofs"):
        (view / "quorumboard" / package).symlink_to(ROOT / package)
    (view / "bench").symlink_to(ROOT / "bench")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "-p", "quorumboard.consensus",
         "-p", "quorumboard.agents", "-p", "quorumboard.proofs", "-p", "bench"],
        cwd=view, env={**os.environ, "MYPYPATH": str(view)}, capture_output=True, text=True,
        timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout, r.stdout


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
    """agents/ builds on consensus as a user would: ``from quorumboard.consensus import <public name>``."""
    import ast

    from quorumboard import consensus

    public = set(consensus.__all__)
    for path in sorted((ROOT / "agents").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and "consensus" in (node.module or ""):
                assert node.module == "quorumboard.consensus", f"{path.name} imports {node.module}"
                names = {a.name for a in node.names}
                assert names <= public, f"{path.name} imports non-public {names - public}"
            elif isinstance(node, ast.Import):
                assert not any("consensus" in a.name for a in node.names), path.name


def test_no_module_imports_a_generic_top_level_name() -> None:
    """The packages install as ``quorumboard.consensus`` / ``.agents`` / ``.proofs``; an import of
    the bare folder name would load a second copy from the checkout (or another distribution's
    ``agents``, the OpenAI Agents SDK's) instead of ours."""
    import ast

    bare = {"consensus", "agents", "proofs"}
    # This example is an OpenAI Agents SDK script, whose import name is ``agents``: it runs as a
    # script (sys.path[0] is examples/, never the checkout's root), and the test that runs it
    # (tests/test_adapters_mcp.py) fails if it got anything but the SDK.
    sdk_users = {ROOT / "examples" / "openai_agents_board.py"}
    for folder in ("consensus", "agents", "proofs", "bench", "tests", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in sdk_users:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    top = (node.module or "").split(".")[0]
                    assert top not in bare, f"{path}: from {node.module} import ..."
                elif isinstance(node, ast.Import):
                    tops = {a.name.split(".")[0] for a in node.names}
                    assert not tops & bare, f"{path}: import {tops & bare}"


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
