"""Visibility on PostgreSQL: list and search latency on a store of N workflows (one run, rough).

``python bench/pg_visibility.py URL --count 200000``: on the (empty or absent) database ``URL``
(schema applied by the store), inserts N workflows server-side (``INSERT ... SELECT
generate_series``, so the full-text trigger runs for each), ANALYZEs, then times, one call at a
time through the embedded provider, 30 calls of each: a list page of 100 with one status, with a
definition and a status, with no filter; a search (window of 20, with its total) for a word ~1/1000
of the workflows have, two words, a prefix, an exact reference, and a word every workflow has (the
worst case: ranking and counting all N). Prints p50/p95 in milliseconds and the insert time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from wfe_client import WorkflowStatus
from wfe_sqlite import open_provider

WORDS = 1000

FILL = """
INSERT INTO workflows (id, name, workflow_definition_id, version, status, reference, description, data, create_time,
                       complete_time)
SELECT 'w-' || i, 'flow-' || i, 'def-' || (i % 20), 1,
       (ARRAY['COMPLETE', 'COMPLETE', 'COMPLETE', 'COMPLETE', 'COMPLETE', 'RUNNABLE', 'RUNNABLE', 'RUNNABLE',
              'SUSPENDED', 'TERMINATED'])[1 + i % 10],
       'order-' || i, 'an order to ship',
       '{"customer": "customer-' || (i % 5000) || '", "city": "city' || (i % $2) || '", "items": ['
           || repeat('{"sku": "sku", "qty": 1, "note": "words to index"}, ', 12) || '{}]}',
       1700000000000000 + i::bigint * 1000000, NULL
FROM generate_series(1, $1::int) AS i
"""


async def timed(call: Callable[[], Awaitable[Any]], n: int = 30) -> dict[str, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(len(times) * 0.95) - 1], 2)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    provider = await open_provider(args.url)
    conn = await asyncpg.connect(args.url)
    result: dict[str, Any] = {"count": args.count}
    try:
        if await conn.fetchval("SELECT count(*) FROM workflows") == 0:
            started = time.perf_counter()
            await conn.execute(FILL, args.count, WORDS)
            result["insert_s"] = round(time.perf_counter() - started, 1)
            await conn.execute("VACUUM ANALYZE workflows")
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "list status": lambda: provider.list_workflows(status=WorkflowStatus.RUNNABLE, page_size=100),
            "list definition+status": lambda: provider.list_workflows(
                status=WorkflowStatus.SUSPENDED, definition_id="def-3", page_size=100
            ),
            "list all": lambda: provider.list_workflows(page_size=100),
            "search one word": lambda: provider.search_workflows("city7", take=20),
            "search two words": lambda: provider.search_workflows("city7 customer-7", take=20),
            "search prefix": lambda: provider.search_workflows("city12*", take=20),
            "search reference": lambda: provider.search_workflows(f"order-{args.count // 2}", take=20),
            "search everywhere-word": lambda: provider.search_workflows("ship", take=20),
        }
        for label, call in cases.items():
            result[label] = await timed(call, 5 if "everywhere" in label else 30)
    finally:
        await conn.close()
        await provider.close()
    print(json.dumps(result, indent=2))


asyncio.run(main())
