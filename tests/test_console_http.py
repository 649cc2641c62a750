"""The console over plain HTTP, against real server processes: headers, the read-only rule, the Host
check, the token sign-in and its cookie, and the ``console_listen`` setting."""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import WFE_SQLITE, ServerProcess
from console_seed import XSS_NAME, Seeded, run_async, seed, start_console_server
from wfe_client import Event, EventSubscription, ExecutionError, GrpcPersistenceProvider, WorkflowInstance
from wfe_client.errors import StorageUnavailable
from wfe_sqlite import open_provider
from wfe_sqlite._config import ConfigError, ServerConfig, check, start_up_warnings
from wfe_sqlite.console import Console, database_label
from wfe_sqlite.console._http import HttpServer, Request, Response, UnsafeHeader
from wfe_sqlite.server import RunningServer

TOKEN = "console-http-test-token-0123456789"


class Client:
    """Raw HTTP/1.1 requests to one console (one connection per request)."""

    def __init__(self, base: str) -> None:
        parsed = urllib.parse.urlsplit(base)
        self.host, self.port = parsed.hostname or "", parsed.port or 80

    def request(
        self, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            sent = {"Host": f"{self.host}:{self.port}", **(headers or {})}
            if body:
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(method, path, body=body.encode() if body else None, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.fixture(scope="module")
def open_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Seeded, ServerProcess]]:
    db = tmp_path_factory.mktemp("console-open") / "wfe.db"
    server, url = start_console_server(f"sqlite://{db}")
    try:

        async def fill() -> Seeded:
            async with GrpcPersistenceProvider.connect(server.address) as store:
                return await seed(store)

        yield Client(url), run_async(fill), server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def guarded_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str]]:
    """A console of a server with tokens; the name of the one workflow it holds."""
    db = tmp_path_factory.mktemp("console-guarded") / "wfe.db"
    server, url = start_console_server(f"sqlite://{db}", env={"WFE_SQLITE_TOKENS": f"other-token,{TOKEN}"})
    try:

        async def fill() -> str:
            async with GrpcPersistenceProvider.connect(server.address, token=TOKEN) as store:
                workflow = WorkflowInstance.new("secret-flow", 1, {"secret": "s3cr3t-data"})
                workflow.name = "secret-workflow-name"
                await store.create_new_workflow(workflow)
                return workflow.name

        yield Client(url), run_async(fill)
    finally:
        server.kill()


# -- an open console (no tokens) ------------------------------------------------------------------


def test_every_page_carries_the_security_headers(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, seeded, _ = open_console
    workflow = seeded.workflows["order-4"]
    for path in ("/", "/workflows", "/workflows/" + urllib.parse.quote(workflow.id, safe=""), "/events", "/nope"):
        status, headers, body = client.get(path)
        assert status == (404 if path == "/nope" else 200), path
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert "<script>" not in body and "onerror=" not in body.replace("onerror=&quot;", "")
        assert '<script src="/static/console.js?v=' in body  # the only script: a static file


def test_pages_escape_what_the_store_holds(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, seeded, _ = open_console
    xss = seeded.workflows["xss"]
    _, _, page = client.get("/workflows/" + urllib.parse.quote(xss.id, safe=""))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert XSS_NAME not in page
    assert "<img" not in page and "<svg onload" not in page and "<i>Welcome" not in page
    assert "&lt;/pre&gt;&lt;script&gt;" in page  # the data, escaped inside its <pre>
    _, _, overview = client.get("/")
    assert XSS_NAME not in overview and "&lt;script&gt;alert(1)&lt;/script&gt;" in overview


def test_static_files_are_served_with_their_version(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, _, _ = open_console
    _, _, page = client.get("/")
    href = page.split('<link rel="stylesheet" href="', 1)[1].split('"', 1)[0]
    status, headers, body = client.get(href)
    assert status == 200 and headers["content-type"] == "text/css; charset=utf-8"
    assert "immutable" in headers["cache-control"] and ".badge" in body
    status, headers, _ = client.get("/static/console.css?v=old")
    assert status == 200 and headers["cache-control"] == "no-cache"
    status, headers, js = client.get("/static/console.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and "X-Console-Fragment" in js
    assert client.get("/static/../_app.py")[0] == 404
    assert client.get("/static/nothing.js")[0] == 404


def test_the_console_is_read_only(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, seeded, _ = open_console
    path = "/workflows/" + urllib.parse.quote(seeded.workflows["order-1"].id, safe="")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = client.request(method, path, body="x=1")
        assert status == 405, method
        assert headers["allow"] == "GET, HEAD"
    status, headers, body = client.request("HEAD", "/")
    assert status == 200 and body == "" and int(headers["content-length"]) > 1000


def test_fragment_requests_get_only_the_live_region(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, seeded, _ = open_console
    status, _, whole = client.get("/workflows?status=SUSPENDED")
    status_f, _, fragment = client.get("/workflows?status=SUSPENDED", X_Console_Fragment="1")
    assert status == status_f == 200
    assert whole.startswith("<!doctype html>") and not fragment.lstrip().startswith("<!doctype")
    assert "<form" not in fragment and 'id="workflow-list"' in fragment
    for label in ("invoice-1", "invoice-2", "invoice-3"):
        assert seeded.workflows[label].name in fragment
    assert seeded.workflows["order-1"].name not in fragment


def test_other_host_names_are_refused(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    """A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) reads nothing."""
    client, _, _ = open_console
    status, _, body = client.get("/", Host=f"attacker.example:{client.port}")
    assert status == 421 and "localhost only" in body
    assert client.get("/", Host=f"localhost:{client.port}")[0] == 200
    assert client.get("/", Host=f"127.0.0.1:{client.port}")[0] == 200


def test_unknown_workflow_and_bad_filters(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, _, _ = open_console
    status, _, body = client.get("/workflows/no-such-id")
    assert status == 404 and "There is no workflow with id &#x27;no-such-id&#x27;" in body
    status, _, body = client.get("/workflows?status=BOGUS&created_after=yesterday")
    assert status == 200
    assert "Unknown status &#x27;BOGUS&#x27; left out." in body
    assert "&#x27;yesterday&#x27; is not a date and time" in body
    status, _, body = client.get("/events?before=garbage&state=weird")
    assert status == 200 and 'id="event-list"' in body


def test_time_filters_show_in_the_form_as_utc_date_and_time(
    open_console: tuple[Client, Seeded, ServerProcess],
) -> None:
    """The creation-time fields are ``datetime-local`` inputs labelled UTC: a browser shows such an
    input empty unless its value is ``YYYY-MM-DDTHH:MM[:SS[.mmm]]``. A date alone or a time with an
    offset was put in the form as typed, so the field looked empty while the list was filtered by
    it (and Apply then dropped it). Now the form, and the paging links, carry it as UTC."""
    client, _, _ = open_console
    for typed, shown in (
        ("2020-01-02", "2020-01-02T00:00"),
        ("2020-01-02T03:04:05+02:00", "2020-01-02T01:04:05"),
        ("2020-01-02T03:04:05.250Z", "2020-01-02T03:04:05.250"),
        ("2020-01-02 03:04", "2020-01-02T03:04"),
    ):
        status, _, body = client.get("/workflows?" + urllib.parse.urlencode({"created_after": typed, "size": 10}))
        assert status == 200
        assert f'name="created_after" type="datetime-local" value="{shown}"' in body, typed
        assert re.search(r'rel="next" href="[^"]*created_after=' + re.escape(urllib.parse.quote(shown)), body), typed
    status, _, body = client.get("/workflows?created_before=0001-01-01T00:00%2B14:00")
    assert status == 200 and 'class="problem"' in body and "is not a date and time" in body


def test_an_unreadable_page_size_or_skip_is_said_so(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    """``size`` and ``skip`` that are not numbers the list takes were replaced without a word (50
    per page, from the first result); now the page names them and says what it shows instead."""
    client, _, _ = open_console
    status, _, body = client.get("/workflows?q=order&size=abc&skip=-5")
    assert status == 200 and 'id="workflow-list"' in body
    assert "Per page: &#x27;abc&#x27; is not one of 10, 20, 50, 100, 200; showing 50." in body
    assert "Skip: &#x27;-5&#x27; is not a number of results to skip; showing from the first." in body
    status, _, body = client.get("/workflows?size=7")
    assert status == 200 and "Per page: &#x27;7&#x27; is not one of 10, 20, 50, 100, 200; showing 50." in body
    status, _, body = client.get("/workflows?size=20&skip=0")
    assert status == 200 and 'class="problem"' not in body


def test_a_search_that_cannot_run_is_not_summed_up_as_a_list(
    open_console: tuple[Client, Seeded, ServerProcess],
) -> None:
    """A search the store refuses (no word in it, too many words) showed its reason above the list,
    and below it '0 workflows on this page, newest first.', the summary of an unfiltered list."""
    client, _, _ = open_console
    for q in ("*", " ".join(f"w{i}" for i in range(40))):
        status, _, body = client.get("/workflows?" + urllib.parse.urlencode({"q": q}))
        assert status == 200 and 'class="problem" role="alert">query: ' in body
        assert "on this page, newest first" not in body
        assert "The search could not be run (see above); nothing is shown." in body


def test_malformed_requests_get_an_error_not_a_crash(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, _, _ = open_console

    def raw(data: bytes) -> bytes:
        return _raw(client, data)

    assert raw(b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    assert raw(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999\r\n\r\n").startswith(
        b"HTTP/1.1 413 "
    )
    assert client.get("/")[0] == 200  # and it still serves


def test_a_content_length_of_thousands_of_digits_is_answered(
    open_console: tuple[Client, Seeded, ServerProcess],
) -> None:
    """Python's int() refuses more than 4,300 digits: such a length used to drop the connection
    with no answer at all. Now a length that long is 413 in words, and leading zeros before a small
    length are read as that length."""
    client, _, _ = open_console

    def post(length: bytes) -> bytes:
        head = b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: " + length
        return _raw(client, head + b"\r\n\r\nnext=%2Fevents")

    too_long = post(b"9" * 5000)
    assert too_long.startswith(b"HTTP/1.1 413 ") and too_long.endswith(b"request body too large\n"), too_long[:200]
    padded = post(b"0" * 5000 + b"14")  # the 14 bytes of the body: read, so the form's next is followed
    assert padded.startswith(b"HTTP/1.1 303 ") and b"\r\nLocation: /events\r\n" in padded, padded[:300]
    assert client.get("/")[0] == 200


def test_an_unreadable_event_cursor_is_said_so_not_a_500(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    """``before`` is the events page's cursor: one outside SQLite's 64-bit integers, or nested past
    the JSON parser's recursion limit, used to answer 500; now the page shows the newest events and
    says in words that the position was not read."""
    client, _, _ = open_console
    for before in (
        '[99999999999999999999999999,"x"]',
        '[-99999999999999999999999999,"x"]',
        "[" * 5000,
        "garbage",
    ):
        status, _, body = client.get("/events?" + urllib.parse.urlencode({"before": before, "name": "bulk"}))
        assert status == 200, (before[:40], body[:300])
        assert 'id="event-list"' in body
        assert "is not a position in the event list; showing the newest events." in body
        assert 'value="bulk"' in body  # the other filters are kept


# -- a console guarded by tokens ------------------------------------------------------------------


def _sign_in(client: Client, token: str, next_path: str = "/") -> tuple[int, dict[str, str], str]:
    form = urllib.parse.urlencode({"token": token, "next": next_path})
    return client.request("POST", "/login", body=form)


def test_without_a_session_nothing_is_shown(guarded_console: tuple[Client, str]) -> None:
    client, name = guarded_console
    for path in ("/", "/workflows", "/workflows?q=secret", "/events"):
        status, headers, body = client.get(path)
        assert status == 401, path
        assert 'name="token"' in body and name not in body and "s3cr3t" not in body
        assert "set-cookie" not in headers
    status, _, body = client.get("/", X_Console_Fragment="1")
    assert status == 401 and name not in body
    status, _, body = client.get("/", Cookie="wfe_console_session=forged-session-id")
    assert status == 401 and name not in body


def test_a_wrong_token_is_refused(guarded_console: tuple[Client, str]) -> None:
    client, name = guarded_console
    started = time.monotonic()
    status, headers, body = _sign_in(client, "wrong-token")
    assert time.monotonic() - started >= 0.4  # refused sign-ins are slowed down
    assert status == 401 and "That token is not accepted." in body and name not in body
    assert "set-cookie" not in headers
    assert _sign_in(client, TOKEN[:-1])[0] == 401
    assert _sign_in(client, "")[0] == 401


def test_the_right_token_opens_a_session_in_a_strict_http_only_cookie(guarded_console: tuple[Client, str]) -> None:
    client, name = guarded_console
    status, headers, _ = _sign_in(client, TOKEN, "/workflows")
    assert status == 303 and headers["location"] == "/workflows"
    cookie = headers["set-cookie"]
    parts = [p.strip() for p in cookie.split(";")]
    session = parts[0].split("=", 1)[1]
    assert parts[0].startswith("wfe_console_session=") and len(session) >= 40
    assert "HttpOnly" in parts and "SameSite=Strict" in parts and "Path=/" in parts
    assert TOKEN not in cookie and TOKEN[:8] not in session
    status, _, body = client.get("/", Cookie=f"wfe_console_session={session}")
    assert status == 200 and name in body and 'action="/logout"' in body
    status, _, body = client.get("/workflows?q=secret", Cookie=f"wfe_console_session={session}")
    assert status == 200

    # The other configured token works too; signing out ends only that session.
    _, other_headers, _ = _sign_in(client, "other-token")
    other = other_headers["set-cookie"].split(";")[0].split("=", 1)[1]
    status, headers, _ = client.request("POST", "/logout", headers={"Cookie": f"wfe_console_session={session}"})
    assert status == 303 and "Max-Age=0" in headers["set-cookie"]
    assert client.get("/", Cookie=f"wfe_console_session={session}")[0] == 401
    assert client.get("/", Cookie=f"wfe_console_session={other}")[0] == 200


def test_sign_in_refuses_other_sites_and_open_redirects(guarded_console: tuple[Client, str]) -> None:
    client, _ = guarded_console
    form = urllib.parse.urlencode({"token": TOKEN, "next": "/"})
    status, headers, _ = client.request("POST", "/login", body=form, headers={"Origin": "http://attacker.example"})
    assert status == 403 and "set-cookie" not in headers
    status, headers, _ = client.request(
        "POST", "/login", body=form, headers={"Origin": f"http://{client.host}:{client.port}"}
    )
    assert status == 303
    for target in ("//attacker.example/", "http://attacker.example/", "/\\attacker.example"):
        status, headers, _ = _sign_in(client, TOKEN, target)
        assert status == 303 and headers["location"] == "/", target


def _raw(client: Client, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the console sends back before it closes."""
    with socket.create_connection((client.host, client.port), timeout=10) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _raw_sign_in(client: Client, next_path: str) -> tuple[bytes, list[bytes]]:
    """A sign-in with the right token and ``next_path``, on a raw socket: the status line and the
    header lines exactly as sent (so an injected header would show as a line of its own)."""
    form = urllib.parse.urlencode({"token": TOKEN, "next": next_path}).encode()
    answer = _raw(
        client,
        b"POST /login HTTP/1.1\r\n"
        + f"Host: {client.host}:{client.port}\r\n".encode()
        + b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
        + f"Content-Length: {len(form)}\r\n\r\n".encode()
        + form,
    )
    head = answer.split(b"\r\n\r\n", 1)[0]
    status, *lines = head.split(b"\r\n")
    return status, lines


def _hidden_next(body: str) -> str:
    found = re.findall(r'<input type="hidden" name="next" value="([^"]*)">', body)
    assert len(found) == 1, body
    return html.unescape(found[0])


HOSTILE_NEXT = (
    "/\r\nSet-Cookie: injected=1",
    "/\nSet-Cookie: injected=1",
    "/\t/evil.example",
    "/ /evil.example",
    "/\x0b/evil.example",
    "/\x7f/evil.example",
    "/\\evil.example",
    "/workflows\\..\\..\\evil.example",
    "//evil.example",
    "http://evil.example/",
    "",
)


def test_sign_in_redirects_only_to_a_safe_local_path(guarded_console: tuple[Client, str]) -> None:
    """The ``next`` of a sign-in becomes ``Location`` only as a plain path of this console: control
    characters (CR/LF would inject a header, a tab makes browsers read ``/<TAB>/host`` as
    ``//host``), spaces and backslashes send the browser to ``/``; other characters are
    percent-encoded, and every sign-in gets an answer."""
    client, _ = guarded_console
    for next_path in HOSTILE_NEXT:
        status, lines = _raw_sign_in(client, next_path)
        assert status == b"HTTP/1.1 303 See Other", (next_path, status)
        locations = [line for line in lines if line.lower().startswith(b"location:")]
        assert locations == [b"Location: /"], (next_path, lines)
        assert not any(b"injected" in line for line in lines), (next_path, lines)
        assert sum(line.lower().startswith(b"set-cookie:") for line in lines) == 1, (next_path, lines)
    for next_path, location in (
        ("/workflows/\u2603", "/workflows/%E2%98%83"),  # not Latin-1: used to drop the connection
        ("/workflows/caf\u00e9?q=\u00fc", "/workflows/caf%C3%A9?q=%C3%BC"),
        ("/workflows/%E2%98%83", "/workflows/%E2%98%83"),  # already encoded: kept as it is
        ("/events?name=a&key=b#top", "/events?name=a&key=b#top"),
        ('/workflows/"<x>', "/workflows/%22%3Cx%3E"),
    ):
        status, lines = _raw_sign_in(client, next_path)
        assert status == b"HTTP/1.1 303 See Other", (next_path, status)
        assert [line for line in lines if line.lower().startswith(b"location:")] == [
            f"Location: {location}".encode()
        ], next_path
    assert client.get("/login")[0] == 200  # and it still serves


def test_the_sign_in_form_carries_only_a_safe_local_path(guarded_console: tuple[Client, str]) -> None:
    """``GET /login?next=`` and the sign-in page shown for a page without a session put ``next``
    into the form's hidden field: the same rule applies there."""
    client, _ = guarded_console
    for next_path in HOSTILE_NEXT:
        if not next_path.strip():
            continue
        status, _, body = client.get("/login?" + urllib.parse.urlencode({"next": next_path}))
        assert status == 200 and _hidden_next(body) == "/", next_path
    status, _, body = client.get("/login?next=" + urllib.parse.quote("/workflows/\u2603"))
    assert status == 200 and _hidden_next(body) == "/workflows/%E2%98%83"
    # Without a session, a page answers with the sign-in form whose next is the page's own target.
    status, _, body = client.get("/workflows?q=a%20b")
    assert status == 401 and _hidden_next(body) == "/workflows?q=a%20b"
    for target in (b"/\t/evil.example", b"//evil.example", b"/\\evil.example"):
        answer = _raw(
            client,
            b"GET "
            + target
            + f" HTTP/1.1\r\nHost: {client.host}:{client.port}\r\n".encode()
            + b"Connection: close\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 401 "), target
        assert _hidden_next(answer.split(b"\r\n\r\n", 1)[1].decode()) == "/", target


def test_unsafe_response_headers_are_never_sent() -> None:
    """Whatever builds a response, a header with CR, LF, another control character or a character
    outside ASCII is refused (``UnsafeHeader``), and the server answers 500 in its place."""
    for name, value in (
        ("Location", "/\r\nSet-Cookie: injected=1"),
        ("Location", "/\t/evil.example"),
        ("Location", "/workflows/\u2603"),
        ("Location", "/\x00"),
        ("X-Bad Name", "x"),
        ("X-Bad\r\nName", "x"),
        ("", "x"),
    ):
        with pytest.raises(UnsafeHeader):
            Response(303, b"", headers=[(name, value)]).head(True)
    with pytest.raises(UnsafeHeader):
        Response(200, b"", content_type="text/html\r\nX-Injected: 1").head(True)
    assert b"Location: /workflows/%E2%98%83\r\n" in Response(303, headers=[("Location", "/workflows/%E2%98%83")]).head(
        False
    )

    async def main() -> tuple[bytes, bytes]:
        async def handler(request: Request) -> Response:
            if request.path == "/down":  # the HTTP layer's own mapping, should a route not catch it
                raise StorageUnavailable("PostgreSQL unreachable:\nconnection refused")
            return Response(303, b"", headers=[("Location", "/\r\nSet-Cookie: injected=1")])

        server = HttpServer(handler)
        port = await server.start("127.0.0.1", 0)
        answers = []
        try:
            for path in (b"/", b"/down"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                answers.append(await asyncio.wait_for(reader.read(), 10))
                writer.close()
        finally:
            await server.close()
        return answers[0], answers[1]

    injected, down = asyncio.run(main())
    assert injected.startswith(b"HTTP/1.1 500 ") and b"injected" not in injected
    assert down.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in down
    assert down.endswith(b"\r\n\r\ndatabase unavailable, retry later\n")


async def test_an_unavailable_database_is_503_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While the store raises ``StorageUnavailable`` (PostgreSQL down; the gRPC side answers
    UNAVAILABLE), the console answers 503 with ``Retry-After`` and a short page, and logs one
    warning per request, no traceback."""
    url = f"sqlite://{tmp_path / 'wfe.db'}"
    provider = await open_provider(url)
    console = Console(provider, (), url)
    try:
        await console.start("127.0.0.1:0")
        client = Client(console.url)

        async def down(*args: object, **kwargs: object) -> object:
            raise StorageUnavailable("PostgreSQL unreachable: connection refused; retry later")

        monkeypatch.setattr(provider.store, "console_overview", down)
        monkeypatch.setattr(provider.store, "console_events", down)
        monkeypatch.setattr(provider, "list_workflows", down)
        caplog.set_level(logging.INFO, logger="wfe_sqlite.console")
        for path, fragment in (("/", False), ("/workflows", False), ("/events", False), ("/", True)):
            headers = {"X-Console-Fragment": "1"} if fragment else {}
            caplog.clear()
            status, sent, body = await asyncio.to_thread(client.get, path, **headers)
            assert status == 503, (path, status, body)
            assert sent["retry-after"] == "1"
            assert "database" in body.lower() and "unavailable" in body.lower() and "retry later" in body
            assert "internal error" not in body and "Traceback" not in body
            if fragment:
                assert sent["content-type"].startswith("text/plain") and "<html" not in body
            else:
                assert sent["content-type"].startswith("text/html") and "Database unavailable" in body
            records = [r for r in caplog.records if r.name.startswith("wfe_sqlite.console")]
            assert len(records) == 1, [r.getMessage() for r in records]
            assert records[0].levelno == logging.WARNING and records[0].exc_info is None
            assert "database unavailable" in records[0].getMessage()
            assert "\n" not in records[0].getMessage()
    finally:
        await console.close()
        await provider.close()


# -- the setting ----------------------------------------------------------------------------------


def test_console_listen_is_loopback_unless_insecure(tmp_path: Path) -> None:
    db = f"sqlite://{tmp_path / 'wfe.db'}"
    with pytest.raises(ConfigError, match="console_listen"):
        check(ServerConfig(db=db, console_listen="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="console_listen"):
        check(ServerConfig(db=db, console_listen="0.0.0.0:0", tokens=("t",)))  # plain HTTP: tokens do not help
    check(ServerConfig(db=db, console_listen="0.0.0.0:0", insecure=True))
    warnings = start_up_warnings(ServerConfig(db=db, console_listen="0.0.0.0:0", insecure=True, tokens=("t",)))
    assert any(w.startswith("console_listen 0.0.0.0:0 is reachable") and "in clear" in w for w in warnings)
    assert not start_up_warnings(ServerConfig(db=db, console_listen="127.0.0.1:0"))
    check(ServerConfig(db=db, console_listen="[::1]:0"))
    result = subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", db, "--listen", "127.0.0.1:0", "--console-listen", "192.0.2.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid setting console_listen" in result.stderr and "--insecure" in result.stderr
    result = subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", db, "--console-listen", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "console_listen" in result.stderr


def test_console_listen_from_the_environment_and_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "wfe.toml"
    config.write_text('console_listen = "127.0.0.1:0"\n')
    for env, args in (({"WFE_SQLITE_CONSOLE_LISTEN": "127.0.0.1:0"}, []), ({}, ["--config", str(config)])):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wfe_sqlite.cli",
                "serve",
                "--db",
                f"sqlite://{tmp_path / 'x.db'}",
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("listening on ")
            line = process.stdout.readline().strip()
            assert line.startswith("console on http://127.0.0.1:"), line
            url = line.split("console on ", 1)[1]
            status, _, body = Client(url).get("/events")
            assert status == 200 and 'id="event-list"' in body
        finally:
            process.kill()
            process.wait(30)


async def test_console_is_off_by_default(db_url: str) -> None:
    running = await RunningServer.start(ServerConfig(db=db_url, listen="127.0.0.1:0", grace=1.0))
    try:
        assert running.console is None
    finally:
        await running.stop()


def test_an_empty_store_says_so_on_every_page(tmp_path: Path) -> None:
    """A new, empty database: every page answers 200 and says in words that there is nothing yet;
    the overview's latest workflows said 'No workflows match.', as if a filter were set."""
    server, url = start_console_server(f"sqlite://{tmp_path / 'empty.db'}")
    try:
        client = Client(url)
        status, _, overview = client.get("/")
        assert status == 200
        assert overview.count("No workflows yet.") == 2 and "No workflows match." not in overview
        assert "No execution errors." in overview
        assert "0 events in all, 0 open subscriptions, 0 execution errors." in overview
        for path, text in (
            ("/workflows", "No workflows match."),
            ("/workflows?q=nothing", "0 workflows matching"),
            ("/events", "No events match."),
            ("/events?name=a&key=b", "No subscriptions."),
        ):
            status, _, body = client.get(path)
            assert status == 200 and text in body, path

        async def one_of_each() -> None:
            async with GrpcPersistenceProvider.connect(server.address) as store:
                wid = await store.create_new_workflow(WorkflowInstance.new("one", 1, None))
                await store.create_event(Event.new("one", "k", None))
                now = datetime.now(UTC)
                await store.create_event_subscription(EventSubscription.new(wid, 0, "p", "one", "k", now))
                await store.persist_errors([ExecutionError.new(wid, "p", "boom")])

        run_async(one_of_each)
        deadline = time.monotonic() + 30  # the overview's counts are kept for OVERVIEW_TTL (2 s)
        while "0 events in all" in overview and time.monotonic() < deadline:
            time.sleep(0.2)
            status, _, overview = client.get("/")
            assert status == 200
        # before: "1 events in all, 1 open subscriptions, 1 execution errors."
        assert "1 event in all, 1 open subscription, 1 execution error." in overview, overview
    finally:
        server.kill()


def test_event_pages_follow_older_links_to_the_end(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    client, seeded, server = open_console
    base = seeded.now - timedelta(days=30)

    async def add() -> list[str]:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            ids = []
            for i in range(57):
                event = Event.new("bulk.tick", str(i), {"i": i})
                event.event_time = base + timedelta(seconds=i // 3)  # ties: ordered by id
                ids.append(await store.create_event(event))
            return ids

    ids = set(run_async(add))
    seen: list[str] = []
    path = "/events?name=bulk.tick"
    for _ in range(5):
        status, _, body = client.get(path)
        assert status == 200
        seen += re.findall(r'<td class="mono">([^<]+)</td>', body)
        older = re.search(r'<a class="button" rel="next" href="([^"]+)">Older', body)
        if older is None:
            break
        path = html.unescape(older.group(1))
        assert "before=" in path and "name=bulk.tick" in path
    assert len(seen) == len(set(seen)) == 57 and set(seen) == ids
    assert client.get("/events?name=bulk.tick&state=processed")[2].count('<td class="mono">') == 0


def test_a_raw_utf8_request_target_is_read_as_utf8(open_console: tuple[Client, Seeded, ServerProcess]) -> None:
    """curl and scripts send ``?q=Zürich`` as raw UTF-8 bytes, not percent-encoded. The request
    line was decoded as Latin-1, so the search looked for 'ZÃ¼rich' and found nothing, and an
    event name came back in its field as mojibake. Now a raw target is read as UTF-8, and one that
    is not UTF-8 is refused with 400 in words."""
    client, _, server = open_console

    async def add() -> str:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            workflow = WorkflowInstance.new("unicode-flow", 1, {"city": "Zürich"})
            workflow.name = "Zürich 東京 🚀"
            await store.create_new_workflow(workflow)
            await store.create_event(Event.new("ereignis-ü", "schlüssel", {"x": "é"}))
            return workflow.id

    workflow_id = run_async(add)

    def get(target: bytes) -> tuple[bytes, str]:
        answer = _raw(client, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0], body.decode("utf-8")

    status, body = get("/workflows?q=Zürich".encode())
    assert status == b"HTTP/1.1 200 OK" and "1 workflow matching “Zürich”" in body
    assert "Zürich 東京 🚀" in body and workflow_id in body
    status, body = get("/events?name=ereignis-ü&key=schlüssel".encode())
    assert status == b"HTTP/1.1 200 OK"
    assert 'value="ereignis-ü"' in body and 'value="schlüssel"' in body and "No events match." not in body
    status, body = get(b"/workflows?q=\xff\xfe")
    assert status == b"HTTP/1.1 400 Bad Request" and "UTF-8" in body


def test_the_header_never_shows_a_database_password() -> None:
    assert database_label("sqlite:///var/lib/wfe.db") == "sqlite:///var/lib/wfe.db"
    assert database_label(":memory:") == ":memory:"
    assert database_label("postgresql://wfe:s3cret@db.local:5432/wfe") == "postgresql://wfe@db.local:5432/wfe"


def test_the_header_never_shows_a_password_given_as_a_query_parameter(pg_url: str) -> None:
    """libpq (and asyncpg) also take the password as ``?password=``: the console's header showed
    it to whoever could open the console. The test cluster trusts every connection, so any password
    connects."""
    secret = "query-s3cr3t-password"
    db = pg_url + ("&" if "?" in pg_url else "?") + urllib.parse.urlencode({"password": secret})
    server, url = start_console_server(db)
    try:
        status, _, body = Client(url).get("/")
        assert status == 200 and secret not in body
        header = re.search(r'<span class="db" title="database">([^<]*)</span>', body)
        assert header is not None and "postgresql://" in header.group(1) and "password" not in header.group(1)
    finally:
        server.kill()
    assert database_label("postgresql:///wfe?host=/run/pg&password=s3cret&sslmode=require") == (
        "postgresql:///wfe?host=/run/pg&sslmode=require"
    )
    assert database_label("postgres://wfe:pw@db/wfe?PASSWORD=s3cret") == "postgres://wfe@db/wfe"


def test_sigterm_with_console_connections_open_stops_cleanly(tmp_path: Path) -> None:
    server, url = start_console_server(f"sqlite://{tmp_path / 'wfe.db'}")
    try:
        client = Client(url)
        idle = socket.create_connection((client.host, client.port), timeout=10)  # connected, says nothing
        kept = http.client.HTTPConnection(client.host, client.port, timeout=10)
        kept.request("GET", "/events", headers={"Host": f"{client.host}:{client.port}"})
        response = kept.getresponse()
        assert response.status == 200 and response.getheader("connection") == "keep-alive"
        response.read()
        started = time.monotonic()
        assert server.terminate(timeout=30) == 0
        assert time.monotonic() - started < 10
        idle.close()
        kept.close()
    finally:
        server.kill()


def test_the_console_line_is_json_with_json_logs(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            str(WFE_SQLITE),
            "serve",
            "--db",
            f"sqlite://{tmp_path / 'wfe.db'}",
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["message"].startswith("listening on ")
        line = json.loads(process.stdout.readline())
        assert line["message"] == f"console on {line['url']}" and line["url"].startswith("http://127.0.0.1:")
        status, _, body = Client(line["url"].rstrip("/")).get("/events")
        assert status == 200 and 'id="event-list"' in body
    finally:
        process.kill()
        process.wait(30)


def test_the_console_on_postgresql_shows_every_page(pg_url: str) -> None:
    """``serve --db postgresql://... --console-listen``: the overview, the list with a filter and a
    search, one workflow, the events; what the store holds shows, escaped."""
    server, url = start_console_server(pg_url)
    try:

        async def fill() -> Seeded:
            async with GrpcPersistenceProvider.connect(server.address) as store:
                return await seed(store)

        seeded = run_async(fill)
        client = Client(url)
        status, _, overview = client.get("/")
        assert status == 200
        assert "order-flow" in overview and "&lt;script&gt;alert(1)&lt;/script&gt;" in overview
        assert XSS_NAME not in overview
        card = f'<span class="card-label">Workflows</span><span class="card-value">{len(seeded.workflows)}</span>'
        assert card in overview
        order = seeded.workflows["order-4"]
        status, _, listed = client.get("/workflows?status=COMPLETE&definition=order-flow")
        assert status == 200
        for w in seeded.workflows.values():
            expected = w.status.name == "COMPLETE" and w.workflow_definition_id == "order-flow"
            assert (w.id in listed) == expected, (w.id, w.status, w.workflow_definition_id)
        status, _, found = client.get("/workflows?q=" + urllib.parse.quote(order.reference or ""))
        assert status == 200 and order.id in found
        others = [w for label, w in seeded.workflows.items() if label != "order-4" and w.reference != order.reference]
        assert all(w.id not in found for w in others)
        status, _, one = client.get("/workflows/" + urllib.parse.quote(order.id, safe=""))
        assert status == 200 and "ChargeCard" in one and order.id in one
        xss = seeded.workflows["xss"]
        _, _, escaped = client.get("/workflows/" + urllib.parse.quote(xss.id, safe=""))
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped and XSS_NAME not in escaped
        status, _, events = client.get("/events")
        assert status == 200
        assert all(html.escape(e.event_name) in events for e in seeded.events)
    finally:
        server.kill()
