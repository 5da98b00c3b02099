//! Alerts (PROTOCOL.md §6): only the client sends them; `AlertType` is the only required
//! field.

use serde::{Deserialize, Serialize};

/// Session-reason alert: answering a Package#0.
pub const SERVER_INITIATED: &str = "urn:oma:at:dm:2.0:ServerInitiatedMgmt";
/// Session-reason alert: the client decided to connect.
pub const CLIENT_INITIATED: &str = "urn:oma:at:dm:2.0:ClientInitiatedMgmt";
/// Session-reason alert: first session after a successful bootstrap.
pub const BOOTSTRAP_COMPLETE: &str = "urn:oma:at:dm:2.0:BootstrapComplete";
/// Project-defined alert types live under this prefix (ARCHITECTURE §1); OMA's
/// `urn:oma:at:dm:2.0:` names only OMA's own alerts.
pub const PROJECT_PREFIX: &str = "urn:oma:at:ext-omadmd:1.0:";
/// The result of an asynchronous EXEC (project-defined): `SourceURI` the executed node,
/// `TargetURI` the EXEC's ServerURI, `Data` `{"sc": <status>, "output": <text>}`.
pub const EXEC_RESULT: &str = "urn:oma:at:ext-omadmd:1.0:ExecResult";
/// The result of a large-object transfer whose command was answered `202`
/// (project-defined): `SourceURI` the node, `TargetURI` the command's ServerURI, `Data`
/// `{"sc": <status>, "bytes": <size>, "sha256": <hex>}` (`bytes` and `sha256` when it
/// succeeded) or `{"sc": <status>, "error": <text>}`.
pub const TRANSFER_RESULT: &str = "urn:oma:at:ext-omadmd:1.0:TransferResult";

/// One alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    #[serde(rename = "AlertType")]
    pub alert_type: String,
    #[serde(rename = "SourceURI", default, skip_serializing_if = "Option::is_none")]
    pub source_uri: Option<String>,
    #[serde(rename = "TargetURI", default, skip_serializing_if = "Option::is_none")]
    pub target_uri: Option<String>,
    #[serde(rename = "Mark", default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    #[serde(rename = "DataType", default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
    #[serde(rename = "Data", default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// How serious an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Fatal,
    Critical,
    Minor,
    Warning,
    Informational,
    Harmless,
    Indeterminate,
}

impl Alert {
    /// An alert with only its type.
    pub fn of_type(alert_type: &str) -> Alert {
        Alert {
            alert_type: alert_type.to_owned(),
            source_uri: None,
            target_uri: None,
            mark: None,
            data_type: None,
            data: None,
        }
    }
}

impl std::str::FromStr for Mark {
    type Err = String;

    fn from_str(s: &str) -> Result<Mark, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("unknown mark {s:?} (fatal, critical, minor, warning, informational, harmless, indeterminate)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_serialize_with_protocol_field_names() {
        let mut a = Alert::of_type(EXEC_RESULT);
        a.mark = Some(Mark::Warning);
        a.data = Some(serde_json::json!({"sc": 200}));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(
            text,
            r#"{"AlertType":"urn:oma:at:ext-omadmd:1.0:ExecResult","Mark":"warning","Data":{"sc":200}}"#
        );
        assert_eq!(serde_json::from_str::<Alert>(&text).unwrap(), a);
        assert!(EXEC_RESULT.starts_with(PROJECT_PREFIX));
        assert!(serde_json::from_str::<Alert>(r#"{"AlertType":"x","Mark":"bad"}"#).is_err());
        assert_eq!("harmless".parse::<Mark>(), Ok(Mark::Harmless));
        assert!("loud".parse::<Mark>().unwrap_err().contains("loud"));
    }
}
