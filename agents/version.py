"""The code version a run was made with: ``git describe`` of the checkout when there is one,
else the installed package's version. Recorded in every run record and ``sweep.json``."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["code_version"]

GIT_TIMEOUT_S = 5.0


@functools.cache
def code_version() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                             capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"quorumboard {metadata.version('quorumboard')}"
    except metadata.PackageNotFoundError:
        return "unknown"
