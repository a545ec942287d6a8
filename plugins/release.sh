#!/usr/bin/env bash
# Builds the first-party plugins and packs each into a signed release package
# (dist/plugins/<id>-<version>.fdplugin.tar). Run by the release pipeline, which holds the
# secret half of the Ferrydesk release key: FERRYDESK_RELEASE_SIGNING_KEY names the key file
# (32 bytes in base64). The server trusts packages signed with it for the first-party ids
# (core/plugins/src/first_party.rs); every package is verified against that key before it is kept.
set -euo pipefail
cd "$(dirname "$0")"
key="${FERRYDESK_RELEASE_SIGNING_KEY:?set FERRYDESK_RELEASE_SIGNING_KEY to the release key file}"
[ -r "$key" ] || { echo "release.sh: cannot read the release key file $key" >&2; exit 1; }
./build.sh
ferrydesk="${FERRYDESK_BIN:-${CARGO_TARGET_DIR:-../target}/release/ferrydesk}"
[ -x "$ferrydesk" ] || (cd .. && cargo build --locked --release -p ferrydesk)
out=../dist/plugins
mkdir -p "$out"
for id in greeting create-case webhook telegram; do
  version=$(sed -n 's/^ *"version": "\(.*\)",*$/\1/p' "$id/plugin.json" | head -1)
  pkg="$out/$id-$version.fdplugin.tar"
  FERRYDESK_PLUGIN_SIGNING_KEY="$key" "$ferrydesk" plugin pack "$id" -o "$pkg" >/dev/null
  # Signed, and by the key the server trusts: anything else would be refused on upload.
  said=$(env -u FERRYDESK_PLUGIN_FIRST_PARTY_KEYS "$ferrydesk" plugin verify "$pkg")
  case "$said" in
    *"the Ferrydesk release key"*) echo "$said → $pkg" ;;
    *) echo "release.sh: $pkg is not signed with the Ferrydesk release key: $said" >&2; exit 1 ;;
  esac
done
