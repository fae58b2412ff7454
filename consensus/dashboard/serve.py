"""``quorumboard dashboard``: the command, its binding rules, and a server on a thread.

The page is served on 127.0.0.1 unless ``--host`` says otherwise, and a dashboard reachable
from elsewhere must have a token (``--token-env NAME``: the environment variable holding it,
so it never appears in a process listing): without one it refuses to start. The cluster's
secret (``QUORUMBOARD_SECRET``, as for every client command) is used to read the cluster and
never reaches the page."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog
import uvicorn
from starlette.applications import Starlette

from quorumboard.consensus.dashboard.app import create_app
from quorumboard.consensus.dashboard.live import LiveSource
from quorumboard.consensus.dashboard.runs import open_run
from quorumboard.consensus.errors import BoardError, InvalidCommand
from quorumboard.consensus.logs import configure_logging

__all__ = ["DEFAULT_PORT", "DashboardServer", "binding", "live_app", "main"]

log = structlog.get_logger("quorumboard.consensus.dashboard.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TOKEN_CHARS_MIN = 16
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
GRACEFUL_S = 2
"""Open streams get this long to end when the server stops."""
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
EXIT_USAGE = 2


def binding(host: str | None, token_env: str | None,
            environ: Mapping[str, str]) -> tuple[str, str | None, list[str]]:
    """The address to bind, the token (``None``: none asked for) and the host names the page
    may be reached by; :class:`InvalidCommand` when ``--host`` comes without a token, or the
    token's variable is unset or short."""
    token = None
    if token_env is not None:
        token = environ.get(token_env, "")
        if len(token) < TOKEN_CHARS_MIN:
            raise InvalidCommand(f"--token-env {token_env}: that environment variable must hold "
                                 f"the dashboard's token, at least {TOKEN_CHARS_MIN} characters "
                                 f"({'unset' if token_env not in environ else 'too short'})")
    if host is None:
        return DEFAULT_HOST, token, list(LOOPBACK)
    if token is None:
        raise InvalidCommand(f"--host {host} serves the dashboard beyond this machine: give "
                             "--token-env NAME too (an environment variable holding a token of "
                             f"at least {TOKEN_CHARS_MIN} characters that every request must "
                             "carry), or leave --host out to serve on 127.0.0.1 only")
    wildcard = host in ("0.0.0.0", "::", "")
    return host, token, ["*"] if wildcard else [*LOOPBACK, host if ":" not in host
                                                 else f"[{host}]"]


class DashboardServer:
    """The app on a uvicorn server of its own thread: :meth:`start` returns once it accepts
    connections (the socket is bound here, so port 0 picks a free one), :meth:`stop` ends it
    (and with it the app's cluster reads and streams)."""

    def __init__(self, app: Starlette, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise InvalidCommand(f"cannot serve on {host}:{port}: {exc.strerror}") from None
        self._sock.listen(128)
        self._app = app
        bound_port = self._sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}/"
        self._server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_S, server_header=False))
        self._thread = threading.Thread(target=self._serve, name="dashboard-server",
                                        daemon=True)
        self._failed: BaseException | None = None

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start(), or logged at stop
            self._failed = exc

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise InvalidCommand(f"the dashboard did not start ({self._failed!r})")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        live = getattr(self._app.state, "live", None)
        if isinstance(live, LiveSource):  # open streams end now, not at the graceful timeout
            live.end_streams()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S + GRACEFUL_S)
        self._sock.close()

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def live_app(endpoints: list[str], *, secret: bytes | None = None, token: str | None = None,
             allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard of the cluster at ``endpoints``, read with the cluster ``secret``."""
    return create_app(LiveSource(endpoints, secret), token=token, allowed_hosts=allowed_hosts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quorumboard dashboard",
        description="A read-only page over a live cluster (--endpoints) or a finished run's "
        "folder (--run: a chaos run or an experiment). Served on 127.0.0.1 unless --host; "
        "with --host, --token-env is required.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--endpoints", default=None,
                      help="host:port,... of the replicas' client ports (or "
                      "QUORUMBOARD_ENDPOINTS); the cluster secret comes from QUORUMBOARD_SECRET")
    what.add_argument("--run", default=None, metavar="DIR",
                      help="a folder written by 'quorumboard chaos --out' or "
                      "'quorumboard experiment'")
    p.add_argument("--host", default=None, help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--token-env", default=None, metavar="NAME",
                   help="environment variable holding the token every request must carry "
                   "(required with --host)")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: Sequence[str]) -> int:
    """``quorumboard dashboard ...``: serve until interrupted (Ctrl-C, SIGTERM). The one
    place the dashboard reads its configuration from the environment."""
    args = _parser().parse_args(list(argv))
    secret = os.environ.get("QUORUMBOARD_SECRET")
    try:
        host, token, hosts = binding(args.host, args.token_env, os.environ)
        endpoints = args.endpoints or os.environ.get("QUORUMBOARD_ENDPOINTS")
        if args.run is not None:
            app = create_app(open_run(Path(args.run)), token=token, allowed_hosts=hosts)
        elif endpoints:
            app = live_app([e.strip() for e in endpoints.split(",") if e.strip()],
                           secret=secret.encode() if secret else None, token=token,
                           allowed_hosts=hosts)
        else:
            raise InvalidCommand("give --endpoints (or QUORUMBOARD_ENDPOINTS) for a live "
                                 "cluster, or --run DIR for a run's folder")
        configure_logging(args.log_level)
        server = DashboardServer(app, host, args.port)
        url = server.start()
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    note = f"  (open {url}?token=... once: the token of ${args.token_env})" if token else ""
    print(f"quorumboard dashboard: {url}{note}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0
