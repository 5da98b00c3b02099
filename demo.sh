#!/usr/bin/env bash
# The omadmd demo: builds the binaries, starts omadmd on a private D-Bus bus (nothing on
# the host changes, no root needed for the bus), and shows what an administrator and a local
# application see: status, DevInfo from this host, a DM account whose secrets never come
# back, an app's settings instance, a live watch, and the change journal.
set -euo pipefail
cd "$(dirname "$0")"

command -v dbus-run-session >/dev/null || {
  echo "demo: dbus-run-session is missing (Debian package dbus-daemon)" >&2
  exit 1
}
echo "== building (release)"
cargo build --release --quiet --bins
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT

dbus-run-session -- bash -s "$PWD/target/release" "$state" <<'DEMO'
set -euo pipefail
bin=$1 state=$2
ctl() { echo "\$ omadmctl $*"; "$bin/omadmctl" --session "$@"; echo; }

"$bin/omadmd" --session --state-dir "$state" --config /dev/null 2>"$state/omadmd.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$bin/omadmctl" --session status >/dev/null 2>&1 && break; sleep 0.1; done

echo "== omadmd is serving org.omadm.Client1 (store: $state/store.db)"
ctl status
echo "== DevInfo, filled from this host"
ctl tree 'urn:oma:mo:oma-dm-devinfo:1.0//'

echo "== a DM account: secrets (Auth/*/Secret) and Perm are never returned"
ctl create urn:oma:mo:oma-dm-dmacc:1.2 '{"DMAcc": {"SrvID": "devserver", "SrvURI": "https://localhost:8443/dm",
  "Name": "Development server", "Perm": {"p1": {"MOID": "urn:oma:mo:ext-example-weather:1.0"}},
  "Auth": {"Trsp": {"Data": "device", "Secret": "s3cret"}}, "Ext": {"Priority": 10}}}'
ctl tree 'urn:oma:mo:oma-dm-dmacc:1.2/*/'

echo "== an app's settings, watched while they change (Changed goes to the watcher only)"
uri=$("$bin/omadmctl" --session create urn:oma:mo:ext-example-weather:1.0 \
  '{"Weather": {"Server": "https://weather.example", "Units": "metric", "Refresh": 900}}')
echo "created $uri"
"$bin/omadmctl" --session watch "$uri" >"$state/watch.out" 2>"$state/watch.err" &
watcher=$!
for _ in $(seq 100); do grep -q Watching "$state/watch.err" 2>/dev/null && break; sleep 0.05; done
ctl set "${uri}Units" imperial
ctl set "${uri}Refresh" 600
ctl delete "${uri}Server"
sleep 0.3
kill -INT $watcher; wait $watcher || true
echo "\$ omadmctl watch $uri   (what the watcher printed)"
cat "$state/watch.out"; echo
ctl get "${uri}*"
ctl changes --since 0 'urn:oma:mo:ext-example-weather:1.0/*/'

echo "== stopping omadmd (SIGTERM)"
kill -TERM $daemon; wait $daemon
echo "omadmd log:"; sed 's/^/  /' "$state/omadmd.log"
DEMO
