#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Regenerates the checkpoint seeds of the fuzz corpora (snapshot, metadata,
# ckpt_tool) from a real checkpoint written by make_seeds, and the
# hand-written seeds of the others. Usage: tests/fuzz/seed.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: seed.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
corpus=$root/tests/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/tests/fuzz/make_seeds" "$tmp/ck"
chk=$(ls -d "$tmp"/ck/chk-* | sort -t- -k2 -n | tail -1)
sep() { printf '\0SL|'; }
mkdir -p "$corpus"/{snapshot,metadata,ckpt_tool,json_scan,conf,kafka_pos}
cp "$chk/w0.snap" "$corpus/snapshot/seed-w0.snap"
cp "$chk/w1.snap" "$corpus/snapshot/seed-w1.snap"
# A snapshot target's input is also used as a body with a fresh trailer:
# the file without its trailer reaches the section decoders directly.
head -c -20 "$chk/w0.snap" >"$corpus/snapshot/seed-w0-body"
{ cat "$chk/_metadata"; sep; cat "$chk/w0.snap"; sep; cat "$chk/w1.snap"; } \
  >"$corpus/metadata/seed-chk"
cp "$chk/_metadata" "$corpus/metadata/seed-meta-only"
{ cat "$chk/_metadata"; sep; cat "$chk/w0.snap"; sep; cat "$chk/w1.snap"; sep;
  [ -f "$chk/_COMMITTED" ] && cat "$chk/_COMMITTED"; } >"$corpus/ckpt_tool/seed-chk"
