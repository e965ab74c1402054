#!/usr/bin/env bash
# Checks what a HostOS variant sets for its GuestOS VM: the VM settings in the root filesystem of
# its upgrade image (/etc/icos/guestos-vm.env, what guestos.service reads), and the QEMU command
# line that `icos vm host` builds from them, with the VM's configuration disk, which must (SEV) or
# must not (no SEV) be an SEV-SNP guest. The root carries sshd's settings and no SSH host key.
# An SEV-SNP guest starts by direct kernel boot from the launch files in /opt/icos/share/guestos-sev,
# in one of the vCPU configurations launch-measurements.json measured, with the files it measured.
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
debugfs -R "stat /etc/ssh/sshd_config.d/icos.conf" "$work/root.img" 2>/dev/null | grep -q 'Type: regular' \
  || fail "the root filesystem has no sshd_config.d/icos.conf"
if debugfs -R "ls /etc/ssh" "$work/root.img" 2>/dev/null | grep -q ssh_host_; then
  fail "the root filesystem carries an SSH host key, which every node would share"
fi
sev_dir=/opt/icos/share/guestos-sev
if [[ $expect == sev ]]; then
  # The launch files, taken out of the root filesystem; the environment names them where they are.
  mkdir -p "$work/guestos-sev"
  for name in OVMF.amdsev.fd vmlinuz initrd.img cmdline-A launch-measurements.json; do
    debugfs -R "dump $sev_dir/$name $work/guestos-sev/$name" "$work/root.img" 2>/dev/null
    [[ -s $work/guestos-sev/$name ]] || fail "the root filesystem has no $sev_dir/$name"
  done
  sed -i "s|$sev_dir/|$work/guestos-sev/|g" "$env_file"
fi
# The environment guestos.service gives icos vm host, and the command line it makes of it.
command_line=$(set -a && . "$env_file" && "$icos" vm host --dry-run --disk /dev/mapper/hostlvm-guestos \
  --config-disk "$work/config.img" --state-dir "$work/state" --serial-log "$work/serial.log" 2>&1)
echo "$command_line"
[[ $command_line == *"-drive if=none,id=config0,format=raw,readonly=on,file=$work/config.img -device virtio-blk-pci,drive=config0"* ]] \
  || fail "the configuration disk is not attached read-only"
case $expect in
  sev)
    launch=$work/guestos-sev
    [[ $command_line == *"-object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on"* ]] \
      || fail "no SEV-SNP guest object with kernel hashes"
    [[ $command_line == *"-accel kvm"* && $command_line == *"-bios $launch/OVMF.amdsev.fd"* ]] || fail "no KVM or AmdSev firmware"
    [[ $command_line == *"-kernel $launch/vmlinuz -initrd $launch/initrd.img"* ]] || fail "no direct kernel boot"
    # The launch was measured: a measurement of slot A for this vCPU count and model, of these files.
    python3 - "$launch" "$command_line" <<'PYTHON' || fail "the VM does not start as launch-measurements.json measured"
import hashlib, json, shlex, sys
launch, command_line = sys.argv[1], sys.argv[2]
argv = shlex.split(command_line.split("icos: qemu command line: ", 1)[1].splitlines()[0])
option = lambda name: argv[argv.index(name) + 1]
record = json.load(open(f"{launch}/launch-measurements.json"))
sha256 = lambda name: hashlib.sha256(open(f"{launch}/{name}", "rb").read()).hexdigest()
cmdline = open(f"{launch}/cmdline-A", "rb").read().decode()
assert option("-append") == cmdline, "-append is not cmdline-A"
assert record["firmware"]["sha256"] == sha256("OVMF.amdsev.fd"), "another firmware"
assert record["kernel"]["sha256"] == sha256("vmlinuz") and record["initrd"]["sha256"] == sha256("initrd.img"), "another kernel or initrd"
matching = [m for m in record["measurements"]
            if m["slot"] == "A" and m["cmdline"] == cmdline and m["vcpus"] == int(option("-smp")) and m["vcpu_type"] == option("-cpu")]
assert matching, f"no measurement of slot A with {option('-smp')} vCPUs of {option('-cpu')}"
print("measured:", *(f"{m['guest_features']} {m['launch_digest']}" for m in matching))
PYTHON
    ;;
  no-sev)
    [[ $command_line != *sev* ]] || fail "an SEV option in a variant without SEV"
    [[ $command_line == *"file=/dev/mapper/hostlvm-guestos"* && $command_line == *"logfile=$work/serial.log"* ]] \
      || fail "the VM does not use the guestos volume or the serial log"
    ;;
  *) fail "expect sev or no-sev, not $expect" ;;
esac
echo "PASS: HostOS variant ($expect)"
