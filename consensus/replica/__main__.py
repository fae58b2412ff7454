"""``python -m quorumboard.consensus.replica CONFIG``: run one replica process.

The process's configuration loading, and the only place a replica reads its environment: the
shared secret comes from ``--secret-fd`` (a pipe the starter wrote it into: ``LocalCluster``
does this, so the secret is in no environment) or else from the environment variable the
config names (``secret_env``, ``QUORUMBOARD_SECRET`` by default). Everything below
:func:`~quorumboard.consensus.replica.machine.run` gets it passed in.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from quorumboard.consensus.logs import configure_logging
from quorumboard.consensus.replica.machine import EXIT_CONFIG, Replica, ReplicaConfig, run

SECRET_BYTES_MAX = 4096


def parser(prog: str = "python -m quorumboard.consensus.replica") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("config", type=Path, help="replica configuration (JSON)")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="stop when this process is gone (set by LocalCluster)")
    p.add_argument("--lifeline-fd", type=int, default=None,
                   help="read end of the starter's lifeline pipe: end of file = it died")
    p.add_argument("--parent-death-signal", action="store_true",
                   help="also ask Linux to SIGKILL this process when its parent dies")
    p.add_argument("--secret-fd", type=int, default=None,
                   help="read the shared secret from this descriptor (to its end), not from "
                   "the environment")
    return p


def read_secret(config: ReplicaConfig, secret_fd: int | None) -> bytes | None:
    """The cluster secret: all of ``secret_fd`` if given (then closed), else the variable
    ``config.secret_env``; ``None`` when neither holds one."""
    if secret_fd is not None:
        with os.fdopen(secret_fd, "rb") as f:
            data = f.read(SECRET_BYTES_MAX + 1)
        if len(data) > SECRET_BYTES_MAX:
            raise ValueError(f"secret on fd {secret_fd} is longer than {SECRET_BYTES_MAX} bytes")
        return data or None
    text = os.environ.get(config.secret_env)
    return text.encode() if text else None


def main(argv: list[str] | None = None, *, replica_class: type[Replica] = Replica,
         args: argparse.Namespace | None = None) -> int:
    """Parse ``argv`` (or take parsed ``args``), load the config and secret, run the replica.

    ``replica_class`` lets the test harness's entry point (consensus/testing/replica.py) run
    the same process with its parts swapped."""
    if args is None:
        args = parser().parse_args(argv)
    try:
        config = ReplicaConfig.model_validate_json(args.config.read_text())
        secret = read_secret(config, args.secret_fd)
    except Exception as exc:
        print(f"invalid replica configuration {args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_level)
    parent = (None if args.parent_pid is None
              else (args.parent_pid, args.lifeline_fd, args.parent_death_signal))
    return run(config, parent, secret=secret, replica_class=replica_class)


if __name__ == "__main__":
    sys.exit(main())
