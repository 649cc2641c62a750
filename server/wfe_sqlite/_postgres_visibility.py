"""Visibility, clean-up and the web console's reads on PostgreSQL: list, full-text search, delete,
purge, one workflow's details, the overview, the event list. The SQL of these operations is here;
``PostgresStore`` inherits ``PostgresVisibility`` (as ``SqliteStore`` inherits ``SqliteVisibility``).

Schema (``VISIBILITY_MIGRATION``, PostgreSQL schema version 3): an index behind every list filter,
as on SQLite (ids ordered with the "C" collation, bytewise like SQLite, whatever the database's
locale); full text in ``workflows.search``, a ``tsvector`` that a trigger computes in the
transaction of every insert and of every update that changes the name, reference, description or
data, with a GIN index.

Full text: the text search configuration ``wfe_search`` is ``simple`` (no stemming, no stop words:
whole words, as FTS5's unicode61) with ``unaccent`` before it where the extension can be created
(case and accents ignored). Document and query go through the same steps: ASCII punctuation becomes
a space (``wfe_search_text``: ``order-77`` is the words "order" and "77", never PostgreSQL's
hyphenated-word, e-mail, URL or file-path tokens), then the configuration. Each search term is a
``phraseto_tsquery`` (its words in this order), ``:*`` on its last word for ``word*``, all
terms ANDed; nothing in the user's text is query syntax.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from wfe_client.errors import InvalidArgument, WorkflowNotFound
from wfe_client.models import WorkflowStatus

from ._console_rows import OverviewRows
from ._queue_store import WORKFLOW
from ._rows import ErrorRow, EventRow, PageKey, PointerRow, SubscriptionRow, WorkflowRow
from ._store import LiveFigures
from ._visibility_rows import DetailsRows, FilterRow, SummaryRow, search_terms
from ._visibility_store import PURGE_BATCH, PURGE_FIRST_BATCH, next_batch_size

__all__ = ["VISIBILITY_MIGRATION", "PostgresVisibility", "search_tsquery"]

T = TypeVar("T")

VISIBILITY_MIGRATION = r"""
-- Behind every filter of ListWorkflows: one status, or one definition and one status, newest first
-- (ties by id, bytewise); a reference; purge by status and age; delete by workflow.
CREATE INDEX workflows_by_status ON workflows (status, create_time, id COLLATE "C");
CREATE INDEX workflows_by_definition ON workflows (workflow_definition_id, status, create_time, id COLLATE "C");
CREATE INDEX workflows_by_reference ON workflows (reference, create_time, id COLLATE "C")
    WHERE reference IS NOT NULL;
CREATE INDEX workflows_by_age ON workflows (status, (coalesce(complete_time, create_time)));
CREATE INDEX subscriptions_by_workflow ON event_subscriptions (workflow_id);
-- The web console's event list, newest first.
CREATE INDEX events_by_time ON events (event_time, id COLLATE "C");

-- Full text. unaccent is a trusted extension (a database owner may create it); where it cannot be
-- created, accents count.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS unaccent;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'wfe-sqlite: extension unaccent not available (%): search will not ignore accents', SQLERRM;
END
$$;
CREATE TEXT SEARCH CONFIGURATION wfe_search (COPY = pg_catalog.simple);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_ts_dict WHERE dictname = 'unaccent') THEN
        ALTER TEXT SEARCH CONFIGURATION wfe_search
            ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword, hword_asciipart,
                hword_part, hword_numpart, email, url, host, url_path, file, sfloat, float, int, uint,
                version, tag, entity, protocol
            WITH unaccent, simple;
    END IF;
END
$$;

-- ASCII punctuation and controls become spaces: words are runs of letters and digits.
CREATE FUNCTION wfe_search_text(text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT regexp_replace($1, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' ', 'g') $$;

-- The words of a workflow. A text over a million bytes is indexed by its first 250,000 characters
-- (a tsvector holds at most 1 MB of distinct words).
CREATE FUNCTION wfe_workflow_search(name text, reference text, description text, data text) RETURNS tsvector
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
DECLARE
    doc text := concat_ws(' ', name, reference, description, data);
BEGIN
    IF octet_length(doc) > 1000000 THEN
        doc := left(doc, 250000);
    END IF;
    RETURN to_tsvector('wfe_search', wfe_search_text(doc));
END
$$;

ALTER TABLE workflows ADD COLUMN search tsvector;
UPDATE workflows SET search = wfe_workflow_search(name, reference, description, data);

CREATE FUNCTION wfe_workflows_search_trigger() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name
        AND NEW.reference IS NOT DISTINCT FROM OLD.reference
        AND NEW.description IS NOT DISTINCT FROM OLD.description
        AND NEW.data IS NOT DISTINCT FROM OLD.data THEN
        NEW.search := OLD.search;
    ELSE
        NEW.search := wfe_workflow_search(NEW.name, NEW.reference, NEW.description, NEW.data);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER workflows_search BEFORE INSERT OR UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION wfe_workflows_search_trigger();
CREATE INDEX workflows_search ON workflows USING gin (search);
"""
"""Schema version 3 of PostgreSQL: visibility and the console."""

_ALL_STATUSES = tuple(s.name for s in WorkflowStatus)
_SUMMARY = ", ".join(SummaryRow._fields)
_NEWEST_FIRST = 'ORDER BY create_time DESC, id COLLATE "C" DESC'
_WORKFLOW = ", ".join(WorkflowRow._fields)
_POINTER = ", ".join(PointerRow._fields)
_SUBSCRIPTION = ", ".join(SubscriptionRow._fields)
_ERROR = ", ".join(ErrorRow._fields)
_EVENT = ", ".join(EventRow._fields)


class _Params:
    """Numbered query parameters: ``add`` a value, get its ``$n``."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


def _window(f: FilterRow, after: PageKey | None, p: _Params) -> list[str]:
    """The creation-window and keyset conditions."""
    terms: list[str] = []
    if f.created_after is not None:
        terms.append(f"create_time >= {p.add(f.created_after, '::bigint')}")
    if f.created_before is not None:
        terms.append(f"create_time < {p.add(f.created_before, '::bigint')}")
    if after is not None:
        terms.append(f'(create_time, id COLLATE "C") < ({p.add(after[0], "::bigint")}, {p.add(after[1], "::text")})')
    return terms


def list_query(f: FilterRow, limit: int, after: PageKey | None) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page of a list, newest first.

    With a reference: its index gives the order, the other filters are checked per row. Else one
    ordered index range per status (``workflows_by_definition`` with a definition, else
    ``workflows_by_status``), each limited, merged by a Merge Append: never a sort of every
    matching row."""
    p = _Params()
    if f.reference is not None:
        terms = [f"reference = {p.add(f.reference, '::text')}", *_window(f, after, p)]
        if f.statuses:
            terms.append(f"status = ANY({p.add(list(f.statuses), '::text[]')})")
        if f.definition_id is not None:
            terms.append(f"workflow_definition_id = {p.add(f.definition_id, '::text')}")
        size = p.add(limit, "::bigint")
        return f"SELECT {_SUMMARY} FROM workflows WHERE {' AND '.join(terms)} {_NEWEST_FIRST} LIMIT {size}", p.values
    statuses = f.statuses or _ALL_STATUSES
    prefix = [] if f.definition_id is None else [f"workflow_definition_id = {p.add(f.definition_id, '::text')}"]
    window = _window(f, after, p)
    size = p.add(limit, "::bigint")
    runs = [
        f"(SELECT {_SUMMARY} FROM workflows WHERE "
        + " AND ".join([*prefix, f"status = {p.add(status, '::text')}", *window])
        + f" {_NEWEST_FIRST} LIMIT {size})"
        for status in statuses
    ]
    if len(runs) == 1:
        return runs[0][1:-1], p.values
    return f"SELECT {_SUMMARY} FROM ({' UNION ALL '.join(runs)}) AS runs {_NEWEST_FIRST} LIMIT {size}", p.values


async def search_tsquery(conn: asyncpg.Connection, text: object) -> str:
    """The ``tsquery`` (as text) of a user's search text: every term a phrase of its words, the last
    one a prefix for ``word*``, all of them required. InvalidArgument when no term has a word."""
    terms = search_terms(text)
    phrases = await conn.fetch(
        "SELECT phraseto_tsquery('wfe_search', wfe_search_text(t))::text "
        "FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
        [word.replace("\x00", " ") for word, _ in terms],  # NUL separates words, as any control
    )
    parts = [
        f"({phrase}{':*' if prefix else ''})" for (phrase,), (_, prefix) in zip(phrases, terms, strict=True) if phrase
    ]
    if not parts:
        raise InvalidArgument("query: no word to search for (letters or digits)", field="query")
    return " & ".join(parts)


def _search_filter(f: FilterRow, p: _Params) -> str:
    terms: list[str] = []
    if f.statuses:
        terms.append(f"status = ANY({p.add(list(f.statuses), '::text[]')})")
    if f.definition_id is not None:
        terms.append(f"workflow_definition_id = {p.add(f.definition_id, '::text')}")
    if f.reference is not None:
        terms.append(f"reference = {p.add(f.reference, '::text')}")
    if f.created_after is not None:
        terms.append(f"create_time >= {p.add(f.created_after, '::bigint')}")
    if f.created_before is not None:
        terms.append(f"create_time < {p.add(f.created_before, '::bigint')}")
    return "".join(f" AND {t}" for t in terms)


async def _search(
    conn: asyncpg.Connection, text: object, f: FilterRow, skip: int, take: int
) -> tuple[list[SummaryRow], int]:
    query = await search_tsquery(conn, text)
    p = _Params()
    q = p.add(query, "::tsquery")
    where = f"FROM workflows WHERE search @@ {q}{_search_filter(f, p)}"
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = [
            SummaryRow(*r)
            for r in await conn.fetch(
                f"SELECT {_SUMMARY} {where} ORDER BY ts_rank(search, {q}) DESC, create_time DESC, "
                f'id COLLATE "C" DESC LIMIT {p.add(take, "::bigint")} OFFSET {p.add(skip, "::bigint")}',
                *p.values,
            )
        ]
        if len(rows) < take and (rows or skip == 0):
            return rows, skip + len(rows)  # the last window: no need to count
        total: int = await conn.fetchval(f"SELECT count(*) {where}", *p.values[:-2])
    return rows, total


def _delete(victims: str) -> str:
    """Delete the workflows ``victims`` selects with their subscriptions, errors, PROCESS_WORKFLOW
    commands and entries in the WORKFLOW queue (waiting or handed out), in one statement (its own
    transaction); pointers go by the foreign key's cascade. Leases and the other queues' items stay
    (as on SQLite: ``_visibility_store._delete_ids``)."""
    return (
        f"WITH d AS (DELETE FROM workflows WHERE {victims} RETURNING id), "
        "s AS (DELETE FROM event_subscriptions WHERE workflow_id IN (SELECT id FROM d)), "
        "e AS (DELETE FROM execution_errors WHERE workflow_id IN (SELECT id FROM d)), "
        "c AS (DELETE FROM scheduled_commands WHERE command_name = 'PROCESS_WORKFLOW' "
        "AND data IN (SELECT id FROM d)), "
        f"q AS (DELETE FROM work_queue WHERE queue = '{WORKFLOW}' AND item_id IN (SELECT id FROM d)) "
        "SELECT count(*) FROM d"
    )


_PURGEABLE = "status = ANY($1::text[]) AND coalesce(complete_time, create_time) < $2::bigint"

DELETE_WORKFLOW = _delete("id = $1::text")
PURGE_BATCH_SQL = _delete(
    # Rows another transaction holds (a persist, another server's purge) are skipped, not waited
    # for: concurrent purges take different rows. The conditions again on the rows deleted: a row
    # changed meanwhile is checked as it is now.
    f"id IN (SELECT id FROM workflows WHERE {_PURGEABLE} LIMIT $3::bigint FOR UPDATE SKIP LOCKED) AND {_PURGEABLE}"
)
"""Delete up to $3 workflows with one of the statuses $1 finished (or created) before $2."""
COUNT_PURGEABLE = f"SELECT count(*) FROM workflows WHERE {_PURGEABLE}"


async def _details(conn: asyncpg.Connection, workflow_id: str) -> DetailsRows | None:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = await conn.fetchrow(f"SELECT {_WORKFLOW} FROM workflows WHERE id = $1", workflow_id)
        if found is None:
            return None
        pointers = [
            PointerRow(*r)
            for r in await conn.fetch(
                f"SELECT {_POINTER} FROM execution_pointers WHERE workflow_id = $1 ORDER BY position", workflow_id
            )
        ]
        subscriptions = [
            (SubscriptionRow(*r[:-1]), bool(r[-1]))
            for r in await conn.fetch(
                f"SELECT {_SUBSCRIPTION}, terminated FROM event_subscriptions WHERE workflow_id = $1 "
                "ORDER BY subscribe_as_of, id",
                workflow_id,
            )
        ]
        errors = [
            ErrorRow(*r)
            for r in await conn.fetch(
                f"SELECT {_ERROR} FROM execution_errors WHERE workflow_id = $1 ORDER BY error_time, id", workflow_id
            )
        ]
    return DetailsRows((WorkflowRow(*found), pointers), subscriptions, errors)


async def _overview(
    conn: asyncpg.Connection, recent_errors: int, figures: Callable[[asyncpg.Connection], Awaitable[LiveFigures]]
) -> OverviewRows:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        counts = [
            (r[0], r[1], int(r[2]))
            for r in await conn.fetch(
                "SELECT workflow_definition_id, status, count(*) FROM workflows GROUP BY workflow_definition_id, status"
            )
        ]
        errors = [
            (ErrorRow(*r[:4]), r[4])
            for r in await conn.fetch(
                "SELECT e.error_time, e.workflow_id, e.execution_pointer_id, e.message, w.name "
                "FROM execution_errors AS e LEFT JOIN workflows AS w ON w.id = e.workflow_id "
                "ORDER BY e.id DESC LIMIT $1",
                recent_errors,
            )
        ]
        totals = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM events), "
            "(SELECT count(*) FROM event_subscriptions WHERE terminated = 0), "
            "(SELECT count(*) FROM execution_errors), pg_database_size(current_database())"
        )
        live = await figures(conn)
    return OverviewRows(
        counts=counts,
        figures=live,
        events=int(totals[0]),
        open_subscriptions=int(totals[1]),
        errors=int(totals[2]),
        database_bytes=int(totals[3]),
        wal_bytes=None,
        recent_errors=errors,
    )


def events_query(
    processed: bool | None, event_name: str | None, event_key: str | None, after: PageKey | None, limit: int
) -> tuple[str, list[Any]]:
    """Events newest first after ``after`` (one more than ``limit``: whether more follow). Indexes:
    unprocessed ``events_runnable``, a name (and key) ``events_by_name_key``, else ``events_by_time``."""
    p = _Params()
    where: list[str] = []
    if processed is not None:
        where.append("is_processed = 1" if processed else "is_processed = 0")
    if event_name is not None:
        where.append(f"event_name = {p.add(event_name, '::text')}")
        if event_key is not None:
            where.append(f"event_key = {p.add(event_key, '::text')}")
    if after is not None:
        where.append(f'(event_time, id COLLATE "C") < ({p.add(after[0], "::bigint")}, {p.add(after[1], "::text")})')
    sql = f"SELECT {_EVENT} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f' ORDER BY event_time DESC, id COLLATE "C" DESC LIMIT {p.add(limit + 1, "::bigint")}'
    return sql, p.values


async def _purge_batch(statuses: list[str], older_than_us: int, size: int, conn: asyncpg.Connection) -> int:
    deleted: int = await conn.fetchval(PURGE_BATCH_SQL, statuses, older_than_us, size)
    return deleted


def has_nul(*values: str | None) -> bool:
    """Whether a value holds a NUL character, which no PostgreSQL text holds: a lookup by it finds
    nothing, as it does on SQLite (PostgreSQL would refuse the parameter instead)."""
    return any(v is not None and "\x00" in v for v in values)


def refuse_nul(field: str, *values: str | None) -> None:
    """Refuse a write of a value holding a NUL character (PostgreSQL text cannot hold one), naming
    ``field``, before any statement: PostgreSQL's own refusal names no field."""
    if has_nul(*values):
        raise InvalidArgument(
            f"{field}: PostgreSQL cannot store text containing a NUL character (\\u0000)", field=field
        )


class PostgresVisibility:
    """The visibility and console operations of ``Store`` on PostgreSQL (``PostgresStore`` inherits
    them; it provides ``_run``, which runs a job on a pooled connection)."""

    async def _run(self, job: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def list_workflows(self, filter: FilterRow, limit: int, after: PageKey | None) -> list[SummaryRow]:
        if has_nul(filter.reference, filter.definition_id, None if after is None else after[1]):
            return []
        sql, values = list_query(filter, limit, after)
        rows = await self._run(lambda conn: conn.fetch(sql, *values))
        return [SummaryRow(*r) for r in rows]

    async def search_workflows(
        self, text: str, filter: FilterRow, skip: int, take: int
    ) -> tuple[list[SummaryRow], int]:
        if has_nul(filter.reference, filter.definition_id):
            search_terms(text)  # a bad text is still InvalidArgument
            return [], 0
        return await self._run(lambda conn: _search(conn, text, filter, skip, take))

    async def delete_workflow(self, id: str) -> None:
        deleted = 0 if has_nul(id) else await self._run(lambda conn: conn.fetchval(DELETE_WORKFLOW, id))
        if not deleted:
            raise WorkflowNotFound(f"workflow {id!r} not found", id=id)

    async def count_purgeable(self, statuses: Sequence[str], older_than_us: int) -> int:
        count: int = await self._run(lambda conn: conn.fetchval(COUNT_PURGEABLE, list(statuses), older_than_us))
        return count

    async def purge_workflows(self, statuses: Sequence[str], older_than_us: int, batch: int = PURGE_BATCH) -> int:
        """Delete in statements (transactions) of about ``PURGE_BATCH_SECONDS`` each, at most
        ``batch`` workflows. Other writes keep flowing: each statement locks only the rows it
        deletes. Cancelled between statements, what it deleted stays deleted."""
        loop = asyncio.get_running_loop()
        size = min(PURGE_FIRST_BATCH, batch)
        total = 0
        names = list(statuses)
        while True:
            started = loop.time()
            deleted: int = await self._run(functools.partial(_purge_batch, names, older_than_us, size))
            total += deleted
            if deleted < size:
                return total
            size = next_batch_size(size, loop.time() - started, batch)

    async def workflow_details(self, id: str) -> DetailsRows | None:
        if has_nul(id):
            return None
        return await self._run(lambda conn: _details(conn, id))

    # -- the web console's reads -----------------------------------------------------------------

    async def console_overview(self, recent_errors: int) -> OverviewRows:
        from ._postgres_store import _live_figures  # it imports this module

        return await self._run(lambda conn: _overview(conn, recent_errors, _live_figures))

    async def console_events(
        self,
        processed: bool | None,
        event_name: str | None,
        event_key: str | None,
        after: PageKey | None,
        limit: int,
    ) -> tuple[list[EventRow], bool]:
        if has_nul(event_name, event_key, None if after is None else after[1]):
            return [], False
        sql, values = events_query(processed, event_name, event_key, after, limit)
        rows = [EventRow(*r) for r in await self._run(lambda conn: conn.fetch(sql, *values))]
        return rows[:limit], len(rows) > limit

    async def open_subscriptions(self, event_name: str, event_key: str, limit: int) -> list[SubscriptionRow]:
        if has_nul(event_name, event_key):
            return []
        rows = await self._run(
            lambda conn: conn.fetch(
                f"SELECT {_SUBSCRIPTION} FROM event_subscriptions "
                "WHERE event_name = $1 AND event_key = $2 AND terminated = 0 "
                "ORDER BY subscribe_as_of, id LIMIT $3",
                event_name,
                event_key,
                limit,
            )
        )
        return [SubscriptionRow(*r) for r in rows]
