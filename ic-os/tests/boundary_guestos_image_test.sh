#!/usr/bin/env bash
# Checks the published images of a Boundary-guestOS variant with independent tools: SHA256SUMS
# verifies; the disk's GPT holds one slot (A_boot, A_root, A_var) besides ESP, GRUB and config;
# slot A's root is a verity root that veritysetup verifies with the root hash of boot_args; and the
# root holds the HTTP gateway: nginx's site serving /opt/icos/www, whose sw.js and index.html are
# the expected files (the repository's in dev, the pinned npm package's in prod).
#   boundary_guestos_image_test.sh SHA256SUMS DISK_IMG UPDATE_IMG EXPECTED_SW_JS EXPECTED_INDEX_HTML
set -euo pipefail
sums=$1 disk_archive=$2 update_archive=$3 expected_sw=$4 expected_index=$5
PATH=$PATH:/usr/sbin:/sbin
work=${TEST_TMPDIR:-$(mktemp -d)}
trap 'find "$work" -mindepth 1 -delete' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$(dirname "$sums")" && sha256sum --check --strict SHA256SUMS) || fail "SHA256SUMS does not verify"
tar --zstd -xf "$disk_archive" -C "$work" disk.img
partitions=$(sfdisk --dump "$work/disk.img" | sed -n 's/.*name="\([^"]*\)".*/\1/p' | tr '\n' ' ')
[[ $partitions == "esp grub config A_boot A_root A_var " ]] || fail "the disk's partitions are: $partitions"
rm "$work/disk.img"

tar --zstd -xf "$update_archive" -C "$work" boot.img root.img
debugfs_cat() { debugfs -R "cat $2" "$work/$1.img" 2>/dev/null; }
boot_args=$(debugfs_cat boot /boot_args)
verity_args='BOOT_ARGS_A="root=/dev/mapper/vroot icos.verity_data=PARTUUID='
[[ $boot_args == *"$verity_args"* ]] || fail "boot_args does not boot a verity root: $boot_args"
rest=${boot_args#*"$verity_args"}
hash_offset=${rest#*:}
hash_offset=${hash_offset%% *}
root_hash=${rest#*icos.verity_root_hash=}
root_hash=${root_hash%% *}
[[ $hash_offset =~ ^[0-9]+$ && $root_hash =~ ^[0-9a-f]{64}$ ]] || fail "boot_args: hash offset $hash_offset, root hash $root_hash"
veritysetup verify "$work/root.img" "$work/root.img" "$root_hash" --hash-offset="$hash_offset" \
  || fail "veritysetup verify rejects root.img with the root hash of boot_args"
echo "veritysetup verify: root.img matches root hash $root_hash (hash offset $hash_offset)"

site=$(debugfs_cat root /etc/nginx/sites-available/default)
[[ $site == *"root /opt/icos/www;"* ]] || fail "nginx's default site does not serve /opt/icos/www: $site"
debugfs -R "stat /etc/nginx/sites-enabled/default" "$work/root.img" 2>/dev/null | grep -q 'Fast link dest: "/etc/nginx/sites-available/default"' \
  || fail "nginx's default site is not enabled"
debugfs -R "stat /usr/sbin/nginx" "$work/root.img" 2>/dev/null | grep -q 'Type: regular' || fail "root lacks /usr/sbin/nginx"
for pair in "sw.js:$expected_sw" "index.html:$expected_index"; do
  name=${pair%%:*} expected=${pair#*:}
  debugfs -R "dump /opt/icos/www/$name $work/$name" "$work/root.img" 2>/dev/null
  cmp "$work/$name" "$expected" || fail "/opt/icos/www/$name is not $expected"
  echo "/opt/icos/www/$name: $(sha256sum <"$work/$name" | cut -d' ' -f1), as $expected"
done
echo "PASS: Boundary-guestOS images"
