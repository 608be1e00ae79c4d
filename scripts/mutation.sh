#!/usr/bin/env bash
# Shows that the end-to-end suite catches a broken indexer: it runs the e2e
# suite against the reference network with a mutant of the live write path
# in which live deletes are dropped, and the suite must FAIL. The mutant is
# injected from the test side: a copy of internal/ingest/live.go with a
# `continue` at the top of commitWrite's delete case, put in place of the
# real file by `go test -overlay` (through GOFLAGS, so the binaries the
# suite builds get it too). Production code carries no hook for it.
# Exits 0 when the suite caught the mutant, 1 when it did not, 2 when the
# mutant could not be made or the reference network did not start. Takes about 5 minutes (each failing test waits
# for convergence).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x ../shared/refnet/run.sh ]; then
  echo "mutation: ../shared/refnet not found" >&2
  exit 2
fi
src=$PWD/internal/ingest/live.go
dir=$(mktemp -d)
mutant=$dir/live.go
# In commitWrite only: `case "delete":` is followed by `continue`.
sed '/^func (in \*Ingest) commitWrite(/,/^}/ s/^\(\t*\)case "delete":$/&\n\1\tcontinue/' "$src" >"$mutant"
if cmp -s "$src" "$mutant"; then
  echo "mutation: commitWrite's delete case not found in $src; update this script" >&2
  exit 2
fi
printf '{"Replace":{"%s":"%s"}}\n' "$src" "$mutant" >"$dir/overlay.json"
if ! GOFLAGS="-overlay=$dir/overlay.json" go build ./internal/ingest/; then
  echo "mutation: the mutant does not build" >&2
  exit 2
fi
log=$dir/e2e.log
CISTERN_E2E=1 GOFLAGS="-overlay=$dir/overlay.json" go test -count=1 -timeout 15m ./e2e/ >"$log" 2>&1
rc=$?
grep -E '^(--- FAIL|--- PASS|ok|FAIL)' "$log"
if grep -q 'start refnet:' "$log"; then
  # The tests failed before the mutant was exercised: that proves nothing.
  echo "mutation: refnet did not start, so the suite says nothing about the mutant (log in $log)" >&2
  exit 2
fi
if [ $rc -eq 0 ]; then
  echo "mutation: the e2e suite PASSED with live deletes dropped: it does not catch this bug" >&2
  exit 1
fi
echo "mutation: caught (the e2e suite failed with live deletes dropped; log in $log)"
