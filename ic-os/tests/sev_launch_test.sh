#!/usr/bin/env bash
# Checks the launch files of a variant (sev-launch/) against independent tools: each launch digest
# in launch-measurements.json is what virtee's sev-snp-measure computes from the published kernel,
# initrd, command line and firmware; the kernel and initrd are the boot partition's /vmlinuz and
# /initrd.img, and each cmdline-<slot> is its BOOT_ARGS_<slot> in /boot_args (read with debugfs
# from the update image's boot.img); and veritysetup verifies the published root.img with the
# root hash and hash offset that slot A's measured command line names.
#   sev_launch_test.sh SEV_SNP_MEASURE_WHEEL FIRMWARE UPDATE_IMG LAUNCH_FILE...
set -euo pipefail
wheel=$(realpath "$1") firmware=$2 update_archive=$3
shift 3
PATH=$PATH:/usr/sbin:/sbin
work=${TEST_TMPDIR:-$(mktemp -d)}
trap 'find "$work" -mindepth 1 -delete' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

launch=$(dirname "$1")
for name in vmlinuz initrd.img launch-measurements.json; do
  [[ -s $launch/$name ]] || fail "no $name among the launch files"
done

tar --zstd -xf "$update_archive" -C "$work" boot.img root.img
# debugfs does not follow a symbolic link it is asked to dump: follow it here.
dump() {
  local path=$1 output=$2 target
  target=$(debugfs -R "stat $path" "$work/boot.img" 2>/dev/null | sed -n 's/^Fast link dest: "\(.*\)"$/\1/p')
  if [[ -n $target ]]; then
    [[ $target == /* ]] || target=$(dirname "$path" | sed 's|/$||')/$target
    dump "$target" "$output"
    return
  fi
  debugfs -R "dump $path $output" "$work/boot.img" 2>/dev/null
  [[ -s $output ]] || fail "boot.img has no $path"
}
dump /vmlinuz "$work/vmlinuz"
dump /initrd.img "$work/initrd.img"
dump /boot_args "$work/boot_args"
cmp "$work/vmlinuz" "$launch/vmlinuz" || fail "vmlinuz is not the boot partition's /vmlinuz"
cmp "$work/initrd.img" "$launch/initrd.img" || fail "initrd.img is not the boot partition's /initrd.img"

PYTHONPATH=$wheel PYTHONDONTWRITEBYTECODE=1 python3 - "$launch" "$firmware" "$work/boot_args" <<'PYTHON' \
  || fail "the launch measurements do not match sev-snp-measure"
import hashlib, json, os, re, subprocess, sys
launch, firmware, boot_args = sys.argv[1:]
record = json.load(open(f"{launch}/launch-measurements.json"))

def sev_snp_measure(*args):
    program = "import sys; from sevsnpmeasure.cli import main; sys.argv[0] = 'sev-snp-measure'; main()"
    return subprocess.run([sys.executable, "-c", program, *args], check=True, capture_output=True, text=True).stdout.strip()

sha256 = lambda path: hashlib.sha256(open(path, "rb").read()).hexdigest()
assert record["firmware"]["sha256"] == sha256(firmware), "the firmware is not the toolchain's"
assert record["firmware"]["ovmf_hash"] == sev_snp_measure("--mode", "snp:ovmf-hash", "--ovmf", firmware), "ovmf_hash"
assert record["kernel"]["sha256"] == sha256(f"{launch}/vmlinuz"), "kernel sha256"
assert record["initrd"]["sha256"] == sha256(f"{launch}/initrd.img"), "initrd sha256"
# BOOT_ARGS_<slot>="..." as grub.cfg sources them.
boot_lines = dict(re.findall(r'^BOOT_ARGS_(\w+)="([^"]*)"$', open(boot_args).read(), re.M))
slots = set()
for m in record["measurements"]:
    cmdline = open(f"{launch}/{m['cmdline_file']}", "rb").read().decode()
    assert cmdline == m["cmdline"] == boot_lines[m["slot"]], f"slot {m['slot']}: the command line is not BOOT_ARGS_{m['slot']}"
    assert m["cmdline_sha256"] == hashlib.sha256(cmdline.encode() + b"\0").hexdigest()
    digest = sev_snp_measure("--mode", "snp", "--vcpus", str(m["vcpus"]), "--vcpu-type", m["vcpu_type"],
                             "--guest-features", m["guest_features"], "--ovmf", firmware,
                             "--kernel", f"{launch}/vmlinuz", "--initrd", f"{launch}/initrd.img", "--append", cmdline)
    assert digest == m["launch_digest"], f"{m}: sev-snp-measure says {digest}"
    slots.add(m["slot"])
    print(f"slot {m['slot']} {m['vcpus']} x {m['vcpu_type']} features {m['guest_features']}: {digest}")
assert "A" in slots, f"slot A is not measured (slots {sorted(slots)})"
PYTHON
# The measured command line pins the root: veritysetup accepts root.img with its hash and offset.
cmdline=$(<"$launch/cmdline-A")
hash_offset=${cmdline#*icos.verity_data=*:}
hash_offset=${hash_offset%% *}
root_hash=${cmdline#*icos.verity_root_hash=}
root_hash=${root_hash%% *}
[[ $hash_offset =~ ^[0-9]+$ && $root_hash =~ ^[0-9a-f]{64}$ ]] || fail "cmdline-A: hash offset $hash_offset, root hash $root_hash"
veritysetup verify "$work/root.img" "$work/root.img" "$root_hash" --hash-offset="$hash_offset" \
  || fail "veritysetup verify rejects root.img with the root hash of cmdline-A"
echo "veritysetup verify: root.img matches the root hash $root_hash of cmdline-A"
echo "PASS: launch files of $(basename "$(dirname "$launch")")/$(basename "$launch")"
