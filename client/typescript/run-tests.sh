#!/usr/bin/env bash
# Installs the pinned dependencies (npm ci, from package-lock.json) and runs the TypeScript
# client's tests against a live wfe-sqlite server that the tests start themselves.
# The server binary is $WFE_SQLITE_BIN, default ../../.venv/bin/wfe-sqlite (`make install`).
# `npm test` regenerates the stubs from ../../protos, compiles, then runs node's test runner.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm test
