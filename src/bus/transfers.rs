//! One object per large-object transfer on the [`Board`]:
//! `/org/omadm/Client1/transfer/<id>` with the `org.omadm.Client1.Transfer` interface
//! (`dbus/org.omadm.Client1.Transfer.xml`), published and removed with the board's lines
//! (the object manager at `/org/omadm/Client1` announces them) and announcing each change
//! of a line with `PropertiesChanged` (the board thins progress to a few a second).
//!
//! Who sees what follows the server objects: a transfer's properties are for every caller,
//! except that the data repository's URL may carry credentials (a signed query, a user in
//! its authority), so `ServerUri` is whole only for administrators — uid 0 or a caller polkit
//! allows `manage`, asked as for `PermittedMoids` — and without its user information, query
//! and fragment for everyone else and in views without a caller to check
//! (`GetManagedObjects`, `InterfacesAdded`, `PropertiesChanged`).
//!
//! Suspending and resuming are `org.omadm.Client1` methods ([`super::client1`]), which find
//! the transfer of an object path with [`id_of`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use zbus::message::Header;
use zbus::{Variant, interface};

use super::access::{Access, Action};
use crate::transfer::{Board, Event, Progress};

/// Where the transfer objects live.
pub const PREFIX: &str = "/org/omadm/Client1/transfer";

/// The transfer objects' interface.
pub const INTERFACE: &str = "org.omadm.Client1.Transfer";

/// The published transfer objects, each with what it last announced.
pub struct Transfers {
    conn: zbus::Connection,
    board: Arc<Board>,
    access: Arc<Access>,
    published: Shown,
}

/// What each published object last announced, by transfer id.
type Shown = Arc<Mutex<BTreeMap<u64, Progress>>>;

/// `org.omadm.Client1.Transfer`: one transfer. Its properties show what was last announced
/// (so that a reader never sees a value older than one a signal brought it).
struct Transfer {
    id: u64,
    /// The line when the object was published, for a read racing its removal.
    first: Progress,
    shown: Shown,
    access: Arc<Access>,
}

impl Transfers {
    pub fn new(conn: zbus::Connection, board: Arc<Board>, access: Arc<Access>) -> Transfers {
        Transfers {
            conn,
            board,
            access,
            published: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Follows the board from now on: take this before [`Transfers::sync`], and hand it to
    /// [`Transfers::follow`], so that nothing between the two is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.board.subscribe()
    }

    /// Publishes an object per line on the board, announces changed ones, removes those
    /// whose lines are gone.
    pub async fn sync(&self) {
        let lines: BTreeMap<u64, Progress> =
            self.board.list().into_iter().map(|p| (p.id, p)).collect();
        let gone: Vec<u64> = self
            .lock()
            .keys()
            .filter(|id| !lines.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.removed(id).await;
        }
        for line in lines.into_values() {
            self.changed(line).await;
        }
    }

    /// Keeps the objects in step with the board's `events` until the board is gone; a
    /// follower that fell behind takes the board afresh.
    pub async fn follow(self: Arc<Self>, mut events: broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(Event::Added(line) | Event::Changed(line)) => self.changed(line).await,
                Ok(Event::Removed(id)) => self.removed(id).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!("{missed} transfer event(s) missed; reading the board again");
                    self.sync().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Publishes `line`'s object, or announces what changed since its last announcement.
    async fn changed(&self, line: Progress) {
        let id = line.id;
        let before = self.lock().insert(id, line.clone());
        match before {
            Some(before) => {
                let changed = changes(&before, &line);
                if !changed.is_empty() {
                    super::properties_changed(&self.conn, &path(id), INTERFACE, changed).await;
                }
            }
            None => {
                let object = Transfer {
                    id,
                    first: line,
                    shown: self.published.clone(),
                    access: self.access.clone(),
                };
                if let Err(e) = self.conn.object_server().at(path(id), object).await {
                    tracing::warn!("cannot publish transfer {id}: {e}");
                    self.lock().remove(&id);
                }
            }
        }
    }

    /// Removes transfer `id`'s object.
    async fn removed(&self, id: u64) {
        if !self.lock().contains_key(&id) {
            return;
        }
        if let Err(e) = self
            .conn
            .object_server()
            .remove::<Transfer, _>(path(id))
            .await
        {
            tracing::warn!("cannot remove transfer {id}'s object: {e}");
        }
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Progress>> {
        lock(&self.published)
    }
}

fn lock(shown: &Shown) -> std::sync::MutexGuard<'_, BTreeMap<u64, Progress>> {
    shown.lock().unwrap_or_else(|p| p.into_inner())
}

/// `PREFIX/<id>`.
pub fn path(id: u64) -> String {
    format!("{PREFIX}/{id}")
}

/// The transfer id of an object path of [`path`]'s making; none for any other path.
pub fn id_of(path: &str) -> Option<u64> {
    let id = path.strip_prefix(PREFIX)?.strip_prefix('/')?;
    // u64's parser takes a leading '+'; an object path element never has one.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// `url` without what may carry credentials: its user information, query and fragment.
pub fn public_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

/// The properties whose values differ between two announcements of one line, as
/// `PropertiesChanged` carries them (`ServerUri` as [`public_url`] shows it).
fn changes(before: &Progress, now: &Progress) -> HashMap<&'static str, Variant<'static>> {
    let mut out = HashMap::new();
    if before.direction != now.direction {
        out.insert("Direction", Variant::from(now.direction.as_str()));
    }
    if before.srv_id != now.srv_id {
        out.insert("ServerId", Variant::from(now.srv_id.clone()));
    }
    if before.server_uri != now.server_uri {
        out.insert("ServerUri", Variant::from(public_url(&now.server_uri)));
    }
    if before.client_uri != now.client_uri {
        out.insert("ClientUri", Variant::from(now.client_uri.clone()));
    }
    if before.state != now.state {
        out.insert("State", Variant::from(now.state.as_str()));
    }
    if before.done != now.done {
        out.insert("BytesDone", Variant::from(now.done));
    }
    if before.total != now.total {
        out.insert("BytesTotal", Variant::from(now.total.unwrap_or(0)));
    }
    if before.rate != now.rate {
        out.insert("Rate", Variant::from(now.rate));
    }
    if before.error != now.error {
        out.insert("Error", Variant::from(now.error.clone()));
    }
    out
}

impl Transfer {
    fn line(&self) -> Progress {
        lock(&self.shown)
            .get(&self.id)
            .cloned()
            .unwrap_or_else(|| self.first.clone())
    }
}

#[interface(name = "org.omadm.Client1.Transfer")]
impl Transfer {
    /// `download` (HGET) or `upload` (HPUT, HPOST, a SUB delivery).
    #[zbus(property)]
    fn direction(&self) -> String {
        self.line().direction.as_str().to_owned()
    }

    /// The SrvID of the DM server the transfer is for.
    #[zbus(property)]
    fn server_id(&self) -> String {
        self.line().srv_id
    }

    /// The data repository's URL: whole for administrators, else [`public_url`]'s (see the
    /// module documentation).
    #[zbus(property)]
    async fn server_uri(&self, #[zbus(header)] header: Option<Header<'_>>) -> String {
        let url = self.line().server_uri;
        let admin = match header {
            Some(header) => self
                .access
                .authorize_without_asking(&header, Action::Manage, "")
                .await
                .is_ok(),
            None => false,
        };
        if admin { url } else { public_url(&url) }
    }

    /// The node the transfer fills or reads.
    #[zbus(property)]
    fn client_uri(&self) -> String {
        self.line().client_uri
    }

    /// `running`, `waiting`, `suspended`, `done` or `failed`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.line().state.as_str().to_owned()
    }

    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.line().done
    }

    /// The object's size; 0 while unknown.
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.line().total.unwrap_or(0)
    }

    /// Bytes per second lately; 0 when not running.
    #[zbus(property)]
    fn rate(&self) -> u64 {
        self.line().rate
    }

    /// Why it waits or failed; "" otherwise.
    #[zbus(property)]
    fn error(&self) -> String {
        self.line().error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::{Direction, State};

    fn line() -> Progress {
        Progress {
            id: 7,
            srv_id: "srv".into(),
            direction: Direction::Download,
            server_uri: "https://u:p@repo.example:8443/o?sig=x#f".into(),
            client_uri: "urn:oma:mo:x:1.0/1/Data".into(),
            state: State::Running,
            done: 10,
            total: None,
            rate: 0,
            error: String::new(),
        }
    }

    #[test]
    fn object_paths_and_ids_go_both_ways_and_nothing_else_is_a_transfer() {
        assert_eq!(path(7), "/org/omadm/Client1/transfer/7");
        assert_eq!(id_of(&path(7)), Some(7));
        assert_eq!(id_of(&path(u64::MAX)), Some(u64::MAX));
        for other in [
            "/org/omadm/Client1/transfer",
            "/org/omadm/Client1/transfer/",
            "/org/omadm/Client1/transfer/+7",
            "/org/omadm/Client1/transfer/7/x",
            "/org/omadm/Client1/transfer7",
            "/org/omadm/Client1/server/7",
            "/org/omadm/Client1/transfer/99999999999999999999",
        ] {
            assert_eq!(id_of(other), None, "{other}");
        }
    }

    #[test]
    fn public_urls_lose_credentials_query_and_fragment() {
        assert_eq!(
            public_url(&line().server_uri),
            "https://repo.example:8443/o"
        );
        assert_eq!(
            public_url("https://repo.example/a/b"),
            "https://repo.example/a/b"
        );
        assert_eq!(public_url("https://repo.example?x"), "https://repo.example");
        assert_eq!(
            public_url("https://a@b@repo.example/p@q"),
            "https://repo.example/p@q"
        );
        assert_eq!(public_url("not a url?token"), "not a url");
    }

    #[test]
    fn only_what_changed_is_announced() {
        let before = line();
        assert!(changes(&before, &before).is_empty());
        let now = Progress {
            state: State::Waiting,
            done: 20,
            total: Some(100),
            error: "HTTP 503".into(),
            ..before.clone()
        };
        let changed = changes(&before, &now);
        let mut names: Vec<&str> = changed.keys().copied().collect();
        names.sort_unstable();
        assert_eq!(names, ["BytesDone", "BytesTotal", "Error", "State"]);
        assert_eq!(changed["State"], Variant::from("waiting"));
        assert_eq!(changed["BytesTotal"], Variant::from(100u64));
        let moved = Progress {
            server_uri: "https://repo.example/p?sig=y".into(),
            ..before.clone()
        };
        assert_eq!(
            changes(&before, &moved)["ServerUri"],
            Variant::from("https://repo.example/p")
        );
    }
}
