#!/usr/bin/env bash
# Benchmark of what the rules run, against the stock tools, on GuestOS dev's root filesystem:
#
#   ci/container/container-run.sh ci/bench/production-path.sh [WORKDIR]
#
# 1. icos: every action from GuestOS dev's rootfs-tree.tar to its SHA256SUMS and update image (the
#    boot/root/var split, the file trees, the three ext4 filesystems with the verity root, the FAT
#    partitions, the partition packages, the disk and upgrade images). Their outputs are deleted
#    and Bazel runs them again, with no cache to answer: the commands the rules run, as they run them.
# 2. stock: the same from the same rootfs-tree.tar with the tools IC-OS uses: tar under fakeroot,
#    mke2fs -d, veritysetup format, mkfs.vfat and mcopy, sfdisk, dd conv=sparse, and tar --sparse
#    piped into zstd -T0 -10 --long=27 for disk-img.tar.zst and update-img.tar.zst.
# 3. The one-line change to GuestOS's /etc/motd, and the rebuild of GuestOS dev (its published
#    images and what they need).
#
# Prints the wall time of each step, both totals and their ratio, the sizes, and the size the old
# icos path (one zstd stream over the whole tar) gives for the same images. WORKDIR (default
# $ICOS_CACHE_DIR/scratch/bench) takes the stock pipeline's files, about 3 GB. Not a test: figures
# vary with the machine and what else runs.
set -euo pipefail

workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${1:-${ICOS_CACHE_DIR:-/var/cache/icos}/scratch/bench}
readonly dev=//ic-os/guestos/envs/dev
readonly published=("$dev:SHA256SUMS" "$dev:update-img.tar.zst")
cd "$workspace"

now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.2f", end - start }'; }
declare -A seconds=()
timed() {  # timed STEP COMMAND...: runs COMMAND and adds its wall time to the stock STEP
  local start
  start=$(now)
  "${@:2}"
  seconds[$1]=$(awk -v sum="${seconds[$1]:-0}" -v add="$(since "$start")" 'BEGIN { printf "%.2f", sum + add }')
}

echo "bench: building GuestOS dev (up to date after the first run)"
bazel build "${published[@]}" 2>/dev/null
execroot=$(bazel info execution_root 2>/dev/null)
file_of() {  # the output file of target $1
  local path
  path=$(bazel cquery --output=files "$1" 2>/dev/null | head -1)
  if [[ -z $path || ! -f $execroot/$path ]]; then
    echo "bench: $1 has no output file" >&2
    return 1
  fi
  echo "$execroot/$path"
}
rootfs=$(file_of "$dev:rootfs-tree.tar")
version=$(file_of "$dev:version.txt")
esp_tree=$(file_of //ic-os/bootloader:esp_tree)
grub_tree=$(file_of //ic-os/guestos:grub_tree)
partitions="$workspace/ic-os/guestos/partitions.csv"

# 1. icos, as Bazel runs it.
query="mnemonic('RootfsSplit|FileTree|Ext4Image|VerityBootArgs|VfatImage|Package|DiskImage|Sha256Sums', deps($dev:SHA256SUMS) + deps($dev:update-img.tar.zst))"
mapfile -t outputs < <(bazel aquery --output=text "$query" 2>/dev/null |
  sed -n 's/^  Outputs: \[\(.*\)\]$/\1/p' | tr ',' '\n' | sed 's/^ *//')
actions=$(bazel aquery --output=text "$query" 2>/dev/null | grep -c '^action ')
for output in "${outputs[@]}"; do
  rm -f "$execroot/$output"
done
echo "bench: icos: Bazel runs the $actions actions from rootfs-tree.tar again (${#outputs[@]} outputs deleted)"
start=$(now)
bazel build --disk_cache= --noremote_accept_cached --profile="$work.icos-profile.gz" "${published[@]}" 2>/dev/null
icos_seconds=$(since "$start")
action_seconds() {  # the wall time of the actions whose progress message matches the regex $1
  zcat "$work.icos-profile.gz" | grep -E "\"name\":\"$1\"" | sed -n 's/.*"dur":\([0-9]*\).*/\1/p' |
    awk '{ sum += $1 } END { printf "%.2f", sum / 1e6 }'
}
icos_disk=$(file_of "$dev:disk-img.tar.zst")
icos_update=$(file_of "$dev:update-img.tar.zst")

# 2. The stock tools, on the same rootfs-tree.tar.
echo "bench: stock tools on the same rootfs-tree.tar (${rootfs#"$execroot"/})"
rm -rf "$work" && mkdir -p "$work/tree" "$work/boot" "$work/var" "$work/loader" && cd "$work"
# The same boot loader files for both (not timed): icos's ESP and GRUB trees.
mkdir loader/esp loader/grub
tar -xf "$esp_tree" -C loader/esp
tar -xf "$grub_tree" -C loader/grub
bytes_of() {  # the size of partition $1 in partitions.csv (512-byte sectors)
  awk -F, -v name="$1" '{ gsub(/ /, "") } $1 == name { print $3 * 512 }' "$partitions"
}
fakeroot=(fakeroot -i state -s state)
touch state
timed extract "${fakeroot[@]}" tar -xpf "$rootfs" -C tree --numeric-owner
timed extract "${fakeroot[@]}" sh -c 'mv tree/boot/* boot/ && mv tree/var/* var/'
export E2FSPROGS_FAKE_TIME=0 SOURCE_DATE_EPOCH=0
mkfs_ext4=(mke2fs -q -F -t ext4 -b 4096 -E hash_seed=c61251eb-100b-48fe-b089-57dea7368612,root_owner=0:0 -U clear)
for part in boot root var; do
  tree=$part
  [[ $part == root ]] && tree=tree
  timed ext4 "${fakeroot[@]}" "${mkfs_ext4[@]}" -d "$tree" "$part.img" "$(($(bytes_of "A_$part") / 1024))k"
done
timed verity veritysetup format --salt=0000000000000000000000000000000000000000000000000000000000000000 \
  --uuid=00000000-0000-0000-0000-000000000000 root.img root.verity >/dev/null
for part in esp grub; do
  timed fat mkfs.vfat -i 0 -C "$part.img" $(($(bytes_of "$part") / 1024)) >/dev/null
  timed fat mcopy -s -i "$part.img" "loader/$part"/* ::/
done
timed disk truncate -s 50G disk.img
timed disk sh -c "grep -v '^#' '$partitions' | awk -F, '{gsub(/ /,\"\"); printf \"start=%s, size=%s, type=%s, uuid=%s, name=%s\n\", \$2, \$3, (\$4==\"U\" ? \"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\" : \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"), \$5, \$1}' | (echo label: gpt; echo label-id: 2B110BB7-CDEC-7D41-B97E-893EDCBE5428; cat) | sfdisk -q disk.img"
for pair in esp.img:2048 grub.img:206848 boot.img:616448 root.img:2713600 var.img:23685120; do
  timed disk dd if="${pair%%:*}" of=disk.img bs=1M seek=$((${pair##*:} / 2048)) conv=sparse,notrunc status=none
done
zstd_stock=(zstd -q -T0 -10 --long=27)
timed package sh -c "tar --sparse --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - disk.img | ${zstd_stock[*]} -o disk-img.tar.zst"
cp "$version" VERSION.TXT
timed package sh -c "tar --sparse --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - boot.img root.img var.img VERSION.TXT | ${zstd_stock[*]} -o update-img.tar.zst"
timed package sha256sum disk-img.tar.zst update-img.tar.zst >SHA256SUMS
cd "$workspace"
stock_seconds=0
for step in "${!seconds[@]}"; do
  stock_seconds=$(awk -v a="$stock_seconds" -v b="${seconds[$step]}" 'BEGIN { printf "%.2f", a + b }')
done

# What the old icos path, one zstd stream over the whole tar, made of the same images.
old_size() { zstd -dc <"$1" | "${zstd_stock[@]}" -c | wc -c; }

# 3. One line more in /etc/motd.
motd=ic-os/guestos/rootfs/etc/motd
cp "$motd" "$work/motd"
trap 'cp "$work/motd" "$motd"' EXIT
echo "benchmark $(date +%s.%N)" >>"$motd"
echo "bench: a line added to $motd, GuestOS dev rebuilt"
start=$(now)
bazel build --disk_cache= --noremote_accept_cached "$dev/..." 2>/dev/null
motd_seconds=$(since "$start")
cp "$work/motd" "$motd"
bazel build "$dev/..." 2>/dev/null

printf '\n%-28s %10s\n' "stock step" seconds
for step in extract ext4 verity fat disk package; do
  printf '%-28s %10s\n' "$step" "${seconds[$step]}"
done
printf '%-28s %10s\n' "icos: disk-img.tar.zst" "$(action_seconds 'Writing the disk image [^"]*/guestos/envs/dev/disk-img.tar.zst')"
printf '%-28s %10s\n' "icos: update-img.tar.zst" "$(action_seconds 'Packaging [^"]*/guestos/envs/dev/update-img.tar.zst')"
printf '\nfull pipeline: icos %s s (%s actions by Bazel), stock tools %s s: ratio %s\n' "$icos_seconds" "$actions" \
  "$stock_seconds" "$(awk -v a="$icos_seconds" -v b="$stock_seconds" 'BEGIN { printf "%.2f", a / b }')"
for image in disk-img.tar.zst update-img.tar.zst; do
  icos_file=$icos_disk
  [[ $image == update-img.tar.zst ]] && icos_file=$icos_update
  printf '%s: icos %d bytes, old icos path %d, stock %d\n' "$image" "$(stat -c %s "$icos_file")" \
    "$(old_size "$icos_file")" "$(stat -c %s "$work/$image")"
done
printf 'motd one-line change to a rebuilt GuestOS dev: %s s\n' "$motd_seconds"
