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


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it (also inside functions), with its line."""
    import ast

    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


IMPURE = {"socket", "threading", "time", "random", "os", "pysyncobj", "asyncio", "subprocess",
          "secrets", "datetime", "select", "signal"}


def test_the_core_imports_no_io() -> None:
    """Everything under consensus/core/ is pure (architecture rule): no sockets, threads, clocks,
    randomness, os or pysyncobj, read from the source of every module the package holds, not
    from a hand-kept list. ``apply`` and the policies live there."""
    modules = sorted((ROOT / "consensus" / "core").rglob("*.py"))
    assert len(modules) >= 6
    for path in modules:
        for line, name in _imports(path):
            assert name.split(".")[0] not in IMPURE, f"{path}:{line} imports {name}"


def test_other_pure_modules_import_no_io() -> None:
    """The sans-I/O wire codecs, the errors and the history checkers are pure too."""
    pure = [ROOT / "consensus" / "errors.py", *sorted((ROOT / "consensus" / "wire").glob("*.py")),
            *(ROOT / "consensus" / "testing" / f"{n}.py"
              for n in ("checker", "checks", "summary", "picture"))]
    allowed = {"auth.py": {"os"}}  # os.urandom: the handshake's nonce, passed in by new_nonce
    for path in pure:
        for line, name in _imports(path):
            top = name.split(".")[0]
            assert top not in IMPURE - allowed.get(path.name, set()), \
                f"{path}:{line} imports {name}"


def test_no_back_arrows() -> None:
    """consensus never imports the packages built on it (agents, proofs), by an import
    statement or by name through importlib; the client-facing package and the replica never
    load the testing harness at import (only LocalCluster's fault options do, lazily)."""
    for path in sorted((ROOT / "consensus").rglob("*.py")):
        text = path.read_text()
        for line, name in _imports(path):
            assert not name.startswith(("quorumboard.agents", "quorumboard.proofs")), \
                f"{path}:{line} imports {name}"
        assert "quorumboard.agents" not in text and "quorumboard.proofs" not in text, path
    script = ("import sys, quorumboard.consensus, quorumboard.consensus.replica.machine; "
              "print(sorted(m for m in sys.modules if m.startswith(('quorumboard.consensus.testing', 'quorumboard.consensus.adapters.', 'quorumboard.agents', 'quorumboard.proofs'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT.parent).stdout.strip()
    assert out == "[]", f"importing the API and the replica loads {out}"


ENVIRONMENT_READERS = {
    "consensus/cli.py": "the CLI's configuration loading",
    "consensus/replica/__main__.py": "the replica process's configuration loading (its secret)",
    "consensus/dashboard/serve.py": "the dashboard command's configuration loading (its main)",
}
ENVIRONMENT_READING_FOLDERS = {
    "consensus/testing": "the harness (its replica entry point reads a planted bug's name)",
    "consensus/adapters": "the MCP server's --secret-env / --token-env loading",
}


def _environment_reads(path: Path) -> list[tuple[int, str]]:
    """Where ``path`` reads the environment: ``os.environ``, ``os.getenv``, ``os.environb``,
    ``os.putenv``, or any of them imported by name from os."""
    import ast

    names = {"environ", "environb", "getenv", "getenvb", "putenv"}
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and node.attr in names
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            found.append((node.lineno, f"os.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names
                      if a.name in names or a.name == "*"]
    return found


def test_no_production_module_reads_the_environment() -> None:
    """No test switch in a production path (architecture rule): outside the configuration
    loading of the CLI, the MCP server and the replica process, and outside the test harness,
    no module under consensus/ reads an environment variable. Planted bugs and faults come in
    through the harness's replica entry point, never through a variable a replica reads."""
    repo = ROOT
    offenders = []
    modules = sorted((repo / "consensus").rglob("*.py"))
    assert len(modules) >= 30
    for path in modules:
        rel = path.relative_to(repo).as_posix()
        if rel in ENVIRONMENT_READERS or any(rel.startswith(f + "/")
                                              for f in ENVIRONMENT_READING_FOLDERS):
            continue
        offenders += [f"{rel}:{line} {what}" for line, what in _environment_reads(path)]
    assert offenders == [], offenders
    # The check sees what it must: the allowed modules do read the environment.
    assert _environment_reads(repo / "consensus" / "cli.py")
    assert _environment_reads(repo / "consensus" / "testing" / "replica.py")


def test_only_the_private_hardening_module_imports_pysyncobj() -> None:
    """Every change quorumboard makes to pysyncobj is in consensus/raft/_pysyncobj.py, which
    RaftNode installs explicitly (tests/test_raft.py checks no import changes pysyncobj)."""
    importers = sorted(
        path.relative_to(ROOT).as_posix() for path in (ROOT / "consensus").rglob("*.py")
        if any(name.split(".")[0] == "pysyncobj" for _, name in _imports(path)))
    assert importers == ["consensus/raft/_pysyncobj.py"]


def test_agents_use_only_the_public_consensus_api() -> None:
    """agents/ builds on consensus as a user would: public names of ``quorumboard.consensus``
    (the client-facing API) and of ``quorumboard.consensus.testing`` (the harness: its JSON
    Lines rule, the nemesis), nothing deeper."""
    import ast

    from quorumboard import consensus
    from quorumboard.consensus import testing

    public = {"quorumboard.consensus": set(consensus.__all__),
              "quorumboard.consensus.testing": set(testing.__all__)}
    for path in sorted((ROOT / "agents").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and "consensus" in (node.module or ""):
                allowed = public.get(node.module or "")
                assert allowed is not None, f"{path.name} imports {node.module}"
                names = {a.name for a in node.names}
                assert names <= allowed, f"{path.name} imports non-public {names - allowed}"
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
    for name in ("study/metrics", "team/actions", "team/spec", "team/tasks"):
        source = (ROOT / "agents" / f"{name}.py").read_text()
        # tasks: a seeded DAG generator and the file loader; metrics: a seeded bootstrap
        allowed = {"team/tasks": {"random", "pathlib"}, "study/metrics": {"random"}}.get(name, set())
        for line in source.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0]
                assert top not in forbidden - allowed, f"agents/{name}.py imports {top}"
