"""The console's routes: sign-in, the pages, their live fragments and the static files.

Reads go through the provider (workflows, the visibility API) and ``ConsoleReads`` (everything
else); pages are rendered on a worker thread, so a workflow with megabytes of data does not hold
up the event loop that also serves gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib.resources
import logging
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wfe_client.errors import InvalidArgument, StorageUnavailable, WorkflowNotFound
from wfe_client.models import WorkflowStatus
from wfe_client.timeutil import utc_now

from .._config import is_loopback
from .._provider import StoreProvider
from . import _pages as pages
from ._auth import COOKIE, SESSION_SECONDS, Sessions
from ._html import Html, join
from ._http import Request, Response, one_line, unavailable_response
from ._reads import STATUSES, ConsoleReads, parse_event_cursor

__all__ = ["FRAGMENT_HEADER", "ConsoleApp"]

LOG = logging.getLogger(__name__)

FRAGMENT_HEADER = "x-console-fragment"
"""A request carrying this header gets only the page's live region (the browser's refresh)."""

FAILED_SIGN_IN_DELAY = 0.5
"""Seconds a refused sign-in waits before it is answered."""

_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class _Static:
    body: bytes
    content_type: str
    version: str


def _load_static() -> dict[str, _Static]:
    files: dict[str, _Static] = {}
    for entry in importlib.resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _STATIC_TYPES:
            body = entry.read_bytes()
            files[entry.name] = _Static(body, _STATIC_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])
    return files


def _page(body: Html, status: int = 200) -> Response:
    return Response(status, body.encode("utf-8"))


def _redirect(location: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *headers])


_NOT_IN_LOCAL_PATH = frozenset(map(chr, range(0x21))) | {"\x7f", "\\"}
"""Control characters, space and backslash: browsers drop some of them (``/<TAB>/host`` reads as
``//host``), turn ``\\`` into ``/``, and CR/LF would end a header."""
_LOCAL_PATH_SAFE = "/?=&%#:@;,+-._~!$'()*"
"""Left as they are by ``_local_path``; every other character is percent-encoded (as UTF-8)."""


def _local_path(value: str | None) -> str:
    """``value`` when it is a path on this site, else ``/`` (no open redirects): it starts with one
    ``/`` (not ``//``), holds no control character, whitespace or backslash, and comes back
    percent-encoded where it is not plain ASCII, so that it is a valid ``Location`` value."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if any(char in _NOT_IN_LOCAL_PATH for char in value):
        return "/"
    return urllib.parse.quote(value, safe=_LOCAL_PATH_SAFE)


class ConsoleApp:
    """Answers console requests for one provider; ``tokens`` (may be empty) guard it."""

    def __init__(
        self,
        provider: StoreProvider,
        tokens: Iterable[str],
        database_label: str,
        *,
        check_host: bool = True,
    ) -> None:
        self.provider = provider
        self.reads = ConsoleReads(provider)
        self.sessions = Sessions(tokens)
        self._check_host = check_host
        self._static = _load_static()
        self._urls = {name: f"/static/{name}?v={item.version}" for name, item in self._static.items()}
        self._database = database_label

    def _frame(self, signed_in: bool) -> pages.Frame:
        return pages.Frame(self._database, self._urls, signed_in and self.sessions.required)

    async def __call__(self, request: Request) -> Response:
        if self._check_host and not self._host_allowed(request.headers.get("host", "")):
            return Response(421, b"this console answers to localhost only\n", "text/plain; charset=utf-8")
        path = request.path
        if path.startswith("/static/"):
            return self._static_file(request, path[len("/static/") :])
        if path == "/login":
            return await self._login(request)
        if path == "/logout":
            return self._logout(request)
        session = request.cookie(COOKIE)
        if not self.sessions.valid(session):
            if request.headers.get(FRAGMENT_HEADER):
                return Response(401, b"sign in again\n", "text/plain; charset=utf-8")
            if request.method not in ("GET", "HEAD"):
                return Response(401, b"sign in first\n", "text/plain; charset=utf-8")
            return _page(pages.login_page(self._frame(False), _local_path(request.target), failed=False), 401)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"the console is read-only\n", "text/plain; charset=utf-8", [("Allow", "GET, HEAD")])
        frame = self._frame(True)
        fragment = bool(request.headers.get(FRAGMENT_HEADER))
        try:
            return await self._page_route(request, path, frame, fragment)
        except StorageUnavailable as error:
            # What the gRPC side answers UNAVAILABLE: a warning, not a traceback per request.
            LOG.warning("console: %s %r: database unavailable: %s", request.method, request.target, one_line(error))
            if fragment:
                return unavailable_response()
            page = pages.message_page(frame, "Database unavailable", "The database is unavailable; retry later.")
            return unavailable_response(page.encode("utf-8"), "text/html; charset=utf-8")

    async def _page_route(self, request: Request, path: str, frame: pages.Frame, fragment: bool) -> Response:
        if path == "/":
            return await self._overview(frame, fragment)
        if path == "/workflows":
            return await self._workflows(request, frame, fragment)
        if path.startswith("/workflows/"):
            return await self._workflow(urllib.parse.unquote(path[len("/workflows/") :]), frame, fragment)
        if path == "/events":
            return await self._events(request, frame, fragment)
        return _page(pages.message_page(frame, "Not found", "There is no such page in the console."), 404)

    # -- plumbing ----------------------------------------------------------------------------------

    @staticmethod
    def _host_allowed(host_header: str) -> bool:
        """Whether the Host header names this machine (a page of another site that resolves its
        own name to 127.0.0.1, DNS rebinding, must not read the console)."""
        host = host_header.strip()
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else ""
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback(host)

    def _static_file(self, request: Request, name: str) -> Response:
        item = self._static.get(name)
        if item is None or request.method not in ("GET", "HEAD"):
            return Response(404, b"not found\n", "text/plain; charset=utf-8")
        versioned = request.arg("v") == item.version
        cache = "public, max-age=31536000, immutable" if versioned else "no-cache"
        return Response(200, item.body, item.content_type, cache=cache)

    def _same_origin(self, request: Request) -> bool:
        """A form post must come from a page of this console (Origin, when sent, names this host)."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        parsed = urllib.parse.urlsplit(origin)
        return parsed.netloc == request.headers.get("host", "")

    async def _login(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            if not self.sessions.required:
                return _redirect("/")
            next_path = _local_path(request.arg("next"))
            return _page(pages.login_page(self._frame(False), next_path, failed=False))
        if request.method != "POST":
            return Response(405, b"", "text/plain; charset=utf-8", [("Allow", "GET, HEAD, POST")])
        if not self._same_origin(request):
            return Response(403, b"cross-site sign-in refused\n", "text/plain; charset=utf-8")
        form = request.form()
        next_path = _local_path(form.get("next"))
        if not self.sessions.required:
            return _redirect(next_path)
        session = self.sessions.sign_in(form.get("token", "").strip())
        if session is None:
            LOG.warning("console: refused a sign-in from %s (token not accepted)", request.peer)
            await asyncio.sleep(FAILED_SIGN_IN_DELAY)
            return _page(pages.login_page(self._frame(False), next_path, failed=True), 401)
        LOG.info("console: signed in from %s", request.peer)
        cookie = f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}"
        return _redirect(next_path, [("Set-Cookie", cookie)])

    def _logout(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, b"", "text/plain; charset=utf-8", [("Allow", "POST")])
        if not self._same_origin(request):
            return Response(403, b"cross-site sign-out refused\n", "text/plain; charset=utf-8")
        self.sessions.sign_out(request.cookie(COOKIE))
        cookie = f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        return _redirect("/", [("Set-Cookie", cookie)])

    @staticmethod
    async def _render(fragment: bool, region: Any, whole: Any, *args: Any) -> Response:
        """Render the region (fragment requests) or the whole page on a worker thread."""
        body = await asyncio.to_thread(region if fragment else whole, *args)
        return _page(body)

    # -- pages -------------------------------------------------------------------------------------

    async def _overview(self, frame: pages.Frame, fragment: bool) -> Response:
        data = await self.reads.overview()
        recent = (await self.provider.list_workflows(page_size=10)).items
        now = utc_now()

        def region() -> Html:
            return pages.overview_region(data, recent, now)

        def whole() -> Html:
            return pages.layout(
                frame, title="Overview", section="overview", heading=Html("<h1>Overview</h1>"), region=region()
            )

        return await self._render(fragment, region, whole)

    def _list_view(self, request: Request) -> pages.WorkflowListView:
        problems: list[str] = []
        statuses: list[str] = []
        for value in request.query.get("status", []):
            name = value.strip().upper()
            if name in STATUSES:
                if name not in statuses:
                    statuses.append(name)
            elif name:
                problems.append(f"Unknown status {value!r} left out.")
        times: dict[str, str | None] = {}
        for name in ("created_after", "created_before"):
            text = request.arg(name)
            shown = _form_instant(text) if text is not None else None
            if text is not None and shown is None:
                label = name.replace("_", " ").capitalize()
                problems.append(f"{label}: {_shown(text)} is not a date and time; left out.")
            times[name] = shown
        size_text, size = request.arg("size"), 50
        if size_text is not None:
            size = _int_arg(size_text, 0)
            if size not in pages.PAGE_SIZES:
                sizes = ", ".join(map(str, pages.PAGE_SIZES))
                problems.append(f"Per page: {_shown(size_text)} is not one of {sizes}; showing 50.")
                size = 50
        skip_text, skip = request.arg("skip"), 0
        if skip_text is not None:
            skip = _int_arg(skip_text, -1)
            if skip < 0:
                quoted = _shown(skip_text)
                problems.append(f"Skip: {quoted} is not a number of results to skip; showing from the first.")
                skip = 0
        return pages.WorkflowListView(
            statuses=tuple(statuses),
            definition=request.arg("definition"),
            reference=request.arg("reference"),
            created_after=times["created_after"],
            created_before=times["created_before"],
            text=request.arg("q"),
            page_token=request.arg("page"),
            skip=skip,
            size=size,
            problems=tuple(problems),
        )

    async def _workflows(self, request: Request, frame: pages.Frame, fragment: bool) -> Response:
        view = self._list_view(request)
        statuses = [WorkflowStatus[s] for s in view.statuses] or None
        next_token: str | None = None
        total: int | None = None
        try:
            if view.text:
                found = await self.provider.search_workflows(
                    view.text,
                    status=statuses,
                    definition_id=view.definition,
                    reference=view.reference,
                    created_after=_instant(view.created_after),
                    created_before=_instant(view.created_before),
                    skip=view.skip,
                    take=view.size,
                )
                items, total = list(found.items), int(found.total)
            else:
                listed = await self.provider.list_workflows(
                    status=statuses,
                    definition_id=view.definition,
                    reference=view.reference,
                    created_after=_instant(view.created_after),
                    created_before=_instant(view.created_before),
                    page_size=view.size,
                    page_token=view.page_token,
                )
                items, next_token = list(listed.items), listed.next_page_token
        except InvalidArgument as error:
            view = dataclasses.replace(view, problems=(*view.problems, str(error)))
            items, next_token, total = [], None, None
        now = utc_now()
        definitions: list[str] = []
        if not fragment:
            definitions = [d.definition_id for d in (await self.reads.overview()).definitions]

        def region() -> Html:
            return pages.workflow_list_region(view, items, now, next_token=next_token, total=total)

        def whole() -> Html:
            return pages.layout(
                frame,
                title="Workflows",
                section="workflows",
                heading=pages.workflow_list_filters(view, definitions),
                region=region(),
            )

        return await self._render(fragment, region, whole)

    async def _workflow(self, workflow_id: str, frame: pages.Frame, fragment: bool) -> Response:
        try:
            details = await self.provider.workflow_details(workflow_id)
        except (WorkflowNotFound, InvalidArgument):
            if fragment:
                return Response(404, b"no such workflow\n", "text/plain; charset=utf-8")
            body = pages.message_page(
                frame, "Workflow not found", f"There is no workflow with id {workflow_id!r}.", "workflows"
            )
            return _page(body, 404)
        workflow = details.workflow
        now = utc_now()

        def region() -> Html:  # the heading too: its status badge changes as the workflow runs
            return join(
                [
                    pages.workflow_heading(workflow),
                    pages.workflow_region(workflow, details.subscriptions, details.terminated, details.errors, now),
                ]
            )

        def whole() -> Html:
            return pages.layout(
                frame, title=workflow.name or workflow.id, section="workflows", heading=Html(""), region=region()
            )

        return await self._render(fragment, region, whole)

    async def _events(self, request: Request, frame: pages.Frame, fragment: bool) -> Response:
        problems: list[str] = []
        state = request.arg("state") or "all"
        if state not in ("all", "unprocessed", "processed"):
            problems.append(f"Unknown state {_shown(state)}; showing all events.")
            state = "all"
        name = request.arg("name")
        key = request.arg("key") if name is not None else None
        before_text = request.arg("before")
        before = parse_event_cursor(before_text) if before_text else None
        if before_text and before is None:
            problems.append(
                f"Older than: {_shown(before_text)} is not a position in the event list; showing the newest events."
            )
        view = pages.EventListView(state, name, key, before_text if before else None, tuple(problems))
        processed = None if state == "all" else state == "processed"
        page = await self.reads.events(processed=processed, event_name=name, event_key=key, before=before)
        waiting = await self.reads.open_subscriptions(name, key) if name is not None and key is not None else None
        now = utc_now()

        def region() -> Html:
            return pages.event_region(view, page, waiting, now)

        def whole() -> Html:
            return pages.layout(
                frame, title="Events", section="events", heading=pages.event_filters(view), region=region()
            )

        return await self._render(fragment, region, whole)


def _shown(text: str, limit: int = 80) -> str:
    """A query parameter quoted for a message, cut at ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def _int_arg(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _form_instant(text: str) -> str | None:
    """``text`` (a date and time, or a date; UTC unless it names an offset) as the value of a
    ``datetime-local`` input in UTC (``YYYY-MM-DDTHH:MM[:SS[.mmm]]``: a browser shows any other value
    as an empty field); None when it is not one, or not a UTC time a year 1 to 9999 can hold."""
    value = _instant(text)
    if value is None:
        return None
    try:
        utc = value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return None
    spec = "milliseconds" if utc.microsecond else "seconds" if utc.second else "minutes"
    return utc.isoformat(timespec=spec)


def _instant(text: str | None) -> datetime | None:
    """A form's date and time (``YYYY-MM-DDTHH:MM[:SS]``, or a date), read as UTC; None if not one."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
