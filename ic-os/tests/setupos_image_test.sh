#!/usr/bin/env bash
# Checks a SetupOS variant's published image with independent tools: SHA256SUMS verifies and lists
# the disk image alone (SetupOS has no upgrade image); the GPT holds esp, grub, config, data, boot
# and root; config is a FAT filesystem labelled CONFIG (fsck.fat, fatlabel, mtools) holding the
# repository's config.ini and ssh_authorized_keys/; data is an ext4 filesystem (e2fsck, debugfs)
# whose HostOS and GuestOS disk images and HostOS layout are the very files of those variants and
# match its SHA256SUMS; the slot's command line mounts config and data read-only by partition UUID;
# and the root holds the installer, its unit and this variant's minimums.
#   setupos_image_test.sh SHA256SUMS DISK_IMG HOSTOS_DISK_IMG GUESTOS_DISK_IMG HOSTOS_LAYOUT CONFIG_INI ENV_FILE
set -euo pipefail
sums=$1 disk_archive=$2 hostos_disk=$3 guestos_disk=$4 hostos_layout=$5 config_ini=$6 env_file=$7
PATH=$PATH:/usr/sbin:/sbin
work=${TEST_TMPDIR:-$(mktemp -d)}
trap 'find "$work" -mindepth 1 -delete' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$(dirname "$sums")" && sha256sum --check --strict SHA256SUMS) || fail "SHA256SUMS does not verify"
[[ $(cut -d' ' -f3 "$sums") == disk-img.tar.zst ]] || fail "SHA256SUMS lists $(cut -d' ' -f3 "$sums" | tr '\n' ' ')"
tar --zstd -xSf "$disk_archive" -C "$work" disk.img
dump=$(sfdisk --dump "$work/disk.img")
partitions=$(sed -n 's/.*name="\([^"]*\)".*/\1/p' <<<"$dump" | tr '\n' ' ')
[[ $partitions == "esp grub config data boot root " ]] || fail "the disk's partitions are: $partitions"
# Copies partition NAME of the disk to NAME.img (sparse); prints its partition UUID.
extract() {
  local line start size
  line=$(grep "name=\"$1\"" <<<"$dump")
  start=$(sed -n 's/.*start= *\([0-9]*\).*/\1/p' <<<"$line")
  size=$(sed -n 's/.*size= *\([0-9]*\).*/\1/p' <<<"$line")
  dd if="$work/disk.img" of="$work/$1.img" bs=512 skip="$start" count="$size" conv=sparse status=none
  sed -n 's/.*uuid=\([0-9A-Fa-f-]*\).*/\1/p' <<<"$line" | tr 'A-F' 'a-f'
}
config_uuid=$(extract config)
data_uuid=$(extract data)
extract boot >/dev/null
extract root >/dev/null
rm "$work/disk.img"

fsck.fat -n "$work/config.img" >/dev/null || fail "fsck.fat finds errors in the config partition"
[[ $(fatlabel "$work/config.img") == CONFIG ]] || fail "the config partition's label is $(fatlabel "$work/config.img")"
mtype -i "$work/config.img" ::config.ini | cmp - "$config_ini" || fail "config.ini on the config partition is not $config_ini"
mdir -b -i "$work/config.img" ::ssh_authorized_keys | grep -q '/admin$' || fail "the config partition has no ssh_authorized_keys/admin"
echo "config: FAT32 CONFIG with config.ini ($(sha256sum <"$config_ini" | cut -c1-16)…) and ssh_authorized_keys/admin"

e2fsck -fn "$work/data.img" >/dev/null || fail "e2fsck finds errors in the data partition"
mkdir "$work/data"
for file in host-os.img.tar.zst guest-os.img.tar.zst host-os.layout.json SHA256SUMS; do
  debugfs -R "dump /$file $work/data/$file" "$work/data.img" 2>/dev/null
  [[ -s $work/data/$file ]] || fail "the data partition has no $file"
done
rm "$work/data.img"
(cd "$work/data" && sha256sum --check --strict SHA256SUMS) || fail "the data partition's SHA256SUMS does not verify"
cmp "$work/data/host-os.img.tar.zst" "$hostos_disk" || fail "host-os.img.tar.zst is not $hostos_disk"
cmp "$work/data/guest-os.img.tar.zst" "$guestos_disk" || fail "guest-os.img.tar.zst is not $guestos_disk"
cmp "$work/data/host-os.layout.json" "$hostos_layout" || fail "host-os.layout.json is not $hostos_layout"
echo "data: ext4 with HostOS $(sha256sum <"$hostos_disk" | cut -c1-16)… and GuestOS $(sha256sum <"$guestos_disk" | cut -c1-16)…, as built"

boot_args=$(debugfs -R "cat /boot_args" "$work/boot.img" 2>/dev/null)
for mount in "PARTUUID=$config_uuid:/mnt/config:vfat:ro" "PARTUUID=$data_uuid:/mnt/data:ext4:ro"; do
  [[ $(grep -o "systemd.mount-extra=$mount" <<<"$boot_args" | wc -l) == 2 ]] || fail "boot_args does not mount $mount: $boot_args"
done
debugfs -R "stat /opt/icos/bin/icos-install" "$work/root.img" 2>/dev/null | grep -q 'Mode:  0755' || fail "the root has no executable /opt/icos/bin/icos-install"
debugfs -R "stat /etc/systemd/system/icos-install.service" "$work/root.img" 2>/dev/null | grep -q 'Type: regular' || fail "the root has no icos-install.service"
debugfs -R "cat /etc/icos/setupos.env" "$work/root.img" 2>/dev/null | cmp - "$env_file" || fail "/etc/icos/setupos.env is not $env_file"
echo "root: icos-install, its unit and $(basename "$env_file")"
echo "PASS: SetupOS image"
