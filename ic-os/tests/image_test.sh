#!/usr/bin/env bash
# Checks the published files of one OS variant with independent tools:
#   image_test.sh ICOS SHA256SUMS DISK_IMG UPDATE_IMG BUILD_RECORD BASE_PIN BUILD_TYPE MALICIOUS_BEHAVIOR
# SHA256SUMS verifies, the disk's GPT verifies, both filesystems of the upgrade image are clean, the
# root is a verity root that veritysetup verifies with the root hash of boot_args, and the
# filesystems hold what the variant promises (kernel, boot_args, version, the injected icos tool, the
# build type, the root account's state); the build record names the build root this runs in, the
# pinned base image and a commit.
set -euo pipefail
icos=$1 sums=$2 disk_archive=$3 update_archive=$4 record=$5 base_pin=$6 build_type=$7 malicious=$8
PATH=$PATH:/usr/sbin:/sbin
work=${TEST_TMPDIR:-$(mktemp -d)}
# The unpacked images (gigabytes, mostly holes) go when the test ends: Bazel deletes test sandboxes
# only while its server idles, and container-run.sh ends the server with the command.
trap 'find "$work" -mindepth 1 -delete' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# SHA256SUMS lists the files by name: check copies next to it.
mkdir -p "$work/published"
cp "$sums" "$disk_archive" "$update_archive" "$work/published/"
"$icos" sha256sums check "$work/published/SHA256SUMS"

# The build record: what built these files.
commit=$("$icos" build-record get commit "$record")
[[ $commit =~ ^[0-9a-f]{40}$ ]] || fail "build record: commit $commit"
[[ $("$icos" build-record get build-root "$record") == "$(cat /etc/icos/build-root)" ]] \
  || fail "build record: the build root is not this one ($(cat /etc/icos/build-root))"
[[ $("$icos" build-record get base-images "$record") == "$(grep -v '^#' "$base_pin")" ]] \
  || fail "build record: the base image is not the pinned one ($base_pin)"
[[ "icos $("$icos" build-record get icos "$record")" == "$("$icos" --version)" ]] || fail "build record: icos version"

# GNU tar restores the sparse members, holes included: an independent reader of the packages.
tar --zstd -xf "$disk_archive" -C "$work"
sfdisk --verify "$work/disk.img" >/dev/null || fail "sfdisk --verify"
for name in esp grub A_boot A_root A_var B_boot B_root B_var; do
  sfdisk --dump "$work/disk.img" | grep -q "name=\"$name\"" || fail "partition $name missing"
done

tar --zstd -xf "$update_archive" -C "$work"
for image in boot root var; do
  e2fsck -fn "$work/$image.img" >/dev/null 2>&1 || fail "e2fsck -fn $image.img"
  # Each filesystem fills its slot's partition: sizes come from partitions.csv alone.
  sectors=$(sfdisk --dump "$work/disk.img" | awk -v name="\"A_$image\"" '$0 ~ "name=" name { sub(/.*size= */, ""); sub(/,.*/, ""); print }')
  [[ $(stat -c %s "$work/$image.img") == $((sectors * 512)) ]] || fail "$image.img is not the size of A_$image ($sectors sectors)"
done
debugfs_cat() { debugfs -R "cat $2" "$work/$1.img" 2>/dev/null; }
debugfs_stat() { debugfs -R "stat $2" "$work/$1.img" 2>/dev/null; }

for file in /vmlinuz /initrd.img /boot_args; do
  debugfs_stat boot "$file" | grep -q 'Type:' || fail "boot partition lacks $file"
done
[[ "$(debugfs_cat boot /version.txt)" == "$(cat "$work/VERSION.TXT")" ]] || fail "version.txt differs from VERSION.TXT"
boot_args=$(debugfs_cat boot /boot_args)
a_root_uuid=$(sfdisk --dump "$work/disk.img" | awk '/name="A_root"/ { sub(/.*uuid=/, ""); sub(/,.*/, ""); print tolower($0) }')
# A verity root: the initramfs opens A_root with dm-verity, its hash tree after the filesystem,
# and the kernel mounts the verified device.
verity_args="BOOT_ARGS_A=\"root=/dev/mapper/vroot icos.verity_data=PARTUUID=$a_root_uuid:"
[[ $boot_args == *"$verity_args"* ]] || fail "boot_args does not boot A_root ($a_root_uuid) verified: $boot_args"
hash_offset=${boot_args#*"$verity_args"}
hash_offset=${hash_offset%% *}
root_hash=${boot_args#*"$verity_args$hash_offset icos.verity_root_hash="}
root_hash=${root_hash%% *}
[[ $hash_offset =~ ^[0-9]+$ && $root_hash =~ ^[0-9a-f]{64}$ ]] || fail "boot_args: hash offset $hash_offset, root hash $root_hash"
# veritysetup, cryptsetup's own reader, accepts the published root with the published root hash,
# and rejects a copy with one byte changed (the ext4 volume name, which e2fsck does not mind).
veritysetup verify "$work/root.img" "$work/root.img" "$root_hash" --hash-offset="$hash_offset" \
  || fail "veritysetup verify rejects root.img with the root hash of boot_args"
cp --sparse=always "$work/root.img" "$work/root-changed.img"
printf 'X' | dd of="$work/root-changed.img" bs=1 seek=$((1024 + 0x78)) conv=notrunc status=none
if veritysetup verify "$work/root-changed.img" "$work/root-changed.img" "$root_hash" --hash-offset="$hash_offset" 2>/dev/null; then
  fail "veritysetup verify accepts root.img with a changed byte"
fi
rm "$work/root-changed.img"
layout=$(debugfs_cat root /opt/icos/share/layout.json)
[[ $layout == *'"name": "B_root"'* ]] || fail "root lacks the layout the upgrade agent reads: $layout"
debugfs_stat root /opt/icos/bin/icos-agent | grep -q 'Mode:  0755' || fail "root lacks /opt/icos/bin/icos-agent (0755)"
debugfs_stat root /etc/systemd/system/multi-user.target.d/icos-boot-report.conf | grep -q 'Type: regular' \
  || fail "root does not enable icos-boot-report.service"
# Captured first: grep -q would stop reading early, and pipefail would blame debugfs's SIGPIPE.
dpkg_status=$(debugfs_cat var /lib/dpkg/status)
[[ $dpkg_status == *$'\nPackage: systemd\n'* ]] || fail "var.img lacks the dpkg status of the image"
debugfs_stat root /usr/bin/login | grep -q 'Type: regular' || fail "root lacks /usr/bin/login, which getty runs"
build_conf=$(debugfs_cat root /etc/icos/build.conf)
[[ $build_conf == *"BUILD_TYPE=$build_type"* ]] || fail "build.conf: $build_conf"
[[ $build_conf == *"MALICIOUS_BEHAVIOR=$malicious"* ]] || fail "build.conf: $build_conf"
[[ -z "$(debugfs_cat root /etc/machine-id)" ]] || fail "machine-id is not empty"
shadow=$(debugfs_cat root /etc/shadow)
root_password=$(awk -F: '$1 == "root" { print $2 }' <<<"$shadow")
# The last-change days (days since 1970) come from SOURCE_DATE_EPOCH, never from the day of the
# build: a build on another day must give the same image.
today=$(( $(date +%s) / 86400 ))
dated_today=$(awk -F: -v today="$today" '$3 != "" && $3 >= today { print $1 ":" $3 }' <<<"$shadow")
[[ -z $dated_today ]] || fail "/etc/shadow dates entries by the day of the build: $dated_today"
serial_getty=$(debugfs_stat root /etc/systemd/system/serial-getty@ttyS0.service | grep -c 'Type: symlink' || true)
if [[ $build_type == dev ]]; then
  [[ $root_password == '$6$'* ]] || fail "dev: root has no password hash"
  [[ $serial_getty == 0 ]] || fail "dev: the serial console login is masked"
else
  [[ $root_password == '*' || $root_password == '!'* ]] || fail "prod: root account is not locked ($root_password)"
  [[ $serial_getty == 1 ]] || fail "prod: the serial console login is not masked"
fi
echo "PASS: $build_type image (malicious=$malicious)"
