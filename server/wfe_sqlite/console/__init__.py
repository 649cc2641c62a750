"""The read-only web console: an HTTP server in the server process, reading the same store.

``Console.start(listen)`` serves it on HOST:PORT (port 0 picks a free port) until ``close``. When
``tokens`` are given it asks for one of them and keeps a server-side session in an HttpOnly,
SameSite=Strict cookie; without tokens it shows everything to whoever reaches it, which is why the
server keeps it on loopback unless told ``--insecure``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from .._config import is_loopback, split_host_port
from .._provider import StoreProvider
from ._app import ConsoleApp
from ._http import HttpServer

__all__ = ["Console", "ConsoleApp", "database_label"]


_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
"""libpq connection parameters that hold a secret, left out of the label wherever they are."""


def database_label(url: str) -> str:
    """``url`` as the console's header shows it: without a password, should the URL carry one
    (in its user part, or, PostgreSQL's, as a ``password``/``sslpassword`` query parameter)."""
    parts = urllib.parse.urlsplit(url)
    label = url
    if "@" in parts.netloc:
        user, _, host = parts.netloc.rpartition("@")
        label = urllib.parse.urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}@{host}"))
    base, question, rest = label.partition("?")
    if not question or not label.startswith(("postgresql://", "postgres://")):
        return label
    query, hash_sign, fragment = rest.partition("#")
    kept = [
        pair
        for pair in query.split("&")
        if urllib.parse.unquote_plus(pair.split("=", 1)[0]).strip().lower() not in _SECRET_PARAMETERS
    ]
    return base + ("?" + "&".join(kept) if any(kept) else "") + hash_sign + fragment


class Console:
    """The console of one provider, served over HTTP."""

    def __init__(self, provider: StoreProvider, tokens: Iterable[str], database: str) -> None:
        self._provider = provider
        self._tokens = tuple(tokens)
        self._label = database_label(database)
        self._http: HttpServer | None = None
        self.address: str | None = None
        """HOST:PORT it listens on (the real port), once started."""

    async def start(self, listen: str) -> str:
        """Listen on ``listen`` (HOST:PORT); the real HOST:PORT. A loopback address only answers
        requests whose Host header names a loopback host (no DNS rebinding)."""
        host, port = split_host_port(listen)
        app = ConsoleApp(self._provider, self._tokens, self._label, check_host=is_loopback(host))
        http = HttpServer(app)
        try:
            bound = await http.start(host or None, port)
        except OSError as error:
            raise OSError(f"cannot serve the console on {listen}: {error}") from error
        self._http = http
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        return self.address

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
