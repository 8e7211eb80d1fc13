#!/usr/bin/env bash
# Regenerates web/dist/ (committed; embedded in the node binary) from web/src/
# with the exact package versions of package-lock.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./install.sh
node build.mjs
