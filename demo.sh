#!/usr/bin/env bash
# The omadmd demo, on built-in defaults: builds the binaries, starts the reference DM server
# (omadm-devserver, HTTPS with a generated test CA, its built-in scenario) and omadmd on a
# private D-Bus bus (nothing on the host changes), gives omadmd a DM account for the server
# (omadmctl account add), runs a real DM session (omadmctl session start) and shows the
# exchange and the resulting tree; then what a local app sees: a live watch and the change
# journal.
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
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

echo "== starting omadm-devserver (HTTPS on a free loopback port, generated test CA, HTTP Basic)"
"$bin/omadm-devserver" --listen 127.0.0.1:0 --cert-dir "$state/certs" --basic device:s3cret \
  --transcript "$state/transcript.jsonl" >"$state/devserver.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q 'SrvURI' "$state/devserver.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/.*(SrvURI): *//p' "$state/devserver.out" | head -1)
echo "DM server: $url"

"$bin/omadmd" --session --state-dir "$state/omadmd" --config /dev/null 2>"$state/omadmd.log" &
pids+=($!)
for _ in $(seq 100); do "$bin/omadmctl" --session status >/dev/null 2>&1 && break; sleep 0.1; done
echo "== omadmd is serving org.omadm.Client1 (store: $state/omadmd/store.db)"
ctl status

echo "== a DM account for the server, in one line: trust its CA, log in with HTTP Basic, let it"
echo "   manage the weather MO (omadmctl reads the CA and password files itself)"
(umask 077; printf 's3cret\n' >"$state/password")
ctl account add --id devserver --url "$url" --name omadm-devserver --ca "$state/certs/ca.pem" \
  --user device --password-file "$state/password" \
  --moid urn:oma:mo:ext-devserver-weather:1.0 --priority 10
ctl account list
echo "(secrets such as Auth/Trsp/Secret are never returned:)"
"$bin/omadmctl" --session get 'urn:oma:mo:oma-dm-dmacc:1.2/*/Auth/Trsp/*'
echo

echo "== a weather app watches the settings the server will install"
"$bin/omadmctl" --session watch 'urn:oma:mo:ext-devserver-weather:1.0/*/' >"$state/watch.out" 2>"$state/watch.err" &
watcher=$!
for _ in $(seq 100); do grep -q Watching "$state/watch.err" 2>/dev/null && break; sleep 0.05; done

echo "== a real DM session (the client picks the server: highest priority)"
ctl session start
kill -INT $watcher; wait $watcher || true

echo "== the exchange, as the server saw it"
sed 's/^/  /' "$state/devserver.out"; echo
echo "== the resulting tree"
ctl tree 'urn:oma:mo:ext-devserver-weather:1.0/*/'
echo "\$ omadmctl watch 'urn:oma:mo:ext-devserver-weather:1.0/*/'   (what the watching app printed)"
cat "$state/watch.out"; echo
ctl changes --since 0 'urn:oma:mo:ext-devserver-weather:1.0/*/'
ctl status

echo "== stopping omadmd (SIGTERM)"
kill -TERM "${pids[1]}"; wait "${pids[1]}"
echo "omadmd log:"; sed 's/^/  /' "$state/omadmd.log"
DEMO
