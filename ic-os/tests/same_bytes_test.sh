#!/bin/sh
# Passes when the two files given have the same bytes: proof that a build step is reproducible.
set -eu
if cmp "$1" "$2"; then
  echo "PASS: $1 and $2 are identical ($(sha256sum < "$1" | cut -c1-16)...)"
else
  echo "FAIL: $1 and $2 differ" >&2
  exit 1
fi
