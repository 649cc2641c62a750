"""The lease bookkeeping every lock provider shares (``wfe_client.LockProvider``), on a recording fake."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from wfe_client import Lease, LockProvider
from wfe_client.timeutil import utc_now


class Recording(LockProvider):
    """Leases in a dict; every renewal request recorded; ``lose`` makes renewals report resources lost."""

    def __init__(self, ttl: timedelta = timedelta(milliseconds=150)) -> None:
        super().__init__("recorder", ttl)
        self.renewals: list[list[str]] = []
        self.lose: set[str] = set()
        self.token = 0
        self.renewed = asyncio.Event()

    async def _acquire(self, resource: str) -> Lease | None:
        self.token += 1
        return Lease(resource, self.owner, self.token, utc_now())

    async def _renew(self, resources: Sequence[str]) -> list[str]:
        self.renewals.append(list(resources))
        self.renewed.set()
        return [r for r in resources if r in self.lose]

    async def _release(self, resource: str) -> bool:
        return True


async def test_renewals_go_in_requests_of_at_most_10000_resources() -> None:
    # A TTL longer than the 10,001 acquisitions take (they never yield to the renewal task): with
    # 150 ms the first leases would be reported lost, not renewed within their TTL.
    locks = Recording(timedelta(seconds=5))
    for i in range(10_001):
        assert await locks.acquire_lock(f"r{i}")
    while len(locks.renewals) < 2:
        locks.renewed.clear()
        await asyncio.wait_for(locks.renewed.wait(), 5)
    assert [len(r) for r in locks.renewals[:2]] == [10_000, 1]
    await locks.close()
    assert locks.held == []


async def test_a_lost_lease_is_dropped_and_reported_the_others_kept() -> None:
    locks = Recording()
    lost: list[str] = []
    reported = asyncio.Event()

    def on_lost(resource: str) -> None:
        lost.append(resource)
        reported.set()

    locks.on_lost = on_lost
    assert await locks.acquire_lock("gone")
    assert await locks.acquire_lock("kept")
    locks.lose = {"gone"}
    await asyncio.wait_for(reported.wait(), 5)
    assert lost == ["gone"] and locks.held == ["kept"]
    await locks.close()
