#!/usr/bin/env bash
# Shows that the end-to-end suite catches a broken indexer: it builds
# cistern with the tag cistern_mutant_dropdeletes (live deletes are dropped,
# see mutant_on.go) and runs the e2e suite against the reference network,
# which must FAIL. Exits 0 when the suite caught the mutant, 1 when it did
# not. Takes about 5 minutes (each failing test waits for convergence).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x ../shared/refnet/run.sh ]; then
  echo "mutation: ../shared/refnet not found" >&2
  exit 2
fi
log=$(mktemp)
CISTERN_E2E=1 go test -tags cistern_mutant_dropdeletes -count=1 -timeout 15m ./e2e/ >"$log" 2>&1
rc=$?
grep -E '^(--- FAIL|--- PASS|ok|FAIL)' "$log"
if [ $rc -eq 0 ]; then
  echo "mutation: the e2e suite PASSED with live deletes dropped: it does not catch this bug" >&2
  exit 1
fi
echo "mutation: caught (the e2e suite failed with live deletes dropped; log in $log)"
