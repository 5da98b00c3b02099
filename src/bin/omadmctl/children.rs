//! `omadmctl children`: the devices managed through omadmd's gateway, as the `Children`
//! property lists them. Without a subcommand, a table of them with each one's MO instances
//! indented below it; `detach` calls `DetachChild`.

use serde::Serialize;

use omadmd::bus::children::Entry;

use crate::client::Client;
use crate::failure::Failure;
use crate::output::{columns, emit, one_line, pretty, utc_time};

/// One child as `Children` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Child {
    pub key: String,
    pub id: String,
    pub protocol: String,
    pub address: String,
    pub state: String,
    /// POSIX seconds of its last message.
    pub last_seen: i64,
    /// The ClientURIs of its MO instance roots.
    pub mos: Vec<String>,
}

impl From<Entry> for Child {
    fn from((key, id, protocol, address, state, last_seen, mos): Entry) -> Child {
        Child {
            key,
            id,
            protocol,
            address,
            state,
            last_seen,
            mos,
        }
    }
}

/// Prints every child: key, id, protocol, state, last seen, address, and its instances.
pub async fn list(client: &Client, as_json: bool) -> Result<(), Failure> {
    let children: Vec<Child> = client
        .proxy
        .children()
        .await
        .map_err(|e| client.fail(e))?
        .into_iter()
        .map(Child::from)
        .collect();
    if as_json {
        return emit(&pretty(&children));
    }
    emit(&table(&children))
}

/// Detaches the child `key`.
pub async fn detach(client: &Client, key: &str) -> Result<(), Failure> {
    client
        .proxy
        .detach_child(key)
        .await
        .map_err(|e| client.fail(e))
}

/// The text `list` prints: aligned columns, each child's instance roots indented on the
/// lines below its own (outside the columns, so long ClientURIs widen nothing).
fn table(children: &[Child]) -> String {
    if children.is_empty() {
        return "No children.\n".to_owned();
    }
    let mut rows = vec![
        ["KEY", "ID", "PROTOCOL", "STATE", "LAST-SEEN", "ADDRESS"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for c in children {
        rows.push(vec![
            c.key.clone(),
            one_line(&c.id),
            c.protocol.clone(),
            c.state.clone(),
            last_seen(c.last_seen),
            one_line(&c.address),
        ]);
    }
    let aligned = columns(&rows);
    let mut lines = aligned.lines();
    let mut out = String::new();
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for (line, c) in lines.zip(children) {
        out.push_str(line);
        out.push('\n');
        for uri in &c.mos {
            out.push_str("    ");
            out.push_str(&one_line(uri));
            out.push('\n');
        }
    }
    out
}

/// POSIX seconds as UTC, or `never`.
fn last_seen(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(secs) if secs > 0 => utc_time(secs),
        _ => "never".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(key: &str, mos: &[&str]) -> Child {
        Child::from((
            key.to_owned(),
            key.to_owned(),
            "lwm2m".to_owned(),
            "coap://127.0.0.1:40001".to_owned(),
            "online".to_owned(),
            1_767_225_600,
            mos.iter().map(|m| (*m).to_owned()).collect(),
        ))
    }

    #[test]
    fn the_table_lists_each_child_with_its_instances_below() {
        let text = table(&[
            child(
                "thermo-42",
                &[
                    "urn:oma:lwm2m:oma:3:1.2/thermo-42.0/",
                    "urn:oma:lwm2m:ext:3303/thermo-42.0/",
                ],
            ),
            child("t", &[]),
        ]);
        assert_eq!(
            text,
            "KEY        ID         PROTOCOL  STATE   LAST-SEEN                ADDRESS\n\
             thermo-42  thermo-42  lwm2m     online  2026-01-01 00:00:00 UTC  coap://127.0.0.1:40001\n\
             \x20   urn:oma:lwm2m:oma:3:1.2/thermo-42.0/\n\
             \x20   urn:oma:lwm2m:ext:3303/thermo-42.0/\n\
             t          t          lwm2m     online  2026-01-01 00:00:00 UTC  coap://127.0.0.1:40001\n"
        );
        assert_eq!(table(&[]), "No children.\n");
    }

    #[test]
    fn json_names_every_field() {
        let json = serde_json::to_value(child("t", &["urn:x:1/t.0/"])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"key": "t", "id": "t", "protocol": "lwm2m",
                "address": "coap://127.0.0.1:40001", "state": "online",
                "last_seen": 1_767_225_600, "mos": ["urn:x:1/t.0/"]})
        );
        assert_eq!(last_seen(0), "never");
    }
}
