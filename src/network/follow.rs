//! The follower: keeps a [`NetworkState`] current from NetworkManager's signals and
//! publishes it on a `tokio::sync::watch` channel, for the network MO, the D-Bus
//! properties and the notification channels.
//!
//! It holds its own connection to the system bus, subscribes to NetworkManager's signals
//! and to its name's owner changes, then reads NetworkManager whole ([`nm::read`]) at the
//! start and after each burst of relevant signals (once they have been quiet for
//! [`SETTLE`], at most [`SETTLE_MAX`] after the first). A new picture is published only
//! when it differs from the last one (the first is always published). Without
//! NetworkManager the picture is the default one (state unknown); that is logged once, and
//! NetworkManager is followed as soon as it takes its name. Without a system bus at all,
//! the follower logs that once and ends: the channel keeps the default picture.
//!
//! # What a move is
//!
//! The device's *attachment* is the primary connection (its UUID) together with its
//! routable addresses (link-local ones left out), when it has any
//! ([`NetworkState::attachment`]). A **move** is a picture read from NetworkManager whose
//! attachment differs from that of the picture read before it, when it has one: a new
//! primary connection, a changed address on it, or a connection again after none (carrier
//! back, Wi-Fi back in range — then the address and route may be the same, but
//! connections over the old link are gone). Losing the connection is not a move (there is
//! nothing to move to); the first picture after omadmd starts is not one (nothing moved
//! while omadmd watched); NetworkManager leaving and coming back is not one unless the
//! attachment changed meanwhile. Each move adds one to [`NetworkState::moves`]: a consumer
//! remembers the count it last acted on and acts when it grows.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;
use zbus::MessageStream;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::message::Type as MessageType;
use zbus::names::{BusName, WellKnownName};

use super::nm;
use super::state::{Attachment, NetworkState};
use crate::session::Tasks;

/// Quiet time after a relevant signal before NetworkManager is read: a change comes as a
/// burst of signals (about a hundred for a carrier lost and back), read once.
pub const SETTLE: Duration = Duration::from_millis(50);
/// The longest a burst delays the read.
pub const SETTLE_MAX: Duration = Duration::from_millis(500);
/// The longest a read waits for NetworkManager's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why NetworkManager cannot be followed at all.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot connect to the system bus: {0}")]
    Bus(zbus::Error),
    #[error("cannot subscribe to NetworkManager's signals: {0}")]
    Subscribe(zbus::Error),
}

/// Starts following NetworkManager on the system bus as a task of `tasks` (it ends when
/// they stop); returns the channel the pictures come on. It starts with the default
/// picture; the follower's first one replaces it at once (or, when the follower ends
/// without any, the channel closes).
pub fn start(tasks: &Tasks) -> watch::Receiver<NetworkState> {
    let (tx, rx) = watch::channel(NetworkState::default());
    let stop = tasks.clone();
    tasks.spawn(async move {
        let run = async {
            let conn = zbus::connection::Builder::system()
                .build()
                .await
                .map_err(FollowError::Bus)?;
            follow(&conn, &tx).await
        };
        tokio::select! {
            result = run => if let Err(e) = result {
                tracing::warn!("{e}: omadmd cannot follow network moves; it works on without them");
            },
            () = stop.stopped() => {}
        }
    });
    rx
}

/// Follows NetworkManager over `conn` and publishes each new picture on `tx`, until the
/// connection closes.
pub async fn follow(
    conn: &zbus::Connection,
    tx: &watch::Sender<NetworkState>,
) -> Result<(), FollowError> {
    let dbus = DBusProxy::new(conn).await.map_err(FollowError::Subscribe)?;
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, nm::BUS_NAME)])
        .await
        .map_err(FollowError::Subscribe)?;
    let rule = zbus::MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(nm::BUS_NAME)
        .path_namespace(nm::ROOT_PATH)
        .build()
        .map_err(FollowError::Subscribe)?;
    let mut signals = MessageStream::for_match_rule(rule, conn, None)
        .await
        .map_err(FollowError::Subscribe)?;
    // Subscribed first: nothing that happens from here on is missed.
    let mut present = dbus
        .name_has_owner(BusName::from(WellKnownName::from_static_str_unchecked(
            nm::BUS_NAME,
        )))
        .await
        .map_err(|e| FollowError::Subscribe(e.into()))?;
    let mut follower = Follower::new(tx);
    loop {
        follower.refresh(conn, present).await;
        // Something that may change the picture...
        loop {
            match next(&mut owners, &mut signals).await {
                Event::Closed => return Ok(()),
                Event::Owner(p) => {
                    present = p;
                    break;
                }
                Event::Signal { relevant: true } => break,
                Event::Signal { relevant: false } => {}
            }
        }
        // ... and the rest of its burst.
        let deadline = Instant::now() + SETTLE_MAX;
        loop {
            let quiet = (Instant::now() + SETTLE).min(deadline);
            match tokio::time::timeout_at(quiet, next(&mut owners, &mut signals)).await {
                Err(_) => break,
                Ok(Event::Closed) => return Ok(()),
                Ok(Event::Owner(p)) => present = p,
                Ok(Event::Signal { .. }) => {}
            }
        }
    }
}

enum Event {
    /// NetworkManager's name got an owner (`true`) or lost it.
    Owner(bool),
    /// A signal from NetworkManager; `relevant` if it may change the picture.
    Signal { relevant: bool },
    /// The connection is gone.
    Closed,
}

async fn next(owners: &mut NameOwnerChangedStream, signals: &mut MessageStream) -> Event {
    tokio::select! {
        owner = owners.next() => match owner {
            Some(signal) => match signal.args() {
                Ok(args) => Event::Owner(args.new_owner().is_some()),
                Err(_) => Event::Signal { relevant: false },
            },
            None => Event::Closed,
        },
        msg = signals.next() => match msg {
            Some(Ok(msg)) => Event::Signal { relevant: nm::is_relevant(&msg) },
            Some(Err(_)) => Event::Signal { relevant: false },
            None => Event::Closed,
        },
    }
}

/// What the follower remembers between pictures.
struct Follower<'a> {
    tx: &'a watch::Sender<NetworkState>,
    moves: Moves,
    /// Whether a picture was published yet.
    published: bool,
    /// Whether NetworkManager was there at the last refresh (`None` before the first).
    present: Option<bool>,
    /// Whether the last read failed (logged once per run of failures).
    failing: bool,
}

impl<'a> Follower<'a> {
    fn new(tx: &'a watch::Sender<NetworkState>) -> Follower<'a> {
        Follower {
            tx,
            moves: Moves::default(),
            published: false,
            present: None,
            failing: false,
        }
    }

    /// Reads NetworkManager (if `present`) and publishes the picture.
    async fn refresh(&mut self, conn: &zbus::Connection, present: bool) {
        match (self.present, present) {
            (None, false) => tracing::warn!(
                "NetworkManager is not on the system bus: omadmd cannot follow network moves; \
                 it works on, and follows NetworkManager once it starts"
            ),
            (Some(true), false) => tracing::warn!(
                "NetworkManager left the system bus: network moves are not followed until it \
                 is back"
            ),
            (None | Some(false), true) => tracing::info!("following NetworkManager"),
            _ => {}
        }
        self.present = Some(present);
        let mut state = if present {
            let read = tokio::time::timeout(READ_TIMEOUT, nm::read(conn))
                .await
                .unwrap_or_else(|_| {
                    Err(zbus::Error::Failure(format!(
                        "no answer within {} s",
                        READ_TIMEOUT.as_secs()
                    )))
                });
            match read {
                Ok(picture) => {
                    self.failing = false;
                    if self.moves.observe(picture.attachment()) {
                        log_move(&picture);
                    }
                    picture
                }
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(
                            "cannot read NetworkManager's state: {e}; network moves are not \
                             followed until it answers"
                        );
                    }
                    self.failing = true;
                    NetworkState::default()
                }
            }
        } else {
            NetworkState::default()
        };
        state.moves = self.moves.count;
        if !self.published {
            self.published = true;
            self.tx.send_replace(state);
        } else {
            self.tx.send_if_modified(|current| {
                let differs = *current != state;
                if differs {
                    *current = state;
                }
                differs
            });
        }
    }
}

fn log_move(picture: &NetworkState) {
    let Some(primary) = &picture.primary else {
        return;
    };
    let addresses: Vec<String> = primary.addresses.iter().map(ToString::to_string).collect();
    tracing::info!(
        "network move: primary connection {:?} ({}), addresses {}",
        primary.name,
        primary.technology,
        addresses.join(", ")
    );
}

/// Counts moves (see the module documentation).
#[derive(Debug, Default)]
struct Moves {
    count: u64,
    /// The attachment of the last picture read (`None` before the first).
    last: Option<Option<Attachment>>,
}

impl Moves {
    /// Notes the attachment of a picture just read; whether it is a move.
    fn observe(&mut self, now: Option<Attachment>) -> bool {
        let moved = match (&self.last, &now) {
            (Some(before), Some(after)) => before.as_ref() != Some(after),
            _ => false,
        };
        if moved {
            self.count += 1;
        }
        self.last = Some(now);
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::state::Address;

    fn at(uuid: &str, ip: &str) -> Option<Attachment> {
        Some(Attachment {
            uuid: uuid.into(),
            addresses: vec![Address {
                ip: ip.parse().unwrap(),
                prefix: 24,
            }],
        })
    }

    #[test]
    fn moves_are_new_attachments_after_the_first_picture() {
        let mut m = Moves::default();
        assert!(!m.observe(at("home", "10.0.0.2")), "the first picture");
        assert!(!m.observe(at("home", "10.0.0.2")), "nothing changed");
        assert!(m.observe(at("home", "10.0.0.3")), "a new address");
        assert!(!m.observe(None), "offline is no move");
        assert!(!m.observe(None));
        assert!(m.observe(at("home", "10.0.0.3")), "back after none");
        assert!(
            m.observe(at("office", "10.0.0.3")),
            "a new primary connection"
        );
        assert_eq!(m.count, 3);

        let mut offline_first = Moves::default();
        assert!(!offline_first.observe(None));
        assert!(
            offline_first.observe(at("home", "10.0.0.2")),
            "the first connection"
        );
    }
}
