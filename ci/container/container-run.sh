#!/usr/bin/env bash
# Runs COMMAND inside the icos build root: a Debian sid tree with Bazel 7, rules_rust, e2fsprogs,
# GRUB, OVMF, QEMU and podman, unpacked on first use under $ICOS_CACHE_DIR and reused afterwards.
#
#   ci/container/container-run.sh [COMMAND [ARG...]]    (no COMMAND: an interactive shell)
#   ci/container/container-run.sh --stop                 (end this checkout's session now)
#   ci/container/container-run.sh --host-icos | --mirror   (print the host's icos, the archive)
#
# The root is the OCI image that ci/container/build-root.pin names, a function of packages.lock
# (ci/container/relock makes both). It comes from the image store, else from the registry
# $ICOS_REGISTRY, else it is rebuilt from the lock while the Debian archive still serves those
# versions; the host's icos (built with the host's cargo) fetches, checks and unpacks it. What is
# particular to this machine (its CA certificates, the cache directory) is added once it is
# unpacked, and is part of the unpacked root's key.
#
# Root is needed to unpack the tree with its owners and device nodes and to chroot and mount into
# it. The workspace is mounted at its own absolute path; Bazel's output root and the cargo cache
# live in $ICOS_CACHE_DIR and are mounted at the same paths, so bazel-* symlinks also resolve on the
# host. Every mount is made in a private mount and PID namespace, never in the host's. Consecutive
# commands of a checkout share those namespaces (a session), and with them a Bazel server; the
# session ends by itself once nothing runs in it (see "Sessions" below). Killing a command, even
# with SIGKILL, ends every process it started except the server, which cancels its build.
#
# Environment:
#   ICOS_CACHE_DIR       where build roots and caches live (default /var/cache/icos)
#   ICOS_OCI_STORE       the store of pinned images (default $ICOS_CACHE_DIR/oci-store)
#   ICOS_REGISTRY        the OCI registry pinned images are pulled from (default: none)
#   ICOS_DEBIAN_MIRROR   the Debian archive to rebuild the root from (default: the host's apt source)
#   ICOS_ROOTS_DIR       where unpacked roots live (default $ICOS_CACHE_DIR/roots)
#   ICOS_BUILD_ROOT      another pinned root to use, icos-build-root@sha256:<digest> (repro-check
#                        sets it to the one a build record names); taken from the store or the
#                        registry only, since this checkout's lock describes its own pin
#   ICOS_BAZEL_DEPS      another Bazel dependencies image than ci/container/bazel-deps.pin names
#   ICOS_HOST_ICOS       an icos binary to use on the host instead of building one with cargo
#   ICOS_SESSION         0: run COMMAND alone, in namespaces that end with it (default 1: in the
#                        checkout's session)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(cd "$script_dir/../.." && pwd)
cache_dir=${ICOS_CACHE_DIR:-/var/cache/icos}
readonly script_dir workspace cache_dir
readonly pin_file=$script_dir/build-root.pin
readonly host_ca_dir=/usr/local/share/ca-certificates
store=${ICOS_OCI_STORE:-$cache_dir/oci-store}
roots_dir=${ICOS_ROOTS_DIR:-$cache_dir/roots}

log() { printf 'container-run: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

host_mirror() {
  local uri
  uri=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
mirror=${ICOS_DEBIAN_MIRROR:-$(host_mirror)}

# Mounts what a chroot of ROOT needs, in the current (fresh, private) mount namespace.
mount_root() {
  local root=$1
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
}

# Mounts what a chroot needs and runs "$@" in it. Runs as PID 1 of fresh mount and PID namespaces,
# so nothing here needs undoing: the kernel drops the namespaces, and their mounts, when it ends.
enter_namespace() {
  local root=$1 workdir=$2; shift 2
  mount_root "$root"
  local rc=0
  chroot "$root" /usr/bin/env -i "${ICOS_ENV[@]}" /bin/bash -c 'cd "$0" && "$@"' "$workdir" "$@" || rc=$?
  # Let a Bazel server started by COMMAND save its state; the namespace would kill it anyway.
  if chroot "$root" pgrep -x java >/dev/null 2>&1; then
    chroot "$root" /usr/bin/env -i "${ICOS_ENV[@]}" /bin/bash -c 'cd "$0" && bazel shutdown' "$workdir" >/dev/null 2>&1 || true
  fi
  return "$rc"
}

# Sets what every command in a root gets: ICOS_ENV, its environment (a fixed base, and the
# caller's TZ, LC_ALL, CI, SOURCE_DATE_EPOCH and ICOS_* variables), and ICOS_BIND_DIRS, the host
# directories mounted into the root at their own paths.
command_setup() {
  ICOS_ENV=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    LANG="${LANG:-C.UTF-8}" TERM="${TERM:-dumb}"
    CARGO_HOME="$cache_dir/cargo" PODMAN_IGNORE_CGROUPSV1_WARNING=1
    DEBIAN_FRONTEND=noninteractive)
  local name
  for name in TZ LC_ALL CI SOURCE_DATE_EPOCH $(compgen -e | grep '^ICOS_' || true); do
    [[ -v $name ]] && ICOS_ENV+=("$name=${!name}")
  done
  # The OCI store of the pinned base images outlives build roots, as Bazel's caches do.
  ICOS_BIND_DIRS=("$workspace" "$cache_dir/bazel" "$cache_dir/cargo" "$cache_dir/tools" "$cache_dir/scratch"
    "$store")
  mkdir -p "${ICOS_BIND_DIRS[@]}"
  # cargo >= 1.85 names its crates.io index cache with a new hash, while the crates-index 2.2
  # inside cargo-bazel 0.15 looks for the old name; both names must reach the same directory.
  local index_dir="$cache_dir/cargo/registry/index"
  mkdir -p "$index_dir/index.crates.io-1949cf8c6b5b557f"
  ln -sfn index.crates.io-1949cf8c6b5b557f "$index_dir/index.crates.io-6f17d22bba15001f"
}

# Runs "$@" in ROOT with WORKDIR as working directory, alone in private namespaces, which end with
# it (a Bazel server it started is shut down first). With --exec the script becomes unshare, so
# that killing it (even with SIGKILL) kills everything in the namespaces.
run_in_root() {
  local launch=()
  if [[ $1 == --exec ]]; then
    launch=(exec)
    shift
  fi
  local root=$1 workdir=$2; shift 2
  command_setup
  "${launch[@]}" unshare --mount --pid --fork --kill-child --propagation private -- /bin/bash -c \
    "$(declare -f mount_root enter_namespace); ICOS_ENV=(${ICOS_ENV[*]@Q}); ICOS_BIND_DIRS=(${ICOS_BIND_DIRS[*]@Q}); enter_namespace \"\$@\"" \
    _ "$root" "$workdir" "$@"
}

# Sessions: consecutive commands of one workspace share mount and PID namespaces, so that a Bazel
# server one of them starts answers the next ones, with its analysis in memory (a Bazel client
# only talks to a server it can see as a process). The session's PID 1, outside the chroot, keeps
# the namespaces while any other process lives in them: a running command, or a Bazel server until
# it idles out (startup --max_idle_secs in .bazelrc). Then it ends them, and their mounts with
# them: none ever reaches the host's mount table. Its record, "$session_dir/keeper", holds a line
# each: its host PID, its start time, the root, the digest of the mounts, and the workspace. The
# session lock is held shared by every command in the session, and exclusively to start a session
# or by PID 1 to end it, so that a command never enters a session that is ending.
session_dir=$cache_dir/sessions/$(printf '%s\n' "$workspace" | sha256sum | cut -c1-16)

# PID 1 of a session, in its namespaces and outside the chroot: records itself, and ends the
# session once it has been the only process in it for 5 seconds and no command holds the session
# lock. The shared lock on the roots it inherits keeps its root from being removed.
keep_session() {
  local root=$1 dir=$2 identity=$3 workspace=$4 stat lock_fd idle=0 processes
  read -r -a stat </proc/self/stat  # the host's /proc: the host PID
  printf '%s\n' "${stat[0]}" "${stat[21]}" "$root" "$identity" "$workspace" >"$dir/keeper.new"
  mv "$dir/keeper.new" "$dir/keeper"
  exec {lock_fd}>>"$dir/lock"
  while :; do
    sleep 1
    processes=("$root"/proc/[0-9]*)  # the session's own /proc
    if ((${#processes[@]} > 1)); then
      idle=0
    elif ((++idle >= 5)) && flock -x -n "$lock_fd"; then
      rm -f "$dir/keeper"
      exit 0
    fi
  done
}

# Reads the record of the session in DIR into the array SESSION if its PID 1 still runs, and fails
# otherwise.
live_session() {
  local stat
  SESSION=()
  mapfile -t SESSION 2>/dev/null <"$1/keeper" || return 1
  ((${#SESSION[@]} == 5)) || return 1
  read -r -a stat 2>/dev/null <"/proc/${SESSION[0]}/stat" || return 1
  [[ ${stat[21]} == "${SESSION[1]}" ]]
}

# Ends the session recorded in DIR: its workspace's Bazel server shuts down (saving its state),
# then PID 1 is killed, and every process left in the session with it.
stop_session() {
  local dir=$1
  if live_session "$dir"; then
    local pid=${SESSION[0]}
    log "ending the session of ${SESSION[4]}"
    nsenter --target "$pid" --mount --pid -- chroot "${SESSION[2]}" /usr/bin/env -i HOME=/root \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      /bin/bash -c 'cd "$0" && if pgrep -x java >/dev/null; then bazel shutdown; fi' "${SESSION[4]}" \
      >/dev/null 2>&1 || true
    kill -KILL "$pid" 2>/dev/null || true
    while [[ -e /proc/$pid ]]; do sleep 0.1; done
  fi
  rm -f "$dir/keeper"
}

# Starts a session for ROOT (the caller holds the session lock exclusively as LOCK_FD, which the
# session must not inherit) and reads its record into SESSION.
start_session() {
  local root=$1 identity=$2 lock_fd=$3 launcher tries
  rm -f "$session_dir/keeper"
  setsid unshare --mount --pid --fork --kill-child --propagation private -- /bin/bash -c \
    "$(declare -f mount_root keep_session); ICOS_BIND_DIRS=(${ICOS_BIND_DIRS[*]@Q}); mount_root \"\$1\" && keep_session \"\$@\"" \
    _ "$root" "$session_dir" "$identity" "$workspace" \
    </dev/null >>"$session_dir/log" 2>&1 {lock_fd}>&- &
  launcher=$!
  for ((tries = 0; tries < 300; tries++)); do
    live_session "$session_dir" && return 0
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  die "the session for $workspace did not start; see $session_dir/log"
}

# Runs "$@" as a child and waits for it, in a session's namespaces, outside the chroot. Ctrl-C
# reaches the command alone (this process and nsenter ignore SIGINT). When told to stop (SIGTERM,
# SIGHUP, or the death of its parent: the killed container-run.sh), it ends every process the
# command started that is still in the caller's session (Bazel's server has its own session and
# goes on, and cancels the command of the client it lost): SIGTERM, then SIGKILL after 5 s.
# This process holds the session lock (file descriptor LOCK_FD, shared) for the command; the
# command does not get it, or a daemon it starts (Bazel's server) would hold the lock as long as
# it lives, and a command waiting to start the session would wait for the server to idle out.
run_command() {
  local root=$1 lock_fd=$2 self=$BASHPID child status; shift 2
  end_command() {
    trap '' TERM HUP
    local signal pids tries
    for signal in TERM KILL; do
      for ((tries = 0; tries < 50; tries++)); do
        pids=$(command_processes "$root" "$self")
        [[ -n $pids ]] || exit 143
        ((tries == 0)) && kill "-$signal" $pids 2>/dev/null
        sleep 0.1
      done
    done
    exit 143
  }
  trap end_command TERM HUP
  env --default-signal=INT,QUIT "$@" <&0 {lock_fd}>&- &
  child=$!
  while :; do
    wait "$child" && status=0 || status=$?
    kill -0 "$child" 2>/dev/null || return "$status"
  done
}

# The descendants of PID in the session's /proc (ROOT/proc) that share its session ID, except the
# shell that runs this (a command substitution in PID).
command_processes() {
  local root=$1 pid=$2 stat sid
  read -r -a stat 2>/dev/null <"$root/proc/$pid/stat" || return 0
  sid=${stat[5]}
  descend() {
    local child stat
    for child in $(cat "$root/proc/$1"/task/*/children 2>/dev/null); do
      [[ $child != "$BASHPID" ]] || continue
      read -r -a stat 2>/dev/null <"$root/proc/$child/stat" || continue
      [[ ${stat[5]} == "$sid" ]] || continue
      printf '%s\n' "$child"
      descend "$child"
    done
  }
  descend "$pid"
}

# Runs "$@" in ROOT with WORKDIR as working directory, in this workspace's session (started when
# there is none, or when the one there uses another root or other mounts). The script becomes
# nsenter: killing it makes run_command end the command.
run_in_session() {
  local root=$1 workdir=$2; shift 2
  command_setup
  local identity lock_fd
  identity=$(printf '%s\n' "$root" "${ICOS_BIND_DIRS[@]}" | sha256sum | cut -c1-16)
  mkdir -p "$session_dir"
  exec {lock_fd}>>"$session_dir/lock"
  flock -s "$lock_fd"
  if ! live_session "$session_dir" || [[ ${SESSION[2]} != "$root" || ${SESSION[3]} != "$identity" ]]; then
    flock -x "$lock_fd"
    if ! live_session "$session_dir" || [[ ${SESSION[2]} != "$root" || ${SESSION[3]} != "$identity" ]]; then
      stop_session "$session_dir"
      start_session "$root" "$identity" "$lock_fd"
    fi
    flock -s "$lock_fd"
  fi
  exec env --ignore-signal=INT,QUIT nsenter --target "${SESSION[0]}" --mount --pid -- \
    setpriv --pdeathsig TERM -- /bin/bash -c \
    "$(declare -f run_command command_processes); run_command \"\$@\"" _ "$root" "$lock_fd" \
    chroot "$root" /usr/bin/env -i "${ICOS_ENV[@]}" /bin/bash -c 'cd "$0" && exec "$@"' "$workdir" "$@"
}

# The host's icos, built with the host's cargo: it fetches, checks and unpacks the pinned build
# root (and rebuilds it from the lock), before there is a build root to run anything in.
host_icos() {
  if [[ -n ${ICOS_HOST_ICOS:-} ]]; then
    [[ -x $ICOS_HOST_ICOS ]] || die "ICOS_HOST_ICOS=$ICOS_HOST_ICOS is not an executable"
    printf '%s\n' "$ICOS_HOST_ICOS"
    return
  fi
  command -v cargo >/dev/null \
    || die "the host needs cargo (rustup) to build icos, which fetches, checks and unpacks the pinned build root"
  CARGO_TARGET_DIR="$cache_dir/tools/host-target" cargo build --release --locked --quiet \
    --manifest-path "$workspace/tools/Cargo.toml" -p icos --bin icos >&2 \
    || die "building icos on the host failed"
  printf '%s\n' "$cache_dir/tools/host-target/release/icos"
}

# Joins the reasons why a way of getting the build root did not work into one sentence.
join_reasons() {
  local joined
  joined=$(printf '%s; ' "$@")
  printf '%s\n' "${joined%; }"
}

# Puts the pinned build root REFERENCE (name@sha256:digest) into the store: pulled from
# $ICOS_REGISTRY, else rebuilt from the lock while the Debian archive still serves its versions.
obtain_image() {
  local icos=$1 reference=$2 tried=()
  local digest=${reference#*@}
  if [[ -n ${ICOS_REGISTRY:-} ]]; then
    log "pulling the build root $digest from $ICOS_REGISTRY"
    if "$icos" oci pull --store "$store" "$reference"; then
      return
    fi
    tried+=("it could not be pulled from $ICOS_REGISTRY (see above)")
  else
    tried+=("no registry is configured (ICOS_REGISTRY)")
  fi
  if [[ $reference != "$(<"$pin_file")" ]]; then
    tried+=("it is not this checkout's pin, so packages.lock does not describe it (rebuild it in a checkout of the commit that pinned it)")
    die "the build root $reference (ICOS_BUILD_ROOT) is not in the store $store; $(join_reasons "${tried[@]}")"
  fi
  if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap on the host"
    apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null || die "could not install mmdebstrap on the host"
  fi
  log "rebuilding the build root from ci/container/packages.lock with $mirror (about ten minutes)"
  local ca=()
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && ca=(--ca-certificates /etc/ssl/certs/ca-certificates.crt)
  if "$icos" build-root build --check-pin --dir "$script_dir" --store "$store" --mirror "$mirror" "${ca[@]}" >/dev/null; then
    return
  fi
  tried+=("rebuilding it from the lock with $mirror failed (see above)")
  die "the pinned build root $digest is not in the store $store; $(join_reasons "${tried[@]}")"
}

# Makes the unpacked build root in PARTIAL fit this machine: the host's CA certificates (a TLS
# proxy's) in its trust stores, Java's included, and the offline Bazel settings with this cache
# directory. Its definition is part of the root's directory key.
configure_root() {
  local partial=$1 reference=$2
  # What build records name as the build root (toolchains/host_tools.bzl reads it).
  mkdir -p "$partial/etc/icos"
  printf '%s\n' "$reference" >"$partial/etc/icos/build-root"
  if [[ -d $host_ca_dir ]]; then
    mkdir -p "$partial$host_ca_dir"
    cp -a "$host_ca_dir/." "$partial$host_ca_dir/"
  fi
  # The image leaves Java's trust store out (its entries are dated): this makes it.
  run_in_root "$partial" / update-ca-certificates --fresh >"$cache_dir/ca-certificates.log" 2>&1 \
    || die "update-ca-certificates failed in the build root; see $cache_dir/ca-certificates.log"

  # Offline Bazel Central Registry: Debian's /etc/bazel/bazelrc overrides the rule sets it ships
  # and try-imports /etc/bazel.bazelrc. @bazel_tools and rules_rust name a few modules that Debian
  # does not ship and that these builds never load: empty stubs stand in for them. cargo-bazel is
  # the image's own (ci/container/packages.txt's root is built with it).
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

# Unpacks the one layer of image DIGEST of the store into DIR, with more tar options; fails when
# either side of the pipe does. icos checks the image against its digest before it writes it.
unpack_layer() {
  local icos=$1 digest=$2 dir=$3; shift 3
  "$icos" oci layer --store "$store" "$digest" | tar -C "$dir" "$@" -xf -
  local status=("${PIPESTATUS[@]}")
  [[ ${status[0]} -eq 0 && ${status[1]} -eq 0 ]]
}

# Unpacks the pinned image REFERENCE (name@sha256:digest) into ROOT (through ROOT.partial) and
# configures it.
make_root() {
  local reference=$1 root=$2 icos
  local digest=${reference#*@}
  icos=$(host_icos)
  [[ -f $store/sha256/${digest#sha256:}.oci.tar ]] || obtain_image "$icos" "$reference"
  rm -rf "$root.partial" "$root"
  mkdir -p "$root.partial"
  log "unpacking the build root $digest"
  # GNU tar makes the device nodes, owners and extended attributes as they are.
  unpack_layer "$icos" "$digest" "$root.partial" --numeric-owner --xattrs --xattrs-include='*' -p \
    || die "unpacking the build root $digest failed"
  configure_root "$root.partial" "$reference"
  mv "$root.partial" "$root"
}

# Unpacks the Bazel dependencies image (ci/container/bazel-deps.pin, or $ICOS_BAZEL_DEPS) into the
# cache directory, once: Bazel's repository cache and the cargo home then hold every download the
# workspace needs, so a build fetches nothing from the network. From the store, else the registry;
# with neither, Bazel downloads as it always does.
install_bazel_deps() {
  local reference=${ICOS_BAZEL_DEPS:-}
  if [[ -z $reference && -f $script_dir/bazel-deps.pin ]]; then
    reference=$(<"$script_dir/bazel-deps.pin")
  fi
  [[ -n $reference ]] || return 0
  [[ $reference =~ ^icos-bazel-deps@sha256:[0-9a-f]{64}$ ]] \
    || die "${ICOS_BAZEL_DEPS:+ICOS_BAZEL_DEPS: }${ICOS_BAZEL_DEPS:-$script_dir/bazel-deps.pin}: expected icos-bazel-deps@sha256:<64 hex digits>"
  local digest=${reference#*@} dir=$cache_dir/bazel-deps
  local marker=$dir/${digest#sha256:}.installed
  [[ -e $marker ]] && return 0
  mkdir -p "$dir"
  local lock_fd
  exec {lock_fd}>"$dir/.lock"
  flock -x "$lock_fd"
  if [[ ! -e $marker ]]; then
    local icos
    icos=$(host_icos)
    if [[ ! -f $store/sha256/${digest#sha256:}.oci.tar ]]; then
      if [[ -z ${ICOS_REGISTRY:-} ]]; then
        flock -u "$lock_fd"
        return 0
      fi
      log "pulling the Bazel dependencies $digest from $ICOS_REGISTRY"
      "$icos" oci pull --store "$store" "$reference" >/dev/null \
        || die "the Bazel dependencies $reference could not be pulled from $ICOS_REGISTRY (see above)"
    fi
    log "unpacking the Bazel dependencies $digest into $cache_dir"
    # Files there already are the same files (named by their hashes), or a newer index entry.
    unpack_layer "$icos" "$digest" "$cache_dir" --skip-old-files \
      || die "unpacking the Bazel dependencies $digest failed"
    touch "$marker"
  fi
  flock -u "$lock_fd"
}

root_key() {
  {
    printf '%s\n' "$1" "$cache_dir"
    declare -f configure_root
    cat "$host_ca_dir"/* 2>/dev/null || true
  } | sha256sum | cut -c1-16
}

main() {
  # For ci/container/relock: the host's icos and the Debian archive, as this script chooses them.
  case ${1:-} in
    --host-icos) host_icos; return ;;
    --mirror) printf '%s\n' "$mirror"; return ;;
    --stop)
      [[ $# -eq 1 ]] || die "--stop takes no command"
      stop_session "$session_dir"
      return
      ;;
  esac
  [[ $(id -u) -eq 0 ]] || die "must run as root (it unpacks a Debian root and mounts into it); try: sudo $0 $*"
  mkdir -p "$roots_dir"
  local reference digest key root
  reference=${ICOS_BUILD_ROOT:-$(<"$pin_file")}
  [[ $reference =~ ^icos-build-root@sha256:[0-9a-f]{64}$ ]] \
    || die "${ICOS_BUILD_ROOT:+ICOS_BUILD_ROOT: }${ICOS_BUILD_ROOT:-$pin_file}: expected icos-build-root@sha256:<64 hex digits>"
  digest=${reference#*@}
  key=$(root_key "$digest")
  root="$roots_dir/$key"

  # Shared lock while a root is in use, exclusive while one is made, so that concurrent runs
  # never see or remove a half-made root.
  exec {lock_fd}>"$roots_dir/.lock"
  flock -s "$lock_fd"
  if [[ ! -e $root.ready ]]; then
    flock -u "$lock_fd"
    # Sessions hold the lock shared while they last, and a new root ends the old ones.
    local dir
    for dir in "$cache_dir"/sessions/*/; do
      stop_session "$dir"
    done
    flock -x "$lock_fd"
    if [[ ! -e $root.ready ]]; then
      local started=$SECONDS
      log "making the build root $root from the pinned image $digest"
      make_root "$reference" "$root"
      touch "$root.ready"
      # Roots of an older pin go; a root asked for with ICOS_BUILD_ROOT leaves the others alone.
      local old
      for old in "$roots_dir"/*.ready; do
        [[ $old == "$root.ready" || -n ${ICOS_BUILD_ROOT:-} ]] && continue
        log "removing the outdated build root ${old%.ready}"
        rm -f "$old" && rm -rf "${old%.ready}"
      done
      log "build root ready after $((SECONDS - started)) s"
    fi
    flock -s "$lock_fd"
  fi

  install_bazel_deps

  local workdir=$PWD
  [[ $workdir == "$workspace" || $workdir == "$workspace"/* ]] || workdir=$workspace
  if [[ $# -eq 0 ]]; then
    [[ -t 0 ]] || die "no COMMAND given and standard input is not a terminal"
    set -- /bin/bash -l
  fi
  if [[ ${ICOS_SESSION:-1} == 0 ]]; then
    run_in_root --exec "$root" "$workdir" "$@"
  else
    run_in_session "$root" "$workdir" "$@"
  fi
}

main "$@"
