//! Falling over to the next server (DM-HLF-018, PROTOCOL.md §1): when the *client* chose
//! the server — `StartSession("")`, or a `SendAlert` with no server named whose source has
//! no server as owner — and that server cannot be reached, the session goes to the next
//! server by priority instead. Never for a server the caller named, the owner of an alert's
//! source, a notification, a poll or a follow-up: those are about one server.
//!
//! Policy:
//! - **What falls over**: only a session that never got an answer to its Package#1 because
//!   there was no connection — refused, reset, DNS, connect timeout (after the transport's
//!   own retries) — or because the TLS handshake failed (the server's certificate refused).
//!   An HTTP status, any, is an answer from the server and ends the matter (PROTOCOL.md §1),
//!   as do a read timeout (the server had the package) and anything after Package#1.
//! - **Order**: accounts by `Ext/Priority`, highest first; equal priorities in account order
//!   (so the first is the one [`super::account::choose`] picks). Each server is tried at
//!   most once per choice, and at most [`SERVERS`] servers in all.
//! - **Backoff**: before the n-th fallback, a delay drawn from the upper half of
//!   `1 s · 2^(n−1)` (capped at 30 s) — see [`BACKOFF`] — so that a device that lost its
//!   network does not run through its servers at once.
//! - **An alert it carries** (SendAlert) moves with it: it is kept for the server being
//!   tried, and when none of them answers it waits for the first choice's next session.

use std::time::Duration;

use super::account::Account;
use super::engine::Outcome;
use super::error::SessionError;
use crate::transport::RetryPolicy;

/// Most servers one client choice tries: the first choice and up to three others.
pub const SERVERS: usize = 4;

/// The delays before falling over: `1 s · 2^(n−1)` before the n-th fallback, capped at
/// 30 s, jittered within its upper half ([`RetryPolicy::delay`]).
pub const BACKOFF: RetryPolicy = RetryPolicy {
    attempts: SERVERS as u32,
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// Whether a session that ended with `outcome` falls over to the next server: no
/// connection, or no TLS connection, before Package#1 was answered.
pub fn falls_over(outcome: &Outcome) -> bool {
    outcome.packages == 0
        && matches!(
            outcome.error,
            Some(SessionError::Unreachable(_) | SessionError::Certificate(_))
        )
}

/// `accounts` in the order the client tries them: highest `Ext/Priority` first, equal
/// priorities in account order.
pub fn by_priority(accounts: &[Account]) -> Vec<&Account> {
    let mut order: Vec<&Account> = accounts.iter().collect();
    order.sort_by_key(|a| std::cmp::Reverse(a.priority));
    order
}

/// A client choice in progress: which servers are left to try, carried by the trigger of
/// the session with the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    /// The first choice: where a carried alert waits when no server answers.
    first: String,
    /// The servers still to try after the current one, best first.
    rest: Vec<String>,
    /// How many servers were tried before the current one.
    tried: u32,
    /// The session reason every session of this choice carries.
    reason: &'static str,
    /// The JSON of the alert kept for the current server (SendAlert), if any.
    alert: Option<String>,
}

impl Failover {
    /// A choice among `order` (SrvIDs, best first; the session goes to the first now), at
    /// most [`SERVERS`] of them; `None` when `order` is empty.
    pub fn new(
        order: Vec<String>,
        reason: &'static str,
        alert: Option<String>,
    ) -> Option<Failover> {
        let mut order = order.into_iter().take(SERVERS);
        let first = order.next()?;
        Some(Failover {
            first,
            rest: order.collect(),
            tried: 0,
            reason,
            alert,
        })
    }

    /// The server to fall over to after the current one failed, and the choice as it goes
    /// on there; `None` when every server was tried.
    pub fn next(&self) -> Option<(String, Failover)> {
        let (next, rest) = self.rest.split_first()?;
        Some((
            next.clone(),
            Failover {
                rest: rest.to_vec(),
                tried: self.tried + 1,
                ..self.clone()
            },
        ))
    }

    /// The delay before this server is tried (zero for the first choice); `unit` is a
    /// random number in `[0, 1)`.
    pub fn delay(&self, unit: f64) -> Duration {
        match self.tried {
            0 => Duration::ZERO,
            n => BACKOFF.delay(n, unit),
        }
    }

    /// The first choice's SrvID.
    pub fn first(&self) -> &str {
        &self.first
    }

    /// The session reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The JSON of the alert the choice carries.
    pub fn alert(&self) -> Option<&str> {
        self.alert.as_deref()
    }

    /// The choice without its alert (it could not be moved on: it was no longer waiting).
    pub fn without_alert(self) -> Failover {
        Failover {
            alert: None,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::alert;
    use crate::session::account;
    use crate::tree::json::node_from_json;

    fn outcome(packages: u32, error: Option<SessionError>) -> Outcome {
        Outcome {
            status: error.as_ref().map_or(200, SessionError::status),
            packages,
            commands: 0,
            detail: String::new(),
            error,
        }
    }

    #[test]
    fn only_a_missing_connection_before_package1_falls_over() {
        let unreachable = || SessionError::Unreachable("refused".into());
        assert!(falls_over(&outcome(0, Some(unreachable()))));
        assert!(falls_over(&outcome(
            0,
            Some(SessionError::Certificate("untrusted".into()))
        )));
        // The server answered: its HTTP status stands, whatever it is.
        for status in [401, 404, 500, 503] {
            assert!(!falls_over(&outcome(
                0,
                Some(SessionError::Http {
                    url: "u".into(),
                    status
                })
            )));
        }
        // The server had Package#1, or the session was under way.
        assert!(!falls_over(&outcome(
            0,
            Some(SessionError::NoAnswer("timed out".into()))
        )));
        assert!(!falls_over(&outcome(1, Some(unreachable()))));
        assert!(!falls_over(&outcome(
            0,
            Some(SessionError::Local("x".into()))
        )));
        assert!(!falls_over(&outcome(3, None)));
    }

    #[test]
    fn servers_are_tried_by_priority_each_once_and_at_most_four() {
        let mk = |id: &str, priority: i64| {
            let node = node_from_json(
                &serde_json::json!({"SrvID": id, "SrvURI": "https://x/", "Ext": {"Priority": priority}}),
                None,
                "DMAcc",
            )
            .unwrap();
            Account::from_node(id, &node).unwrap()
        };
        let accounts = [
            mk("a", 1),
            mk("b", 5),
            mk("c", 5),
            mk("d", 9),
            mk("e", 0),
            mk("f", 3),
        ];
        let order: Vec<String> = by_priority(&accounts)
            .into_iter()
            .map(|a| a.srv_id.clone())
            .collect();
        assert_eq!(order, ["d", "b", "c", "f", "a", "e"]);
        assert_eq!(
            account::choose(&accounts, "").unwrap().srv_id,
            order[0],
            "the first choice is the one a client-chosen session goes to"
        );

        let choice = Failover::new(order, alert::CLIENT_INITIATED, Some("{}".into())).unwrap();
        assert_eq!(
            choice.delay(0.5),
            Duration::ZERO,
            "the first choice at once"
        );
        let mut tried = vec![choice.first().to_owned()];
        let mut delays = vec![];
        let mut at = choice.clone();
        while let Some((next, state)) = at.next() {
            tried.push(next);
            delays.push((state.delay(0.0), state.delay(1.0)));
            assert_eq!(state.first(), "d");
            assert_eq!(state.reason(), alert::CLIENT_INITIATED);
            at = state;
        }
        assert_eq!(tried, ["d", "b", "c", "f"], "at most {SERVERS}, each once");
        let secs = |d: Duration| d.as_millis();
        assert_eq!(
            delays
                .iter()
                .map(|(lo, hi)| (secs(*lo), secs(*hi)))
                .collect::<Vec<_>>(),
            [(500, 1000), (1000, 2000), (2000, 4000)],
            "backoff doubles, jittered in its upper half"
        );
        assert_eq!(at.alert(), Some("{}"));
        assert_eq!(at.without_alert().alert(), None);
        assert!(Failover::new(vec![], alert::CLIENT_INITIATED, None).is_none());
        assert!(
            Failover::new(vec!["only".into()], alert::CLIENT_INITIATED, None)
                .unwrap()
                .next()
                .is_none()
        );
    }
}
