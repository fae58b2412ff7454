"""The dashboard's server without a browser: the binding rules (``--host`` needs a token), the
token on every request, no secret in anything served, and no write path at all. A real cluster
(with a secret) and the real server on loopback; requests with the standard library."""

from __future__ import annotations

import ast
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route

from quorumboard.consensus import InvalidCommand, LocalCluster
from quorumboard.consensus.cli import main
from quorumboard.consensus.dashboard.app import TOKEN_COOKIE, create_app
from quorumboard.consensus.dashboard.live import LiveSource
from quorumboard.consensus.dashboard.runs import open_run
from quorumboard.consensus.dashboard.serve import DashboardServer, binding
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
SECRET = "cluster-secret-that-must-stay-home-4f1c"
TOKEN = "dashboard-token-0123456789abcdef"
WRITES = {"put", "propose", "vote", "withdraw", "delete", "grant", "keepalive", "revoke",
          "claim", "release", "set_policy"}
"""Every write of the client (``Board``): none may be called by the dashboard."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=1, data_dir=tmp_path_factory.mktemp("dash"), secret=SECRET,
                      log_level="warning") as c:
        board = c.board(agent="alice")
        board.put("team/plan", {"step": 1})
        board.claim("team/task", ttl=60.0, value={"who": "alice"})
        board.set_policy("team/counts/", "merge", kind="counter")
        yield c


def _get(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _stream_head(url: str, headers: dict[str, str] | None = None,
                 lines_max: int = 12) -> bytes:
    """The first lines of the event stream (it never ends by itself)."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=20) as response:
        return b"".join(response.readline() for _ in range(lines_max))


GETS = ["/", "/static/app.js", "/static/app.css", "/api/source", "/api/cluster",
        "/api/keys?prefix=team/", "/api/claims?prefix=", "/api/leases", "/api/policies"]


def test_secret_never_served(cluster: LocalCluster) -> None:
    """Every route, the stream included, with the right secret and with a wrong one (whose
    error messages reach the page): the cluster secret appears in no response, header or
    body. The page still shows the cluster, so the secret was used."""
    for secret in (SECRET, "a-wrong-secret-but-also-private-99"):
        app = create_app(LiveSource(cluster.endpoints, secret.encode()))
        with DashboardServer(app, port=0) as server:
            base = server.url.rstrip("/")
            seen = []
            for path in GETS:
                status, headers, body = _get(base + path)
                assert status == 200, (path, body[:200])
                seen.append(json.dumps(headers).encode() + body)
            seen.append(_stream_head(base + "/api/events?after=0", lines_max=8))
            served = b"\n".join(seen)
            assert secret.encode() not in served and SECRET.encode() not in served
            keys = json.loads(_get(base + "/api/keys?prefix=team/")[2])
            if secret == SECRET:
                assert [k["key"] for k in keys["keys"]] == ["team/plan", "team/task"]
                assert b"team/plan" in served  # the stream replayed the write
            else:
                assert keys["keys"] == [] and "AuthError" in keys["error"]


def test_stream_from_now_gets_a_write_made_once_open(cluster: LocalCluster) -> None:
    """A stream opened without a start begins at the revision before its response: a write
    made once the page has its response is always sent (and, the one replica being the
    leader, nothing older: a follower's anchor could only replay a little more)."""
    app = create_app(LiveSource(cluster.endpoints, SECRET.encode()))
    board = cluster.board(agent="alice")
    with DashboardServer(app, port=0) as server, urllib.request.urlopen(
            server.url + "api/events?prefix=team/", timeout=20) as stream:
        entry = board.put("team/now", {"fresh": True})
        lines = []
        for _ in range(50):  # bounded: the event is a handful of lines away
            line = stream.readline().decode()
            lines.append(line)
            if line.startswith("data:") and "team/now" in line:
                break
        events = [json.loads(x[5:]) for x in lines if x.startswith("data:")]
        assert [e["key"] for e in events] == ["team/now"], lines
        assert events[0]["revision"] == entry.mod_revision
        assert f"id: {entry.mod_revision - 1}\n" in lines


def test_no_write_route_and_nothing_written(cluster: LocalCluster) -> None:
    """Every route answers GET (and HEAD) only; every other method is 405; no module of the
    dashboard calls a write of the client; and serving every view changed nothing."""
    app = create_app(LiveSource(cluster.endpoints, SECRET.encode()))
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert len(routes) >= 10
    for route in routes:
        assert route.methods == {"GET", "HEAD"}, route.path
    for path in (ROOT / "consensus" / "dashboard").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in WRITES, f"{path.name}:{node.lineno} calls a write"
    before = cluster.board(agent="check").status().revision
    with DashboardServer(app, port=0) as server:
        base = server.url.rstrip("/")
        for path in [*GETS, "/api/events"]:
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                status, _, _ = _get(base + path, method=method)
                assert status == 405, (method, path, status)
        for path in GETS:
            assert _get(base + path)[0] == 200
    assert cluster.board(agent="check").status().revision == before


def test_token_on_every_request(cluster: LocalCluster) -> None:
    app = create_app(LiveSource(cluster.endpoints, SECRET.encode()), token=TOKEN)
    with DashboardServer(app, port=0) as server:
        base = server.url.rstrip("/")
        for path in [*GETS, "/api/events", "/no/such/page"]:
            status, headers, body = _get(base + path)
            assert status == 401 and TOKEN.encode() not in body, path
            assert headers.get("x-frame-options") == "DENY"
            assert _get(base + path, {"Authorization": "Bearer wrong-token-0123456789"})[0] \
                == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path in GETS:
            assert _get(base + path, bearer)[0] == 200, path
        assert b"retry:" in _stream_head(base + "/api/events", bearer, lines_max=1)
        # The page trades the token in its address for a cookie its scripts cannot read.
        host, port = server.url.split("//")[1].rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
        conn.request("GET", f"/?token={TOKEN}")
        response = conn.getresponse()
        cookie = response.getheader("set-cookie") or ""
        assert response.status == 303 and response.getheader("location") == "/"
        assert cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        conn.close()
        assert _get(base + "/api/cluster", {"Cookie": cookie.split(";")[0]})[0] == 200
        # Another site's name for this address (DNS rebinding) is refused.
        assert _get(base + "/api/cluster", {**bearer, "Host": "evil.example"})[0] == 400


def test_host_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    """``--host`` without ``--token-env`` is refused with a clear error, by the command and by
    the rule it applies; a token's variable must be set and long enough."""
    assert main(["dashboard", "--endpoints", "127.0.0.1:1", "--host", "0.0.0.0"]) == 2
    refused = capsys.readouterr().err
    assert "--token-env" in refused and "--host 0.0.0.0" in refused, refused
    with pytest.raises(InvalidCommand, match="--token-env"):
        binding("0.0.0.0", None, {})
    with pytest.raises(InvalidCommand, match="unset"):
        binding("0.0.0.0", "QB_TOKEN", {})
    with pytest.raises(InvalidCommand, match="too short"):
        binding(None, "QB_TOKEN", {"QB_TOKEN": "short"})
    assert binding(None, None, {}) == ("127.0.0.1", None, ["127.0.0.1", "localhost", "[::1]"])
    assert binding("0.0.0.0", "QB_TOKEN", {"QB_TOKEN": TOKEN}) == ("0.0.0.0", TOKEN, ["*"])
    assert main(["dashboard", "--run", "/nonexistent/run"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["dashboard"]) == 2
    assert "--endpoints" in capsys.readouterr().err


def test_command_serves_until_sigterm(cluster: LocalCluster) -> None:
    """``quorumboard dashboard --endpoints ... --port 0`` prints its address, serves the
    cluster (read with the secret from the environment), and stops cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "quorumboard.consensus.cli", "dashboard", "--endpoints",
         ",".join(cluster.endpoints), "--port", "0"],
        env={**os.environ, "QUORUMBOARD_SECRET": SECRET}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first line is the address (or EOF on failure)
        assert line.startswith("quorumboard dashboard: http://127.0.0.1:"), line
        url = line.split()[-1]
        leader = wait_until(lambda: json.loads(_get(url + "api/cluster")[2])["leader"],
                            what="the cluster's leader on the page")
        assert leader == cluster.endpoints[0]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped" in out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def test_run_folder_serves_only_its_pictures(tmp_path: Path) -> None:
    """A run folder's report: its tables and plots in order; only PNGs of the folder itself
    are served (no other file, no path out of it); a folder of neither kind is refused."""
    folder = tmp_path / "e1"
    folder.mkdir()
    shutil.copy(ROOT / "docs" / "experiment-speedup.png", folder / "speedup_vs_n.png")
    (folder / "secret.txt").write_text(SECRET)
    (folder / "report.md").write_text(
        "# Sweep report: e1\n\nTwo runs.\n\n## Speedup\n\n| n | speedup |\n|---|---|\n"
        "| 1 | 1.00 |\n| 2 | 1.70 |\n\n- first finding\n- second finding\n\n"
        "![Speedup vs team size](speedup_vs_n.png)\n![gone](../outside.png)\n")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with DashboardServer(create_app(open_run(folder)), port=0) as server:
        base = server.url.rstrip("/")
        view = json.loads(_get(base + "/api/experiment")[2])
        assert view["title"] == "Sweep report: e1"
        assert [b["kind"] for b in view["blocks"]] == [
            "heading", "text", "heading", "table", "text", "text", "plot"]
        assert view["blocks"][3]["rows"] == [["n", "speedup"], ["1", "1.00"], ["2", "1.70"]]
        assert view["plots"] == ["/run/speedup_vs_n.png"]
        status, headers, body = _get(base + "/run/speedup_vs_n.png")
        assert status == 200 and headers["content-type"] == "image/png"
        assert body == (folder / "speedup_vs_n.png").read_bytes()
        for path in ("/run/secret.txt", "/run/report.md", "/run/..%2Foutside.png",
                     "/run/%2E%2E%2Foutside.png", "/run/timeline.svg", "/api/chaos"):
            status, _, body = _get(base + path)
            assert status == 404 and SECRET.encode() not in body, path
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidCommand, match="neither a chaos run"):
        open_run(tmp_path / "empty")
