//! A large-object transfer that survives a network move (DM-HLF-022), for real: omadmd on the
//! NAT topology's device (tests/support/nat.rs: real NetworkManager, home and office routers
//! masquerading towards an internet namespace), `omadm-devserver` in the internet serving a
//! generated object with `--object` (ranges, strong ETag, `Repr-Digest`). A DM session HGETs
//! the object into a `bin` leaf; once a quarter of it has arrived, the device is unplugged at
//! home and plugged in at the office. The connection made at home is dead (its address is
//! gone); omadmd, told of the move by NetworkManager, ends it after a checkpoint and resumes
//! from the office with `Range`/`If-Range` from where it stopped, so the leaf ends up holding
//! the whole object (size and SHA-256) while the server sent at most 1.05 × its size (what
//! it sent beyond, about 2 MiB, was in the old path's buffers or in flight when it broke).
//!
//! The path through home's router is throttled (`tc tbf` on the internet's link to it) so
//! that the move lands mid-transfer; the office's is not. The object's size in MiB is
//! `OMADMD_TEST_OBJECT_MIB` (default 128).
//!
//! The test runs its own topology (a few seconds to start), as `nat_teardown_...` does: the
//! shared one of tests/nat.rs is private to that file.

use std::ffi::OsStr;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use omadmd::devserver::{Direction, Record};
use omadmd::tree::value::hex;
use serde_json::{Value as J, json};
use sha2::{Digest as _, Sha256};

use crate::support::nat::{DM_PORT, DeviceDaemon, DmServer, Nat, Ns, PATIENCE, Pki, SERVER, Site};
use crate::support::object;
use crate::support::sysbus::{show, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// The firmware MO of tests/fixtures/firmware.ddf.
const FW: &str = "urn:oma:mo:ext-omadmd-fw:1.0";
const SRV: &str = "fwsrv";
/// The object's path in the server's repository.
const OBJECT_PATH: &str = "/repo/objects/fw";
/// The rate of home's path: 128 MiB take about 5 s.
const HOME_RATE: &str = "200mbit";

/// The SHA-256 of the file at `path`, read in pieces.
fn sha256_of(path: &Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finalize().into();
        }
        hasher.update(&buf[..n]);
    }
}

/// The first session creates the firmware MO and HGETs the object into its `PkgData` (`200`
/// when it lands within the session, `202` when it outlives it); later ones only end.
fn scenario() -> String {
    json!({"name": "nat-transfer",
        "repository": {"fwmo": [{"ClientURI": format!("{FW}/fw/"),
                                  "MOData": {"Firmware": {"Version": "1"}}}]},
        "sessions": [
            {"packages": [
                {"commands": [["HGET", "{repo}/fwmo"],
                              ["HGET", "{repo}/objects/fw", format!("{FW}/fw/PkgData")]],
                 "expect": [200, [200, 202]]},
                {"commands": [["END"]]}]},
            {"packages": [{"commands": [["END"]]}]}]})
    .to_string()
}

/// `omadmctl ARGS` as root on the harness's bus; must succeed.
fn ctl(nat: &Nat, args: &[&str]) -> String {
    let out = nat.bus().command(None, CTL).args(args).output().unwrap();
    assert!(out.status.success(), "omadmctl {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The transfer omadmd shows for `PkgData` (`omadmctl transfers --json`), if any.
fn transfer(nat: &Nat) -> Option<J> {
    let list: J = serde_json::from_str(&ctl(nat, &["transfers", "--json"])).unwrap();
    list.as_array()?
        .iter()
        .find(|t| t["client_uri"] == format!("{FW}/fw/PkgData"))
        .cloned()
}

/// The server's counters for the object (`GET /admin/stats`, from the internet).
fn stats(nat: &Nat, pki: &Pki) -> J {
    let out = nat
        .command(Ns::Internet, "curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(pki.dir().join("ca.pem"))
        .arg(format!("https://{SERVER}:{DM_PORT}/admin/stats"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl /admin/stats: {}", show(&out));
    let all: J = serde_json::from_slice(&out.stdout).unwrap();
    all["objects"]["objects/fw"].clone()
}

/// The object's requests as the server recorded them: (peer address, `Range` header).
fn object_requests(transcript: &[Record]) -> Vec<(IpAddr, Option<String>)> {
    transcript
        .iter()
        .filter(|r| r.direction == Direction::In && r.method == "GET" && r.path == OBJECT_PATH)
        .map(|r| {
            let peer = r.peer.parse::<std::net::SocketAddr>().unwrap().ip();
            (peer, r.headers.get("range").cloned())
        })
        .collect()
}

/// The statuses of the first session's Package#3 (one per command of its Package#2).
fn session_statuses(transcript: &[Record]) -> Vec<u64> {
    let package3 = transcript
        .iter()
        .find(|r| r.session == 1 && r.kind == "package#3" && r.direction == Direction::In)
        .and_then(|r| r.body.clone())
        .unwrap_or_default();
    package3["Status"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["sc"].as_u64())
        .collect()
}

/// A process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// Waits for `what`, failing with the logs of omadmd and the server.
#[track_caller]
fn wait(daemon: &DeviceDaemon, server: &DmServer, what: &str, f: impl FnMut() -> bool) {
    assert!(
        wait_until(PATIENCE * 3, f),
        "{what} did not happen\n--- omadmd ---\n{}\n--- devserver ---\n{}",
        daemon.log(),
        server.output()
    );
}

#[test]
fn nat_transfer_interrupted_by_a_network_move_resumes_where_it_stopped() {
    let size = object::size(128);
    let mut nat = Nat::start();
    assert_eq!(nat.site(), Site::Home);
    let home = IpAddr::V4(Site::Home.public_address());
    let office = IpAddr::V4(Site::Office.public_address());

    let files = tempfile::tempdir().unwrap();
    let object = files.path().join("fw.img");
    let digest = object::make(&object, size, 0x9e37_79b9_7f4a_7c15);
    let ddf = files.path().join("ddf");
    std::fs::create_dir(&ddf).unwrap();
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firmware.ddf"),
        ddf.join("firmware.ddf"),
    )
    .unwrap();

    // Home's path is slow enough for the move to land mid-transfer.
    let out = nat
        .command(Ns::Internet, "tc")
        .args(["qdisc", "add", "dev", "home-wan", "root", "tbf"])
        .args(["rate", HOME_RATE, "burst", "256kb", "latency", "20ms"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tc: {}", show(&out));

    let pki = Pki::generate();
    let object_arg = format!("fw={}", object.display());
    let server = DmServer::start_with(
        &nat,
        &pki,
        &scenario(),
        &[OsStr::new("--object"), OsStr::new(&object_arg)],
    );
    // The instance is the server's: its quota must hold the object.
    let daemon = DeviceDaemon::start(
        &nat,
        &format!(
            "[ddf]\ndirs = [\"{}\"]\n\n[limits]\nowner_bytes = {}\n",
            ddf.display(),
            2 * size + (16 << 20)
        ),
    );
    let account = json!({"DMAcc": {
        "SrvID": SRV,
        "SrvURI": server.url(),
        "Perm": {"p0": {"MOID": FW}},
        "Ext": {"CACert": pki.ca_pem}}});
    ctl(&nat, &["create", DMACC, &account.to_string()]);
    ctl(&nat, &["session", "start", "--no-wait", SRV]);

    // A quarter of the way, at home: the move.
    let mut progress = None;
    wait(&daemon, &server, "a quarter of the transfer", || {
        progress = transfer(&nat);
        progress
            .as_ref()
            .is_some_and(|t| t["bytes_done"].as_u64().unwrap() > size / 4)
    });
    let progress = progress.unwrap();
    eprintln!("nat_transfer: at the move {progress}");
    assert_eq!(progress["state"], "running", "{progress}");
    assert_eq!(progress["bytes_total"], size, "{progress}");
    let done_at_move = progress["bytes_done"].as_u64().unwrap();
    let id = progress["id"].as_u64().unwrap();
    nat.move_to(Site::Office);

    // It goes on from the office, and ends with the object in PkgData.
    let mut last = None;
    wait(&daemon, &server, "the end of the transfer", || {
        last = transfer(&nat);
        last.as_ref()
            .is_some_and(|t| t["state"] == "done" || t["state"] == "failed")
    });
    let last = last.unwrap();
    assert_eq!(last["state"], "done", "{last}\n{}", daemon.log());
    assert_eq!(last["id"], id, "the same transfer: {last}");
    assert_eq!(last["bytes_done"], size, "{last}");
    // The session waited for it (or answered 202 and reports it later): no failure.
    let hget = session_statuses(&server.transcript());
    assert!(hget == [200, 200] || hget == [200, 202], "{hget:?}");

    let stored = daemon.state_dir().join("objects").join(hex(&digest));
    let meta = std::fs::metadata(&stored)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", stored.display(), daemon.log()));
    assert_eq!(meta.len(), size);
    assert_eq!(hex(&sha256_of(&stored)), hex(&digest));
    let part = daemon.state_dir().join("objects/part");
    assert_eq!(
        std::fs::read_dir(&part).map_or(0, |d| d.count()),
        0,
        "no part file is left in {}",
        part.display()
    );
    // The node refers to it: `omadmctl get` names it (its bytes are read with OpenValue).
    let out = nat
        .bus()
        .command(None, CTL)
        .args(["get", &format!("{FW}/fw/PkgData")])
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(
        refusal.contains(&format!(
            "large object of {size} bytes, sha-256 {}",
            hex(&digest)
        )),
        "{}",
        show(&out)
    );
    // The daemon never held the object: its peak RSS stays far below the object's size.
    let peak_kib = peak_rss_kib(daemon.pid());
    assert!(peak_kib < 96 * 1024, "omadmd's peak RSS was {peak_kib} KiB");

    // The server sent it from the first byte to home, then the rest from where the device
    // stopped to the office (once, unless a first try from there broke off): no more than
    // 5% beyond the object's size in all.
    let counters = stats(&nat, &pki);
    let sent = counters["bytes_sent"].as_u64().unwrap();
    let requests = object_requests(&server.transcript());
    assert_eq!(requests.first(), Some(&(home, None)), "{requests:?}");
    let resumed: Vec<u64> = requests[1..]
        .iter()
        .map(|(peer, range)| {
            assert_eq!(*peer, office, "{requests:?}");
            let range = range.as_deref().unwrap_or_else(|| panic!("{requests:?}"));
            let first = range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'));
            first
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("{range}"))
        })
        .collect();
    assert!(!resumed.is_empty(), "resumed from the office: {requests:?}");
    assert!(
        resumed[0] >= done_at_move && resumed.is_sorted(),
        "resumed at {resumed:?} after {done_at_move} had arrived"
    );
    assert_eq!(counters["gets"], requests.len(), "{counters}");
    assert_eq!(counters["complete"], 1, "{counters}");
    eprintln!(
        "nat_transfer: {size} bytes, resumed at {resumed:?} ({done_at_move} seen before the \
         move), {sent} sent in all ({:.4} × the size); omadmd's peak RSS {peak_kib} KiB",
        sent as f64 / size as f64
    );
    assert!(
        sent as f64 <= 1.05 * size as f64,
        "the server sent {sent} bytes in all for an object of {size}"
    );
    let log = daemon.log();
    assert!(log.contains("transfer 1: the network moved"), "{log}");
}
