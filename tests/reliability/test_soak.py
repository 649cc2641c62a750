"""Soak, short: 30 s of steady mixed load against a real server process (``make soak``: 10 min).

No errors, the server's RSS grows less than 10% between the end of the warm-up and the end, and the
database passes ``PRAGMA integrity_check``. ``WFE_SOAK_SECONDS`` changes the duration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_support import env_int
from soak import run_soak

SECONDS = env_int("WFE_SOAK_SECONDS", 30)


@pytest.mark.timeout(SECONDS + 120)
async def test_steady_mixed_load_without_errors_or_memory_growth(tmp_path: Path) -> None:
    result = await run_soak(SECONDS, tmp_path, warmup=max(10.0, SECONDS / 10))
    print(result)
    assert result.errors == 0, result.first_errors
    assert result.operations > 20 * SECONDS, "the load barely ran"
    assert result.rss_growth_percent < 10, result
    assert result.integrity == "ok"
