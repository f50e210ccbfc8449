#!/usr/bin/env bash
# A Docker engine of its own inside a network namespace: a second "host" for
# the multi-host demo (scripts/demo-multihost.sh) and e2e/twoengines_test.go.
#
#   engine2.sh start NS [DOCKERD-FLAG...]  start dockerd in the existing netns NS; prints its DOCKER_HOST
#   engine2.sh stop NS                     stop it and remove everything it made (idempotent, also after a crash)
#   engine2.sh host NS                     print its DOCKER_HOST (unix://...)
#   engine2.sh log NS [N]                  print the last N (100) lines of its dockerd log (plugins' output too)
#   engine2.sh restart NS [DOCKERD-FLAG...] restart only its dockerd (SIGTERM, wait, start again): give the
#                                          flags given to start; shims, and with --live-restore containers and
#                                          plugins, survive; the new dockerd joins the old one's mount namespace
#
# ENGINE2_BIN=DIR (start): run the dockerd, containerd, containerd-shim-runc-v2,
# runc, docker-proxy and docker-init of DIR (scripts/engines.sh dir 26|29)
# instead of the machine's; restart and stop use the same ones.
# ENGINE2_DAEMON_JSON='{...}' (start): its daemon.json (default {}), e.g.
# '{"dns":["169.254.53.53"]}', the one-time setting of felt's names.
#
# How: dockerd runs under `nsenter --net` (the namespace) and `unshare --mount
# --propagation slave` (its mounts stay private and vanish with it), with no
# --containerd flag, so it starts a containerd of its own as a child inside
# the namespace; that containerd's shims, and so a managed plugin with
# network type host, run in the namespace too. Not `ip netns exec`: it
# remounts /sys, which hides the cgroup v1 mounts under /sys/fs/cgroup, and
# dockerd then refuses to start ("Devices cgroup isn't mounted").
# Its mount namespace is kept by a handle, a bind mount of the namespace
# (unshare --mount=FILE) under /run/felt-engines (a private mount, as
# unshare(1) requires), so restart rejoins that very namespace and stop ends
# it; never by its inode number, which the kernel hands to the next new
# namespace as soon as this one empties.
#
# stop signals only processes of this engine, identified by what they
# really share, never by a number the kernel recycles: dockerd by its pid
# *and* its exec root in its command line; containerd and the shims by the
# exec root in theirs (their config and socket live there); containers and
# plugins through runc's own state under the exec root (runc delete --force)
# and by their cgroups, named by their 64-hex IDs in this engine's data
# root. Not by network namespace: a test may run its own processes there.
#
# Its own data root (vfs: no overlay mounts to undo), exec root, pidfile,
# socket, containerd namespaces and an empty --config-file, so the host's
# /etc/docker/daemon.json (data-root, storage-driver) does not apply. No
# default bridge; --iptables=true, so docker_gwbridge works inside NS.
set -euo pipefail
usage() { echo "usage: $0 start|stop|restart|host|log NS [DOCKERD-FLAG...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 ns=$2
shift 2
case $ns in *[!A-Za-z0-9_.-]*|"") echo "engine2: bad namespace name '$ns'" >&2; exit 2 ;; esac
# Managed plugins' sockets are <exec-root>/plugins/<64-hex id>/<name>.sock and
# a unix socket path has at most 107 bytes: keep the exec root short.
[ ${#ns} -le 14 ] || { echo "engine2: namespace name '$ns' longer than 14 characters" >&2; exit 2; }
dir=/tmp/felt-engine-$ns # data root, socket, pidfile, log
execroot=/run/felt-$ns
handles=/run/felt-engines # a private mount: the engines' mount namespace handles
mnth=$handles/$ns.mnt
sock=$dir/docker.sock
log=$dir/dockerd.log
startTimeout=${ENGINE2_START_TIMEOUT:-30} # seconds
stopTimeout=${ENGINE2_STOP_TIMEOUT:-30}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# wait_gone SECONDS PID...: true when every PID has exited in time.
wait_gone() {
  local deadline=$((SECONDS + $1)) p left
  shift
  while :; do
    left=0
    for p in "$@"; do alive "$p" && left=1; done
    [ $left = 0 ] && return 0
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

# engine_bin: the directory of this engine's binaries ("" for the machine's).
engine_bin() { cat "$dir/bin" 2>/dev/null || true; }

# ours PID: true when PID runs with this engine's exec root (or a path in it)
# as one of its arguments: dockerd (--exec-root), containerd (--config
# <exec root>/containerd/containerd.toml), the shims (-address <exec
# root>/containerd/containerd.sock).
ours() { grep -qszxE -- "$(execroot_re)" "/proc/$1/cmdline"; }
execroot_re() { printf '%s(/.*)?' "${execroot//./\\.}"; }

# handle_alive: the mount namespace handle is mounted.
handle_alive() { [ -e "$mnth" ] && mountpoint -q "$mnth"; }

# in_mntns CMD...: run CMD in the engine's mount namespace (where its
# containers' mounts are), or here when there is none.
in_mntns() {
  if handle_alive; then nsenter --mount="$mnth" -- "$@"; else "$@"; fi
}

# delete_containers: runc delete --force every container and plugin of this
# engine that runc still has state for (after a crash, a kill -9, or a
# --live-restore dockerd that left them running). runc finds their
# processes by its own state and cgroups.
delete_containers() {
  local runc st root id bin
  bin=$(engine_bin)
  runc=${bin:+$bin/}runc
  [ -d "$execroot" ] || return 0
  in_mntns find "$execroot" -maxdepth 6 -name state.json 2>/dev/null | while read -r st; do
    id=${st%/state.json}
    root=${id%/*}
    id=${id##*/}
    in_mntns "$runc" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
  done
}

# leftover_pids: processes of this engine still running: its containerd and
# shims (exec root in their command line) and whatever runs in the cgroup of
# one of its containers or plugins (IDs from its data root).
leftover_pids() {
  local ids=() d
  for d in "$dir"/data/containers/* "$dir"/data/plugins/*; do
    d=${d##*/}
    [[ $d =~ ^[0-9a-f]{64}$ ]] && ids+=("$d")
  done
  {
    grep -lszxE -- "$(execroot_re)" /proc/[0-9]*/cmdline | cut -d/ -f3
    [ ${#ids[@]} -gt 0 ] && grep -lsF -f <(printf '%s\n' "${ids[@]}") /proc/[0-9]*/cgroup | cut -d/ -f3
    true
  } | grep -vx "$$" | sort -un || true
}

stop() {
  local pid="" pids
  [ -f "$dir/engine.pid" ] && pid=$(cat "$dir/engine.pid")
  if alive "$pid" && ours "$pid"; then
    kill -TERM "$pid"
    # dockerd stops its containers (up to 15 s each), plugins and containerd.
    if ! wait_gone "$stopTimeout" "$pid"; then
      echo "engine2: dockerd $pid did not stop in ${stopTimeout}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone 5 "$pid" || true
    fi
  fi
  # Whatever outlived it (a crash, a kill -9, --live-restore): containers,
  # plugins, containerd, shims.
  delete_containers
  pids=$(leftover_pids)
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    wait_gone 5 $pids || { kill -KILL $pids 2>/dev/null || true; wait_gone 5 $pids || true; }
  fi
  # The handle: the namespace ends with its last process and this mount.
  handle_alive && umount "$mnth" 2>/dev/null || true
  rm -f "$mnth"
  # Its mounts were private to it; unmount any that leaked into this namespace.
  awk -v a="$dir" -v b="$execroot" '$5 == a || index($5, a "/") == 1 || $5 == b || index($5, b "/") == 1 { print $5 }' \
    /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # Cgroups of containers and plugins killed without runc's clean-up.
  local d id
  for d in "$dir"/data/containers/* "$dir"/data/plugins/*; do
    id=${d##*/}
    [[ $id =~ ^[0-9a-f]{64}$ ]] || continue
    find /sys/fs/cgroup -depth -type d -name "$id" -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$dir" "$execroot"
}

# launch [DOCKERD-FLAG...]: starts dockerd in NS's network namespace and in
# the mount namespace the array join sets up, appending to the log, and
# waits until it answers; prints its DOCKER_HOST. Returns 1, with the log's
# last lines, if it exits or is not ready in time. setsid: out of the
# caller's process group (a ^C to the demo does not hit it; the trap stops
# it). nsenter and the joiner exec in turn: $! is dockerd.
launch() {
  local bin
  bin=$(engine_bin)
  PATH=${bin:+$bin:}$PATH setsid nsenter --net="/run/netns/$ns" -- \
    "${join[@]}" \
    dockerd --config-file "$dir/daemon.json" \
    --data-root "$dir/data" --exec-root "$execroot" --pidfile "$dir/docker.pid" \
    -H "unix://$sock" \
    --containerd-namespace "felt-$ns" --containerd-plugins-namespace "felt-$ns-plugins" \
    --storage-driver vfs --bridge=none --iptables=true \
    "$@" </dev/null >>"$log" 2>&1 &
  local pid=$! deadline=$((SECONDS + startTimeout))
  echo "$pid" >"$dir/engine.pid" # dockerd writes docker.pid itself, once started
  until docker -H "unix://$sock" version >/dev/null 2>&1; do
    if ! alive "$pid"; then
      echo "engine2: dockerd in $ns exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "engine2: dockerd in $ns not ready after ${startTimeout}s; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "unix://$sock"
}

start() {
  [ -e "/run/netns/$ns" ] || { echo "engine2: no network namespace $ns (ip netns add $ns)" >&2; exit 1; }
  if [ "/run/netns/$ns" -ef /proc/self/ns/net ]; then echo "engine2: $ns is this shell's own network namespace" >&2; exit 1; fi
  local bin=${ENGINE2_BIN:-}
  if [ -n "$bin" ]; then
    bin=$(cd "$bin" && pwd) || { echo "engine2: ENGINE2_BIN $ENGINE2_BIN is not a directory" >&2; exit 1; }
  fi
  for b in dockerd containerd runc; do
    PATH=${bin:+$bin:}$PATH command -v $b >/dev/null || { echo "engine2: $b not found" >&2; exit 1; }
  done
  for b in nsenter unshare mountpoint docker; do
    command -v $b >/dev/null || { echo "engine2: $b not found" >&2; exit 1; }
  done
  stop # an earlier engine of this name, or its leftovers
  mkdir -p "$dir/data" "$execroot"
  echo "$bin" >"$dir/bin"
  printf '%s\n' "${ENGINE2_DAEMON_JSON:-{\}}" >"$dir/daemon.json"
  : >"$log"
  new_mntns
  launch "$@" || { stop; exit 1; }
  forget_other_handles
}

# new_mntns: sets join to unshare a new mount namespace, propagation slave,
# with its handle at $mnth. /run/felt-engines is made a private mount of its
# own first (unshare(1): the handle must not be on a shared mount, or the
# namespace would hold itself).
new_mntns() {
  mkdir -p "$handles"
  (
    flock 8
    mountpoint -q "$handles" || mount --bind "$handles" "$handles"
    mount --make-private "$handles"
  ) 8>"$handles.lock"
  : >"$mnth"
  join=(unshare --mount="$mnth" --propagation slave --)
}

# forget_other_handles: the new namespace began as a copy of this one, with
# the other engines' handles in it; unmount them there, so that an engine's
# namespace ends when its own stop unmounts its handle here.
forget_other_handles() {
  handle_alive && nsenter --mount="$mnth" -- umount -l "$handles" 2>/dev/null || true
}

# restart [DOCKERD-FLAG...]: SIGTERM dockerd (it stops the containerd it
# started; the shims, and with --live-restore the containers and plugins, keep
# running), wait for it to exit, and start it again as start does, in the
# same mount namespace (through its handle): the mounts it made (containers'
# network namespaces under the exec root, shm) live there, as on a host where
# dockerd restarts. The log is appended to. A dockerd that already died is
# just started again. On failure the engine is left for stop (and its log for
# log).
restart() {
  local pid=""
  [ -f "$dir/engine.pid" ] && pid=$(cat "$dir/engine.pid")
  [ -d "$dir/data" ] || { echo "engine2: no engine $ns (start it first)" >&2; exit 1; }
  if alive "$pid" && ours "$pid"; then # else: it died; start it
    kill -TERM "$pid"
    wait_gone "$stopTimeout" "$pid" || { echo "engine2: dockerd $pid did not stop in ${stopTimeout}s" >&2; exit 1; }
  fi
  if handle_alive; then
    join=(nsenter --mount="$mnth" --)
    echo "engine2: restarting dockerd of $ns in its mount namespace" >>"$log"
    launch "$@" || exit 1
  else
    new_mntns
    echo "engine2: restarting dockerd of $ns in a new mount namespace (no handle of the old one)" >>"$log"
    launch "$@" || exit 1
    forget_other_handles
  fi
}

case $cmd in
start) start "$@" ;;
stop) stop ;;
restart) restart "$@" ;;
host) echo "unix://$sock" ;;
log) tail -n "${1:-100}" "$log" 2>/dev/null || true ;;
*) usage ;;
esac
