"""Crash durability: SIGKILL the real server under 16+ concurrent writers; nothing acknowledged is lost.

On both backends: a SQLite file, and a PostgreSQL database (a fresh one per round, on the session's
throwaway PostgreSQL from tests/pgcluster.py).

``make test`` runs 3 rounds; ``make stress`` sets ``WFE_STRESS_ROUNDS`` (25+) and prints the totals.
The driver is ``crash_driver.py`` (also runnable on its own).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from crash_driver import ABSENT, DatabaseFactory, Ledger, run_rounds, summary, verify
from reliability_support import env_int

from pgcluster import PgCluster

ROUNDS = env_int("WFE_STRESS_ROUNDS", 3)
WRITERS = env_int("WFE_CRASH_WRITERS", 16)


_rounds = itertools.count(1)


@pytest.mark.timeout(120 + 30 * ROUNDS)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_acknowledged_writes_survive_sigkill(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    database: DatabaseFactory | None = None
    if backend == "postgres":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        database = lambda seed: cluster.create_database(f"crash_{seed}_{next(_rounds)}")  # noqa: E731
    seed = env_int("WFE_CRASH_SEED", random.SystemRandom().randrange(10**6))
    results = await run_rounds(ROUNDS, seed, tmp_path, writers=WRITERS, verbose=True, database=database)
    print(summary(results))
    assert WRITERS >= 16
    assert sum(r.acknowledged for r in results) > 100 * ROUNDS, "the writers barely wrote anything"
    problems = [f"seed {r.seed}: {p}" for r in results for p in r.problems]
    assert not problems, "\n".join(problems[:40])
    assert all(r.lost == 0 and r.integrity == ("ok" if backend == "sqlite" else "n/a") for r in results)


def test_verifier_catches_lost_stale_and_torn_writes() -> None:
    """The verifier can fail: a lost write, a stale value, a half-applied pair, a repeated number."""
    ledger = Ledger()
    rec = ledger.record("workflow", "w")
    assert rec.allowed() == [ABSENT]
    rec.attempt(0)
    assert rec.allowed() == [ABSENT, 0]
    rec.ack(0)
    rec.attempt(1)
    rec.ack(1)
    rec.attempt(2)  # in flight at the kill
    assert rec.allowed() == [1, 2]
    ledger.record("event", "e").ack({"a": 1})
    ledger.record("subscription", "s").attempt(2)
    ledger.pairs.append(("w", 2, "s"))
    ledger.sequence_values.extend([1, 2, 3])
    good = {("workflow", "w"): 2, ("event", "e"): {"a": 1}, ("subscription", "s"): 2}
    assert verify(ledger, good, 4) == (3 + 3, 2, 0, [])
    assert verify(ledger, {**good, ("subscription", "s"): ABSENT}, 4)[3]  # half of an atomic write
    assert verify(ledger, {**good, ("workflow", "w"): 0}, 4)[2] == 1  # stale: older than acknowledged
    assert verify(ledger, {**good, ("event", "e"): ABSENT}, 4)[2] == 1  # lost
    assert verify(ledger, {**good, ("event", "e"): {"a": 2}}, 4)[2] == 1  # wrong content
    assert verify(ledger, good, 3)[2] == 1  # a sequence number handed out again
    ledger.sequence_values.append(2)
    assert verify(ledger, good, 9)[3]
