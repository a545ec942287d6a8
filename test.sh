#!/usr/bin/env bash
# Installs what the tests need (Chromium, playwright-core, Rust components) and runs every test:
# formatting, clippy, unit and integration tests on SQLite and PostgreSQL, the browser test.
#
#   FERRYDESK_TEST_PG_URL  PostgreSQL admin URL (default postgres://postgres@127.0.0.1:5432/postgres)
#   FERRYDESK_REQUIRE_PG=1 fail instead of skipping when PostgreSQL is unreachable
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

echo "==> installing test dependencies"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target list --installed | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
if [ ! -x /usr/bin/chromium ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
export FERRYDESK_REQUIRE_BROWSER=1

echo "==> web app: install, typecheck, lint, build"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run gen >/dev/null && npm run lint && npm run build)

pg_url="${FERRYDESK_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_hostport="${pg_url#*@}"; pg_hostport="${pg_hostport%%/*}"
pg_host="${pg_hostport%%:*}"; pg_port="${pg_hostport##*:}"; [ "$pg_port" = "$pg_host" ] && pg_port=5432
if (exec 3<>"/dev/tcp/$pg_host/$pg_port") 2>/dev/null; then
  echo "==> PostgreSQL reachable at $pg_host:$pg_port: the PostgreSQL suite runs"
  export FERRYDESK_REQUIRE_PG=1
elif [ "${FERRYDESK_REQUIRE_PG:-}" = 1 ]; then
  echo "PostgreSQL is required (FERRYDESK_REQUIRE_PG=1) but not reachable at $pg_host:$pg_port" >&2
  exit 1
else
  echo "==> WARNING: PostgreSQL not reachable at $pg_host:$pg_port: the PostgreSQL tests are SKIPPED" >&2
fi

echo "==> plugins: build (wasm32-wasip2), unit tests, formatting, clippy"
plugins/build.sh
(cd plugins && cargo fmt --all -- --check
 # One package per invocation: each builds the SDK with its own kind feature.
 for p in greeting create-case webhook telegram evil alien; do
   cargo test --locked --quiet -p "$p"
   cargo clippy --locked --quiet -p "$p" --target wasm32-wasip2 -- -D warnings
 done)

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> building the server"
cargo build --locked -p ferrydesk
echo "==> tests"
cargo test --locked --workspace
if [ "${FERRYDESK_REQUIRE_PG:-}" != 1 ]; then
  echo "==> NOTE: PostgreSQL tests were SKIPPED (no server at $pg_host:$pg_port)" >&2
fi
echo "==> all tests passed"
