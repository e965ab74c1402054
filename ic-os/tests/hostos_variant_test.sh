#!/usr/bin/env bash
# Checks what a HostOS variant sets for its GuestOS VM: the VM settings in the root filesystem of
# its upgrade image (/etc/icos/guestos-vm.env, what guestos.service reads), and the QEMU command
# line that `icos vm host` builds from them, which must (SEV) or must not (no SEV) be an SEV-SNP guest.
#   hostos_variant_test.sh ICOS UPDATE_IMG sev|no-sev
set -euo pipefail
icos=$1 update_archive=$2 expect=$3
PATH=$PATH:/usr/sbin:/sbin
work=${TEST_TMPDIR:-$(mktemp -d)}
# The unpacked images (gigabytes, mostly holes) go when the test ends: Bazel deletes test sandboxes
# only while its server idles, and container-run.sh ends the server with the command.
trap 'find "$work" -mindepth 1 -delete' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

tar --zstd -xf "$update_archive" -C "$work" root.img
env_file=$work/guestos-vm.env
debugfs -R "dump /etc/icos/guestos-vm.env $env_file" "$work/root.img" 2>/dev/null
[[ -s $env_file ]] || fail "the root filesystem has no /etc/icos/guestos-vm.env"
debugfs -R "stat /etc/systemd/system/guestos.service" "$work/root.img" 2>/dev/null | grep -q 'Type: regular' \
  || fail "the root filesystem has no guestos.service"
# The environment guestos.service gives icos vm host, and the command line it makes of it.
command_line=$(set -a && . "$env_file" && "$icos" vm host --dry-run --disk /dev/mapper/hostlvm-guestos \
  --state-dir "$work/state" --serial-log "$work/serial.log" 2>&1)
echo "$command_line"
case $expect in
  sev)
    [[ $command_line == *"-object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1"* ]] || fail "no SEV-SNP guest object"
    [[ $command_line == *"-accel kvm"* && $command_line == *"-bios /usr/share/ovmf/OVMF.amdsev.fd"* ]] || fail "no KVM or AmdSev firmware"
    ;;
  no-sev)
    [[ $command_line != *sev* ]] || fail "an SEV option in a variant without SEV"
    [[ $command_line == *"file=/dev/mapper/hostlvm-guestos"* && $command_line == *"logfile=$work/serial.log"* ]] \
      || fail "the VM does not use the guestos volume or the serial log"
    ;;
  *) fail "expect sev or no-sev, not $expect" ;;
esac
echo "PASS: HostOS variant ($expect)"
