#!/usr/bin/env bash
# Builds every plugin in this workspace for wasm32-wasip2 and copies each component next to its
# plugin.json (as plugin.wasm), which is where the manifests point.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed 2>/dev/null | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
target_dir="${CARGO_TARGET_DIR:-$(pwd)/target}"
# One cargo invocation per plugin: the SDK is built with exactly one kind feature each time.
for dir in greeting create-case webhook telegram testing/evil testing/alien; do
  name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
  cargo build --locked --quiet --release --target wasm32-wasip2 -p "$name"
  cp "$target_dir/wasm32-wasip2/release/${name//-/_}.wasm" "$dir/plugin.wasm"
done
