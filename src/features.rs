//! The optional features this client has built in (DM-HLF-019): the one list, [`FEATURES`],
//! that the D-Bus `Features` property lists, and the Features MO
//! (`urn:oma:mo:ext-omadmd-features:1.0`, DDF `src/tree/builtin/features.ddf`) that shows it
//! to DM servers — one `bool` leaf per name, `true` when the configuration has the feature
//! on, `false` when it is built in but off.
//!
//! The one instance ([`MIID`]) is provided like DevInfo: owned by the admin, written only
//! when it differs, Read granted to every app and every server; its MOID is one of the
//! default `[access] public_moids`, so every server may read it. omadmd writes it at start
//! and at every reload.

use std::collections::BTreeMap;

use crate::authority::{AccessError, Authority, Rights};
use crate::config::Config;
use crate::tree::builtin::FEATURES_MO;
use crate::tree::node::Node;
use crate::tree::value::Value;

/// The gateway: devices managed through omadmd (docs/gateway.md); on when any adapter is.
pub const GATEWAY: &str = "gateway";
/// The gateway's LwM2M adapter; on when `[gateway.lwm2m] listen` names an address.
pub const GATEWAY_LWM2M: &str = "gateway-lwm2m";
/// Sub-agents (docs/gateway.md §6): on when guests are configured (`[gateway.guests.<name>]`)
/// on a host, or `[subagent] host_socket` on a guest.
pub const GATEWAY_SUBAGENT: &str = "gateway-subagent";

/// Every optional feature built in, by name. A feature that is not built in is not listed.
pub const FEATURES: [&str; 11] = [
    "mo-serialization-json",
    "tnds",
    "client-uri-nv",
    "cache-validator",
    "watch",
    "constructed-format-json",
    "large-object-resume",
    "content-coding-gzip",
    GATEWAY,
    GATEWAY_LWM2M,
    GATEWAY_SUBAGENT,
];

/// MIID of the one Features MO instance.
pub const MIID: &str = "0";

/// Name of the Features MO's root node.
pub const ROOT: &str = "Features";

/// Which features `config` has on: the gateway with an LwM2M address to listen on or a
/// guest configured, its adapters each with its own, sub-agents also on a guest; every
/// other one always.
pub fn enabled(config: &Config) -> impl Fn(&str) -> bool + use<> {
    let lwm2m = !config.gateway.lwm2m.listen.is_empty();
    let guests = !config.gateway.guests.is_empty();
    let guest = config.subagent.host_socket.is_some();
    move |feature| match feature {
        GATEWAY => lwm2m || guests,
        GATEWAY_LWM2M => lwm2m,
        GATEWAY_SUBAGENT => guests || guest,
        _ => true,
    }
}

/// The MO's content (below its root): a leaf per entry of [`FEATURES`], `true` where
/// `enabled` says so.
pub fn node(enabled: impl Fn(&str) -> bool) -> Node {
    Node::Interior(
        FEATURES
            .iter()
            .map(|&name| (name.to_owned(), Node::Leaf(Value::Bool(enabled(name)))))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Writes the Features MO instance for `config` (only when it differs). Blocking.
pub fn provide(auth: &Authority, config: &Config) -> Result<(), AccessError> {
    auth.provide(
        FEATURES_MO,
        MIID,
        ROOT,
        &node(enabled(config)),
        Rights::READ,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::registry::Registry;

    fn leaf(node: &Node, name: &str) -> Option<bool> {
        match node.get(name) {
            Some(Node::Leaf(Value::Bool(on))) => Some(*on),
            _ => None,
        }
    }

    #[test]
    fn every_feature_is_a_leaf_and_only_the_gateway_waits_for_an_address() {
        let off = node(enabled(&Config::default()));
        let Node::Interior(children) = &off else {
            panic!("{off:?}")
        };
        let mut names: Vec<&str> = FEATURES.to_vec();
        names.sort_unstable();
        assert_eq!(
            children.keys().map(String::as_str).collect::<Vec<_>>(),
            names
        );
        let gateway = [GATEWAY, GATEWAY_LWM2M, GATEWAY_SUBAGENT];
        for name in FEATURES {
            assert_eq!(leaf(&off, name), Some(!gateway.contains(&name)), "{name}");
        }

        let config = Config::parse(
            "[gateway.lwm2m]\nlisten = [\"127.0.0.1:5683\"]\n[gateway.guests.web1]\nuid = 0\n",
        )
        .unwrap();
        let on = node(enabled(&config));
        for name in FEATURES {
            assert_eq!(leaf(&on, name), Some(true), "{name}");
        }
        let guest =
            Config::parse("[subagent]\nhost_socket = \"/run/omadmd-host/host.sock\"\n").unwrap();
        let sub = node(enabled(&guest));
        assert_eq!(leaf(&sub, GATEWAY_SUBAGENT), Some(true));
        assert_eq!(leaf(&sub, GATEWAY), Some(false));
    }

    #[test]
    fn the_names_are_distinct_node_names_and_the_content_fits_the_ddf() {
        let mut names = FEATURES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len(), "a name listed twice");
        for name in FEATURES {
            assert!(crate::tree::node::check_name(name).is_ok(), "{name}");
        }
        let types = Registry::with_builtin();
        let ty = types.get(FEATURES_MO).unwrap();
        assert_eq!(ty.root_name(), ROOT);
        let def = &ty.root;
        assert_eq!(def.check(&node(|_| true)), vec![]);
        assert_eq!(def.check(&node(|_| false)), vec![]);
    }
}
