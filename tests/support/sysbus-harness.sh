#!/usr/bin/env bash
# sysbus-harness.sh -- omadmd test harness: an isolated, *real* D-Bus system bus + polkitd
# (+ NetworkManager) for omadmd's integration tests and for manual runs, on a machine where
# systemd is not PID 1 and no system bus runs (CI, containers, VMs).
#
# Proven on Debian 12 (bookworm), as root: dbus 1.14.10, polkitd 122 (duktape JS rules),
# NetworkManager 1.42.4. The Rust side is tests/support/sysbus.rs (SysBus::start()).
#
# Everything runs inside a private mount+network namespace held by one "holder" process,
# so nothing on the host changes:
#   * in the namespace /run is a fresh tmpfs; /run/dbus is bind-mounted from
#     $HARNESS_DIR/run-dbus, so the bus is at the standard path /run/dbus/system_bus_socket
#     for processes in the namespace, and at $HARNESS_DIR/run-dbus/system_bus_socket for
#     processes on the host (DBUS_SYSTEM_BUS_ADDRESS=unix:path=... there). PIDs, /proc, /tmp,
#     /var, /etc and users are the host's (no PID or user namespace), so polkitd resolves
#     bus peers on the host and in the namespace alike.
#   * /usr/share/polkit-1/actions and /etc/polkit-1/rules.d are private copies
#     ($HARNESS_DIR/polkit-actions, $HARNESS_DIR/polkit-rules), bind-mounted for polkitd:
#     drop .policy / .rules files there; polkitd reloads them itself (inotify).
#   * extra bus policy (.conf) goes in $HARNESS_DIR/bus.d; `reload` makes the bus re-read it.
#   * with NetworkManager (HARNESS_NM=1): /sys is re-mounted read-only (NM then runs without
#     udev); NM manages veth "nm0" (10.77.0.2/24) whose peer "peer0" (10.77.0.1/24) lives in
#     a second private netns with a tiny HTTP server answering NM's connectivity check;
#     `connectivity` and `carrier` flip what NM sees.
#
# Usage:
#   sysbus-harness.sh start [OPTIONS]   install (apt) what is missing, start, print env
#       --omadmd               install this checkout's dbus/org.omadm.Client1.conf and
#                              dbus/org.omadm.client1.policy
#       --bus-conf FILE        add a bus policy file (repeatable)
#       --polkit-policy FILE   add a polkit .policy (actions) file (repeatable)
#       --polkit-rules FILE    add a polkit .rules file (repeatable)
#   sysbus-harness.sh stop [--clean]    stop what this harness started (recorded PIDs, plus
#                                       anything left inside its namespace); --clean removes
#                                       $HARNESS_DIR
#   sysbus-harness.sh status
#   sysbus-harness.sh env               print shell exports (eval "$(... env)")
#   sysbus-harness.sh exec [--user U] -- CMD...   run CMD inside the namespace (as U);
#                                       it sees /run/dbus/system_bus_socket (and nm0)
#   sysbus-harness.sh reload            make dbus-daemon re-read its config
#   sysbus-harness.sh connectivity full|portal|limited   (NM only; then NM re-checks)
#   sysbus-harness.sh carrier up|down   (NM only) peer side of the veth
#   sysbus-harness.sh selftest          end-to-end checks (creates test users omh-*)
#   sysbus-harness.sh install           only install the Debian packages
#
# Example (manual run of the daemon against the private bus):
#   HARNESS_NM=0 tests/support/sysbus-harness.sh start --omadmd
#   eval "$(tests/support/sysbus-harness.sh env)"; target/debug/omadmd --state-dir /tmp/x
#   tests/support/sysbus-harness.sh stop --clean
#
# Environment:
#   HARNESS_DIR=/tmp/omadmd-harness   state, sockets, logs; one per instance (parallel
#                                     instances need different dirs; all users must be
#                                     able to traverse it)
#   HARNESS_NM=1                      0: bus + polkit only (no NetworkManager, veth, peer)
#   HARNESS_INSTALL=1                 0: never run apt-get
#   HARNESS_NM_INTERVAL=5             NM connectivity-check interval (seconds)
#   HARNESS_OWNER_PID=                if set, a watchdog stops the harness and removes
#                                     HARNESS_DIR once that process is gone (used by the
#                                     Rust tests: a killed test binary leaves nothing)
set -euo pipefail

SELF=$(readlink -f "$0")
TOP=$(cd "$(dirname "$SELF")/../.." && pwd)
D=${HARNESS_DIR:-/tmp/omadmd-harness}
WANT_NM=${HARNESS_NM:-1}
NM_INTERVAL=${HARNESS_NM_INTERVAL:-5}
SOCK="$D/run-dbus/system_bus_socket"
ADDR="unix:path=$SOCK"
PIDS="$D/pids"          # lines: name pid starttime
NS_IP_NM=10.77.0.2
NS_IP_PEER=10.77.0.1
INSTALL_LOCK=/tmp/omadmd-harness-install.lock

log() { printf '[omadmd-harness %s] %s\n' "$(basename "$D")" "$*" >&2 || true; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- processes
starttime_of() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
is_alive() {   # pid starttime ; zombies count as dead (PID 1 may reap lazily)
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$(starttime_of "$1")" = "$2" ]
}
record() { echo "$1 $2 $(starttime_of "$2")" >> "$PIDS"; }
pid_of() { awk -v n="$1" '$1==n{print $2}' "$PIDS" 2>/dev/null | tail -1; }
st_of() { awk -v n="$1" '$1==n{print $3}' "$PIDS" 2>/dev/null | tail -1; }
holder() { pid_of holder; }
peer() { pid_of peer; }
holder_alive() { local h; h=$(holder); [ -n "$h" ] && is_alive "$h" "$(st_of holder)"; }
# The owner (HARNESS_OWNER_PID) is recorded in $D/owner as "pid starttime". Once it is gone,
# nobody else will clean up: every stop then also removes $D.
owner_gone() {
  local pid st
  [ -f "$D/owner" ] && read -r pid st < "$D/owner" || return 1
  [ -n "$st" ] && ! is_alive "$pid" "$st"
}

# Start CMD detached (new session, stdin /dev/null, output to a log), have it report its own
# PID before exec'ing, and record it. Nothing keeps the caller's pipes open.
spawn() {   # name logfile cmd...
  local name=$1 logf=$2; shift 2
  local pf="$D/.pid.$name"; rm -f "$pf"
  setsid -f sh -c 'echo $$ > "$0"; exec "$@"' "$pf" "$@" </dev/null >>"$logf" 2>&1
  local i; for i in $(seq 250); do [ -s "$pf" ] && break; sleep 0.02; done
  [ -s "$pf" ] || die "could not start $name"
  record "$name" "$(cat "$pf")"; rm -f "$pf"
}
in_ns() { nsenter -t "$(holder)" -m -n "$@"; }
in_peer() { nsenter -t "$(peer)" -n "$@"; }

wait_name() {   # busname timeout_s
  local i n=$(( $2 * 50 ))
  for i in $(seq "$n"); do
    dbus-send --bus="$ADDR" --print-reply --dest=org.freedesktop.DBus / \
      org.freedesktop.DBus.NameHasOwner string:"$1" 2>/dev/null | grep -q 'boolean true' && return 0
    sleep 0.02
  done
  return 1
}
nm_prop() {   # property -> value via busctl
  busctl --address="$ADDR" get-property org.freedesktop.NetworkManager \
    /org/freedesktop/NetworkManager org.freedesktop.NetworkManager "$1" 2>/dev/null | cut -d' ' -f2-
}

# ---------------------------------------------------------------- install
tools_missing() {   # prints the tools the harness needs but cannot find
  local t tools=(dbus-daemon dbus-send busctl gdbus pkcheck pkaction setsid setpriv nsenter unshare ip flock stat)
  [ "$WANT_NM" = 1 ] && tools+=(NetworkManager nmcli python3 ss)
  for t in "${tools[@]}"; do command -v "$t" >/dev/null || echo "$t"; done
  [ -x /usr/lib/polkit-1/polkitd ] || echo /usr/lib/polkit-1/polkitd
  # polkit's tty agent and its setuid PAM helper (Debian: package polkitd), for prompts
  command -v pkttyagent >/dev/null || echo pkttyagent
  [ -u /usr/lib/polkit-1/polkit-agent-helper-1 ] || echo /usr/lib/polkit-1/polkit-agent-helper-1
}
missing_pkgs() {
  local p pkgs=(dbus-daemon dbus-bin polkitd libglib2.0-bin iproute2 util-linux)
  command -v busctl >/dev/null || pkgs+=(systemd)
  [ "$WANT_NM" = 1 ] && pkgs+=(network-manager python3)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}
install_pkgs() {
  # fast path (no dpkg): every tool is there
  [ -n "$(tools_missing)" ] || return 0
  if [ "${HARNESS_INSTALL:-1}" = 1 ] && [ -n "$(missing_pkgs)" ]; then
    [ "$(id -u)" = 0 ] || die "packages missing ($(missing_pkgs | tr '\n' ' ')) and not root"
    # one installer at a time (parallel harness starts, other test binaries)
    exec 9>"$INSTALL_LOCK"
    flock -w 600 9 || die "timed out waiting for $INSTALL_LOCK"
    local need; mapfile -t need < <(missing_pkgs)
    if [ ${#need[@]} -gt 0 ]; then
      log "apt-get install ${need[*]}"
      # never let a package's maintainer script start a daemon on the host
      local made_policy=0
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
      fi
      local t0 rc=0; t0=$(now_ms)
      local apt=(apt-get -o DPkg::Lock::Timeout=300)
      "${apt[@]}" update -qq >"$D/log/apt-update.log" 2>&1 || rc=$?
      if [ $rc = 0 ]; then
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${need[@]}" \
          >"$D/log/apt.log" 2>&1 || rc=$?
      fi
      [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
      [ $rc = 0 ] || { tail -20 "$D"/log/apt*.log >&2; die "apt-get failed installing ${need[*]}"; }
      log "installed in $(( $(now_ms) - t0 )) ms"
    fi
    flock -u 9; exec 9>&-
  fi
  local missing; missing=$(tools_missing | tr '\n' ' ')
  [ -z "$missing" ] || die "required tools not found: $missing(HARNESS_INSTALL=0, or packages installed but broken?)"
}

# ---------------------------------------------------------------- config files
write_configs() {
  mkdir -p "$D"/{run-dbus,bus.d,polkit-actions,polkit-rules,log}
  chmod 755 "$D" "$D/run-dbus" "$D/bus.d" "$D/polkit-actions"
  cat > "$D/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- like /usr/share/dbus-1/system.conf, minus activation/syslog, plus $D/bus.d -->
<busconfig>
  <type>system</type>
  <user>messagebus</user>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
  <includedir>$D/bus.d</includedir>
</busconfig>
EOF
  # private copies of polkit's action + rules dirs (host dirs stay untouched)
  cp -a /usr/share/polkit-1/actions/. "$D/polkit-actions/" 2>/dev/null || true
  cp -a /etc/polkit-1/rules.d/. "$D/polkit-rules/" 2>/dev/null || true
  chown polkitd:root "$D/polkit-rules" 2>/dev/null || true
  chmod 755 "$D/polkit-rules"

  if [ "$WANT_NM" = 1 ]; then
    mkdir -p "$D"/nm-etc/{conf.d,system-connections,dispatcher.d} "$D/nm-lib" "$D/www"
    cat > "$D/nm-etc/NetworkManager.conf" <<EOF
[main]
plugins=keyfile
dns=none
rc-manager=unmanaged
hostname-mode=none
no-auto-default=*
auth-polkit=true

[logging]
level=INFO

[connectivity]
enabled=true
uri=http://$NS_IP_PEER:8080/check
response=NetworkManager is online
interval=$NM_INTERVAL
EOF
    cat > "$D/nm-etc/system-connections/harness-nm0.nmconnection" <<EOF
[connection]
id=harness-nm0
uuid=6c1c9f2e-52a3-4b7e-9d55-0d6f1a1e0b01
type=ethernet
interface-name=nm0
autoconnect=true

[ipv4]
method=manual
address1=$NS_IP_NM/24,$NS_IP_PEER

[ipv6]
method=disabled
EOF
    chmod 600 "$D/nm-etc/system-connections/harness-nm0.nmconnection"
    echo full > "$D/www/mode"
    cat > "$D/www/server.py" <<'EOF'
# NM connectivity-check endpoint; behaviour chosen by the file "mode":
#   full -> expected body, portal -> other body, limited -> close without reply
import http.server, os, socket, sys
here = os.path.dirname(os.path.abspath(__file__))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            mode = open(os.path.join(here, "mode")).read().strip()
        except OSError:
            mode = "full"
        if mode == "limited":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = b"NetworkManager is online" if mode == "full" else b"<html>captive portal: log in</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *a):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
EOF
  fi
}

add_file() {   # src destdir
  [ -f "$1" ] || die "no such file: $1"
  install -m 644 "$1" "$2/"
}

# ---------------------------------------------------------------- start / stop
cmd_start() {
  local bus_confs=() policies=() rules=()
  while [ $# -gt 0 ]; do
    case $1 in
      --omadmd) bus_confs+=("$TOP/dbus/org.omadm.Client1.conf"); policies+=("$TOP/dbus/org.omadm.client1.policy"); shift ;;
      --bus-conf) bus_confs+=("$2"); shift 2 ;;
      --polkit-policy) policies+=("$2"); shift 2 ;;
      --polkit-rules) rules+=("$2"); shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  mkdir -p "$D/log"
  if [ -s "$PIDS" ] && holder_alive; then
    die "already running (HARNESS_DIR=$D); run '$0 stop' first"
  fi
  local T0; T0=$(now_ms)
  # If anything below fails, stop whatever this start already spawned. (A caller that
  # reads our output through a pipe and dies can still end us by SIGPIPE; the Rust side
  # therefore sends our output to a file, and the owner watchdog covers the rest.)
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed (rc=$rc); stopping what was started"; cmd_stop; fi' EXIT
  rm -f "$D/owner"
  local owner_st=""
  if [ -n "${HARNESS_OWNER_PID:-}" ]; then
    owner_st=$(starttime_of "$HARNESS_OWNER_PID")
    # nobody would clean up after us: leave nothing behind
    [ -n "$owner_st" ] || { rm -rf "$D"; die "HARNESS_OWNER_PID=$HARNESS_OWNER_PID is not running"; }
    echo "$HARNESS_OWNER_PID $owner_st" > "$D/owner"
  fi
  install_pkgs
  rm -f "$PIDS" "$SOCK" "$D/mntns"; : > "$PIDS"
  write_configs
  local f
  for f in ${bus_confs[@]+"${bus_confs[@]}"}; do add_file "$f" "$D/bus.d"; done
  for f in ${policies[@]+"${policies[@]}"}; do add_file "$f" "$D/polkit-actions"; done
  for f in ${rules[@]+"${rules[@]}"}; do add_file "$f" "$D/polkit-rules"; done

  # 1. namespace holder (private mount + net namespace)
  spawn holder "$D/log/holder.log" unshare --mount --net --propagation private sleep infinity
  readlink "/proc/$(holder)/ns/mnt" > "$D/mntns"
  # watchdog: stop everything (and remove $D) once the owner, e.g. the test binary, is
  # gone. While this start runs it only waits: start checks the owner at its end itself.
  if [ -n "$owner_st" ]; then
    spawn watchdog "$D/log/watchdog.log" env HARNESS_DIR="$D" bash "$SELF" _watch \
      "$HARNESS_OWNER_PID" "$owner_st" $$ "$(starttime_of $$)"
  fi
  in_ns sh -ec "
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
    mkdir -p /run/dbus /run/lock /run/user
    mount --bind '$D/run-dbus' /run/dbus
    mount --bind '$D/polkit-actions' /usr/share/polkit-1/actions
    mount --bind '$D/polkit-rules' /etc/polkit-1/rules.d
    if [ '$WANT_NM' = 1 ]; then
      mkdir -p /run/NetworkManager
      # fresh read-only sysfs (shows this netns's devices; ro => NM runs without udev),
      # with the host's /sys/fs/cgroup carried over (busctl/sd-bus creds need it)
      mkdir /run/.cg; mount --rbind /sys/fs/cgroup /run/.cg
      mount -t sysfs -o ro sysfs /sys
      mount --move /run/.cg /sys/fs/cgroup; rmdir /run/.cg
      mount --bind '$D/nm-etc' /etc/NetworkManager
      mount --bind '$D/nm-lib' /var/lib/NetworkManager
    fi
    ip link set lo up
  "

  # 2. the system bus (dbus-daemon --fork daemonizes itself: setsid, stdio to /dev/null)
  local t; t=$(now_ms)
  local out; out=$(in_ns dbus-daemon --config-file="$D/bus.conf" --fork --print-pid=1 --print-address=1 2>"$D/log/dbus.log") \
    || { cat "$D/log/dbus.log" >&2; die "dbus-daemon failed"; }
  record dbus "$(echo "$out" | sed -n 2p)"
  log "dbus-daemon up in $(( $(now_ms) - t )) ms"

  # 3. polkitd (drops to user polkitd by itself; without --no-debug it logs rule loading
  #    and polkit.log() output, which SysBus::add_polkit_rules waits for)
  t=$(now_ms)
  spawn polkitd "$D/log/polkitd.log" nsenter -t "$(holder)" -m -n /usr/lib/polkit-1/polkitd
  wait_name org.freedesktop.PolicyKit1 10 || { cat "$D/log/polkitd.log" >&2; die "polkitd did not get its name"; }
  log "polkitd up in $(( $(now_ms) - t )) ms"

  # 4. NetworkManager with a veth to a peer namespace
  if [ "$WANT_NM" = 1 ]; then
    t=$(now_ms)
    spawn peer "$D/log/peer.log" unshare --net sleep infinity
    in_ns ip link add nm0 type veth peer name peer0
    in_ns ip link set peer0 netns "$(peer)"
    in_peer sh -ec "ip link set lo up; ip addr add $NS_IP_PEER/24 dev peer0; ip link set peer0 up"
    spawn http "$D/log/http.log" nsenter -t "$(peer)" -n python3 "$D/www/server.py" "$NS_IP_PEER" 8080
    # NM's first connectivity check must not race the server's start (else ~2 s retry backoff)
    local i
    for i in $(seq 100); do in_peer ss -Hltn 'sport = :8080' | grep -q . && break; sleep 0.05; done
    spawn nm "$D/log/nm.log" nsenter -t "$(holder)" -m -n /usr/sbin/NetworkManager --debug --log-level=INFO
    wait_name org.freedesktop.NetworkManager 20 || { tail -30 "$D/log/nm.log" >&2; die "NetworkManager did not get its name"; }
    for i in $(seq 200); do [ "$(nm_prop Startup)" = false ] && break; sleep 0.05; done
    for i in $(seq 200); do [ "$(nm_prop State)" = 70 ] && break; sleep 0.05; done
    busctl --address="$ADDR" call org.freedesktop.NetworkManager /org/freedesktop/NetworkManager \
      org.freedesktop.NetworkManager CheckConnectivity >/dev/null 2>&1 || true
    log "NetworkManager up in $(( $(now_ms) - t )) ms: State=$(nm_prop State) Connectivity=$(nm_prop Connectivity) PrimaryConnection=$(nm_prop PrimaryConnection)"
  fi

  if owner_gone; then die "owner $HARNESS_OWNER_PID is gone"; fi
  write_env
  trap - EXIT
  log "started in $(( $(now_ms) - T0 )) ms"
  cat "$D/env"
}

write_env() {
  cat > "$D/env" <<EOF
export HARNESS_DIR='$D'
export DBUS_SYSTEM_BUS_ADDRESS='$ADDR'
export HARNESS_NS_PID='$(holder)'
export HARNESS_PEER_PID='$(peer)'
# inside the namespace (sysbus-harness.sh exec ...) the bus is also at /run/dbus/system_bus_socket
EOF
}

stop_pid() {   # name pid starttime: TERM, then KILL after 5 s
  local name=$1 pid=$2 st=$3 i
  is_alive "$pid" "$st" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 250); do is_alive "$pid" "$st" || break; sleep 0.02; done
  if is_alive "$pid" "$st"; then log "$name ($pid) ignored SIGTERM, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  log "stopped $name ($pid)"
}

cmd_stop() {
  # a caller that dies while we log must not cut a stop in half (the children of stop are
  # short-lived tools, so ignoring SIGPIPE here changes nothing else)
  trap '' PIPE
  # one stop at a time per instance (the watchdog and a caller may race); the lock is on
  # the directory itself, so a waiting stop finds nothing left to do
  if [ -d "$D" ] && exec 8<"$D"; then flock 8 || true; fi
  if [ ! -s "$PIDS" ]; then
    log "nothing recorded in $PIDS"
    if [ "${1:-}" = --clean ] || owner_gone; then rm -rf "$D"; fi
    return 0
  fi
  local name pid st
  # the watchdog first (unless this *is* the watchdog)
  while read -r name pid st; do
    if [ "$name" = watchdog ] && [ "$pid" != $$ ]; then stop_pid "$name" "$pid" "$st"; fi
  done < "$PIDS"
  # then whatever `exec` (or a test) left running inside the namespace. The namespace is
  # identified by the live holder's mount-namespace inode, so this never touches anything
  # outside it (an inode is only trusted while its holder lives).
  if [ -s "$D/mntns" ] && holder_alive && [ "$(readlink "/proc/$(holder)/ns/mnt" 2>/dev/null)" = "$(cat "$D/mntns")" ]; then
    local ns ino p recorded left=(); ns=$(cat "$D/mntns"); recorded=" $(awk '{printf "%s ", $2}' "$PIDS")"
    [ "$(readlink /proc/$$/ns/mnt)" = "$ns" ] && die "stop must run outside the harness namespace"
    ino=${ns#mnt:[}; ino=${ino%]}
    # (stat -L of /proc/PID/ns/mnt gives the namespace's inode; one stat for all PIDs)
    for p in $(stat -L -c '%i %n' /proc/[0-9]*/ns/mnt 2>/dev/null | awk -v i="$ino" '$1==i{split($2,a,"/"); print a[3]}'); do
      case $recorded in *" $p "*) continue ;; esac
      left+=("$p $(starttime_of "$p")")
    done
    local e
    for e in ${left[@]+"${left[@]}"}; do
      log "process $(tr '\0' ' ' < "/proc/${e% *}/cmdline" 2>/dev/null | cut -c1-80) left in the namespace"
      stop_pid "ns-leftover" ${e}
    done
  fi
  # reverse order of start: nm, http, peer, polkitd, dbus, holder
  tac "$PIDS" | while read -r name pid st; do
    if [ "$name" != watchdog ]; then stop_pid "$name" "$pid" "$st"; fi
  done
  : > "$PIDS"; rm -f "$SOCK" "$D/mntns"
  if [ "${1:-}" = --clean ] || owner_gone; then rm -rf "$D"; log "removed $D"; fi
}

cmd_watch() {   # owner_pid owner_starttime start_pid start_starttime (internal)
  local sp=""
  trap '[ -n "$sp" ] && kill "$sp" 2>/dev/null; exit 0' TERM INT
  while is_alive "$1" "$2"; do sleep 1 & sp=$!; wait "$sp" || true; sp=""; done
  # a start still running checks the owner at its end and cleans up itself: one actor at
  # a time
  while is_alive "$3" "$4"; do sleep 0.1 & sp=$!; wait "$sp" || true; sp=""; done
  log "owner $1 is gone; stopping the harness and removing $D"
  cmd_stop
}

cmd_status() {
  [ -s "$PIDS" ] || { echo "not running"; return 1; }
  local name pid st rc=0
  while read -r name pid st; do
    if is_alive "$pid" "$st"; then echo "$name $pid running"; else echo "$name $pid DEAD"; rc=1; fi
  done < "$PIDS"
  busctl --address="$ADDR" list --no-pager 2>/dev/null | awk 'NR==1 || $1 !~ /^:/' || true
  return $rc
}

cmd_exec() {
  local user=""
  while [ $# -gt 0 ]; do
    case $1 in --user) user=$2; shift 2 ;; --) shift; break ;; *) break ;; esac
  done
  holder_alive || die "not running (HARNESS_DIR=$D)"
  local pre=(env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket)
  if [ -n "$user" ]; then
    exec nsenter -t "$(holder)" -m -n --wd="$PWD" setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups "${pre[@]}" "$@"
  fi
  exec nsenter -t "$(holder)" -m -n --wd="$PWD" "${pre[@]}" "$@"
}

cmd_reload() {
  dbus-send --bus="$ADDR" --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig >/dev/null
}

need_nm() { [ -n "$(peer)" ] || die "started without NetworkManager (HARNESS_NM=0)"; }
cmd_connectivity() {
  need_nm
  case ${1:-} in full|portal|limited) ;; *) die "connectivity full|portal|limited" ;; esac
  echo "$1" > "$D/www/mode"
  busctl --address="$ADDR" call org.freedesktop.NetworkManager /org/freedesktop/NetworkManager \
    org.freedesktop.NetworkManager CheckConnectivity
}

cmd_carrier() {
  need_nm
  case ${1:-} in up|down) in_peer ip link set peer0 "$1" ;; *) die "carrier up|down" ;; esac
}

# ---------------------------------------------------------------- selftest
cmd_selftest() {
  set +e
  holder_alive || die "not running (HARNESS_DIR=$D)"
  local pass=0 fail=0
  ok() { pass=$((pass+1)); echo "ok   - $*"; }
  bad() { fail=$((fail+1)); echo "FAIL - $*"; }
  check() { local what=$1; shift; echo "== $what: $*" >> "$D/log/selftest.log"
            if "$@" >> "$D/log/selftest.log" 2>&1; then ok "$what"; else bad "$what (see $D/log/selftest.log)"; fi; }
  export DBUS_SYSTEM_BUS_ADDRESS="$ADDR"

  getent group omh-admins >/dev/null || groupadd omh-admins
  id omh-alice >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin -G omh-admins omh-alice
  id omh-bob   >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin omh-bob
  id omh-carol >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin omh-carol

  cat > "$D/polkit-actions/org.omadm.harness.selftest.policy" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <action id="org.omadm.harness.selftest">
    <description>Harness self-test</description><message>Auth needed</message>
    <defaults><allow_any>auth_admin</allow_any><allow_inactive>auth_admin</allow_inactive><allow_active>auth_admin_keep</allow_active></defaults>
  </action>
</policyconfig>
EOF
  cat > "$D/polkit-rules/.50-omadm-harness-selftest.rules.tmp" <<'EOF'
polkit.addRule(function(action, subject) {
  if (action.id == "org.omadm.harness.selftest") {
    if (subject.isInGroup("omh-admins")) return polkit.Result.YES;
    if (subject.user == "omh-bob") return polkit.Result.NO;
  }
  if (action.id.indexOf("org.freedesktop.NetworkManager.") == 0 && subject.isInGroup("omh-admins"))
    return polkit.Result.YES;
});
polkit.log("omadmd-harness: selftest rules loaded");
EOF
  local i
  for i in $(seq 100); do
    pkaction --action-id org.omadm.harness.selftest >/dev/null 2>&1 && break; sleep 0.05
  done
  mv "$D/polkit-rules/.50-omadm-harness-selftest.rules.tmp" "$D/polkit-rules/50-omadm-harness-selftest.rules"
  for i in $(seq 100); do
    grep -A20 'omadmd-harness: selftest rules loaded' "$D/log/polkitd.log" | grep -q 'Finished loading' && break; sleep 0.05
  done

  check "bus answers busctl"   busctl --address="$ADDR" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId
  check "bus answers gdbus"    gdbus call --address "$ADDR" -d org.freedesktop.DBus -o /org/freedesktop/DBus -m org.freedesktop.DBus.GetId
  check "std path inside ns (busctl --system)" bash "$SELF" exec -- busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetNameOwner s org.freedesktop.PolicyKit1
  check "std path inside ns (gdbus --system)" bash "$SELF" exec -- gdbus call --system -d org.freedesktop.DBus -o /org/freedesktop/DBus -m org.freedesktop.DBus.GetNameOwner org.freedesktop.PolicyKit1
  check "host has no /run/dbus/system_bus_socket" test ! -e /run/dbus/system_bus_socket
  check "omh-bob may not own a name" sh -c "! setpriv --reuid=omh-bob --regid=omh-bob --init-groups busctl --address='$ADDR' call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su org.omadm.harness.Test 0"

  ca() {   # user -> "authorized challenge" for a unix-process subject
    local pid st uid r
    setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups sleep 30 & pid=$!
    sleep 0.1; st=$(starttime_of $pid); uid=$(id -u "$1")
    r=$(busctl --address="$ADDR" call org.freedesktop.PolicyKit1 /org/freedesktop/PolicyKit1/Authority \
         org.freedesktop.PolicyKit1.Authority CheckAuthorization '(sa{sv})sa{ss}us' \
         unix-process 3 pid u $pid start-time t $st uid i $uid org.omadm.harness.selftest 0 0 "")
    kill $pid; wait $pid 2>/dev/null || true
    echo "$r" | awk '{print $2, $3}'
  }
  check "polkit: omh-alice (group rule) allowed"  test "$(ca omh-alice)" = "true false"
  check "polkit: omh-bob (rule NO) denied"        test "$(ca omh-bob)" = "false false"
  check "polkit: omh-carol (auth_admin) challenge" test "$(ca omh-carol)" = "false true"
  check "pkcheck deny rc=1" sh -c 'setpriv --reuid=omh-bob --regid=omh-bob --init-groups sleep 5 & p=$!; sleep 0.1; pkcheck --action-id org.omadm.harness.selftest --process $p >/dev/null 2>&1; r=$?; kill $p; [ $r = 1 ]'

  # system-bus-name subject: a client connected as omh-bob (gdbus monitor just holds a
  # connection), found by its PID among the bus's unique names
  setpriv --reuid=omh-bob --regid=omh-bob --init-groups gdbus monitor --system --dest org.freedesktop.DBus >/dev/null 2>&1 &
  local mpid=$! name=""
  for i in $(seq 100); do
    name=$(busctl --address="$ADDR" list --unique --no-legend 2>/dev/null | awk -v p=$mpid '$2==p{print $1}')
    [ -n "$name" ] && break; sleep 0.05
  done
  check "polkit: system-bus-name subject (gdbus client as omh-bob) denied" sh -c \
    "busctl --address='$ADDR' call org.freedesktop.PolicyKit1 /org/freedesktop/PolicyKit1/Authority org.freedesktop.PolicyKit1.Authority CheckAuthorization '(sa{sv})sa{ss}us' system-bus-name 1 name s '$name' org.omadm.harness.selftest 0 0 '' | grep -q '^(bba{ss}) false false'"
  kill $mpid 2>/dev/null; wait $mpid 2>/dev/null || true

  if [ -n "$(peer)" ]; then
    check "NM: State=70 CONNECTED_GLOBAL" test "$(nm_prop State)" = 70
    check "NM: Connectivity=4 FULL" test "$(nm_prop Connectivity)" = 4
    check "NM: PrimaryConnection set" sh -c "[ \"\$(busctl --address='$ADDR' get-property org.freedesktop.NetworkManager /org/freedesktop/NetworkManager org.freedesktop.NetworkManager PrimaryConnection)\" != 'o \"/\"' ]"
    check "NM: Devices has nm0" sh -c "bash '$SELF' exec -- nmcli -t -f DEVICE,STATE dev | grep -q '^nm0:connected'"
    check "NM: portal"  test "$(cmd_connectivity portal)" = "u 2"
    check "NM: limited" test "$(cmd_connectivity limited)" = "u 3"
    check "NM: full"    test "$(cmd_connectivity full)" = "u 4"
    # watch signals while the carrier goes down and up
    : > "$D/log/selftest-monitor.log"
    gdbus monitor --address "$ADDR" --dest org.freedesktop.NetworkManager >> "$D/log/selftest-monitor.log" 2>&1 & local mon=$!
    sleep 0.3
    cmd_carrier down
    for i in $(seq 100); do [ "$(nm_prop State)" = 20 ] && break; sleep 0.1; done
    check "NM: carrier down -> State=20, PrimaryConnection=/" sh -c "[ \"\$(busctl --address='$ADDR' get-property org.freedesktop.NetworkManager /org/freedesktop/NetworkManager org.freedesktop.NetworkManager State PrimaryConnection | tr '\n' ' ')\" = 'u 20 o \"/\" ' ]"
    cmd_carrier up
    for i in $(seq 100); do [ "$(nm_prop State)" = 70 ] && break; sleep 0.1; done
    check "NM: carrier up -> State=70 again (autoconnect)" test "$(nm_prop State)" = 70
    bash "$SELF" exec -- ip addr add 10.77.0.50/24 dev nm0; sleep 0.5; bash "$SELF" exec -- ip addr del 10.77.0.50/24 dev nm0; sleep 0.5
    kill $mon; wait $mon 2>/dev/null || true
    check "NM: StateChanged(20) signal seen" grep -q 'org.freedesktop.NetworkManager.StateChanged (uint32 20,)' "$D/log/selftest-monitor.log"
    check "NM: StateChanged(70) signal seen" grep -q 'org.freedesktop.NetworkManager.StateChanged (uint32 70,)' "$D/log/selftest-monitor.log"
    check "NM: PropertiesChanged PrimaryConnection seen" grep -q "{'PrimaryConnection': <objectpath" "$D/log/selftest-monitor.log"
    check "NM: IP4Config AddressData change on external 'ip addr add'" grep -q "10.77.0.50" "$D/log/selftest-monitor.log"
    # (nmcli 1.42 exits 0 even when polkit says no, so look at what it prints)
    check "NM+polkit: omh-bob may not deactivate" sh -c "bash '$SELF' exec --user omh-bob -- nmcli con down harness-nm0 2>&1 | grep -q 'Not authorized'"
    check "NM+polkit: omh-alice may (group rule)" sh -c "bash '$SELF' exec --user omh-alice -- nmcli con down harness-nm0 >/dev/null && bash '$SELF' exec --user omh-alice -- nmcli con up harness-nm0 >/dev/null"
  fi
  echo "selftest: $pass passed, $fail failed"
  [ $fail = 0 ]
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) cmd_status ;;
  env) cat "$D/env" ;;
  exec) shift; cmd_exec "$@" ;;
  reload) cmd_reload ;;
  connectivity) shift; cmd_connectivity "$@" ;;
  carrier) shift; cmd_carrier "$@" ;;
  selftest) cmd_selftest ;;
  install) mkdir -p "$D/log"; install_pkgs ;;
  _watch) shift; cmd_watch "$@" ;;
  *) sed -n "2,/^set -euo/p" "$SELF" | sed "$ d"; exit 2 ;;
esac
