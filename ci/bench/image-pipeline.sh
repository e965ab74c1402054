#!/usr/bin/env bash
# Benchmark: rootfs tar -> boot and root ext4, ESP and GRUB FAT, GPT disk, disk-img.tar.zst, once with
# icos and once with the stock tools the way IC-OS runs them (extract under fakeroot, mke2fs -d DIR,
# mkfs.vfat + mcopy, sfdisk, dd conv=sparse, tar --sparse, zstd -T0). Prints wall times and sizes.
#
#   ci/container/container-run.sh ci/bench/image-pipeline.sh [WORKDIR]
#
# WORKDIR (default $ICOS_CACHE_DIR/scratch/bench, about 15 GB apparent, mostly sparse) caches the
# ~1 GB Debian trixie rootfs that mmdebstrap makes on the first run. Not a test: figures vary.
set -euo pipefail

workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${1:-${ICOS_CACHE_DIR:-/var/cache/icos}/scratch/bench}
mirror=${ICOS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly seed=6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c
readonly partitions="$workspace/ic-os/guestos/partitions.csv"
mkdir -p "$work"
cd "$work"

now() { date +%s.%N; }
declare -A seconds=()
timed() {  # timed PIPELINE STEP COMMAND...: runs COMMAND and adds its wall time to PIPELINE/STEP
  local key="$1/$2" start
  shift 2
  start=$(now)
  "$@"
  seconds[$key]=$(awk -v sum="${seconds[$key]:-0}" -v start="$start" -v end="$(now)" 'BEGIN { printf "%.3f", sum + end - start }')
}

if [[ ! -f rootfs.tar ]]; then
  echo "bench: bootstrapping a Debian trixie rootfs with a kernel and a toolchain (once)"
  SOURCE_DATE_EPOCH=1700000000 mmdebstrap --mode=root --variant=apt --format=tar \
    --include=linux-image-amd64,linux-headers-amd64,systemd-sysv,udev,initramfs-tools,gcc,g++,make,perl,python3,git,vim,locales,man-db,iproute2,openssh-client,curl,firmware-linux-free \
    --aptopt='Acquire::Check-Valid-Until "false"' trixie rootfs.tar.partial "$mirror" >mmdebstrap.log 2>&1
  mv rootfs.tar.partial rootfs.tar
fi

echo "bench: building icos (bazel -c opt)"
(cd "$workspace" && bazel build -c opt //tools/icos >/dev/null 2>&1)
icos="$(cd "$workspace" && bazel cquery -c opt --output=files //tools/icos 2>/dev/null)"
icos="$workspace/$icos"

# The same boot loader files for both pipelines (not timed): the GRUB EFI binary for the ESP, and
# modules, grub.cfg and grubenv for the GRUB partition.
rm -rf loader && mkdir -p loader/esp/EFI/BOOT loader/grub/x86_64-efi
grub-mkimage -O x86_64-efi -p '(,gpt2)/' -o loader/esp/EFI/BOOT/BOOTX64.EFI \
  part_gpt fat ext2 normal configfile linux search test regexp loadenv echo
cp /usr/lib/grub/x86_64-efi/*.mod loader/grub/x86_64-efi/
cp "$workspace/ic-os/bootloader/grub.cfg" loader/grub/grub.cfg
grub-editenv loader/grub/grubenv create
for part in esp grub; do
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "loader/$part" -cf "loader/$part.tar" .
done

echo "bench: stock pipeline"
rm -rf stock && mkdir -p stock/tree stock/boottree && cd stock
fr="fakeroot -i state -s state"
touch state
timed stock extract $fr tar -xpf ../rootfs.tar -C tree --numeric-owner
timed stock extract $fr sh -c 'mv tree/boot/* boottree/ && rm -rf tree/var/* tree/run/* tree/tmp/*'
export E2FSPROGS_FAKE_TIME=0 SOURCE_DATE_EPOCH=0
mkfs_ext4=(mke2fs -q -F -t ext4 -b 4096 -E hash_seed=c61251eb-100b-48fe-b089-57dea7368612,root_owner=0:0 -U clear)
timed stock boot-ext4 $fr "${mkfs_ext4[@]}" -d boottree boot.img 1G
timed stock root-ext4 $fr "${mkfs_ext4[@]}" -d tree root.img 3G
for part in esp grub; do
  timed stock fat mkfs.vfat -i 0 -C "$part.img" 102400 >/dev/null
  timed stock fat mcopy -s -i "$part.img" "../loader/$part"/* ::/
done
timed stock disk truncate -s 50G disk.img
timed stock disk sh -c "grep -v '^#' '$partitions' | awk -F, '{gsub(/ /,\"\"); printf \"start=%s, size=%s, type=%s, uuid=%s, name=%s\n\", \$2, \$3, (\$4==\"U\" ? \"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\" : \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"), \$5, \$1}' | (echo label: gpt; echo label-id: 2B110BB7-CDEC-7D41-B97E-893EDCBE5428; cat) | sfdisk -q disk.img"
for pair in esp.img:2048 grub.img:206848 boot.img:616448 root.img:2713600; do
  timed stock disk dd if="${pair%%:*}" of=disk.img bs=1M seek=$(( ${pair##*:} / 2048 )) conv=sparse,notrunc status=none
done
timed stock package tar --sparse --owner=0 --group=0 --numeric-owner --mtime=@0 -cf disk-img.tar disk.img
timed stock package zstd -q -T0 -10 --rm disk-img.tar -o disk-img.tar.zst
cd ..

echo "bench: icos pipeline"
rm -rf icos && mkdir icos && cd icos
timed icos split "$icos" rootfs split -i ../rootfs.tar --boot boot.tar --root root.tar
timed icos boot-ext4 "$icos" ext4 -i boot.tar -o boot.img --size 1G --label boot --partitions "$partitions" --partition-name A_boot
timed icos root-ext4 "$icos" ext4 -i root.tar -o root.img --size 3G --label root --partitions "$partitions" --partition-name A_root
for part in esp grub; do
  timed icos fat "$icos" fat -i "../loader/$part.tar" -o "$part.img" --size 100M --label "${part^^}" --partitions "$partitions" --partition-name $part
done
timed icos disk "$icos" disk --partitions "$partitions" --output disk.img --size 50G --seed $seed \
  --image esp=esp.img --image grub=grub.img --image A_boot=boot.img --image A_root=root.img
timed icos package "$icos" package --output disk-img.tar.zst --member disk.img=disk.img
cd ..

printf '\n%-10s %-10s %10s\n' pipeline step seconds
for key in $(printf '%s\n' "${!seconds[@]}" | sort); do
  printf '%-10s %-10s %10.2f\n' "${key%%/*}" "${key#*/}" "${seconds[$key]}"
done
for pipeline in stock icos; do
  total=0
  for key in "${!seconds[@]}"; do
    [[ $key == $pipeline/* ]] && total=$(awk -v a="$total" -v b="${seconds[$key]}" 'BEGIN { print a + b }')
  done
  printf '%-10s total %.2f s; disk-img.tar.zst %d bytes; disk.img allocated %s\n' "$pipeline" "$total" \
    "$(stat -c %s $pipeline/disk-img.tar.zst)" "$(du -h $pipeline/disk.img | cut -f1)"
done
echo "rootfs.tar: $(stat -c %s rootfs.tar) bytes"
