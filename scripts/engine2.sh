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
# How: dockerd runs under `nsenter --net` (the namespace) and `unshare --mount
# --propagation slave` (its mounts stay private and vanish with it), with no
# --containerd flag, so it starts a containerd of its own as a child inside
# the namespace; that containerd's shims, and so a managed plugin with
# network type host, run in the namespace too. Not `ip netns exec`: it
# remounts /sys, which hides the cgroup v1 mounts under /sys/fs/cgroup, and
# dockerd then refuses to start ("Devices cgroup isn't mounted").
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

# leftover_pids: processes of this engine still running: those in its network
# namespace (containerd, shims, plugins), in its private mount namespace, or
# in the cgroup of one of its containers or plugins (IDs from its data root).
leftover_pids() {
  local ids=() d mnt=""
  for d in "$dir"/data/containers/* "$dir"/data/plugins/*; do
    d=${d##*/}
    [[ $d =~ ^[0-9a-f]{64}$ ]] && ids+=("$d")
  done
  [ -f "$dir/mntns" ] && mnt=$(cat "$dir/mntns")
  # Never the caller's own mount or network namespace: that would be everyone.
  [ "$mnt" = "$(readlink /proc/self/ns/mnt)" ] && mnt=""
  {
    [ -e "/run/netns/$ns" ] && ! [ "/run/netns/$ns" -ef /proc/self/ns/net ] && ip netns pids "$ns" 2>/dev/null
    [ -n "$mnt" ] && find /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%p %l\n' 2>/dev/null |
      awk -v m="$mnt" '$2 == m { split($1, a, "/"); print a[3] }'
    [ ${#ids[@]} -gt 0 ] && grep -lsF -f <(printf '%s\n' "${ids[@]}") /proc/[0-9]*/cgroup | cut -d/ -f3
    true
  } | grep -vx "$$" | sort -un || true
}

stop() {
  local pid="" pids
  [ -f "$dir/engine.pid" ] && pid=$(cat "$dir/engine.pid")
  if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    kill -TERM "$pid"
    # dockerd stops its containers (up to 15 s each), plugins and containerd.
    if ! wait_gone "$stopTimeout" "$pid"; then
      echo "engine2: dockerd $pid did not stop in ${stopTimeout}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone 5 "$pid" || true
    fi
  fi
  # Whatever outlived it (a crash, a kill -9): containerd, shims, containers.
  pids=$(leftover_pids)
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    wait_gone 5 $pids || { kill -KILL $pids 2>/dev/null || true; wait_gone 5 $pids || true; }
  fi
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
  setsid nsenter --net="/run/netns/$ns" -- \
    "${join[@]}" \
    dockerd --config-file "$dir/daemon.json" \
    --data-root "$dir/data" --exec-root "$execroot" --pidfile "$dir/docker.pid" \
    -H "unix://$sock" \
    --containerd-namespace "felt-$ns" --containerd-plugins-namespace "felt-$ns-plugins" \
    --storage-driver vfs --bridge=none --iptables=true \
    "$@" </dev/null >>"$log" 2>&1 &
  local pid=$! deadline=$((SECONDS + startTimeout)) mnt
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
  mnt=$(readlink "/proc/$pid/ns/mnt")
  [ "$mnt" != "$(readlink /proc/self/ns/mnt)" ] && echo "$mnt" >"$dir/mntns"
  echo "unix://$sock"
}

start() {
  [ -e "/run/netns/$ns" ] || { echo "engine2: no network namespace $ns (ip netns add $ns)" >&2; exit 1; }
  if [ "/run/netns/$ns" -ef /proc/self/ns/net ]; then echo "engine2: $ns is this shell's own network namespace" >&2; exit 1; fi
  for b in dockerd containerd runc nsenter unshare; do
    command -v $b >/dev/null || { echo "engine2: $b not found" >&2; exit 1; }
  done
  stop # an earlier engine of this name, or its leftovers
  mkdir -p "$dir/data" "$execroot"
  echo '{}' >"$dir/daemon.json"
  : >"$log"
  join=(unshare --mount --propagation slave --)
  launch "$@" || { stop; exit 1; }
}

# restart [DOCKERD-FLAG...]: SIGTERM dockerd (it stops the containerd it
# started; the shims, and with --live-restore the containers and plugins, keep
# running), wait for it to exit, and start it again as start does, but in the
# old dockerd's mount namespace while any process (a shim) still runs there:
# the mounts it made (containers' network namespaces under the exec root, shm)
# live in that namespace, as on a host where dockerd restarts. The log is
# appended to. A dockerd that already died is just started again. On failure
# the engine is left for stop (and its log for log).
restart() {
  local pid="" mnt="" in=""
  [ -f "$dir/engine.pid" ] && pid=$(cat "$dir/engine.pid")
  [ -d "$dir/data" ] || { echo "engine2: no engine $ns (start it first)" >&2; exit 1; }
  if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then # else: it died; start it
    kill -TERM "$pid"
    wait_gone "$stopTimeout" "$pid" || { echo "engine2: dockerd $pid did not stop in ${stopTimeout}s" >&2; exit 1; }
  fi
  [ -f "$dir/mntns" ] && mnt=$(cat "$dir/mntns")
  [ "$mnt" = "$(readlink /proc/self/ns/mnt)" ] && mnt=""
  if [ -n "$mnt" ]; then
    in=$(find /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%p %l\n' 2>/dev/null |
      awk -v m="$mnt" '$2 == m { split($1, a, "/"); print a[3]; exit }' || true)
  fi
  join=(unshare --mount --propagation slave --)
  [ -n "$in" ] && join=(nsenter --mount="/proc/$in/ns/mnt" --)
  echo "engine2: restarting dockerd of $ns ($([ -n "$in" ] && echo "in the mount namespace of pid $in" || echo "in a new mount namespace"))" >>"$log"
  launch "$@" || exit 1
}

case $cmd in
start) start "$@" ;;
stop) stop ;;
restart) restart "$@" ;;
host) echo "unix://$sock" ;;
log) tail -n "${1:-100}" "$log" 2>/dev/null || true ;;
*) usage ;;
esac
