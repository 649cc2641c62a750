"""Conformance: visibility and clean-up (list, full-text search, delete, purge), on both backends."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from conformance_support import T0, UTC, subscription, workflow

from conftest import Peek, text_index_in_step
from wfe_client import (
    ExecutionError,
    ExecutionPointer,
    InvalidArgument,
    PersistenceProvider,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowNotFound,
    WorkflowStatus,
    WorkflowSummary,
)

RUNNABLE, SUSPENDED, COMPLETE, TERMINATED = (
    WorkflowStatus.RUNNABLE,
    WorkflowStatus.SUSPENDED,
    WorkflowStatus.COMPLETE,
    WorkflowStatus.TERMINATED,
)


async def make(
    provider: PersistenceProvider,
    minute: int,
    *,
    definition: str = "order",
    status: WorkflowStatus = RUNNABLE,
    reference: str | None = None,
    description: str | None = None,
    data: Any = None,
    name: str = "",
    id: str | None = None,
    complete_time: datetime | None = None,
) -> WorkflowInstance:
    """A stored workflow created ``minute`` minutes after T0."""
    w = workflow(definition, name=name, id=id, status=status, data=data if data is not None else {"m": minute})
    w.reference = reference
    w.description = description
    w.create_time = T0 + timedelta(minutes=minute)
    w.complete_time = complete_time
    await provider.create_new_workflow(w)
    return w


def ids(items: list[WorkflowSummary]) -> list[str]:
    return [s.id for s in items]


def newest_first(workflows: list[WorkflowInstance]) -> list[str]:
    return [w.id for w in sorted(workflows, key=lambda w: (w.create_time, w.id), reverse=True)]


async def list_all(provider: PersistenceProvider, page_size: int = 1000, **filters: Any) -> list[str]:
    """Every summary of a list, page after page."""
    found: list[str] = []
    token = None
    for _ in range(1000):
        page = await provider.list_workflows(page_size=page_size, page_token=token, **filters)
        found += ids(page.items)
        token = page.next_page_token
        if token is None:
            return found
    raise AssertionError("the pages never ended")


async def count(peek: Peek, sql: str) -> int:
    """One count read behind the interface's back (SQL both backends speak)."""
    [(n,)] = await peek(sql)
    assert isinstance(n, int)
    return n


# -- list ----------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_ties_by_id_descending(provider: PersistenceProvider) -> None:
    made = [await make(provider, m) for m in (5, 1, 9, 3)]
    made += [await make(provider, 7, id=f"tie-{c}") for c in "bca"]
    page = await provider.list_workflows()
    assert ids(page.items) == newest_first(made)
    assert ids(page.items)[1:4] == ["tie-c", "tie-b", "tie-a"]
    assert page.next_page_token is None


async def test_list_summary_carries_the_workflow_fields(provider: PersistenceProvider) -> None:
    w = await make(
        provider, 1, status=COMPLETE, reference="ref-1", description="the one", complete_time=T0 + timedelta(hours=1)
    )
    bare = await make(provider, 0)
    items = (await provider.list_workflows()).items
    assert items == [
        WorkflowSummary(
            id=w.id,
            name=w.name,
            workflow_definition_id="order",
            version=1,
            status=COMPLETE,
            reference="ref-1",
            description="the one",
            create_time=w.create_time,
            complete_time=T0 + timedelta(hours=1),
            next_execution=0,
            revision=1,
        ),
        WorkflowSummary(
            id=bare.id,
            name=bare.name,
            workflow_definition_id="order",
            version=1,
            status=RUNNABLE,
            reference=None,
            description=None,
            create_time=bare.create_time,
            complete_time=None,
            next_execution=0,
            revision=1,
        ),
    ]
    assert w.name.startswith("order-")


async def test_list_filters_by_one_or_several_statuses(provider: PersistenceProvider) -> None:
    by_status: dict[WorkflowStatus, list[WorkflowInstance]] = {s: [] for s in WorkflowStatus}
    for m in range(16):
        status = list(WorkflowStatus)[m % 4]
        by_status[status].append(await make(provider, m, status=status))
    for status in WorkflowStatus:
        assert await list_all(provider, status=status) == newest_first(by_status[status])
    both = by_status[COMPLETE] + by_status[TERMINATED]
    assert await list_all(provider, status=[COMPLETE, TERMINATED]) == newest_first(both)
    assert await list_all(provider, status={TERMINATED, COMPLETE}, page_size=3) == newest_first(both)
    assert await list_all(provider, status=(RUNNABLE, RUNNABLE), page_size=2) == newest_first(by_status[RUNNABLE])
    assert len(await list_all(provider, status=None)) == 16
    assert len(await list_all(provider, status=[])) == 16


async def test_list_filters_by_definition_reference_and_their_combinations(provider: PersistenceProvider) -> None:
    made = [
        await make(
            provider,
            m,
            definition=("order", "invoice", "ship")[m % 3],
            status=(RUNNABLE, COMPLETE)[m % 2],
            reference=f"cust-{m % 4}",
        )
        for m in range(12)
    ]

    def expect(pred: Any) -> list[str]:
        return newest_first([w for w in made if pred(w)])

    assert await list_all(provider, definition_id="invoice") == expect(lambda w: w.workflow_definition_id == "invoice")
    assert await list_all(provider, definition_id="invoice", status=COMPLETE, page_size=1) == expect(
        lambda w: w.workflow_definition_id == "invoice" and w.status == COMPLETE
    )
    assert await list_all(provider, definition_id="") == expect(lambda w: True)
    assert await list_all(provider, definition_id="nope") == []
    assert await list_all(provider, reference="cust-1") == expect(lambda w: w.reference == "cust-1")
    assert await list_all(provider, reference="cust-1", status=[RUNNABLE], page_size=1) == expect(
        lambda w: w.reference == "cust-1" and w.status == RUNNABLE
    )
    assert await list_all(provider, reference="cust-2", definition_id="ship") == expect(
        lambda w: w.reference == "cust-2" and w.workflow_definition_id == "ship"
    )
    assert await list_all(provider, reference="cust") == []  # exact, not a prefix
    assert await list_all(provider, reference="") == []


async def test_list_creation_window_includes_after_excludes_before(provider: PersistenceProvider) -> None:
    made = [await make(provider, m, status=(RUNNABLE, TERMINATED)[m % 2]) for m in range(10)]
    after, before = T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)
    window = [w for w in made if after <= w.create_time < before]
    assert await list_all(provider, created_after=after, created_before=before) == newest_first(window)
    assert await list_all(
        provider, created_after=after, created_before=before, status=TERMINATED, page_size=1
    ) == newest_first([w for w in window if w.status == TERMINATED])
    assert await list_all(provider, created_after=after) == newest_first([w for w in made if w.create_time >= after])
    assert await list_all(provider, created_before=after) == newest_first([w for w in made if w.create_time < after])
    assert await list_all(provider, created_after=before, created_before=after) == []
    # Any time zone: the instant counts.
    plus_two = after.astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    assert await list_all(provider, created_after=plus_two, created_before=before) == newest_first(window)


async def test_pages_cover_every_workflow_once(provider: PersistenceProvider) -> None:
    made = [await make(provider, m % 4, status=(RUNNABLE, COMPLETE, SUSPENDED)[m % 3]) for m in range(23)]
    for size in (1, 2, 5, 22, 23, 24):
        assert await list_all(provider, page_size=size) == newest_first(made), size
    first = await provider.list_workflows(page_size=23)
    assert len(first.items) == 23 and first.next_page_token is None
    first = await provider.list_workflows(page_size=22)
    assert len(first.items) == 22 and first.next_page_token is not None
    last = await provider.list_workflows(page_size=22, page_token=first.next_page_token)
    assert len(last.items) == 1 and last.next_page_token is None


async def test_paging_is_stable_while_workflows_come_and_go(provider: PersistenceProvider) -> None:
    made = [await make(provider, m) for m in range(10)]
    order = newest_first(made)  # minutes 9, 8, ..., 0
    page = await provider.list_workflows(page_size=4)
    assert ids(page.items) == order[:4]
    # Meanwhile: a newer workflow (before the pages read so far: not shown), one created in the
    # minute of a not-yet-listed one (its id sorts first, so it comes before it), one deleted.
    await make(provider, 100)
    late = await make(provider, 4, id="zzzz-same-minute")
    await provider.delete_workflow(order[6])
    rest: list[str] = []
    token = page.next_page_token
    while token is not None:
        page = await provider.list_workflows(page_size=4, page_token=token)
        rest += ids(page.items)
        token = page.next_page_token
    assert rest == [order[4], late.id, order[5], *order[7:]]


async def test_page_size_is_checked_and_capped(provider: PersistenceProvider) -> None:
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(InvalidArgument):
            await provider.list_workflows(page_size=bad)  # type: ignore[arg-type]
    for m in range(1001):
        w = workflow(data={"m": m})
        w.create_time = T0 + timedelta(seconds=m)
        await provider.create_new_workflow(w)
    page = await provider.list_workflows(page_size=5000)
    assert len(page.items) == 1000 and page.next_page_token is not None


async def test_bad_tokens_and_filters_are_invalid_argument(provider: PersistenceProvider) -> None:
    for m in range(3):
        await make(provider, m, status=COMPLETE)
    token = (await provider.list_workflows(page_size=1)).next_page_token
    assert token is not None
    with pytest.raises(InvalidArgument) as info:
        await provider.list_workflows(page_size=1, page_token=token, status=COMPLETE)
    assert info.value.metadata.get("field") == "page_token"
    for garbage in ("garbage", "!!!", token[:-4], "a" * 5000, "MTox"):
        with pytest.raises(InvalidArgument):
            await provider.list_workflows(page_token=garbage)
    for bad_status in ("COMPLETE", ["COMPLETE"], 3, [COMPLETE, None]):
        with pytest.raises(InvalidArgument):
            await provider.list_workflows(status=bad_status)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await provider.list_workflows(created_after=datetime(2024, 1, 1))
    with pytest.raises(InvalidArgument):
        await provider.list_workflows(definition_id=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await provider.list_workflows(reference="\ud800")


# -- search --------------------------------------------------------------------------------------


async def test_search_matches_words_of_name_reference_description_and_data(provider: PersistenceProvider) -> None:
    named = await make(provider, 1, name="nightly-reconcile")
    referenced = await make(provider, 2, reference="ORDER-77")
    described = await make(provider, 3, description="Refund for a damaged parcel")
    data = await make(provider, 4, data={"customer": {"city": "Lisbon", "tags": ["vip"]}, "total": 1234})
    await make(provider, 5, description="unrelated words only")
    for text, expected in [
        ("reconcile", named),
        ("nightly", named),
        ("order-77", referenced),
        ("77", referenced),
        ("damaged", described),
        ("PARCEL", described),
        ("lisbon", data),
        ("vip", data),
        ("1234", data),
        ("city", data),
    ]:
        found = await provider.search_workflows(text)
        assert ids(found.items) == [expected.id], text
        assert found.total == 1
    nothing = await provider.search_workflows("zanzibar")
    assert nothing.items == [] and nothing.total == 0


async def test_search_needs_every_word_and_matches_whole_words_or_prefixes(provider: PersistenceProvider) -> None:
    both = await make(provider, 1, description="invoice overdue reminder")
    one = await make(provider, 2, description="invoice paid")
    assert ids((await provider.search_workflows("invoice overdue")).items) == [both.id]
    assert set(ids((await provider.search_workflows("invoice")).items)) == {both.id, one.id}
    assert (await provider.search_workflows("invoic")).total == 0  # no partial words
    assert set(ids((await provider.search_workflows("invoic*")).items)) == {both.id, one.id}
    assert ids((await provider.search_workflows("inv* rem*")).items) == [both.id]
    assert ids((await provider.search_workflows("overdue invoice")).items) == [both.id]  # any order
    assert (await provider.search_workflows("overdue-invoice")).total == 0  # a phrase: in this order
    assert ids((await provider.search_workflows("invoice-overdue")).items) == [both.id]


async def test_search_ignores_case_and_accents(provider: PersistenceProvider) -> None:
    w = await make(provider, 1, description="Crème brûlée for Zoë", data={"straße": "Ærøskøbing"})
    for text in ("creme", "CRÈME", "brulee", "zoe", "ZOË", "zo*", "ærøskøbing"):
        assert ids((await provider.search_workflows(text)).items) == [w.id], text


async def test_search_total_skip_and_take(provider: PersistenceProvider) -> None:
    made = [await make(provider, m, description="batch item") for m in range(25)]
    await make(provider, 30, description="other")
    everything = (await provider.search_workflows("batch", take=100)).items
    assert ids(everything) == newest_first(made)  # equal matches: newest first
    window = await provider.search_workflows("batch", skip=5, take=10)
    assert window.total == 25 and ids(window.items) == ids(everything)[5:15]
    tail = await provider.search_workflows("batch", skip=20, take=10)
    assert tail.total == 25 and ids(tail.items) == ids(everything)[20:]
    beyond = await provider.search_workflows("batch", skip=40, take=10)
    assert beyond.total == 25 and beyond.items == []
    exact = await provider.search_workflows("batch", skip=15, take=10)
    assert exact.total == 25 and len(exact.items) == 10
    for bad in ((-1, 10), (0, 0), (0, -3), ("1", 10), (0, 1.5)):
        with pytest.raises(InvalidArgument):
            await provider.search_workflows("batch", skip=bad[0], take=bad[1])  # type: ignore[arg-type]
    capped = await provider.search_workflows("batch", take=100_000)
    assert len(capped.items) == 25


async def test_search_puts_the_best_match_first(provider: PersistenceProvider) -> None:
    weak = await make(provider, 9, description="a long description that mentions kiwi once among many other words")
    strong = await make(provider, 1, description="kiwi kiwi kiwi")
    assert ids((await provider.search_workflows("kiwi")).items) == [strong.id, weak.id]


async def test_search_filters_like_list(provider: PersistenceProvider) -> None:
    made = [
        await make(
            provider,
            m,
            status=list(WorkflowStatus)[m % 4],
            definition=("a", "b")[m % 2],
            reference=f"r{m % 3}",
            description="shared word",
        )
        for m in range(12)
    ]

    async def found(**kw: Any) -> set[str]:
        result = await provider.search_workflows("shared", take=100, **kw)
        assert result.total == len(result.items)
        return set(ids(result.items))

    assert await found(status=COMPLETE) == {w.id for w in made if w.status == COMPLETE}
    assert await found(status=[COMPLETE, RUNNABLE]) == {w.id for w in made if w.status in (COMPLETE, RUNNABLE)}
    assert await found(definition_id="b") == {w.id for w in made if w.workflow_definition_id == "b"}
    assert await found(reference="r2") == {w.id for w in made if w.reference == "r2"}
    after, before = T0 + timedelta(minutes=2), T0 + timedelta(minutes=8)
    assert await found(created_after=after, created_before=before) == {
        w.id for w in made if after <= w.create_time < before
    }
    assert await found(status=SUSPENDED, definition_id="b", reference="r1") == {
        w.id for w in made if w.status == SUSPENDED and w.workflow_definition_id == "b" and w.reference == "r1"
    }
    filtered = await provider.search_workflows("shared", status=RUNNABLE, skip=1, take=1)
    assert filtered.total == 3 and len(filtered.items) == 1


@pytest.mark.parametrize("text", ["", "   ", "!!! ???", "*", "-- ** ::", "x" * 1025, " ".join(["w"] * 17)])
async def test_search_without_words_or_too_long_is_invalid_argument(provider: PersistenceProvider, text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await provider.search_workflows(text)
    assert info.value.metadata.get("field") == "query"


async def test_search_text_is_never_query_syntax(provider: PersistenceProvider) -> None:
    w = await make(provider, 1, description='he said "hello" (NEAR the door) OR NOT: col:x ^start +plus')
    for text in ['"hello', "NEAR(the", "OR", "NOT", "col:x", "^start", "+plus", 'said "hello"', "door)", "AND"]:
        result = await provider.search_workflows(text)
        assert ids(result.items) == ([] if text == "AND" else [w.id]), text
    with pytest.raises(InvalidArgument):
        await provider.search_workflows(b"bytes")  # type: ignore[arg-type]


async def test_search_follows_persist_and_delete(provider: PersistenceProvider, peek: Peek, store_url: str) -> None:
    w = await make(provider, 1, description="first draft", reference="old-ref")
    keep = await make(provider, 2, description="first keeper")
    w.description = "second version"
    w.reference = "new-ref"
    w.data = {"note": "pineapple"}
    await provider.persist_workflow(w)
    assert ids((await provider.search_workflows("first")).items) == [keep.id]
    assert ids((await provider.search_workflows("draft")).items) == []
    assert ids((await provider.search_workflows("old-ref")).items) == []
    assert ids((await provider.search_workflows("second")).items) == [w.id]
    assert ids((await provider.search_workflows("pineapple new-ref")).items) == [w.id]
    await provider.persist_workflow(w)  # unchanged text: still found once
    assert (await provider.search_workflows("pineapple")).total == 1
    await text_index_in_step(peek, store_url)
    await provider.delete_workflow(w.id)
    assert (await provider.search_workflows("pineapple")).total == 0
    assert ids((await provider.search_workflows("first")).items) == [keep.id]
    await text_index_in_step(peek, store_url)


# -- delete --------------------------------------------------------------------------------------


async def test_delete_takes_pointers_subscriptions_errors_and_its_command(
    provider: PersistenceProvider, peek: Peek, store_url: str
) -> None:
    doomed = await make(provider, 1, description="doomed")
    doomed.execution_pointers = [ExecutionPointer.new(0), ExecutionPointer.new(1)]
    await provider.persist_workflow_with_subscriptions(
        doomed, [subscription(workflow_id=doomed.id, pointer_id=doomed.execution_pointers[0].id)]
    )
    other = await make(provider, 2, description="survivor")
    await provider.persist_workflow_with_subscriptions(other, [subscription(workflow_id=other.id)])
    await provider.persist_errors([ExecutionError.new(doomed.id, "p", "boom"), ExecutionError.new(other.id, "p", "x")])
    await provider.schedule_command(ScheduledCommand.process_workflow(doomed.id, 0))
    await provider.schedule_command(ScheduledCommand.process_workflow(other.id, 0))

    await provider.delete_workflow(doomed.id)

    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance(doomed.id)
    assert await provider.get_workflow_instance(other.id) == other
    gone = f"'{doomed.id}'"
    assert await count(peek, f"SELECT count(*) FROM execution_pointers WHERE workflow_id = {gone}") == 0
    assert await count(peek, f"SELECT count(*) FROM event_subscriptions WHERE workflow_id = {gone}") == 0
    assert await count(peek, f"SELECT count(*) FROM execution_errors WHERE workflow_id = {gone}") == 0
    assert await count(peek, f"SELECT count(*) FROM scheduled_commands WHERE data = {gone}") == 0
    assert await count(peek, "SELECT count(*) FROM event_subscriptions") == 1
    assert await count(peek, "SELECT count(*) FROM execution_errors") == 1
    assert await count(peek, "SELECT count(*) FROM scheduled_commands") == 1
    assert await count(peek, "SELECT count(*) FROM execution_pointers") == 1
    assert ids((await provider.list_workflows()).items) == [other.id]
    await text_index_in_step(peek, store_url)


async def test_delete_missing_or_empty_id(provider: PersistenceProvider) -> None:
    w = await make(provider, 1)
    await provider.delete_workflow(w.id)
    with pytest.raises(WorkflowNotFound):
        await provider.delete_workflow(w.id)
    with pytest.raises(WorkflowNotFound):
        await provider.delete_workflow("never-was")
    with pytest.raises(InvalidArgument):
        await provider.delete_workflow("")


# -- purge ---------------------------------------------------------------------------------------


async def test_purge_by_status_and_age(provider: PersistenceProvider, peek: Peek, store_url: str) -> None:
    cutoff = T0 + timedelta(days=30)
    old, recent = T0 + timedelta(days=1), T0 + timedelta(days=40)
    purged = [
        await make(provider, 1, status=COMPLETE, complete_time=old, description="gone"),
        await make(provider, 2, status=TERMINATED, complete_time=old, description="gone"),
        await make(provider, 3, status=COMPLETE, description="gone"),  # no complete_time: created long ago
    ]
    kept = [
        await make(provider, 4, status=COMPLETE, complete_time=recent),  # created long ago, finished lately
        await make(provider, 5, status=RUNNABLE),
        await make(provider, 6, status=SUSPENDED),
        await make(provider, 7, status=COMPLETE, complete_time=cutoff),  # exactly at the cutoff: not before it
    ]
    late = workflow(status=TERMINATED)
    late.create_time = recent
    await provider.create_new_workflow(late)
    kept.append(late)
    assert await provider.purge_workflows(cutoff, dry_run=True) == 3
    assert len(await list_all(provider)) == 8
    assert await provider.purge_workflows(cutoff) == 3
    assert sorted(await list_all(provider)) == sorted(w.id for w in kept)
    for w in purged:
        with pytest.raises(WorkflowNotFound):
            await provider.get_workflow_instance(w.id)
    assert (await provider.search_workflows("gone")).total == 0
    assert await provider.purge_workflows(cutoff) == 0
    assert await provider.purge_workflows(cutoff, statuses=[SUSPENDED]) == 1
    assert await provider.purge_workflows(cutoff, statuses=(RUNNABLE, COMPLETE)) == 1
    assert sorted(await list_all(provider)) == sorted(w.id for w in kept[0:1] + kept[3:])
    await text_index_in_step(peek, store_url)


async def test_purge_runs_in_batches_until_done(provider: PersistenceProvider, peek: Peek, store_url: str) -> None:
    for m in range(1203):
        w = workflow(status=COMPLETE if m % 3 else TERMINATED, data={"m": m, "word": "purgeable"})
        w.create_time = T0 + timedelta(seconds=m)
        w.complete_time = w.create_time
        await provider.create_new_workflow(w)
        if m % 100 == 0:
            await provider.persist_errors([ExecutionError.new(w.id, "p", "failed once")])
    survivor = await make(provider, 1, status=RUNNABLE, data={"word": "purgeable"})
    assert await provider.purge_workflows(T0 + timedelta(days=1), dry_run=True) == 1203
    assert await provider.purge_workflows(T0 + timedelta(days=1)) == 1203
    assert await list_all(provider) == [survivor.id]
    assert (await provider.search_workflows("purgeable")).total == 1
    assert await count(peek, "SELECT count(*) FROM execution_errors") == 0
    assert await count(peek, "SELECT count(*) FROM execution_pointers") == 1
    await text_index_in_step(peek, store_url)


async def test_purge_arguments_are_checked(provider: PersistenceProvider) -> None:
    await make(provider, 1, status=COMPLETE)
    with pytest.raises(ValueError):
        await provider.purge_workflows(datetime(2030, 1, 1))
    for statuses in ((), [], ["COMPLETE"], "COMPLETE", [None]):
        with pytest.raises(InvalidArgument):
            await provider.purge_workflows(datetime(2030, 1, 1, tzinfo=UTC), statuses=statuses)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await provider.purge_workflows("2030-01-01")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await provider.purge_workflows(datetime(1969, 12, 31, tzinfo=UTC))
    assert len((await provider.list_workflows()).items) == 1


async def test_a_nul_character_matches_nothing(provider: PersistenceProvider) -> None:
    """No stored text holds NUL (PostgreSQL's cannot): filters and ids with one find nothing."""
    await make(provider, 1, reference="a", description="a b")
    assert (await provider.list_workflows(reference="a\x00b")).items == []
    assert (await provider.list_workflows(definition_id="order\x00")).items == []
    assert (await provider.search_workflows("b", reference="a\x00")).total == 0
    assert (await provider.search_workflows("zz\x00zz")).total == 0
    with pytest.raises(WorkflowNotFound):
        await provider.delete_workflow("a\x00b")
    assert len((await provider.list_workflows()).items) == 1
