"""The dashboard's Starlette application: GET routes only, JSON views from
:mod:`~quorumboard.consensus.dashboard.models`, one server-sent event stream per page.

Read-only by construction: every route answers GET (and HEAD) and nothing else, and nothing
behind a route writes (no route reaches a write of the client: the test suite checks both).
With a token, every request must carry it (an ``Authorization: Bearer`` header, or the cookie
the page gets by opening ``/?token=...`` once); the page's own requests carry the cookie, so
its scripts never see the token. Every response forbids framing, sniffing and caching, and
the page may load scripts, styles and pictures from this server only; values written by
agents are shown as text, never as markup."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quorumboard.consensus.core.model import check_prefix
from quorumboard.consensus.dashboard.live import STREAMS_MAX, LiveSource, StreamNotice
from quorumboard.consensus.dashboard.models import EventRow, SourceView
from quorumboard.consensus.dashboard.page import APP_CSS, APP_JS, page_html
from quorumboard.consensus.dashboard.runs import TIMELINE_SVG, RunFolder
from quorumboard.consensus.errors import BoardError, Unavailable

__all__ = ["TOKEN_COOKIE", "create_app"]

log = structlog.get_logger("quorumboard.consensus.dashboard.app")

TOKEN_COOKIE = "quorumboard_dashboard"
HEARTBEAT_S = 15.0
"""A quiet stream sends a comment this often (proxies and browsers keep it open)."""
RETRY_MS = 1_000
"""How soon a browser reconnects a dropped stream (it then sends the last event id)."""
_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class _Guard:
    """Every response gets :data:`_HEADERS`; with a token, a request without it gets 401."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        if self.token is not None:
            request = Request(scope)
            given = request.query_params.get("token")
            if given is not None and request.url.path == "/" and self._is_token(given):
                # Trade the token in the address for a cookie the page's scripts cannot read.
                response: Response = RedirectResponse("/", status_code=303)
                response.set_cookie(TOKEN_COOKIE, self.token.decode(), httponly=True,
                                    samesite="strict", path="/")
                await response(scope, receive, guarded)
                return
            auth = request.headers.get("authorization", "")
            carried = (auth[7:] if auth.lower().startswith("bearer ")
                       else request.cookies.get(TOKEN_COOKIE, ""))
            if not self._is_token(carried):
                await PlainTextResponse(
                    "401: this dashboard needs its token: open /?token=... once, or send "
                    "'Authorization: Bearer ...'", status_code=401)(scope, receive, guarded)
                return
        await self.app(scope, receive, guarded)

    def _is_token(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token)


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _bad(message: str, status: int = 400) -> Response:
    return PlainTextResponse(message, status_code=status)


def _prefix(request: Request) -> str:
    return check_prefix(request.query_params.get("prefix", ""))


def create_app(source: LiveSource | RunFolder, *, token: str | None = None,
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard over a live cluster (a :class:`LiveSource`, started and closed with the
    app) or a finished run's folder. ``allowed_hosts``: the names the page may be reached by
    (the Host header), so another site's page cannot read this one by rebinding its name to
    127.0.0.1."""
    live = source if isinstance(source, LiveSource) else None
    run = source if isinstance(source, RunFolder) else None
    view = (SourceView(kind="live", title=", ".join(live.endpoints)) if live is not None
            else run.source() if run is not None else None)
    assert view is not None

    async def index(_: Request) -> Response:
        return HTMLResponse(page_html(view.kind))

    async def script(_: Request) -> Response:
        return Response(APP_JS, media_type="text/javascript")

    async def style(_: Request) -> Response:
        return Response(APP_CSS, media_type="text/css")

    async def about(_: Request) -> Response:
        return _json(view)

    routes = [Route("/", index), Route("/static/app.js", script),
              Route("/static/app.css", style), Route("/api/source", about)]
    if live is not None:
        routes += _live_routes(live)
    if run is not None:
        routes += _run_routes(run)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if live is not None:
            live.start()
        try:
            yield
        finally:
            if live is not None:
                await asyncio.to_thread(live.close)

    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]"]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(_Guard, token=token),
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
    ])
    app.state.live = live  # the server ends its streams first when it stops
    return app


def _reader(read: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """A read route: a bad prefix is 400 naming it."""
    async def route(request: Request) -> Response:
        try:
            return await read(request)
        except BoardError as exc:
            return _bad(f"{type(exc).__name__}: {exc}")
    return route


def _live_routes(live: LiveSource) -> list[Route]:
    async def cluster(_: Request) -> Response:
        return _json(live.cluster())

    async def keys(request: Request) -> Response:
        return _json(await asyncio.to_thread(live.keys, _prefix(request)))

    async def claims(request: Request) -> Response:
        return _json(await asyncio.to_thread(live.claims, _prefix(request)))

    async def leases(_: Request) -> Response:
        return _json(await asyncio.to_thread(live.leases))

    async def policies(_: Request) -> Response:
        return _json(await asyncio.to_thread(live.policies))

    async def events(request: Request) -> Response:
        prefix = _prefix(request)
        after_text = (request.headers.get("last-event-id")
                      or request.query_params.get("after") or "")
        if after_text and not after_text.isdecimal():
            return _bad(f"after: a revision is a whole number (got {after_text[:40]!r})")
        after = int(after_text) if after_text else None
        if live.streams_full():
            return _bad(f"{STREAMS_MAX} pages are streaming already: close one", 503)
        if after is None:
            # "From now" is the revision before the page hears the stream is open, so a write
            # made once it is open always arrives (the stream's thread would anchor later).
            with contextlib.suppress(BoardError):
                after = await asyncio.to_thread(live.current_revision)
        return StreamingResponse(_sse(live, prefix, after), media_type="text/event-stream")

    return [Route("/api/cluster", cluster), Route("/api/keys", _reader(keys)),
            Route("/api/claims", _reader(claims)), Route("/api/leases", leases),
            Route("/api/policies", policies), Route("/api/events", _reader(events))]


async def _sse(live: LiveSource, prefix: str, after: int | None) -> AsyncIterator[str]:
    """The page's stream: each event is a message whose id is the revision *before* it, so a
    reconnecting browser (which sends the last id) gets that event's whole revision again
    rather than possibly missing the rest of it; the page drops what it has seen. The watch
    starts with the response's body, so whatever ends the body (the page leaving, the server
    stopping) ends the watch."""
    try:
        stream = live.stream(prefix, after, asyncio.get_running_loop())
    except Unavailable as exc:
        refused = StreamNotice(kind="refused", message=str(exc))
        yield f"event: notice\ndata: {refused.model_dump_json()}\n\n"
        return
    try:
        # The anchor as the stream's first id: a browser reconnecting before any event
        # resumes from it.
        yield f"retry: {RETRY_MS}\n" + ("" if after is None else f"id: {after}\n") + "\n"
        for _ in range(2**62):  # bounded by the page (a disconnect cancels this) or stop()
            try:
                item = await asyncio.wait_for(stream.queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ": quiet\n\n"
                continue
            if item is None:
                return
            stream.consumed()
            if isinstance(item, EventRow):
                yield f"id: {item.revision - 1}\nevent: board\ndata: {item.model_dump_json()}\n\n"
            else:
                yield f"event: notice\ndata: {item.model_dump_json()}\n\n"
    finally:
        stream.stop()


def _run_routes(run: RunFolder) -> list[Route]:
    async def chaos(_: Request) -> Response:
        if run.kind != "chaos":
            return _bad("not a chaos run", 404)
        return _json(await asyncio.to_thread(run.chaos))

    async def experiment(_: Request) -> Response:
        if run.kind != "experiment":
            return _bad("not an experiment", 404)
        return _json(await asyncio.to_thread(run.experiment))

    async def picture(request: Request) -> Response:
        name = str(request.path_params["name"])
        if name == TIMELINE_SVG:
            svg = await asyncio.to_thread(run.timeline_svg)
            if svg is not None:
                return Response(svg, media_type="image/svg+xml")
            return _bad("no timeline", 404)
        data = await asyncio.to_thread(run.picture, name)
        if data is None:
            return _bad("no such picture", 404)
        return Response(data, media_type="image/png")

    return [Route("/api/chaos", _reader(chaos)), Route("/api/experiment", _reader(experiment)),
            Route("/run/{name}", picture)]
