#!/usr/bin/env bash
# assembly_test.sh ICOS PACKAGE disk|package ARGUMENTS...
#
# PACKAGE is what `icos ARGUMENTS --package PACKAGE` (disk) or `icos ARGUMENTS --output PACKAGE`
# (package) assembled, copying the compressed frames of packaged images. This repeats the
# assembly by the old path, which compresses every byte afresh: icos disk --output writes the raw
# disk, or GNU tar extracts each packaged image; icos package packages that. The two packages
# must decompress with stock zstd to the same tar stream, and GNU tar must extract the same
# files from both (compared through GNU tar's own sparse archives of what it extracted, which
# read only the data, not the holes of a 50 GB disk).
set -euo pipefail
icos=$1 new=$2 command=$3
shift 3
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/assembly.XXXXXX")
reference=$tmp/reference.tar.zst
start=$SECONDS
case $command in
  disk)
    "$icos" disk "$@" --output "$tmp/disk.img"
    "$icos" package --level 1 --output "$reference" --member "disk.img=$tmp/disk.img"
    ;;
  package)
    members=()
    while (($#)); do
      case $1 in
        --image-member)
          name=${2%%=*}
          mkdir "$tmp/$name.d"
          tar --zstd -xSf "${2#*=}" -C "$tmp/$name.d"
          extracted=("$tmp/$name.d"/*)
          members+=(--member "$name=${extracted[0]}")
          ;;
        *) members+=("$1" "$2") ;;
      esac
      shift 2
    done
    "$icos" package --level 1 --output "$reference" "${members[@]}"
    ;;
  *)
    echo "assembly test: unknown command $command" >&2
    exit 2
    ;;
esac
echo "assembly test: the old path assembled the reference in $((SECONDS - start)) s"

if ! cmp <(zstd -dc <"$new") <(zstd -dc <"$reference"); then
  echo "FAIL: $new and the reference decompress to different tar streams" >&2
  exit 1
fi
echo "assembly test: stock zstd decompresses both to the same tar stream ($(zstd -dc <"$new" | wc -c) bytes)"

extracted_digest() {  # the SHA-256 of GNU tar's sparse archive of what it extracts from $1
  local dir=$tmp/extracted.$2
  mkdir "$dir"
  tar --zstd -xSf "$1" -C "$dir"
  tar --sparse --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir" -cf - . | sha256sum | cut -d' ' -f1
  rm -rf "$dir"
}
new_digest=$(extracted_digest "$new" new)
reference_digest=$(extracted_digest "$reference" reference)
if [[ $new_digest != "$reference_digest" ]]; then
  echo "FAIL: GNU tar extracts different files from $new and the reference" >&2
  exit 1
fi
echo "assembly test: GNU tar extracts the same files from both ($(tar --zstd -tf "$new" | tr '\n' ' '))"
echo "PASS ($((SECONDS - start)) s)"
