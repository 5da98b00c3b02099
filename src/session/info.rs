//! The SessionInfo MO (`urn:oma:mo:oma-sessioninfomo:1.0`, PROTOCOL.md §12): one instance
//! per running session, kept by the [scheduler](super::scheduler) — filled in before
//! Package#1, removed when the session ends, and readable by that session's server only
//! (owned by the admin, `Read` granted to `srv:<SrvID>`), so that a server's
//! `GET urn:oma:mo:oma-sessioninfomo:1.0//CBT` finds its own session's instance.

use std::collections::BTreeMap;
use std::path::Path;

use crate::tree::node::Node;
use crate::tree::value::Value;

/// The instance's root node name.
pub const ROOT: &str = "SessionInfo";

/// The facts of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub srv_id: String,
    /// The session-reason alert type.
    pub reason: String,
    /// The current bearer type (see [`bearer`]).
    pub cbt: String,
    /// POSIX seconds.
    pub start_time: i64,
}

impl SessionInfo {
    /// The instance content.
    pub fn node(&self) -> Node {
        let chr = |s: &str| Node::Leaf(Value::Chr(s.to_owned()));
        Node::Interior(BTreeMap::from([
            ("SessionID".to_owned(), chr(&self.session_id)),
            ("SrvID".to_owned(), chr(&self.srv_id)),
            ("Reason".to_owned(), chr(&self.reason)),
            ("CBT".to_owned(), chr(&self.cbt)),
            (
                "StartTime".to_owned(),
                Node::Leaf(Value::Int(self.start_time)),
            ),
        ]))
    }
}

/// The bearer of the default route under `root` (`/` on a live system): `wifi` (a wireless
/// interface), `cellular` (a modem's: `wwan*`, `rmnet*`, `ccmni*`), `ethernet`, or
/// `unknown` when there is no default route or its interface is of another kind.
pub fn bearer(root: &Path) -> String {
    let routes = std::fs::read_to_string(root.join("proc/net/route")).unwrap_or_default();
    // Iface Destination Gateway ...: the default route has destination 00000000.
    let Some(iface) = routes.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let iface = fields.next()?;
        (fields.next()? == "00000000").then(|| iface.to_owned())
    }) else {
        return "unknown".to_owned();
    };
    let dev = root.join("sys/class/net").join(&iface);
    let kind = if dev.join("wireless").exists() || dev.join("phy80211").exists() {
        "wifi"
    } else if ["wwan", "rmnet", "ccmni"]
        .iter()
        .any(|p| iface.starts_with(p))
    {
        "cellular"
    } else {
        // ARPHRD_ETHER is 1; a bridge or bond over ethernet says so too.
        match std::fs::read_to_string(dev.join("type")) {
            Ok(t) if t.trim() == "1" => "ethernet",
            _ => "unknown",
        }
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(iface: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        std::fs::write(
            dir.path().join("proc/net/route"),
            format!(
                "Iface\tDestination\tGateway\tFlags\n\
                 lo\t0000007F\t00000000\t0001\n\
                 {iface}\t00000000\t0101A8C0\t0003\n"
            ),
        )
        .unwrap();
        let dev = dir.path().join("sys/class/net").join(iface);
        std::fs::create_dir_all(&dev).unwrap();
        for (name, content) in files {
            let path = dev.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    #[test]
    fn the_bearer_is_the_default_route_s_interface_kind() {
        assert_eq!(bearer(host("eth0", &[("type", "1\n")]).path()), "ethernet");
        assert_eq!(
            bearer(host("wlp2s0", &[("type", "1\n"), ("wireless/x", "")]).path()),
            "wifi"
        );
        assert_eq!(
            bearer(host("wwan0", &[("type", "519\n")]).path()),
            "cellular"
        );
        assert_eq!(
            bearer(host("tun0", &[("type", "65534\n")]).path()),
            "unknown"
        );
        assert_eq!(bearer(tempfile::tempdir().unwrap().path()), "unknown");
    }

    #[test]
    fn the_instance_holds_the_ddf_s_nodes() {
        let info = SessionInfo {
            session_id: "s-1".into(),
            srv_id: "s".into(),
            reason: "urn:oma:at:dm:2.0:ClientInitiatedMgmt".into(),
            cbt: "ethernet".into(),
            start_time: 1_700_000_000,
        };
        let node = info.node();
        assert_eq!(
            node.get("CBT"),
            Some(&Node::Leaf(Value::Chr("ethernet".into())))
        );
        assert_eq!(
            node.get("StartTime"),
            Some(&Node::Leaf(Value::Int(1_700_000_000)))
        );
        let ty = crate::tree::registry::Registry::with_builtin();
        let ty = ty.get(crate::tree::builtin::SESSIONINFO).unwrap();
        assert!(
            ty.root.check(&node).is_empty(),
            "{:?}",
            ty.root.check(&node)
        );
    }
}
