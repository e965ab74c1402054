#!/usr/bin/env bash
# Runs COMMAND inside the icos build root: a Debian sid tree with Bazel 7, rules_rust, e2fsprogs,
# GRUB, OVMF, QEMU and podman, created on first use under $ICOS_CACHE_DIR and reused afterwards.
#
#   ci/container/container-run.sh [COMMAND [ARG...]]    (no COMMAND: an interactive shell)
#
# The workspace is mounted at its own absolute path; Bazel's output root and the cargo cache live in
# $ICOS_CACHE_DIR and are mounted at the same paths, so bazel-* symlinks also resolve on the host.
# Every mount is made in a private mount and PID namespace: they vanish with the last process in it,
# whether COMMAND exits, fails, or the run is interrupted or killed.
#
# Environment:
#   ICOS_CACHE_DIR       where build roots and caches live (default /var/cache/icos)
#   ICOS_DEBIAN_MIRROR   Debian archive to bootstrap from (default: the host's apt source)
#   ICOS_OCI_STORE       the store of pinned base images (default $ICOS_CACHE_DIR/oci-store)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(cd "$script_dir/../.." && pwd)
cache_dir=${ICOS_CACHE_DIR:-/var/cache/icos}
readonly script_dir workspace cache_dir
readonly suite=sid
readonly cargo_bazel_version=0.15.0
readonly host_ca_dir=/usr/local/share/ca-certificates

log() { printf 'container-run: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

host_mirror() {
  local uri
  uri=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
mirror=${ICOS_DEBIAN_MIRROR:-$(host_mirror)}

# Packages named in packages.txt, without comments and blank lines.
package_list() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$script_dir/packages.txt"; }

# Mounts what a chroot needs and runs "$@" in it. Runs as PID 1 of fresh mount and PID namespaces,
# so nothing here needs undoing: the kernel drops the namespaces, and their mounts, when it ends.
enter_namespace() {
  local root=$1 workdir=$2; shift 2
  mount --bind "$root" "$root"   # podman's RUN needs / to be a mount point
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mount -t tmpfs -o mode=755 tmpfs "$root/run"
  cp /etc/resolv.conf "$root/run/resolv.conf"
  local dir
  for dir in "${ICOS_BIND_DIRS[@]}"; do
    mkdir -p "$root$dir"
    mount --bind "$dir" "$root$dir"
  done
  local rc=0
  chroot "$root" /usr/bin/env -i "${ICOS_ENV[@]}" /bin/bash -c 'cd "$0" && "$@"' "$workdir" "$@" || rc=$?
  # Let a Bazel server started by COMMAND save its state; the namespace would kill it anyway.
  if chroot "$root" pgrep -x java >/dev/null 2>&1; then
    chroot "$root" /usr/bin/env -i "${ICOS_ENV[@]}" /bin/bash -c 'cd "$0" && bazel shutdown' "$workdir" >/dev/null 2>&1 || true
  fi
  return "$rc"
}

# Runs "$@" in ROOT with WORKDIR as working directory, in private namespaces. With --exec the
# script becomes unshare, so that killing it (even with SIGKILL) kills everything in the namespaces.
run_in_root() {
  local launch=()
  if [[ $1 == --exec ]]; then
    launch=(exec)
    shift
  fi
  local root=$1 workdir=$2; shift 2
  local env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    LANG="${LANG:-C.UTF-8}" TERM="${TERM:-dumb}"
    CARGO_HOME="$cache_dir/cargo" PODMAN_IGNORE_CGROUPSV1_WARNING=1
    DEBIAN_FRONTEND=noninteractive)
  local name
  for name in TZ LC_ALL CI SOURCE_DATE_EPOCH $(compgen -e | grep '^ICOS_' || true); do
    [[ -v $name ]] && env+=("$name=${!name}")
  done
  # The OCI store of the pinned base images outlives build roots, as Bazel's caches do.
  local binds=("$workspace" "$cache_dir/bazel" "$cache_dir/cargo" "$cache_dir/tools" "$cache_dir/scratch"
    "${ICOS_OCI_STORE:-$cache_dir/oci-store}")
  mkdir -p "${binds[@]}"
  # cargo >= 1.85 names its crates.io index cache with a new hash, while the crates-index 2.2
  # inside cargo-bazel 0.15 looks for the old name; both names must reach the same directory.
  local index_dir="$cache_dir/cargo/registry/index"
  mkdir -p "$index_dir/index.crates.io-1949cf8c6b5b557f"
  ln -sfn index.crates.io-1949cf8c6b5b557f "$index_dir/index.crates.io-6f17d22bba15001f"
  "${launch[@]}" unshare --mount --pid --fork --kill-child --propagation private -- /bin/bash -c \
    "$(declare -f enter_namespace); ICOS_ENV=(${env[*]@Q}); ICOS_BIND_DIRS=(${binds[*]@Q}); enter_namespace \"\$@\"" \
    _ "$root" "$workdir" "$@"
}

# Creates the build root in PARTIAL. Its definition is part of the root's cache key: editing this
# function, packages.txt or the host's CA certificates makes a new root.
setup_root() {
  local partial=$1
  log "checking the Debian archive at $mirror"
  curl -fsS --max-time 60 -o /dev/null "$mirror/dists/$suite/Release" \
    || die "cannot reach the Debian archive at $mirror (set ICOS_DEBIAN_MIRROR to a reachable mirror)"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap on the host"
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null \
      || die "could not install debootstrap on the host"
  fi
  log "bootstrapping Debian $suite into $partial (about half a minute)"
  debootstrap --variant=minbase "$suite" "$partial" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $cache_dir/debootstrap.log"

  # The archive's sid Release file may be past its Valid-Until date.
  printf 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n' \
    >"$partial/etc/apt/apt.conf.d/90icos"
  printf 'deb %s %s main\n' "$mirror" "$suite" >"$partial/etc/apt/sources.list"
  # The host's TLS proxy CA, so that apt, cargo and Bazel's JVM can reach the registries.
  if [[ -d $host_ca_dir ]]; then
    mkdir -p "$partial$host_ca_dir"
    cp -a "$host_ca_dir/." "$partial$host_ca_dir/"
  fi

  local packages
  mapfile -t packages < <(package_list)
  log "installing ${#packages[@]} packages into the build root (a few minutes)"
  run_in_root "$partial" / /bin/bash -c 'apt-get update -q && apt-get install -y -q "$@" && update-ca-certificates --fresh && apt-get clean' \
    _ "${packages[@]}" >"$cache_dir/apt.log" 2>&1 || die "package installation failed; see $cache_dir/apt.log"

  local cargo_bazel_dir="$cache_dir/tools/cargo-bazel-$cargo_bazel_version"
  if [[ ! -x $cargo_bazel_dir/bin/cargo-bazel ]]; then
    log "building cargo-bazel $cargo_bazel_version from the crate registry (several minutes, once per cache)"
    mkdir -p "$cache_dir/tools"
    rm -rf "$cargo_bazel_dir.partial"
    run_in_root "$partial" / cargo install --locked --root "$cargo_bazel_dir.partial" \
      cargo-bazel --version "$cargo_bazel_version" >"$cache_dir/cargo-bazel.log" 2>&1 \
      || die "building cargo-bazel failed; see $cache_dir/cargo-bazel.log"
    mv "$cargo_bazel_dir.partial" "$cargo_bazel_dir"
  fi
  install -m 755 "$cargo_bazel_dir/bin/cargo-bazel" "$partial/usr/local/bin/cargo-bazel"

  # Offline Bazel Central Registry: Debian's /etc/bazel/bazelrc overrides the rule sets it ships
  # and try-imports /etc/bazel.bazelrc. @bazel_tools and rules_rust name a few modules that Debian
  # does not ship and that these builds never load: empty stubs stand in for them.
  local stub stubs_dir=/usr/local/share/icos/module-stubs
  local -a rc_lines=("startup --output_user_root=$cache_dir/bazel"
    "common --override_module=rules_rust=/usr/share/bazel/rules/rust"
    "common --repo_env=CARGO_BAZEL_GENERATOR_URL=file:///usr/local/bin/cargo-bazel"
    "common --repo_env=CARGO_BAZEL_GENERATOR_SHA256=$(sha256sum "$partial/usr/local/bin/cargo-bazel" | cut -d' ' -f1)")
  for stub in protobuf zlib buildozer apple_support aspect_rules_js; do
    mkdir -p "$partial$stubs_dir/$stub"
    printf 'module(name = "%s")\n' "$stub" >"$partial$stubs_dir/$stub/MODULE.bazel"
    : >"$partial$stubs_dir/$stub/BUILD.bazel"
    rc_lines+=("common --override_module=$stub=$stubs_dir/$stub")
  done
  printf '%s\n' "# Written by icos ci/container/container-run.sh: offline settings of this build root." \
    "${rc_lines[@]}" >"$partial/etc/bazel.bazelrc"
}

root_key() {
  {
    declare -f setup_root
    package_list
    cat "$host_ca_dir"/* 2>/dev/null || true
    printf '%s\n' "$mirror"
  } | sha256sum | cut -c1-16
}

main() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (it bootstraps a Debian root and mounts into it); try: sudo $0 $*"
  mkdir -p "$cache_dir/roots"
  local key root
  key=$(root_key)
  root="$cache_dir/roots/$key"

  # Shared lock while a root is in use, exclusive while one is made, so that concurrent runs
  # never see or remove a half-made root.
  exec {lock_fd}>"$cache_dir/roots/.lock"
  flock -s "$lock_fd"
  if [[ ! -e $root.ready ]]; then
    flock -u "$lock_fd"
    flock -x "$lock_fd"
    if [[ ! -e $root.ready ]]; then
      local started=$SECONDS
      log "creating the build root $root (first run, or packages.txt changed)"
      rm -rf "$root.partial" "$root"
      setup_root "$root.partial"
      mv "$root.partial" "$root"
      touch "$root.ready"
      local old
      for old in "$cache_dir"/roots/*.ready; do
        [[ $old == "$root.ready" ]] && continue
        log "removing the outdated build root ${old%.ready}"
        rm -f "$old" && rm -rf "${old%.ready}"
      done
      log "build root ready after $((SECONDS - started)) s"
    fi
    flock -s "$lock_fd"
  fi

  local workdir=$PWD
  [[ $workdir == "$workspace" || $workdir == "$workspace"/* ]] || workdir=$workspace
  if [[ $# -eq 0 ]]; then
    [[ -t 0 ]] || die "no COMMAND given and standard input is not a terminal"
    set -- /bin/bash -l
  fi
  run_in_root --exec "$root" "$workdir" "$@"
}

main "$@"
