#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine: Go modules, and the
# reference network (Node.js + @atproto/dev-env) from ../shared/refnet when it
# is present. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
go mod download
if [ -x ../shared/refnet/setup.sh ]; then
  ../shared/refnet/setup.sh >/dev/null
else
  echo "setup: ../shared/refnet not found; end-to-end tests will be skipped" >&2
fi
