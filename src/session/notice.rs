//! What a verified server notification (Package#0, PROTOCOL.md §5) asks of the session it
//! starts: Package#1's `ServerInitiatedMgmt` alert carries its NOTIFICATION-ID (PROTOCOL.md
//! §2, project choice: `"Data": {"NotificationID": <number>}`), and `REQ-MOS` makes Package#1
//! carry the MO list. The scheduler carries a [`Notice`] from the verifier to the engine.

use crate::notification::package0::ConType;
use crate::protocol::alert::{self, Alert};

/// What a notification asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// NOTIFICATION-ID.
    pub notification_id: Option<u16>,
    /// REQ-MOS: Package#1 carries the MO list.
    pub req_mos: bool,
    /// PREFERRED-CON-TYPE, as sent; the session runs on whatever bearer is up.
    pub con_type: ConType,
}

impl Notice {
    /// The session-reason alert of a session started for this notice with `reason` (a
    /// first session's `BootstrapComplete` stays as it is).
    pub fn reason_alert(&self, reason: &str) -> Alert {
        let mut out = Alert::of_type(reason);
        if reason == alert::SERVER_INITIATED
            && let Some(id) = self.notification_id
        {
            out.data = Some(serde_json::json!({ "NotificationID": id }));
        }
        out
    }

    /// Merges `later`, a notice for the same queued session: the later NOTIFICATION-ID
    /// answers them both, and REQ-MOS from either holds.
    pub fn merge(&mut self, later: Notice) {
        let req_mos = self.req_mos || later.req_mos;
        *self = Notice { req_mos, ..later };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_alert_carries_the_notification_id() {
        let notice = Notice {
            notification_id: Some(513),
            req_mos: false,
            con_type: ConType::Any,
        };
        let text = serde_json::to_string(&notice.reason_alert(alert::SERVER_INITIATED)).unwrap();
        assert_eq!(
            text,
            r#"{"AlertType":"urn:oma:at:dm:2.0:ServerInitiatedMgmt","Data":{"NotificationID":513}}"#
        );
        assert_eq!(
            notice.reason_alert(alert::BOOTSTRAP_COMPLETE),
            Alert::of_type(alert::BOOTSTRAP_COMPLETE)
        );
        let without = Notice {
            notification_id: None,
            ..notice.clone()
        };
        assert_eq!(
            without.reason_alert(alert::SERVER_INITIATED),
            Alert::of_type(alert::SERVER_INITIATED)
        );
    }

    #[test]
    fn merged_notices_keep_the_later_id_and_any_req_mos() {
        let mut queued = Notice {
            notification_id: Some(1),
            req_mos: true,
            con_type: ConType::Any,
        };
        queued.merge(Notice {
            notification_id: Some(2),
            req_mos: false,
            con_type: ConType::Wlan,
        });
        assert_eq!(
            queued,
            Notice {
                notification_id: Some(2),
                req_mos: true,
                con_type: ConType::Wlan
            }
        );
    }
}
