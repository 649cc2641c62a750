"""What ``connect`` and ``open`` return: ``await`` it for the object, or ``async with`` it to have the
object closed at the end. Shared by the gRPC providers and the server's embedded providers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Opening"]


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class Opening(Generic[C]):
    """``await X.connect(...)`` / ``await X.open(...)``, or ``async with`` either ``as x``."""

    def __init__(self, opening: Callable[[], Awaitable[C]]) -> None:
        self._opening = opening
        self._opened: C | None = None

    def __await__(self) -> Generator[Any, None, C]:
        return self._opening().__await__()

    async def __aenter__(self) -> C:
        self._opened = await self._opening()
        return self._opened

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._opened is not None:
            await self._opened.close()
