#!/usr/bin/env bash
# Rebuilds a pinned base image from scratch (empty store and work dir) and requires the pinned
# digest: `icos base-image build --check-pin`. With --wrong-pin, also checks that a pin naming
# another image fails with a message naming the pin file and the command that re-pins.
#   reproducible_test.sh ICOS CONTEXT_FILE DOCKERFILE OS VARIANT [--wrong-pin]
# CONTEXT_FILE is any file of the OS's context directory (the runfiles hold the whole directory).
set -euo pipefail
icos=$1 context=$(dirname "$2") dockerfile=$3 os=$4 variant=$5 wrong_pin=${6:-}
work=${TEST_TMPDIR:?}
fail() { echo "FAIL: $*" >&2; exit 1; }

build() {
  "$icos" base-image build --check-pin --context "$1" --dockerfile "$dockerfile" --os "$os" \
    --variant "$variant" --store "$2"
}

digest=$(build "$context" "$work/store") || fail "$os $variant: the rebuild does not give the pinned image"
echo "PASS: $os $variant rebuilt from scratch as pinned: $digest"

if [[ $wrong_pin == --wrong-pin ]]; then
  cp -rL "$context" "$work/context"
  pin=$work/context/docker-base.$variant
  sed -i 's/@sha256:.*/@sha256:0000000000000000000000000000000000000000000000000000000000000000/' "$pin"
  status=0
  build "$work/context" "$work/store-wrong" >/dev/null 2>"$work/wrong.err" || status=$?
  cat "$work/wrong.err"
  [[ $status == 1 ]] || fail "a wrong pin exited $status, not 1"
  grep -q "$pin" "$work/wrong.err" || fail "the message does not name the pin file"
  grep -q "ci/base-images/rebuild" "$work/wrong.err" || fail "the message does not say how to re-pin"
  echo "PASS: a wrong pin fails, naming $pin and the fix"
fi
