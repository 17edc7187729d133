#!/usr/bin/env bash
# The one test command. The end-to-end suites (tests/) start the real binaries, so they are built
# first; the js-libp2p interop node needs its npm dependencies. Extra arguments go to the test
# runner (e.g. `scripts/test.sh -p firma-tests`, or a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build --workspace --bins"
cargo build --workspace --bins

echo "==> npm ci (tests/js)"
if command -v npm >/dev/null 2>&1; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "npm is not installed: the js interop tests will fail (install nodejs and npm)" >&2
fi

if [ "$#" -eq 0 ]; then
  set -- --workspace
fi
if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run $*"
  cargo nextest run --no-fail-fast "$@"
else
  echo "==> cargo test $*"
  cargo test --no-fail-fast "$@"
fi
