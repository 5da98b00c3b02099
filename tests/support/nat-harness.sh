#!/usr/bin/env bash
# nat-harness.sh -- a device behind NAT, and its moves between two networks, for omadmd's
# tests: built on a running sysbus-harness.sh instance started with HARNESS_NM=1 (its
# "holder" namespace, where NetworkManager runs, is the *device*). The Rust side is
# tests/support/nat.rs (Nat::start()).
#
#        device (holder netns, NetworkManager)
#        home0 192.168.10.2/24              office0 10.20.30.2/24
#          |  (veth; NM connection nat-home)   |  (veth; NM connection nat-office)
#        lan0 192.168.10.1                   lan0 10.20.30.1
#        "home" router netns                 "office" router netns
#        nftables: masquerade out of wan0,   the same
#        forward only LAN->WAN + replies
#        wan0 198.51.100.2 (home's public)   wan0 203.0.113.2 (office's public)
#          |                                   |
#        home-wan 198.51.100.1               office-wan 203.0.113.1
#        "internet" netns: 192.0.2.1/32 on lo (the servers' address), no route to either LAN
#
# Exactly one router's LAN end has carrier at a time: `move home|office` takes the carrier
# down on the other router's lan0 and up on this one's, as unplugging the device's cable at
# home and plugging it in at the office does; NetworkManager then moves the device's address,
# default route and primary connection, and the public NAT address the servers see changes.
# The harness's own connection (harness-nm0, on nm0) is taken down and kept down, and
# NetworkManager's connectivity check is pointed at a server in the internet namespace, so
# that it reaches it through the NAT (Connectivity FULL only with a working uplink).
#
# Usage (HARNESS_DIR names the sysbus harness instance):
#   nat-harness.sh start               build it; the device is at home (waits for
#                                      NetworkManager's primary connection nat-home)
#   nat-harness.sh move home|office    move the device: carrier down at the other site,
#                                      wait until NetworkManager has given that connection
#                                      up (offline, ~5 s), carrier up here, wait until the
#                                      primary connection, default route and connectivity
#                                      follow (60 s at most per wait)
#   nat-harness.sh exec device|home|office|internet -- CMD...   run CMD there
#   nat-harness.sh pid device|home|office|internet   a PID whose net namespace that is
#   nat-harness.sh site                where the device is plugged in (home or office)
#   nat-harness.sh status
#   nat-harness.sh stop                stop what this started and give NetworkManager the
#                                      harness's own setup back (nm0 up); idempotent
#
# Example (manual run):
#   export HARNESS_DIR=/tmp/omadmd-nat; HARNESS_NM=1 tests/support/sysbus-harness.sh start
#   tests/support/nat-harness.sh start
#   tests/support/nat-harness.sh exec internet -- python3 -m http.server --bind 192.0.2.1 8000 &
#   tests/support/nat-harness.sh exec device -- curl -s http://192.0.2.1:8000/ >/dev/null
#   tests/support/nat-harness.sh move office
#   tests/support/nat-harness.sh stop; tests/support/sysbus-harness.sh stop --clean
#
# Cleanup: every process of this harness (the namespaces' holders, and whatever `exec`
# starts) lives in the sysbus harness's mount namespace, so stopping that harness (also by
# its watchdog, when the test binary is gone) ends them too; with them go the namespaces and
# every veth. Nothing is made on the host: no link, no /run/netns, no file outside
# $HARNESS_DIR.
set -euo pipefail

SELF=$(readlink -f "$0")
D=${HARNESS_DIR:?HARNESS_DIR must name a running sysbus-harness.sh instance}
N="$D/nat"
PIDS="$N/pids"              # lines: name pid starttime
NM_CONNS="$D/nm-etc/system-connections"
SERVER_IP=192.0.2.1
# site -> LAN /24 prefix, WAN /24 prefix
lan_of() { case $1 in home) echo 192.168.10 ;; office) echo 10.20.30 ;; esac; }
wan_of() { case $1 in home) echo 198.51.100 ;; office) echo 203.0.113 ;; esac; }

log() { printf '[omadmd-nat %s] %s\n' "$(basename "$D")" "$*" >&2 || true; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes
starttime_of() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
is_alive() {   # pid starttime ; zombies count as dead
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$(starttime_of "$1")" = "$2" ]
}
pid_in() { awk -v n="$1" '$1==n{print $2}' "$2" 2>/dev/null | tail -1; }
st_in() { awk -v n="$1" '$1==n{print $3}' "$2" 2>/dev/null | tail -1; }
holder() {   # the sysbus harness's holder, if it lives
  local p s; p=$(pid_in holder "$D/pids"); s=$(st_in holder "$D/pids")
  [ -n "$p" ] && is_alive "$p" "$s" && echo "$p"
}
pid_of() {   # name -> PID of a live recorded process
  local p s; p=$(pid_in "$1" "$PIDS"); s=$(st_in "$1" "$PIDS")
  [ -n "$p" ] && is_alive "$p" "$s" && echo "$p"
}
record() { echo "$1 $2 $(starttime_of "$2")" >> "$PIDS"; }

# Start CMD detached (new session, stdin /dev/null, output to $D/log/nat-NAME.log, beside
# the sysbus harness's logs) and record its PID.
spawn() {   # name cmd...
  local name=$1; shift
  local pf="$N/.pid.$name"; rm -f "$pf"
  setsid -f sh -c 'echo $$ > "$0"; exec "$@"' "$pf" "$@" </dev/null >>"$D/log/nat-$name.log" 2>&1
  local i; for i in $(seq 250); do [ -s "$pf" ] && break; sleep 0.02; done
  [ -s "$pf" ] || die "could not start $name"
  record "$name" "$(cat "$pf")"; rm -f "$pf"
}

ns_pid() {   # device|home|office|internet -> PID to nsenter
  local p
  case $1 in
    device) p=$(holder) || die "the sysbus harness is not running (HARNESS_DIR=$D)" ;;
    home|office|internet) p=$(pid_of "$1") || die "no $1 namespace (not started?)" ;;
    *) die "no namespace $1 (device, home, office or internet)" ;;
  esac
  echo "$p"
}
# Every namespace shares the sysbus harness's mount namespace (its /run, private polkit
# dirs, read-only /sys): that is what lets the harness's stop find our processes.
in_ns() { local p; p=$(ns_pid "$1"); shift; nsenter -t "$p" -m -n "$@"; }

nm_busctl() { busctl --address="unix:path=$D/run-dbus/system_bus_socket" "$@"; }
nm_prop() {   # object interface property -> value
  nm_busctl get-property org.freedesktop.NetworkManager "$1" "$2" "$3" 2>/dev/null | cut -d' ' -f2-
}
primary_id() {   # the Id of NetworkManager's primary connection, or "" without one
  local path; path=$(nm_prop /org/freedesktop/NetworkManager org.freedesktop.NetworkManager PrimaryConnection)
  path=${path//\"/}
  [ -n "$path" ] && [ "$path" != / ] || return 0
  nm_prop "$path" org.freedesktop.NetworkManager.Connection.Active Id | tr -d '"'
}
default_routes() { in_ns device ip -4 -o route show default | awk '{print $3, $5}' | sort | tr '\n' ';'; }
nm_state() { nm_prop /org/freedesktop/NetworkManager org.freedesktop.NetworkManager "$1"; }
# The state a site means: primary connection nat-SITE, its router the only default route,
# and NetworkManager connected with full connectivity (its check went through the NAT).
at_site() {
  [ "$(primary_id)" = "nat-$1" ] && [ "$(default_routes)" = "$(lan_of "$1").1 ${1}0;" ] &&
    [ "$(nm_state State)" = 70 ] && [ "$(nm_state Connectivity)" = 4 ]
}
wait_site() {   # site timeout_s
  local end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do at_site "$1" && return 0; sleep 0.1; done
  at_site "$1" && return 0
  die "the device did not reach $1 within $2 s: primary connection '$(primary_id)', default routes '$(default_routes)', NetworkManager State $(nm_state State) Connectivity $(nm_state Connectivity)"
}

wait_offline() {   # timeout_s: no primary connection, no default route
  local end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ -z "$(primary_id)" ] && [ -z "$(default_routes)" ] && return 0
    sleep 0.1
  done
  die "the device did not go offline within $1 s: primary connection '$(primary_id)', default routes '$(default_routes)'"
}

# ---------------------------------------------------------------- start / stop
nm_keyfile() {   # site
  local lan; lan=$(lan_of "$1")
  local f="$NM_CONNS/nat-$1.nmconnection"
  cat > "$f" <<EOF
[connection]
id=nat-$1
type=ethernet
interface-name=${1}0
autoconnect=true

[ipv4]
method=manual
address1=$lan.2/24,$lan.1

[ipv6]
method=disabled
EOF
  chmod 600 "$f"
}

router() {   # site: router namespace with its WAN link to the internet, NAT and LAN link
  local site=$1 lan wan; lan=$(lan_of "$1"); wan=$(wan_of "$1")
  in_ns "$site" ip link set lo up
  in_ns "$site" ip link add wan0 type veth peer name "$site-wan" netns "$(ns_pid internet)"
  in_ns "$site" sh -ec "
    ip addr add $wan.2/24 dev wan0; ip link set wan0 up
    ip route add default via $wan.1
    sysctl -qw net.ipv4.ip_forward=1"
  in_ns "$site" nft -f - <<EOF
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }
}
table ip filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
}
EOF
  in_ns internet sh -ec "ip addr add $wan.1/24 dev $site-wan; ip link set $site-wan up"
  # the device's end is NetworkManager's to bring up; the router's end is the "cable"
  in_ns device ip link add "${site}0" type veth peer name lan0 netns "$(ns_pid "$site")"
  in_ns "$site" ip addr add "$lan.1/24" dev lan0
}

cmd_start() {
  [ -n "$(holder)" ] || die "the sysbus harness is not running (HARNESS_DIR=$D)"
  command -v nft >/dev/null || die "nft is missing: apt-get install nftables (.ci/run installs it)"
  [ -d "$D/nm-etc" ] || die "the sysbus harness runs without NetworkManager (start it with HARNESS_NM=1)"
  if [ -s "$PIDS" ] && [ -n "$(pid_of internet || true)" ]; then die "already running; stop first"; fi
  mkdir -p "$N" "$D/log"; : > "$PIDS"
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed (rc=$rc); stopping what was started"; cmd_stop; fi' EXIT
  local h; h=$(holder)
  local ns
  for ns in internet home office; do spawn "$ns" nsenter -t "$h" -m unshare --net sleep infinity; done
  in_ns internet sh -ec "ip link set lo up; ip addr add $SERVER_IP/32 dev lo"
  router home
  router office

  # NetworkManager: the harness's own connection down for good, ours in; its connectivity
  # check against a server in the internet namespace (the harness's check server, same
  # "mode" file)
  spawn check nsenter -t "$(ns_pid internet)" -m -n python3 "$D/www/server.py" "$SERVER_IP" 8080
  local i
  for i in $(seq 100); do in_ns internet ss -Hltn 'sport = :8080' | grep -q . && break; sleep 0.05; done
  cat > "$D/nm-etc/conf.d/50-nat.conf" <<EOF
[connectivity]
uri=http://$SERVER_IP:8080/check
EOF
  local nmcli=(nsenter -t "$h" -m -n env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket nmcli)
  "${nmcli[@]}" general reload conf
  "${nmcli[@]}" connection modify harness-nm0 connection.autoconnect no
  "${nmcli[@]}" connection down harness-nm0 >/dev/null 2>&1 || true
  nm_keyfile home
  nm_keyfile office
  "${nmcli[@]}" connection reload
  in_ns home ip link set lan0 up
  wait_site home 60
  echo home > "$N/site"
  trap - EXIT
  log "started: device at home ($(lan_of home).2), primary connection nat-home"
}

cmd_move() {
  local to=${1:-}
  case $to in home|office) ;; *) die "move home|office" ;; esac
  local from=office; [ "$to" = office ] && from=home
  # Unplugged first, plugged in once NetworkManager has given the old connection up (about
  # 5 s after the carrier went): the device is offline in between, as on the way from home
  # to the office. (Plugged in while the old connection still holds its default route,
  # NetworkManager 1.42 would keep its global Connectivity at NONE.)
  in_ns "$from" ip link set lan0 down
  wait_offline 60
  in_ns "$to" ip link set lan0 up
  echo "$to" > "$N/site"
  wait_site "$to" 60
  log "moved to $to"
}

stop_pid() {   # name pid starttime: TERM, then KILL after 5 s
  local name=$1 pid=$2 st=$3 i
  is_alive "$pid" "$st" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 250); do is_alive "$pid" "$st" || break; sleep 0.02; done
  if is_alive "$pid" "$st"; then kill -KILL "$pid" 2>/dev/null || true; fi
  log "stopped $name ($pid)"
}

cmd_stop() {
  trap '' PIPE
  [ -d "$N" ] || { log "nothing to stop"; return 0; }
  exec 7<"$N"; flock 7 || true
  if [ -s "$PIDS" ]; then
    # whatever `exec` (or a test) left in our namespaces, found by their net namespace
    # (trusted only while its recorded holder lives)
    local name pid st ns p recorded
    recorded=" $(awk '{printf "%s ", $2}' "$PIDS")"
    while read -r name pid st; do
      case $name in home|office|internet) ;; *) continue ;; esac
      is_alive "$pid" "$st" || continue
      ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || continue
      for p in /proc/[0-9]*; do
        p=${p#/proc/}
        case $recorded in *" $p "*) continue ;; esac
        [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$ns" ] || continue
        log "process $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-80) left in $name"
        stop_pid "left-in-$name" "$p" "$(starttime_of "$p")"
      done
    done < "$PIDS"
    tac "$PIDS" | while read -r name pid st; do stop_pid "$name" "$pid" "$st"; done
    : > "$PIDS"
  fi
  # NetworkManager, if the harness runs on, gets its own setup back: our connections gone
  # (their devices went with the namespaces), its connectivity check and nm0 as before
  rm -f "$NM_CONNS"/nat-*.nmconnection "$D/nm-etc/conf.d/50-nat.conf" "$N/site"
  local h
  if h=$(holder) && [ -f "$NM_CONNS/harness-nm0.nmconnection" ]; then
    local nmcli=(nsenter -t "$h" -m -n env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket nmcli)
    { "${nmcli[@]}" general reload conf && "${nmcli[@]}" connection reload &&
      "${nmcli[@]}" connection modify harness-nm0 connection.autoconnect yes &&
      "${nmcli[@]}" --wait 0 connection up harness-nm0; } >/dev/null 2>&1 || true
  fi
}

cmd_status() {
  [ -s "$PIDS" ] || { echo "not running"; return 1; }
  local name pid st rc=0
  while read -r name pid st; do
    if is_alive "$pid" "$st"; then echo "$name $pid running"; else echo "$name $pid DEAD"; rc=1; fi
  done < "$PIDS"
  echo "site $(cat "$N/site" 2>/dev/null): primary connection '$(primary_id)', default routes '$(default_routes)'"
  return $rc
}

cmd_exec() {
  local where=${1:-}; shift || true
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || die "exec device|home|office|internet -- CMD..."
  local p; p=$(ns_pid "$where")
  exec nsenter -t "$p" -m -n --wd="$PWD" "$@"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  move) shift; cmd_move "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  pid) shift; ns_pid "${1:-}" ;;
  site) cat "$N/site" ;;
  status) cmd_status ;;
  *) sed -n "2,/^set -euo/p" "$SELF" | sed "$ d"; exit 2 ;;
esac
