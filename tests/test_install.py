"""The distribution installs under its own namespace and lives beside the OpenAI Agents SDK.

quorumboard's folders ``agents/``, ``consensus/`` and ``proofs/`` used to install as top-level
packages of those names; ``agents`` is the OpenAI Agents SDK's import name, so installing both
merged two packages into one folder and broke one of them. Here a fresh venv gets quorumboard
(built from this checkout, not editable) and ``openai-agents`` in one command; then every file
quorumboard installed must sit under ``quorumboard/`` (or its metadata and script), both
packages must import and work, and the PEP 561 markers must be there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """Run outside the checkout: from inside it, ``python -c`` would import its folders."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False,
                       cwd=cwd)
    assert r.returncode == 0, f"{args}: {r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.timeout(900)
def test_installs_beside_the_openai_agents_sdk(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--quiet", str(ROOT), "openai-agents"], tmp_path)
    check = textwrap.dedent("""
        import importlib.metadata as md, json, pathlib, sys
        files = [str(f) for f in md.distribution("quorumboard").files]
        outside = [f for f in files if not f.startswith(("quorumboard/", "quorumboard-", "../"))
                   and not f.startswith("__editable__")]
        from agents import Agent, function_tool          # the SDK's own package, intact
        agent = Agent(name="probe", instructions="none")
        import agents, quorumboard.consensus as qc, quorumboard.agents as qa, quorumboard.proofs
        site = pathlib.Path(qc.__file__).parent.parent
        print(json.dumps({
            "outside": outside,
            "sdk_agents_file": agents.__file__,
            "ours": qa.__file__,
            "typed": [(site / p / "py.typed").is_file() for p in ("consensus", "agents", "proofs")],
            "top_level": sorted(p.name for p in site.parent.iterdir()
                                if p.name in ("consensus", "proofs", "agents")),
            "agent_name": agent.name,
            "public": "connect" in qc.__all__ and "LocalCluster" in qc.__all__,
        }))
    """)
    import json

    info = json.loads(_run([python, "-c", check], tmp_path).stdout)
    assert info["outside"] == [], f"files installed outside quorumboard/: {info['outside']}"
    assert "/quorumboard/" not in info["sdk_agents_file"]
    assert info["ours"].endswith("quorumboard/agents/__init__.py")
    assert info["typed"] == [True, True, True]
    assert info["top_level"] == ["agents"], "only the SDK's agents package sits at the top"
    assert info["agent_name"] == "probe" and info["public"]
    # The commands that failed when the packages were merged, and the embedded board.
    qb = str(venv / "bin" / "quorumboard")
    assert "run" in _run([qb, "experiment", "--help"], tmp_path).stdout
    demo = textwrap.dedent("""
        from quorumboard.consensus import LocalCluster
        with LocalCluster(replicas=1, embedded=True) as c:
            b = c.board(agent="x")
            b.put("k", 1)
            assert b.get("k").value == 1
        print("ok")
    """)
    assert _run([python, "-c", demo], tmp_path).stdout.strip() == "ok"
