#!/bin/sh
# Updates Cargo.lock after a dependency change: `tools/relock.sh [cargo update ARGS...]`.
# cargo-bazel 0.15 (crate_universe of rules_rust 0.54.1) reads lock files of version 3 only, while
# current cargo writes version 4; the two differ only in that header field and in encoding.
set -eu
cd "$(dirname "$0")"
cargo update "$@"
sed -i 's/^version = 4$/version = 3/' Cargo.lock
