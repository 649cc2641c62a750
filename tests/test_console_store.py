"""The console's own reads (the store's console operations, ``_console_store`` on SQLite and
``_postgres_visibility`` on PostgreSQL, through ``ConsoleReads``) on a real SQLite file and a real
PostgreSQL database: what they return, and their query plans (SQLite's; PostgreSQL's are in
``test_query_plans``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from console_seed import seed
from wfe_client import Event, EventSubscription, WorkflowInstance, WorkflowStatus
from wfe_sqlite import SqlitePersistenceProvider, open_provider
from wfe_sqlite._schema import SCHEMA_VERSION
from wfe_sqlite.console._reads import ConsoleReads, format_event_cursor, parse_event_cursor


async def test_overview_counts_what_was_written(store_url: str) -> None:
    store = await open_provider(store_url)
    try:
        seeded = await seed(store)
        overview = await ConsoleReads(store).overview()
    finally:
        await store.close()
    assert overview.by_status == {s.name: seeded.by_status.get(s.name, 0) for s in WorkflowStatus}
    assert overview.workflows == len(seeded.workflows) == 20
    assert {d.definition_id: {k: v for k, v in d.by_status.items() if v} for d in overview.definitions} == (
        seeded.by_definition
    )
    assert overview.definitions[0].definition_id == "order-flow"  # most workflows first
    assert overview.definition_count == 4
    figures = overview.figures
    # Runnable now: the report due 30 s ago and the hostile workflow (next_execution 0).
    assert (figures.runnable_workflows, figures.unprocessed_events) == (2, 3)
    assert (figures.due_commands, figures.claimed_commands, figures.held_tokens) == (2, 1, 1)
    assert overview.events == len(seeded.events) == 5
    open_subscriptions = sum(1 for s in seeded.subscriptions) - 1  # invoice-3's was terminated
    assert overview.subscriptions_open == open_subscriptions
    assert overview.errors == len(seeded.errors) == 7
    assert overview.database_bytes > 0
    assert overview.recent_errors[0].message == seeded.errors[-1].message  # newest first
    assert overview.recent_errors[0].workflow_name == seeded.workflows["xss"].name


async def test_overview_is_shared_for_a_moment_then_read_again(store_url: str) -> None:
    provider = await open_provider(store_url)
    try:
        store = ConsoleReads(provider, overview_ttl=60)
        first = await store.overview()
        await provider.create_new_workflow(WorkflowInstance.new("flow", 1, {}))
        assert (await store.overview()) is first
        fresh = ConsoleReads(provider, overview_ttl=0)
        assert (await fresh.overview()).workflows == first.workflows + 1
    finally:
        await provider.close()


async def test_events_page_filters_and_pages_newest_first(store_url: str) -> None:
    provider = await open_provider(store_url)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        written = []
        for i in range(25):
            event = Event.new("paid" if i % 2 else "shipped", f"k{i % 3}", {"i": i})
            event.event_time = base + timedelta(seconds=i // 2)  # pairs share an instant: ties by id
            await provider.create_event(event)
            if i % 5 == 0:
                await provider.mark_event_processed(event.id)
                event.is_processed = True
            written.append(event)
        store = ConsoleReads(provider)

        def expected(keep: Callable[[Event], bool]) -> list[str]:
            chosen = [e for e in written if keep(e)]
            return [e.id for e in sorted(chosen, key=lambda e: (e.event_time, e.id), reverse=True)]

        async def all_pages(**filters: object) -> list[str]:
            ids: list[str] = []
            cursor = None
            for _ in range(30):
                page = await store.events(before=cursor, limit=4, **filters)
                assert len(page.items) <= 4
                ids.extend(e.id for e in page.items)
                if page.next_cursor is None:
                    return ids
                cursor = parse_event_cursor(format_event_cursor(page.next_cursor))
            raise AssertionError("paging did not end")

        assert await all_pages() == expected(lambda e: True)
        assert await all_pages(processed=False) == expected(lambda e: not e.is_processed)
        assert await all_pages(processed=True) == expected(lambda e: e.is_processed)
        assert await all_pages(event_name="paid") == expected(lambda e: e.event_name == "paid")
        assert await all_pages(event_name="paid", event_key="k1") == expected(
            lambda e: e.event_name == "paid" and e.event_key == "k1"
        )
        assert await all_pages(event_name="paid", event_key="k1", processed=False) == expected(
            lambda e: e.event_name == "paid" and e.event_key == "k1" and not e.is_processed
        )
        assert await all_pages(event_name="nothing") == []
        first = (await store.events(limit=1)).items[0]
        assert first.event_data == {"i": 24} and first.is_processed is False
    finally:
        await provider.close()


def test_event_cursor_rejects_what_it_did_not_write() -> None:
    assert parse_event_cursor(format_event_cursor((5, "a"))) == (5, "a")
    for text in ("", "[1]", '["1","a"]', '[true,"a"]', "[1,2]", "{}", "nonsense"):
        assert parse_event_cursor(text) is None, text


async def test_open_subscriptions_of_one_event(store_url: str) -> None:
    provider = await open_provider(store_url)
    now = datetime.now(UTC)
    try:
        subs = []
        for n in range(4):
            sub = EventSubscription.new(f"w{n}", 0, "p0", "paid", "k1" if n < 3 else "k2", now - timedelta(seconds=n))
            await provider.create_event_subscription(sub)
            subs.append(sub)
        await provider.terminate_subscription(subs[1].id)
        waiting = await ConsoleReads(provider).open_subscriptions("paid", "k1")
        assert [s.id for s in waiting] == [subs[2].id, subs[0].id]  # oldest first, the terminated one left out
        assert waiting[0].workflow_id == "w2" and waiting[0].subscribe_as_of == subs[2].subscribe_as_of
        assert await ConsoleReads(provider).open_subscriptions("paid", "nope") == []
    finally:
        await provider.close()


async def test_console_queries_use_indexes(tmp_path: Path) -> None:
    """Every console query but the overview's counts finds its rows through an index."""
    path = tmp_path / "plans.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    statements: list[str] = []
    try:
        await seed(provider)
        store = ConsoleReads(provider)
        await provider.database.set_trace_callback(statements.append)
        cursor = (2**62, "z")
        for processed in (None, True, False):
            await store.events(processed=processed, before=cursor)
            await store.events(processed=processed, event_name="order.paid", before=cursor)
            await store.events(processed=processed, event_name="order.paid", event_key="1001", before=cursor)
        await store.open_subscriptions("order.paid", "1001")
        await provider.database.set_trace_callback(None)
    finally:
        await provider.close()
    checked = sorted({s for s in statements if s.lstrip().upper().startswith("SELECT")})
    assert len(checked) >= 10, checked
    conn = sqlite3.connect(path)
    plans = {s: [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + s)] for s in checked}
    conn.close()
    scans = {s: p for s, p in plans.items() if any(step.startswith("SCAN ") and " USING " not in step for step in p)}
    assert not scans, scans
    everything = " | ".join(step for plan in plans.values() for step in plan)
    for index in ("events_by_time", "events_runnable", "events_by_name_key", "subscriptions_open"):
        assert index in everything, (index, plans)


async def test_a_version_3_file_gets_the_console_index(tmp_path: Path) -> None:
    """Migration 4 adds ``events_by_time`` to a file made before the console, keeping its events."""
    path = tmp_path / "v3.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    await provider.create_event(Event.new("paid", "1", {}))
    await provider.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX events_by_time")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    try:
        page = await ConsoleReads(provider).events()
        assert [e.event_name for e in page.items] == ["paid"]
    finally:
        await provider.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_by_time'").fetchone() == (1,)
    finally:
        conn.close()
