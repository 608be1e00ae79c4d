#!/usr/bin/env bash
# The test command: vet, every test with the race detector, then the
# end-to-end suite against the reference network (../shared/refnet, installed
# by scripts/setup.sh) when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -race -count=1 -timeout 20m ./...
if [ -x ../shared/refnet/run.sh ]; then
  CISTERN_E2E=1 go test -race -count=1 -timeout 15m ./e2e/
else
  echo "test: ../shared/refnet not found; skipping the end-to-end suite" >&2
fi
