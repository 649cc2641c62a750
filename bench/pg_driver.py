"""Which PostgreSQL driver: asyncpg vs psycopg 3 (async, psycopg_pool), measured on a local cluster.

Single-row INSERT (one transaction each) and primary-key point reads, at 1 and 64 concurrent callers,
through a pool of ``--pool`` connections. Starts its own durable (fsync on) throwaway cluster.

    .venv/bin/python bench/pg_driver.py [--seconds 3] [--pool 16]

Needs ``asyncpg`` and ``psycopg[binary,pool]`` installed (the server itself needs only the chosen one).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgcluster import PgCluster

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, v TEXT NOT NULL)"
PAYLOAD = "x" * 200


async def _drive(op: Callable[[int], Awaitable[None]], concurrency: int, seconds: float) -> float:
    counter = itertools.count()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await op(next(counter))
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _asyncpg(url: str, pool_size: int, seconds: float) -> dict[str, float]:
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    await pool.execute("DROP TABLE IF EXISTS t")
    await pool.execute(SCHEMA)
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    await pool.executemany("INSERT INTO t VALUES ($1, $2)", [(i, PAYLOAD) for i in ids])

    async def insert(_: int) -> None:
        await pool.execute("INSERT INTO t VALUES ($1, $2)", str(uuid.uuid4()), PAYLOAD)

    async def read(n: int) -> None:
        row = await pool.fetchrow("SELECT id, v FROM t WHERE id = $1", ids[n % len(ids)])
        assert row is not None

    figures = {}
    for c in (1, 64):
        figures[f"insert c={c}"] = await _drive(insert, c, seconds)
        figures[f"read c={c}"] = await _drive(read, c, seconds)
    await pool.close()
    return figures


async def _psycopg(url: str, pool_size: int, seconds: float) -> dict[str, float]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(url, min_size=pool_size, max_size=pool_size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute("DROP TABLE IF EXISTS t")
        await conn.execute(SCHEMA)
        ids = [str(uuid.uuid4()) for _ in range(1000)]
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, PAYLOAD) for i in ids])

    async def insert(_: int) -> None:
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO t VALUES (%s, %s)", (str(uuid.uuid4()), PAYLOAD))

    async def read(n: int) -> None:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT id, v FROM t WHERE id = %s", (ids[n % len(ids)],))
            row: Any = await cur.fetchone()
            assert row is not None

    figures = {}
    for c in (1, 64):
        figures[f"insert c={c}"] = await _drive(insert, c, seconds)
        figures[f"read c={c}"] = await _drive(read, c, seconds)
    await pool.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pool", type=int, default=16)
    args = parser.parse_args()
    cluster = PgCluster.start(durable=True)
    try:
        url = cluster.create_database("drivers")
        results = {
            "asyncpg": asyncio.run(_asyncpg(url, args.pool, args.seconds)),
            "psycopg": asyncio.run(_psycopg(url, args.pool, args.seconds)),
        }
    finally:
        cluster.stop()
    names = list(results["asyncpg"])
    print(f"ops/s, pool {args.pool}, {args.seconds:.0f} s per figure")
    print(f"{'driver':<10}" + "".join(f"{n:>16}" for n in names))
    for driver, figures in results.items():
        print(f"{driver:<10}" + "".join(f"{figures[n]:>16.0f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
