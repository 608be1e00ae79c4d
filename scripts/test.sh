#!/usr/bin/env bash
# The test command: vet, every test with the race detector, the big backfill
# tests at full size (100 repos × 1,000 records; the race detector runs them
# smaller), then the end-to-end suite against the reference network
# (../shared/refnet, installed by scripts/setup.sh) when it is there. With
# CISTERN_REQUIRE_E2E=1 (set by .ci/run) a missing refnet is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -race -count=1 -timeout 20m ./...
go test -count=1 -timeout 10m -run 'TestIndexer_Backfill' .
if [ -x ../shared/refnet/run.sh ]; then
  CISTERN_E2E=1 go test -race -count=1 -timeout 15m ./e2e/
elif [ "${CISTERN_REQUIRE_E2E:-}" = 1 ]; then
  echo "test: ../shared/refnet not found, and CISTERN_REQUIRE_E2E=1" >&2
  exit 1
else
  echo "test: ../shared/refnet not found; skipping the end-to-end suite" >&2
fi
