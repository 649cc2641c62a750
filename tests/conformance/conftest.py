"""TEMPORARY local fixtures for the conformance suite (embedded provider only).

To be deleted once ``tests/conftest.py`` (owned by the lead) provides ``provider`` (params
"embedded" and "grpc") and ``db_path``; the fixture names here are the same.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from wfe_client import PersistenceProvider
from wfe_sqlite import SqlitePersistenceProvider


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "wfe.db"


@pytest.fixture(params=["embedded"])
async def provider(request: pytest.FixtureRequest, db_path: pathlib.Path) -> AsyncIterator[PersistenceProvider]:
    store = await SqlitePersistenceProvider.open(f"sqlite:///{db_path}")
    try:
        yield store
    finally:
        await store.close()
