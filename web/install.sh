#!/usr/bin/env bash
# Installs web/node_modules (JsSIP, esbuild, playwright-core) exactly as
# package-lock.json pins them, unless that very lock file is installed already.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.dots-installed-lock
if [[ -f $stamp ]] && cmp -s package-lock.json "$stamp"; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json "$stamp"
