#!/usr/bin/env bash
# Builds Ferrydesk and starts it on SQLite with demo data; prints the URL and the demo logins.
# Extra arguments go to `ferrydesk` (e.g. --listen 0.0.0.0:8080 --data-dir /var/lib/ferrydesk).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm not found: install Node.js 20+ (it builds the web app)" >&2; exit 1; }
echo "Building the web app…" >&2
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build)
echo "Building the plugins (WebAssembly)…" >&2
plugins/build.sh
echo "Building Ferrydesk (release; the first build takes several minutes)…" >&2
cargo build --release --locked -p ferrydesk
exec "${CARGO_TARGET_DIR:-target}/release/ferrydesk" "$@" demo
