#!/usr/bin/env bash
# Builds and runs everything Rust in client/rust:
#   1. unit tests (conversions, status mapping) and the doc example;
#   2. tests/persistence_suite.rs: wfe-core's own persistence_suite! through the adapter, one
#      real `wfe-sqlite serve` process with a fresh SQLite file per case;
#   3. tests/adapter.rs: error mapping, exact round trips, paging, large payloads, commands;
#      tests/engine.rs: a wfe WorkflowHost on the server, wait_for resumed by publish_event;
#   4. tests/test_rust_engine.py (pytest): the wfe WorkflowHost example against a real server,
#      the event published and the result checked through the Python adapter;
#      tests/test_rust_cluster.py (pytest): three cluster_host processes on one server, one
#      SIGKILLed mid-run.
# Debug profile: on a 2-core machine it builds much faster than --release, and the tests wait
# on I/O, not on the CPU.
#
# Needs `make install` first (the server in ../../.venv). Environment:
#   WFE_SQLITE_BIN        server binary (default ../../.venv/bin/wfe-sqlite)
#   WFE_RUST_SKIP_PYTEST  set to 1 to skip step 4 (e.g. when `pytest tests/` runs it anyway)
#   CARGO_TARGET_DIR      honoured as cargo does (default: target/ in this crate)
set -euo pipefail

cd "$(dirname "$0")"
CRATE="$PWD"
ROOT="$(cd ../.. && pwd)"
export WFE_SQLITE_BIN="${WFE_SQLITE_BIN:-$ROOT/.venv/bin/wfe-sqlite}"
if [[ ! -x "$WFE_SQLITE_BIN" ]]; then
    echo "run-tests.sh: no server at $WFE_SQLITE_BIN (run \`make install\` first)" >&2
    exit 1
fi

cargo build --locked --all-targets
cargo test --locked

if [[ "${WFE_RUST_SKIP_PYTEST:-0}" != 1 ]]; then
    # Cargo puts the build in $CARGO_TARGET_DIR when set (relative to this crate), else target/.
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" == /* ]] || target_dir="$CRATE/$target_dir"
    WFE_ORDER_FLOW_BIN="$target_dir/debug/examples/order_flow" \
    WFE_CLUSTER_HOST_BIN="$target_dir/debug/examples/cluster_host" \
        "$ROOT/.venv/bin/python" -m pytest "$ROOT/tests/test_rust_engine.py" \
        "$ROOT/tests/test_rust_cluster.py" -q -p no:cacheprovider
fi
