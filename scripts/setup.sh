#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine: Go modules, Debian's
# postgresql package (only when PostgreSQL is missing; the store/pgstore tests
# start throwaway servers from it), Debian's chromium package (only when
# /usr/bin/chromium is missing; the status page's browser test), and the
# reference network (Node.js + @atproto/dev-env, through npm) from
# ../shared/refnet when it is present.
# Safe to run again. A failed refnet install is reported but does not stop
# the set-up: the library, the server and the unit tests need only Go;
# scripts/test.sh then fails loudly on the end-to-end suite.
set -euo pipefail
cd "$(dirname "$0")/.."
go mod download
# PostgreSQL, for store/pgstore's tests (pgtest starts throwaway servers from
# /usr/lib/postgresql/N/bin; the package starts no cluster of its own).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null; }; then
      echo "setup: installing postgresql failed; the PostgreSQL store tests cannot run" >&2
    fi
  else
    echo "setup: no apt-get; install PostgreSQL (initdb, postgres) for the PostgreSQL store tests" >&2
  fi
fi
# Chromium, for the status page's browser test (httpapi/status_browser_test.go
# drives it headless through chromedp): Debian's package, only when absent.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
      echo "setup: installing chromium failed; the status page's browser test cannot run" >&2
    fi
  else
    echo "setup: no apt-get; install Chromium (/usr/bin/chromium) for the status page's browser test" >&2
  fi
fi
# The npm clients the Go tests drive: Jetstream's (jetstream/node_test.go)
# and tap's @atproto/tap (tapcompat; it needs Node 22, which refnet brings).
if command -v npm >/dev/null; then
  for dir in jetstream/testdata/node tapcompat/testdata/node; do
    if [ ! -d $dir/node_modules ] || [ $dir/package-lock.json -nt $dir/node_modules ]; then
      (cd $dir && npm ci --no-audit --no-fund --loglevel=error) ||
        echo "setup: npm ci in $dir failed; the tests that run its client cannot run" >&2
    fi
  done
else
  echo "setup: npm not found; the Jetstream and tap client tests will be skipped" >&2
fi
if [ -x ../shared/refnet/setup.sh ]; then
  if ! ../shared/refnet/setup.sh >/dev/null; then
    echo "setup: installing the reference network failed; the end-to-end suite cannot run" >&2
  fi
else
  echo "setup: ../shared/refnet not found; end-to-end tests will be skipped" >&2
fi
