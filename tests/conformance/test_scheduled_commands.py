"""Conformance: scheduled commands (schedule, process, claims, leases)."""

from __future__ import annotations

import asyncio
import collections
from datetime import timedelta

import pytest
from conformance_support import T0, US, at_ms, ms, now

from wfe_client import CommandName, InvalidArgument, LeaseLost, PersistenceProvider, ScheduledCommand

BASE = ms(T0)


class Recorder:
    """A handler that records what it got and fails for chosen data."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.seen: list[ScheduledCommand] = []
        self.fail = set(fail)

    async def __call__(self, command: ScheduledCommand) -> None:
        self.seen.append(command)
        await asyncio.sleep(0)
        if command.data in self.fail:
            raise RuntimeError(f"handler failed for {command.data}")

    @property
    def data(self) -> list[str]:
        return sorted(c.data for c in self.seen)


def test_supports_scheduled_commands(provider: PersistenceProvider) -> None:
    assert provider.supports_scheduled_commands() is True


async def test_process_hands_over_due_commands_and_deletes_them(provider: PersistenceProvider) -> None:
    wf = ScheduledCommand.process_workflow("wf-1", BASE + 1000)
    ev = ScheduledCommand.process_event("ev-1", BASE + 2000)
    late = ScheduledCommand.process_workflow("wf-late", BASE + 3000)
    for c in (late, wf, ev):
        await provider.schedule_command(c)

    first = Recorder()
    await provider.process_commands(at_ms(BASE + 2000), first)
    assert sorted(first.seen, key=lambda c: c.execute_time) == [wf, ev]
    assert {c.command_name for c in first.seen} == {CommandName.PROCESS_WORKFLOW, CommandName.PROCESS_EVENT}

    again = Recorder()
    await provider.process_commands(at_ms(BASE + 2000), again)
    assert again.seen == []  # handled commands are deleted

    rest = Recorder()
    await provider.process_commands(at_ms(BASE + 10_000), rest)
    assert rest.seen == [late]

    final = Recorder()
    await provider.process_commands(at_ms(BASE + 10_000), final)
    assert final.seen == []


async def test_process_boundary_is_inclusive(provider: PersistenceProvider) -> None:
    await provider.schedule_command(ScheduledCommand.process_workflow("edge", BASE + 500))
    before = Recorder()
    await provider.process_commands(at_ms(BASE + 500) - US, before)
    assert before.seen == []
    at = Recorder()
    await provider.process_commands(at_ms(BASE + 500), at)
    assert at.data == ["edge"]


async def test_reschedule_keeps_earlier_time_when_earlier_comes_second(provider: PersistenceProvider) -> None:
    await provider.schedule_command(ScheduledCommand.process_workflow("wf", BASE + 2000))
    await provider.schedule_command(ScheduledCommand.process_workflow("wf", BASE + 1000))
    seen = Recorder()
    await provider.process_commands(at_ms(BASE + 1500), seen)
    assert seen.seen == [ScheduledCommand.process_workflow("wf", BASE + 1000)]
    after = Recorder()
    await provider.process_commands(at_ms(BASE + 5000), after)
    assert after.seen == []  # one command per (name, data)


async def test_reschedule_keeps_earlier_time_when_later_comes_second(provider: PersistenceProvider) -> None:
    await provider.schedule_command(ScheduledCommand.process_workflow("wf", BASE + 1000))
    await provider.schedule_command(ScheduledCommand.process_workflow("wf", BASE + 2000))
    seen = Recorder()
    await provider.process_commands(at_ms(BASE + 1500), seen)
    assert seen.seen == [ScheduledCommand.process_workflow("wf", BASE + 1000)]
    after = Recorder()
    await provider.process_commands(at_ms(BASE + 5000), after)
    assert after.seen == []


async def test_same_data_different_names_are_distinct(provider: PersistenceProvider) -> None:
    await provider.schedule_command(ScheduledCommand.process_workflow("same", BASE))
    await provider.schedule_command(ScheduledCommand.process_event("same", BASE))
    seen = Recorder()
    await provider.process_commands(at_ms(BASE), seen)
    assert sorted(c.command_name.name for c in seen.seen) == ["PROCESS_EVENT", "PROCESS_WORKFLOW"]


async def test_failed_handler_offers_command_again_next_call(provider: PersistenceProvider) -> None:
    for data in ("good", "bad"):
        await provider.schedule_command(ScheduledCommand.process_workflow(data, BASE))
    first = Recorder(fail=frozenset({"bad"}))
    await provider.process_commands(at_ms(BASE), first)
    assert first.data == ["bad", "good"]  # each offered once within the call

    second = Recorder(fail=frozenset({"bad"}))
    await provider.process_commands(at_ms(BASE), second)
    assert second.data == ["bad"]

    third = Recorder()
    await provider.process_commands(at_ms(BASE), third)
    assert third.seen == [ScheduledCommand.process_workflow("bad", BASE)]

    fourth = Recorder()
    await provider.process_commands(at_ms(BASE), fourth)
    assert fourth.seen == []


async def test_parallel_processors_handle_each_command_once(provider: PersistenceProvider) -> None:
    commands = [ScheduledCommand.process_workflow(f"wf-{i:03}", BASE + i) for i in range(200)]
    await asyncio.gather(*(provider.schedule_command(c) for c in commands))
    counts: collections.Counter[str] = collections.Counter()

    async def handler(command: ScheduledCommand) -> None:
        counts[command.data] += 1
        await asyncio.sleep(0.001)

    await asyncio.gather(*(provider.process_commands(at_ms(BASE + 1000), handler) for _ in range(4)))
    assert counts == collections.Counter({c.data: 1 for c in commands})
    leftover = Recorder()
    await provider.process_commands(at_ms(BASE + 1000), leftover)
    assert leftover.seen == []


async def test_process_runs_handlers_one_at_a_time_in_claim_order(provider: PersistenceProvider) -> None:
    """More than one claim batch (100): every handler runs alone, earliest execute_time first."""
    commands = [ScheduledCommand.process_workflow(f"wf-{i:03}", BASE + i) for i in range(250)]
    for command in reversed(commands):
        await provider.schedule_command(command)
    running = peak = 0
    order: list[str] = []

    async def handler(command: ScheduledCommand) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(command.data)
        await asyncio.sleep(0)  # a concurrent runner would start the next handler here
        running -= 1

    await provider.process_commands(at_ms(BASE + 1000), handler)
    assert peak == 1
    assert order == [c.data for c in commands]


async def test_failed_command_stays_leased_until_the_call_ends(provider: PersistenceProvider) -> None:
    for data, offset in (("bad", 0), ("next", 1)):
        await provider.schedule_command(ScheduledCommand.process_workflow(data, BASE + offset))
    claimed_meanwhile: list[list[ScheduledCommand]] = []

    async def handler(command: ScheduledCommand) -> None:
        if command.data == "bad":
            raise RuntimeError("fails")
        # The failed command is still held by this call: another processor cannot have it.
        claimed_meanwhile.append((await provider.claim_commands(at_ms(BASE + 1000))).commands)

    await provider.process_commands(at_ms(BASE + 1000), handler)
    assert claimed_meanwhile == [[]]
    # Released at the end of the call: offered again at once, with no lease to wait out.
    assert (await provider.claim_commands(at_ms(BASE + 1000))).commands == [
        ScheduledCommand.process_workflow("bad", BASE)
    ]


async def test_a_command_offered_again_within_one_call_reaches_the_handler_once(
    provider: PersistenceProvider,
) -> None:
    """A handler that schedules its own command again (due at once) does not make the call loop."""
    await provider.schedule_command(ScheduledCommand.process_workflow("again", BASE))
    calls: list[str] = []

    async def handler(command: ScheduledCommand) -> None:
        calls.append(command.data)
        await provider.schedule_command(ScheduledCommand.process_workflow(command.data, BASE))

    await asyncio.wait_for(provider.process_commands(at_ms(BASE), handler), timeout=10)
    assert calls == ["again"]
    # The new request was kept, and the skipped command released: the next call offers it.
    following = Recorder()
    await provider.process_commands(at_ms(BASE), following)
    assert following.seen == [ScheduledCommand.process_workflow("again", BASE)]


async def test_a_handled_command_scheduled_again_by_the_next_handler_is_new(provider: PersistenceProvider) -> None:
    """A handled command is acknowledged before the next handler's writes: scheduled again for later
    by that handler, it is a new command due at the new time (not the handled one kept at its old time).
    (The SQLite provider overlaps acknowledgements with the next handler; this pins their order.)"""
    await provider.schedule_command(ScheduledCommand.process_workflow("first", BASE))
    await provider.schedule_command(ScheduledCommand.process_workflow("second", BASE + 1))
    calls: list[str] = []

    async def handler(command: ScheduledCommand) -> None:
        calls.append(command.data)
        if command.data == "second":
            await provider.schedule_command(ScheduledCommand.process_workflow("first", BASE + 5000))

    await provider.process_commands(at_ms(BASE + 1000), handler)
    assert calls == ["first", "second"]
    early = Recorder()
    await provider.process_commands(at_ms(BASE + 4999), early)
    assert early.seen == []
    late = Recorder()
    await provider.process_commands(at_ms(BASE + 5000), late)
    assert late.seen == [ScheduledCommand.process_workflow("first", BASE + 5000)]


async def test_process_commands_settles_every_acknowledgement_before_returning(provider: PersistenceProvider) -> None:
    """Many handled commands: every one is deleted by the time the call returns."""
    for i in range(150):  # more than one claim batch
        await provider.schedule_command(ScheduledCommand.process_workflow(f"wf-{i}", BASE))
    seen = Recorder()
    await provider.process_commands(at_ms(BASE), seen)
    assert len(seen.seen) == 150
    claim = await provider.claim_commands(at_ms(BASE + 10_000))
    assert claim.commands == []


async def test_a_cancelled_call_releases_what_it_holds(provider: PersistenceProvider) -> None:
    for i in range(3):
        await provider.schedule_command(ScheduledCommand.process_workflow(f"wf-{i}", BASE + i))
    started = asyncio.Event()

    async def stuck(command: ScheduledCommand) -> None:
        started.set()
        await asyncio.Event().wait()

    call = asyncio.ensure_future(provider.process_commands(at_ms(BASE + 1000), stuck))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    claim = await provider.claim_commands(at_ms(BASE + 1000))
    assert [c.data for c in claim.commands] == ["wf-0", "wf-1", "wf-2"]


async def test_claim_commands_earliest_first_and_exclusive(provider: PersistenceProvider) -> None:
    for i in (3, 1, 2):
        await provider.schedule_command(ScheduledCommand.process_workflow(f"c{i}", BASE + i))
    claim = await provider.claim_commands(at_ms(BASE + 10), max_commands=2)
    assert claim.lease_id
    assert [c.data for c in claim.commands] == ["c1", "c2"]
    assert now() + timedelta(seconds=20) < claim.lease_expiry < now() + timedelta(seconds=31)  # default 30 s lease
    other = await provider.claim_commands(at_ms(BASE + 10))
    assert [c.data for c in other.commands] == ["c3"]
    assert other.lease_id and other.lease_id != claim.lease_id
    nothing = await provider.claim_commands(at_ms(BASE + 10))
    assert nothing.commands == []


async def test_release_offers_command_again(provider: PersistenceProvider) -> None:
    cmd = ScheduledCommand.process_event("ev", BASE)
    await provider.schedule_command(cmd)
    claim = await provider.claim_commands(at_ms(BASE))
    assert claim.commands == [cmd]
    await provider.release_command(cmd, claim.lease_id)
    with pytest.raises(LeaseLost):
        await provider.release_command(cmd, claim.lease_id)
    with pytest.raises(LeaseLost):
        await provider.acknowledge_command(cmd, claim.lease_id)
    again = await provider.claim_commands(at_ms(BASE))
    assert again.commands == [cmd]
    await provider.acknowledge_command(cmd, again.lease_id)
    assert (await provider.claim_commands(at_ms(BASE))).commands == []


async def test_acknowledge_with_wrong_lease_is_lease_lost(provider: PersistenceProvider) -> None:
    cmd = ScheduledCommand.process_workflow("wf", BASE)
    await provider.schedule_command(cmd)
    claim = await provider.claim_commands(at_ms(BASE))
    with pytest.raises(LeaseLost):
        await provider.acknowledge_command(cmd, "not-the-lease")
    await provider.acknowledge_command(cmd, claim.lease_id)
    with pytest.raises(LeaseLost):
        await provider.acknowledge_command(cmd, claim.lease_id)  # already settled


async def test_expired_lease_is_offered_again_and_old_lease_is_lost(provider: PersistenceProvider) -> None:
    cmd = ScheduledCommand.process_workflow("leased", BASE)
    await provider.schedule_command(cmd)
    first = await provider.claim_commands(at_ms(BASE), lease=timedelta(milliseconds=50))
    assert first.commands == [cmd]
    assert first.lease_expiry < now() + timedelta(milliseconds=51)
    # (That a live lease holds the command is checked with a long lease elsewhere: a 50 ms one
    # may already have run out on a loaded machine by the time a second claim arrives.)
    await asyncio.sleep(0.08)
    second = await provider.claim_commands(at_ms(BASE))
    assert second.commands == [cmd]
    assert second.lease_id != first.lease_id
    with pytest.raises(LeaseLost):
        await provider.acknowledge_command(cmd, first.lease_id)
    with pytest.raises(LeaseLost):
        await provider.release_command(cmd, first.lease_id)
    await provider.acknowledge_command(cmd, second.lease_id)
    assert (await provider.claim_commands(at_ms(BASE))).commands == []


async def test_command_rescheduled_while_claimed_is_not_lost(provider: PersistenceProvider) -> None:
    cmd = ScheduledCommand.process_workflow("busy", BASE + 1000)
    await provider.schedule_command(cmd)
    claim = await provider.claim_commands(at_ms(BASE + 1000))
    assert claim.commands == [cmd]
    # While the command is being handled, someone asks for it again.
    await provider.schedule_command(ScheduledCommand.process_workflow("busy", BASE + 5000))
    await provider.acknowledge_command(cmd, claim.lease_id)
    again = Recorder()
    await provider.process_commands(at_ms(BASE + 5000), again)
    assert again.seen == [ScheduledCommand.process_workflow("busy", BASE + 1000)]  # the earlier time kept


async def test_acknowledge_after_expiry_without_new_claim_succeeds(provider: PersistenceProvider) -> None:
    # The lease is lost only once another processor claimed the command (see the proto contract).
    cmd = ScheduledCommand.process_event("slow", BASE)
    await provider.schedule_command(cmd)
    claim = await provider.claim_commands(at_ms(BASE), lease=timedelta(milliseconds=20))
    await asyncio.sleep(0.04)
    await provider.acknowledge_command(cmd, claim.lease_id)
    assert (await provider.claim_commands(at_ms(BASE))).commands == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_commands": 0},
        {"max_commands": -1},
        {"lease": timedelta(0)},
        {"lease": timedelta(seconds=-1)},
        {"lease": timedelta(microseconds=500)},
        {"lease": timedelta(hours=1, milliseconds=1)},
    ],
    ids=["max-0", "max-negative", "lease-0", "lease-negative", "lease-under-1ms", "lease-over-1h"],
)
async def test_claim_commands_rejects_invalid_arguments(provider: PersistenceProvider, kwargs: dict) -> None:
    cmd = ScheduledCommand.process_workflow("wf", BASE)
    await provider.schedule_command(cmd)
    with pytest.raises(InvalidArgument):
        await provider.claim_commands(at_ms(BASE), **kwargs)
    assert (await provider.claim_commands(at_ms(BASE))).commands == [cmd]  # nothing was claimed


@pytest.mark.parametrize("lease", [timedelta(milliseconds=1), timedelta(hours=1)], ids=["1ms", "1h"])
async def test_claim_commands_lease_bounds_are_inclusive(provider: PersistenceProvider, lease: timedelta) -> None:
    cmd = ScheduledCommand.process_workflow("wf", BASE)
    await provider.schedule_command(cmd)
    before = now()
    claim = await provider.claim_commands(at_ms(BASE), lease=lease)
    assert claim.commands == [cmd]
    assert before + lease - timedelta(seconds=1) < claim.lease_expiry < now() + lease + timedelta(seconds=1)


async def test_claimed_command_not_handed_to_process_commands(provider: PersistenceProvider) -> None:
    cmd = ScheduledCommand.process_workflow("held", BASE)
    await provider.schedule_command(cmd)
    claim = await provider.claim_commands(at_ms(BASE))
    seen = Recorder()
    await provider.process_commands(at_ms(BASE), seen)
    assert seen.seen == []
    await provider.release_command(cmd, claim.lease_id)
    await provider.process_commands(at_ms(BASE), seen)
    assert seen.seen == [cmd]


async def test_command_data_round_trips(provider: PersistenceProvider) -> None:
    weird = ScheduledCommand.process_event("ünï-😀-漢字-e\u0301", 0)
    await provider.schedule_command(weird)
    big = ScheduledCommand.process_workflow("big-time", 2**62)
    await provider.schedule_command(big)
    seen = Recorder()
    await provider.process_commands(at_ms(0), seen)
    assert seen.seen == [weird]
