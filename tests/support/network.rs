//! Reading what omadmd shows of the network (the network MO, the main object's properties)
//! on a private system bus, and a mock NetworkManager ([`MockNm`], python-dbusmock's
//! `networkmanager` template) for the device kinds the test machine cannot have.

use std::process::Command;

use serde_json::Value as J;

use super::sysbus::{KillOnDrop, SysBus, show};

/// The network MO's MOID.
pub const NETWORK: &str = "urn:oma:mo:ext-omadmd-network:1.0";

/// A property of omadmd's main object (`State`, `AccessTechnology`, ...), as root.
pub fn property(bus: &SysBus, name: &str) -> String {
    let out = bus
        .command(None, "busctl")
        .args([
            "--system",
            "--json=short",
            "get-property",
            "org.omadm.Client1",
        ])
        .args(["/org/omadm/Client1", "org.omadm.Client1", name])
        .output()
        .expect("busctl");
    assert!(out.status.success(), "get-property {name}: {}", show(&out));
    let v: J = serde_json::from_slice(&out.stdout).expect("busctl JSON");
    v["data"].as_str().unwrap_or_default().to_owned()
}

/// The network MO's root node (`{"State": ..., "Interfaces": {...}}`) as root reads it with
/// `GetJson`; `Null` while it is not there.
pub fn network_mo(bus: &SysBus) -> J {
    let out = bus
        .command(None, "busctl")
        .args(["--system", "--json=short", "call", "org.omadm.Client1"])
        .args(["/org/omadm/Client1", "org.omadm.Client1", "GetJson", "s"])
        .arg(format!("{NETWORK}/0/"))
        .output()
        .expect("busctl");
    if !out.status.success() {
        return J::Null;
    }
    let reply: J = serde_json::from_slice(&out.stdout).expect("busctl JSON");
    let items: J =
        serde_json::from_str(reply["data"][0].as_str().expect("a string")).expect("MO JSON");
    items[0]["MOData"]["Network"].clone()
}

/// A NetworkManager made by python-dbusmock's `networkmanager` template (Debian
/// `python3-dbusmock`) on the bus, as root; stopped on drop. Its mock methods
/// (`org.freedesktop.DBus.Mock`) add devices, connections and properties, and emit the
/// signals NetworkManager would.
pub struct MockNm<'a> {
    bus: &'a SysBus,
    process: Option<KillOnDrop>,
}

impl<'a> MockNm<'a> {
    /// Starts the mock and waits until it owns `org.freedesktop.NetworkManager`. Fails the
    /// test (saying what to install) without python3-dbusmock.
    pub fn start(bus: &'a SysBus) -> MockNm<'a> {
        let probe = Command::new("/usr/bin/python3")
            .args(["-c", "import dbusmock"])
            .output()
            .expect("/usr/bin/python3 runs");
        assert!(
            probe.status.success(),
            "python-dbusmock is missing: apt-get install python3-dbusmock (.ci/run installs it)\n{}",
            show(&probe)
        );
        let process = KillOnDrop::spawn(
            bus.command(None, "/usr/bin/python3")
                .args(["-m", "dbusmock", "--system", "--template", "networkmanager"])
                .stdout(std::process::Stdio::null()),
        );
        assert!(
            bus.wait_for_name(
                "org.freedesktop.NetworkManager",
                std::time::Duration::from_secs(20)
            ),
            "dbusmock did not take org.freedesktop.NetworkManager: {}",
            bus.logs()
        );
        MockNm {
            bus,
            process: Some(process),
        }
    }

    /// Calls the mock method `method` (`org.freedesktop.DBus.Mock.<method>`) on the object
    /// at `path` with `args` in GVariant text form; returns gdbus's output.
    pub fn call(&self, path: &str, method: &str, args: &[&str]) -> String {
        let out = self
            .bus
            .command(None, "gdbus")
            .args([
                "call",
                "--system",
                "--dest",
                "org.freedesktop.NetworkManager",
            ])
            .args(["--object-path", path, "--method"])
            .arg(format!("org.freedesktop.DBus.Mock.{method}"))
            .args(args)
            .output()
            .expect("gdbus");
        assert!(out.status.success(), "{method} {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Sets NetworkManager's property `name` (on the manager object) to `value` (GVariant
    /// text, e.g. `<objectpath '/'>`), with the `PropertiesChanged` NetworkManager sends.
    pub fn set(&self, name: &str, value: &str) {
        self.call(
            "/org/freedesktop",
            "SetProperty",
            &[
                "/org/freedesktop/NetworkManager",
                "org.freedesktop.NetworkManager",
                name,
                value,
            ],
        );
    }

    /// Ends the mock, as NetworkManager leaving the bus.
    pub fn stop(mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal("-TERM", std::time::Duration::from_secs(10));
        }
    }
}
