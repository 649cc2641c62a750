"""A small HTTP/1.1 server on ``asyncio.start_server``: enough for a console, nothing more.

It reads a request head (bounded), an optional ``Content-Length`` body (bounded), hands a
``Request`` to the application and writes its ``Response``; connections are kept alive between
requests until idle for a while. Every response carries the security headers of ``SECURITY_HEADERS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from wfe_client.errors import StorageUnavailable

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "SECURITY_HEADERS",
    "HttpServer",
    "Request",
    "Response",
    "UnsafeHeader",
    "one_line",
    "unavailable_response",
]

LOG = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
"""Largest request line plus headers, in bytes."""
MAX_BODY = 16 * 1024
"""Largest request body (a login form), in bytes."""
HEAD_TIMEOUT = 10.0
"""Seconds a started request head may take to arrive."""
IDLE_TIMEOUT = 30.0
"""Seconds a kept-alive connection may stay idle."""
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
"""After refusing a request: how long and how much of the rest of it is read and dropped."""
MAX_CONNECTIONS = 64
"""Open connections at most; more are answered 503 and closed."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),  # no-referrer would make form posts send "Origin: null"
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)

_REASONS = {
    200: "OK",
    303: "See Other",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class UnsafeHeader(ValueError):
    """A response header that must not be sent as it is."""


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name: an RFC 9110 token."""
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?|")
"""A header value sent by the console: printable ASCII, inner spaces only (no tab, no control
character, nothing a client could decode otherwise)."""


@dataclass
class Request:
    """One parsed request."""

    method: str
    target: str
    headers: dict[str, str]
    """Header names in lower case; repeated headers joined with ``, ``."""
    body: bytes = b""
    peer: str = ""

    @property
    def path(self) -> str:
        """The raw (still percent-encoded) path of the target."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        _, _, text = self.target.partition("?")
        return urllib.parse.parse_qs(text, keep_blank_values=False)

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, stripped; None when absent or blank."""
        values = self.query.get(name)
        if not values:
            return None
        value = values[0].strip()
        return value or None

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form (first value of each field)."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        return {k: v[0] for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}


@dataclass
class Response:
    """What to send back; ``SECURITY_HEADERS`` are added to every one."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    cache: str = "no-store"

    def head(self, keep_alive: bool) -> bytes:
        """The status line and headers; ``UnsafeHeader`` when a header name or value could end
        the header early or be read differently by a client (CR, LF, other controls, non-ASCII)."""
        fields: list[tuple[str, str]] = []
        if self.status != 304:
            fields.append(("Content-Type", self.content_type))
        fields.append(("Content-Length", str(len(self.body))))
        fields.append(("Cache-Control", self.cache))
        fields.extend((*SECURITY_HEADERS, *self.headers))
        fields.append(("Connection", "keep-alive" if keep_alive else "close"))
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}"]
        for name, value in fields:
            if not _TOKEN.fullmatch(name):
                raise UnsafeHeader(f"unsafe header name {name!r}")
            if not _FIELD_VALUE.fullmatch(value):
                raise UnsafeHeader(f"unsafe value of header {name}: {value!r}")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text_response(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode(), "text/plain; charset=utf-8")


RETRY_AFTER = "1"
"""Seconds a client is told to wait (``Retry-After``) while the database is unavailable."""


def unavailable_response(body: bytes = b"database unavailable, retry later\n", content_type: str = "") -> Response:
    """503 with ``Retry-After``: the store raised ``StorageUnavailable`` (the gRPC side's UNAVAILABLE)."""
    return Response(503, body, content_type or "text/plain; charset=utf-8", [("Retry-After", RETRY_AFTER)])


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (a database's message may span several)."""
    return " ".join(str(error).split())


def _parse_head(data: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise _BadRequest(400, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not target.isascii():
        # Browsers percent-encode; curl and scripts send other characters as raw UTF-8 bytes.
        try:
            target = target.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRequest(400, "the request target is not UTF-8 (percent-encode it)") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return method, target, version, headers


class HttpServer:
    """Serves ``handler`` on HOST:PORT until ``close``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str | None, port: int) -> int:
        """Listen on ``host`` (None: every interface); the bound port (the real one when ``port`` is 0)."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end open connections."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await self._send(writer, _text_response(503, "too many connections"), False, False)
                return
            peer = writer.get_extra_info("peername")
            peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            while await self._one(reader, writer, peer_text):
                pass
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> bool:
        """Serve one request; whether the connection stays open for another."""
        try:
            first = await asyncio.wait_for(reader.read(1), IDLE_TIMEOUT)
            if not first:
                return False
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            method, target, version, headers = _parse_head(first + rest[:-4])
            keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
            if "transfer-encoding" in headers:
                raise _BadRequest(411, "send a Content-Length body")
            length_text = headers.get("content-length", "0")
            if not (length_text.isascii() and length_text.isdigit()):
                raise _BadRequest(400, "bad Content-Length")
            # int() refuses more than 4,300 digits: a length that long is too large whatever it says.
            digits = length_text.lstrip("0")
            length = int(digits or "0") if len(digits) <= len(str(MAX_BODY)) else MAX_BODY + 1
            if length > MAX_BODY:
                raise _BadRequest(413, "request body too large")
            body = await asyncio.wait_for(reader.readexactly(length), HEAD_TIMEOUT) if length else b""
        except asyncio.LimitOverrunError:
            await self._refuse(reader, writer, _text_response(431, "request head too large"))
            return False
        except _BadRequest as error:
            await self._refuse(reader, writer, _text_response(error.status, str(error)))
            return False
        request = Request(method, target, headers, body, peer)
        try:
            response = await self._handler(request)
        except StorageUnavailable as error:
            LOG.warning("console: %s %r: database unavailable: %s", method, target, one_line(error))
            response = unavailable_response()
        except Exception:
            LOG.exception("console: %s %r failed", method, target)
            response = _text_response(500, "internal error (see the server log)")
        await self._send(writer, response, keep_alive, method == "HEAD")
        return keep_alive

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: Response) -> None:
        """Answer a request that cannot be served, then drain what the client still sends for a
        moment before closing (closing on unread bytes resets the connection, and the client could
        lose the answer)."""
        await self._send(writer, response, False, False)
        with contextlib.suppress(Exception):
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        drained = 0
        with contextlib.suppress(Exception):
            while drained < LINGER_BYTES:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                chunk = await asyncio.wait_for(reader.read(65536), left)
                if not chunk:
                    break
                drained += len(chunk)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, keep_alive: bool, head_only: bool) -> None:
        try:
            head = response.head(keep_alive)
        except UnsafeHeader as error:
            LOG.error("console: not sending a %d response: %s", response.status, error)
            response = _text_response(500, "internal error (see the server log)")
            head = response.head(keep_alive)
        writer.write(head)
        if not head_only and response.status != 304:
            writer.write(response.body)
        await writer.drain()
