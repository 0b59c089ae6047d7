#!/usr/bin/env bash
# `make demo`: runs the quickstart job over the bundled clicks file and
# prints each user's click sessions as they close.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/../.."
echo "== sluice quickstart: click sessions per user (30 s inactivity gap) =="
"$build/examples/quickstart/quickstart" examples/quickstart/clicks.jsonl 2
