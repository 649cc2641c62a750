"""Console sign-in: the server's bearer tokens, checked in constant time, and server-side sessions.

A browser that presents an accepted token gets a random session id in an HttpOnly, SameSite=Strict
cookie; the token itself never goes into the cookie. Sessions live in this process only (a restart
signs everyone out) and expire ``SESSION_SECONDS`` after sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

__all__ = ["COOKIE", "SESSION_SECONDS", "Sessions"]

COOKIE = "wfe_console_session"
SESSION_SECONDS = 12 * 3600
"""How long a sign-in lasts."""
MAX_SESSIONS = 1000
"""Sessions kept at most; signing in past that drops the oldest."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Sessions:
    """The accepted tokens and the sessions signed in with them."""

    def __init__(self, tokens: Iterable[str]) -> None:
        # Digests have one length, so comparing them takes as long whatever the presented token.
        self._tokens = tuple(_digest(token) for token in tokens)
        self._sessions: dict[str, float] = {}

    @property
    def required(self) -> bool:
        """Whether signing in is needed at all (tokens are configured)."""
        return bool(self._tokens)

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is one of the tokens, compared in constant time with each of them."""
        presented = _digest(token)
        accepted = False
        for known in self._tokens:
            accepted |= hmac.compare_digest(presented, known)
        return accepted

    def sign_in(self, token: str) -> str | None:
        """A new session id when ``token`` is accepted, else None."""
        if not self.accepts(token):
            return None
        now = time.monotonic()
        self._drop_expired(now)
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_SECONDS
        return session

    def valid(self, session: str | None) -> bool:
        """Whether ``session`` is a live session id (always True when no tokens are configured)."""
        if not self.required:
            return True
        if not session:
            return False
        expiry = self._sessions.get(session)
        if expiry is None:
            return False
        if expiry <= time.monotonic():
            del self._sessions[session]
            return False
        return True

    def sign_out(self, session: str | None) -> None:
        if session:
            self._sessions.pop(session, None)

    def _drop_expired(self, now: float) -> None:
        for session in [s for s, expiry in self._sessions.items() if expiry <= now]:
            del self._sessions[session]
