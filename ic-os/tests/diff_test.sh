#!/usr/bin/env bash
# icos diff on a real image: a copy of the GuestOS dev disk with one file changed inside its root
# partition (a data block of /etc/issue overwritten by debugfs, so only the content differs) must
# be reported as exactly that file of partition A_root, through the whole chain
# (disk-img.tar.zst > disk.img > partition > file); an identical copy must compare equal.
#   diff_test.sh ICOS DISK_IMG
set -euo pipefail
icos=$1 disk_archive=$2
PATH=$PATH:/usr/sbin:/sbin
work=${TEST_TMPDIR:-$(mktemp -d)}
# The unpacked images (gigabytes, mostly holes) go when the test ends: Bazel deletes test sandboxes
# only while its server idles, and container-run.sh ends the server with the command.
trap 'find "$work" -mindepth 1 -delete' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$work/a" "$work/b"
"$icos" unpack --input "$disk_archive" --output-dir "$work/a"
cp --sparse=always "$work/a/disk.img" "$work/b/disk.img"
rc=0; "$icos" diff "$work/a/disk.img" "$work/b/disk.img" || rc=$?
[[ $rc == 0 ]] || fail "identical disks: exit $rc, expected 0"

# The partition's start from sfdisk, an independent reader of the GPT.
start=$(sfdisk --dump "$work/b/disk.img" | sed -n 's/.*start= *\([0-9]*\),.*name="A_root".*/\1/p')
[[ -n $start ]] || fail "no A_root partition"
debugfs -w -R "zap_block -f /etc/issue -p 0x41 0" "$work/b/disk.img?offset=$((start * 512))"
"$icos" package --output "$work/b/disk-img.tar.zst" --member "disk.img=$work/b/disk.img"

rc=0; "$icos" diff "$disk_archive" "$work/b/disk-img.tar.zst" | tee "$work/report.txt" || rc=$?
[[ $rc == 1 ]] || fail "changed disk: exit $rc, expected 1"
rc=0; "$icos" diff --json "$disk_archive" "$work/b/disk-img.tar.zst" >"$work/report.json" || rc=$?
[[ $rc == 1 ]] || fail "changed disk, --json: exit $rc, expected 1"
python3 - "$work/report.json" <<'PY' || fail "the JSON report does not localise the change (above)"
import json, sys
report = json.load(open(sys.argv[1]))
differences = report["differences"]
files = [d for d in differences if d.get("path") is not None]
print(json.dumps(files, indent=1))
assert not report["identical"]
assert [d["path"] for d in files] == ["/etc/issue"], "exactly one file differs: /etc/issue"
change = files[0]
assert change["kind"] == "content", change
assert any("A_root" in part for part in change["location"]), change["location"]
PY
echo "PASS: icos diff localised the changed file"
