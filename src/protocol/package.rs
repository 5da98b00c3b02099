//! Packages 1, 2 and 3 (PROTOCOL.md §2–§4).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::alert::Alert;
use super::command::{Command, CommandError};
use crate::tree::json::MoItem;

/// Package#1: the supported MOs and the alerts (exactly one session reason first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package1 {
    #[serde(rename = "MOS", default, skip_serializing_if = "Vec::is_empty")]
    pub mos: Vec<MoEntry>,
    #[serde(rename = "Alert")]
    pub alert: Vec<Alert>,
}

/// One supported MO: its DDF, MOID and the MIIDs of the instances the server may see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoEntry {
    #[serde(rename = "DDF", default, skip_serializing_if = "Option::is_none")]
    pub ddf: Option<String>,
    #[serde(rename = "MOID")]
    pub moid: String,
    #[serde(rename = "MIID")]
    pub miid: Vec<String>,
}

/// Package#2 as received: each command parsed on its own, so that one bad command gets
/// its own status (`400`/`501`) and the others still run.
#[derive(Clone, Debug, PartialEq)]
pub struct Package2 {
    pub commands: Vec<Result<Command, CommandError>>,
}

/// Package#3: one status per command of the Package#2, in order, plus alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package3 {
    #[serde(rename = "Status")]
    pub status: Vec<Status>,
    #[serde(rename = "Alert", default, skip_serializing_if = "Vec::is_empty")]
    pub alert: Vec<Alert>,
}

/// The result of one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub sc: u16,
    /// ClientURIs created or addressed (HGET).
    #[serde(rename = "URI", default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<Vec<String>>,
    /// GET results: the MO serialization of the addressed nodes (project choice).
    #[serde(rename = "Data", default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Items>,
}

/// An MO serialization (a JSON array of items) as it goes on the wire: kept serialized,
/// because the client writes it straight from its store; [`Items::parse`] reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Items(Box<RawValue>);

/// Why a package could not be read at all (the session is aborted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("package is not JSON: {0}")]
    Json(String),
    #[error("malformed package: {0}")]
    Shape(String),
}

impl PartialEq for Items {
    fn eq(&self, other: &Items) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Items {
    /// The array a reader wrote (checked to be JSON once more, at parsing speed, so that a
    /// Package#3 never carries a broken body).
    pub fn from_json(json: Vec<u8>) -> Result<Items, serde_json::Error> {
        let text = String::from_utf8(json).map_err(serde::de::Error::custom)?;
        RawValue::from_string(text).map(Items)
    }

    /// The array of `items`.
    pub fn of(items: &[MoItem]) -> Items {
        // Invariant: MoItems serialize without error (string keys, finite numbers).
        Items(serde_json::value::to_raw_value(items).expect("MoItems serialize to JSON"))
    }

    /// The items.
    pub fn parse(&self) -> Result<Vec<MoItem>, crate::tree::json::JsonError> {
        crate::tree::json::parse_items(self.0.get())
    }

    /// The serialized array.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl Status {
    /// A status code alone.
    pub fn code(sc: u16) -> Status {
        Status {
            sc,
            uri: None,
            data: None,
        }
    }
}

impl Package2 {
    /// Parses Package#2: an object with a `CMD` array. Anything else is malformed.
    pub fn parse(body: &[u8]) -> Result<Package2, PackageError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| PackageError::Json(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(PackageError::Shape(
                "Package#2 must be a JSON object".into(),
            ));
        };
        if let Some(key) = map.keys().find(|k| *k != "CMD") {
            return Err(PackageError::Shape(format!(
                "unknown member {key:?} in Package#2"
            )));
        }
        let Some(serde_json::Value::Array(cmds)) = map.get("CMD") else {
            return Err(PackageError::Shape("Package#2 needs a CMD array".into()));
        };
        Ok(Package2 {
            commands: cmds.iter().map(Command::parse).collect(),
        })
    }

    /// The wire form (used by servers and tests).
    pub fn encode(commands: &[Command]) -> Vec<u8> {
        let cmds: Vec<Vec<String>> = commands.iter().map(Command::to_wire).collect();
        serde_json::to_vec(&serde_json::json!({ "CMD": cmds })).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::alert::CLIENT_INITIATED;

    #[test]
    fn package1_matches_the_protocol_example() {
        let p = Package1 {
            mos: vec![MoEntry {
                ddf: Some("https://x/devinfo.ddf".into()),
                moid: "urn:oma:mo:oma-dm-devinfo:1.0".into(),
                miid: vec!["miid1".into()],
            }],
            alert: vec![Alert::of_type(CLIENT_INITIATED)],
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"MOS":[{"DDF":"https://x/devinfo.ddf","MOID":"urn:oma:mo:oma-dm-devinfo:1.0","MIID":["miid1"]}],"Alert":[{"AlertType":"urn:oma:at:dm:2.0:ClientInitiatedMgmt"}]}"#
        );
        assert_eq!(serde_json::from_str::<Package1>(&text).unwrap(), p);
    }

    #[test]
    fn package2_keeps_going_past_bad_commands() {
        let body = br#"{"CMD": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//DevID"], ["FROB"], "x", ["GET"], ["END"]]}"#;
        let p = Package2::parse(body).unwrap();
        let codes: Vec<Option<u16>> = p
            .commands
            .iter()
            .map(|c| c.as_ref().err().map(|e| e.status))
            .collect();
        assert_eq!(codes, [None, Some(501), Some(400), Some(400), None]);
        let round = Package2::parse(&Package2::encode(&[Command::End])).unwrap();
        assert_eq!(round.commands, [Ok(Command::End)]);
    }

    #[test]
    fn malformed_package2_is_refused_whole() {
        for (body, reason) in [
            (&b"nope"[..], "not JSON"),
            (b"[]", "must be a JSON object"),
            (b"{}", "needs a CMD array"),
            (b"{\"CMD\": {}}", "needs a CMD array"),
            (b"{\"CMD\": [], \"X\": 1}", "unknown member"),
        ] {
            let err = Package2::parse(body).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn package3_statuses_carry_uris_and_data() {
        let p = Package3 {
            status: vec![
                Status::code(200),
                Status {
                    sc: 200,
                    uri: Some(vec!["urn:oma:mo:oma-mo:1.0/miid1/".into()]),
                    data: None,
                },
            ],
            alert: vec![],
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"Status":[{"sc":200},{"sc":200,"URI":["urn:oma:mo:oma-mo:1.0/miid1/"]}]}"#
        );
        assert_eq!(serde_json::from_str::<Package3>(&text).unwrap(), p);
    }
}
