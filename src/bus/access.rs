//! The first authorization layer: who is the caller, and may it use a polkit action at
//! all. A bus connection is identified when it first calls ([`super::peer`]) and keeps
//! that identity until it leaves the bus: uid 0 acts as the admin and is always
//! authorized, an app the platform names is `app:<id>`, any other caller `uid:<n>`. When a
//! unique name was first seen (its `NameOwnerChanged`, or its first call) is recorded, so
//! that a pid which changed hands since does not lend the connection its identity.
//!
//! polkit's "yes" for read-type actions (`read`, `watch`) is cached per connection until
//! the caller leaves the bus, as SHA-256 digests of action and ClientURI, at most
//! `[limits] auth_cache_bytes_per_caller` bytes of them; only a standing "yes" is, one that
//! polkit gives without anyone authenticating. A "yes" that lasts only a while (a kept
//! authentication, `auth_admin_keep`) or one call (`auth_admin`) is polkit's to repeat:
//! each later call asks polkit again, which keeps or forgets it as the policy says. A "no"
//! is never cached. When polkit cannot be reached, the answer is no (fail closed).
//!
//! # Interactive authorization
//!
//! polkit asks a user for a password (through the polkit agent registered for the caller's
//! process or session, e.g. the `pkttyagent` that `omadmctl` starts on a terminal) only when
//! the call allows it: the caller sets `ALLOW_INTERACTIVE_AUTHORIZATION` in the method call's
//! header, and only then is `AllowUserInteraction` passed to polkit. polkit is first asked
//! without it; only a challenge ("yes after authentication") is asked again with it, so a
//! caller that did not allow interaction is never prompted, and which "yes" came from a
//! person authenticating is known. A refusal without interaction is not remembered: the
//! caller's next interactive call is asked.
//!
//! A person takes their time: the interactive check holds no lock and no store work (the
//! methods authorize before their store work or between two pieces of it), it waits as long as polkit and the person do (the daemon sets
//! no D-Bus timeout, and the bus has none for replies), and it ends when the caller leaves
//! the bus: the daemon then cancels it (`CancelCheckAuthorization`), which closes the prompt,
//! and the call is refused. Since every pending check is a reply the daemon's bus
//! connection awaits (the bus allows a connection 128 of them by default), one uid has at
//! most `ASKING_PER_UID` (3) interactive checks pending at once; more are refused.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use zbus::message::{Flags, Header};
use zbus::names::BusName;
use zbus_polkit::policykit1::{
    AuthorityProxy, AuthorizationResult, CheckAuthorizationFlags, Subject,
};

use super::error::Error;
use super::peer::{Credentials, Peer, Procfs};
use crate::authority::Principal;
use crate::config::Limits;
use crate::store::{self, Lane};

/// The polkit actions of ARCHITECTURE.md §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
    Watch,
    SendAlert,
    StartSession,
    Manage,
}

/// An authorized caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub peer: Peer,
}

/// The most interactive authorizations of one uid pending at once.
const ASKING_PER_UID: usize = 3;

/// A cached polkit "yes": the digest of an action and a ClientURI.
type Answer = [u8; 32];

/// polkit's answer, as far as the daemon acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Yes without anyone authenticating: it stands until the policy changes (cacheable).
    Standing,
    /// Yes for now: a person authenticated for this call (`auth_admin`), or earlier and polkit
    /// keeps it for a while (`auth_admin_keep`, a temporary authorization).
    ForNow,
    /// Yes once someone authenticates; nobody was asked (or no polkit agent could ask).
    Challenge,
    /// The user was asked and did not authenticate: a wrong password, or the prompt was
    /// dismissed or cancelled.
    NotAuthenticated,
    /// No.
    No,
}

impl Verdict {
    /// The verdict of `result`; `asked`: polkit was allowed to ask the user.
    fn of(result: &AuthorizationResult, asked: bool) -> Verdict {
        if result.is_authorized {
            let temporary = result
                .details
                .contains_key("polkit.temporary_authorization_id");
            if asked || temporary {
                Verdict::ForNow
            } else {
                Verdict::Standing
            }
        } else if result.is_challenge {
            Verdict::Challenge
        } else if asked {
            Verdict::NotAuthenticated
        } else {
            Verdict::No
        }
    }

    fn authorized(self) -> bool {
        matches!(self, Verdict::Standing | Verdict::ForNow)
    }

    /// Why the caller is refused; `interaction_allowed`: the call allowed interactive
    /// authorization.
    fn refusal(self, interaction_allowed: bool) -> &'static str {
        match self {
            Verdict::Standing | Verdict::ForNow => "",
            Verdict::Challenge if interaction_allowed => {
                "authentication required, and no polkit agent could ask the caller's user"
            }
            Verdict::Challenge => {
                "authentication required, and the call did not allow interactive authorization"
            }
            Verdict::NotAuthenticated => "authentication failed or was dismissed",
            Verdict::No => "not allowed by policy",
        }
    }
}

/// Whether the method call in `header` lets polkit ask the caller's user (its
/// `ALLOW_INTERACTIVE_AUTHORIZATION` flag).
fn allows_interaction(header: &Header<'_>) -> bool {
    header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH)
}

/// How many interactive authorizations each uid has pending.
#[derive(Default)]
struct Asking(HashMap<u32, usize>);

impl Asking {
    /// Counts one more for `uid`, unless it has [`ASKING_PER_UID`] pending already.
    fn enter(&mut self, uid: u32) -> bool {
        let pending = self.0.entry(uid).or_default();
        if *pending >= ASKING_PER_UID {
            return false;
        }
        *pending += 1;
        true
    }

    fn leave(&mut self, uid: u32) {
        if let Some(pending) = self.0.get_mut(&uid) {
            *pending -= 1;
            if *pending == 0 {
                self.0.remove(&uid);
            }
        }
    }
}

/// One pending interactive authorization of `uid`, counted until dropped.
struct AskingSlot<'a> {
    asking: &'a Mutex<Asking>,
    uid: u32,
}

impl Drop for AskingSlot<'_> {
    fn drop(&mut self) {
        lock(self.asking).leave(self.uid);
    }
}

/// One caller's cached "yes" answers, held to a number of bytes.
#[derive(Default)]
struct Answers(HashSet<Answer>);

impl Answers {
    /// Keeps `key`, within `max_bytes` of answers: a full cache is emptied first.
    fn remember(&mut self, key: Answer, max_bytes: usize) {
        let per_answer = std::mem::size_of::<Answer>();
        if (self.0.len() + 1) * per_answer > max_bytes {
            self.0.clear();
        }
        if per_answer <= max_bytes {
            self.0.insert(key);
        }
    }

    fn contains(&self, key: &Answer) -> bool {
        self.0.contains(key)
    }
}

/// Caller identification and polkit checks for one bus connection.
pub struct Access {
    conn: zbus::Connection,
    procfs: Procfs,
    /// Bytes of cached answers one caller may hold.
    cache_bytes: usize,
    callers: Mutex<HashMap<String, Known>>,
    /// The polkit proxy, made on first use.
    polkit: tokio::sync::OnceCell<AuthorityProxy<'static>>,
    /// Interactive authorizations pending, per uid.
    asking: Mutex<Asking>,
    /// Numbers the cancellation ids of interactive checks.
    checks: AtomicU64,
}

/// What the daemon knows of one bus connection, by its unique name.
struct Known {
    /// When the name was first seen, in clock ticks since boot.
    first_seen: Option<u64>,
    /// Its identity, once it has called.
    peer: Option<Peer>,
    /// polkit's cached "yes" answers.
    yes: Answers,
    /// Cancelled when it leaves the bus (ends its interactive authorizations).
    left: CancellationToken,
}

impl Action {
    /// The polkit action id.
    pub fn id(self) -> &'static str {
        match self {
            Action::Read => "org.omadm.client1.read",
            Action::Write => "org.omadm.client1.write",
            Action::Watch => "org.omadm.client1.watch",
            Action::SendAlert => "org.omadm.client1.send-alert",
            Action::StartSession => "org.omadm.client1.start-session",
            Action::Manage => "org.omadm.client1.manage",
        }
    }

    fn cacheable(self) -> bool {
        matches!(self, Action::Read | Action::Watch)
    }
}

/// The principal a caller acts as.
fn principal(peer: &Peer) -> Principal {
    match (&peer.app_id, peer.uid) {
        (_, 0) => Principal::Admin,
        (Some(app), _) => Principal::App(app.clone()),
        (None, uid) => Principal::User(uid),
    }
}

/// The earlier of two moments, either of which may be unknown.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The cache key of `action` on `client_uri`: the ClientURI as far as authorization cares
/// (without `cv=` fields, which only say what the caller already has), digested.
fn answer(action: Action, client_uri: &str) -> Answer {
    let mut digest = Sha256::new();
    digest.update(action.id());
    digest.update([0]);
    match client_uri.split_once('?') {
        None => digest.update(client_uri),
        Some((path, query)) => {
            digest.update(path);
            let mut sep = "?";
            for field in query.split('&').filter(|f| !f.starts_with("cv=")) {
                digest.update(sep);
                digest.update(field);
                sep = "&";
            }
        }
    }
    digest.finalize().into()
}

impl Access {
    pub fn new(conn: zbus::Connection, limits: &Limits) -> Access {
        Access {
            conn,
            procfs: Procfs::new("/proc"),
            cache_bytes: limits.auth_cache_bytes_per_caller,
            callers: Mutex::new(HashMap::new()),
            polkit: tokio::sync::OnceCell::new(),
            asking: Mutex::new(Asking::default()),
            checks: AtomicU64::new(0),
        }
    }

    /// Records that `unique_name` is on the bus now, unless it was seen earlier.
    pub fn seen(&self, unique_name: &str) {
        if self.lock().contains_key(unique_name) {
            return;
        }
        let now = self.procfs.now_ticks();
        self.lock()
            .entry(unique_name.to_owned())
            .and_modify(|k| k.first_seen = earliest(k.first_seen, now))
            .or_insert_with(|| {
                tracing::debug!("{unique_name} first seen");
                Known {
                    first_seen: now,
                    peer: None,
                    yes: Answers::default(),
                    left: CancellationToken::new(),
                }
            });
    }

    /// Whether `unique_name` is still known (it has not left the bus).
    pub fn knows(&self, unique_name: &str) -> bool {
        self.lock().contains_key(unique_name)
    }

    /// Identifies the sender of `header` and checks `action` with polkit, passing the
    /// details `client_uri`, `moid`, `principal` and `app_id` for rules to use. polkit may
    /// ask the caller's user to authenticate if the call allows it (see the module
    /// documentation).
    pub async fn authorize(
        &self,
        header: &Header<'_>,
        action: Action,
        client_uri: &str,
    ) -> Result<Caller, Error> {
        self.authorize_as(header, action, client_uri, true).await
    }

    /// As [`Access::authorize`], never letting polkit ask anyone, whatever the call allows:
    /// for property reads that only decide how much to show (nobody should be asked for a
    /// password to read a property).
    pub async fn authorize_without_asking(
        &self,
        header: &Header<'_>,
        action: Action,
        client_uri: &str,
    ) -> Result<Caller, Error> {
        self.authorize_as(header, action, client_uri, false).await
    }

    async fn authorize_as(
        &self,
        header: &Header<'_>,
        action: Action,
        client_uri: &str,
        may_ask: bool,
    ) -> Result<Caller, Error> {
        let sender = header
            .sender()
            .ok_or_else(|| Error::AccessDenied("message has no sender".into()))?
            .to_string();
        let peer = self.peer(&sender).await?;
        let caller = Caller {
            principal: principal(&peer),
            peer,
        };
        if caller.principal == Principal::Admin {
            return Ok(caller);
        }
        let key = answer(action, client_uri);
        let cached = action.cacheable()
            && self
                .lock()
                .get(&sender)
                .is_some_and(|k| k.yes.contains(&key));
        if !cached {
            let verdict = self
                .polkit(header, &sender, action, client_uri, &caller, may_ask)
                .await?;
            if action.cacheable() && verdict == Verdict::Standing {
                self.remember(&sender, key);
            }
        }
        Ok(caller)
    }

    /// Forgets everything about a connection that left the bus, and ends its interactive
    /// authorizations.
    pub fn forget(&self, unique_name: &str) {
        if let Some(known) = self.lock().remove(unique_name) {
            known.left.cancel();
        }
    }

    /// Caches a "yes" for a caller still on the bus; a full cache is emptied first.
    fn remember(&self, sender: &str, key: Answer) {
        if let Some(known) = self.lock().get_mut(sender) {
            known.yes.remember(key, self.cache_bytes);
        }
    }

    /// The identity of `sender`, established on its first call and kept from then on.
    async fn peer(&self, sender: &str) -> Result<Peer, Error> {
        self.seen(sender);
        let first_seen = match self.lock().get(sender) {
            Some(Known {
                peer: Some(peer), ..
            }) => return Ok(peer.clone()),
            Some(known) => known.first_seen,
            // It left the bus meanwhile.
            None => None,
        };
        let creds = match self.credentials(sender, first_seen).await {
            Ok(c) => c,
            Err(e) => {
                // Gone from the bus: whatever `seen` recorded must not outlive it.
                if matches!(e, zbus::fdo::Error::NameHasNoOwner(_)) {
                    self.forget(sender);
                }
                return Err(Error::AccessDenied(format!(
                    "cannot identify {sender}: {e}"
                )));
            }
        };
        let (uid, pid) = (creds.uid, creds.pid);
        let app_id = if uid == 0 {
            None
        } else {
            let procfs = self.procfs.clone();
            let found = store::offload(Lane::Interactive, move || procfs.app_id(&creds)).await?;
            found.unwrap_or_else(|why| {
                tracing::info!("{sender} acts as uid:{uid}, not as the app of its pid: {why}");
                None
            })
        };
        let peer = Peer { uid, pid, app_id };
        tracing::debug!(%sender, pid, principal = %principal(&peer), "identified");
        // Fixed per connection: a concurrent first call may have settled it already.
        Ok(match self.lock().get_mut(sender) {
            Some(known) => known.peer.get_or_insert(peer).clone(),
            None => peer,
        })
    }

    /// What the bus says about `sender`.
    async fn credentials(
        &self,
        sender: &str,
        first_seen: Option<u64>,
    ) -> Result<Credentials, zbus::fdo::Error> {
        let dbus = zbus::fdo::DBusProxy::new(&self.conn).await?;
        let name =
            BusName::try_from(sender).map_err(|e| zbus::fdo::Error::InvalidArgs(e.to_string()))?;
        let creds = dbus.get_connection_credentials(name).await?;
        let (Some(uid), Some(pid)) = (creds.unix_user_id(), creds.process_id()) else {
            return Err(zbus::fdo::Error::Failed(
                "the bus reports no uid and pid".into(),
            ));
        };
        Ok(Credentials {
            uid,
            pid,
            pidfd: creds.into_process_fd().map(OwnedFd::from),
            first_seen,
        })
    }

    /// Asks polkit whether `caller` (`sender`) may `action`; when the answer is a challenge
    /// and the call allows interaction, asks again letting polkit ask the caller's user. The
    /// verdict is a "yes" ([`Verdict::authorized`]); anything else is an error.
    async fn polkit(
        &self,
        header: &Header<'_>,
        sender: &str,
        action: Action,
        client_uri: &str,
        caller: &Caller,
        may_ask: bool,
    ) -> Result<Verdict, Error> {
        let who = caller.principal.to_string();
        let denied = |why: &str| {
            tracing::info!(principal = %who, uid = caller.peer.uid, action = action.id(), client_uri, "denied: {why}");
            Error::AccessDenied(format!(
                "{who} is not authorized for {}: {why}",
                action.id()
            ))
        };
        let unreachable = |e: zbus::Error| denied(&format!("polkit unreachable ({e})"));
        let subject =
            Subject::new_for_message_header(header).map_err(|e| denied(&e.to_string()))?;
        let moid = client_uri.split('/').next().unwrap_or_default();
        let details = HashMap::from([
            ("client_uri", client_uri),
            ("moid", moid),
            ("principal", who.as_str()),
            ("app_id", caller.peer.app_id.as_deref().unwrap_or_default()),
        ]);
        let authority = self
            .polkit
            .get_or_try_init(|| AuthorityProxy::new(&self.conn))
            .await
            .map_err(unreachable)?;
        let result = authority
            .check_authorization(
                &subject,
                action.id(),
                &details,
                CheckAuthorizationFlags::empty(),
                "",
            )
            .await
            .map_err(unreachable)?;
        let interaction_allowed = may_ask && allows_interaction(header);
        let mut verdict = Verdict::of(&result, false);
        if verdict == Verdict::Challenge && interaction_allowed {
            let left = self
                .lock()
                .get(sender)
                .map(|known| known.left.clone())
                .ok_or_else(|| denied("the caller left the bus"))?;
            let uid = caller.peer.uid;
            let _slot = self.asking_slot(uid).ok_or_else(|| {
                denied(&format!(
                    "{ASKING_PER_UID} interactive authorizations of uid {uid} are pending already"
                ))
            })?;
            let id = format!("omadmd-{}", self.checks.fetch_add(1, Ordering::Relaxed));
            tracing::info!(principal = %who, uid, action = action.id(), client_uri, "polkit may ask the caller's user to authenticate");
            let asked = authority.check_authorization(
                &subject,
                action.id(),
                &details,
                CheckAuthorizationFlags::ALLOW_USER_INTERACTION,
                &id,
            );
            let result = tokio::select! {
                result = asked => result.map_err(unreachable)?,
                () = left.cancelled() => {
                    if let Err(e) = authority.cancel_check_authorization(&id).await {
                        tracing::debug!("cancelling polkit check {id}: {e}");
                    }
                    return Err(denied("the caller left the bus while polkit asked its user"));
                }
            };
            verdict = Verdict::of(&result, true);
            if verdict.authorized() {
                tracing::info!(principal = %who, uid, action = action.id(), client_uri, "the caller's user authenticated");
            }
        }
        if verdict.authorized() {
            Ok(verdict)
        } else {
            Err(denied(verdict.refusal(interaction_allowed)))
        }
    }

    /// A slot for one more interactive authorization of `uid`; `None` when it has
    /// [`ASKING_PER_UID`] pending already.
    fn asking_slot(&self, uid: u32) -> Option<AskingSlot<'_>> {
        lock(&self.asking).enter(uid).then_some(AskingSlot {
            asking: &self.asking,
            uid,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        lock(&self.callers)
    }
}

/// Locks `mutex`; a panic while it was held leaves nothing half-done here (every update
/// is a single insert, remove or count).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_cache_stays_within_its_bytes() {
        let mut answers = Answers::default();
        let key = |n: u8| [n; 32];
        for n in 0..10 {
            answers.remember(key(n), 100);
            assert!(answers.0.len() * 32 <= 100, "after {n}");
            assert!(answers.contains(&key(n)), "the newest answer is kept");
        }
        let mut none = Answers::default();
        none.remember(key(1), 16);
        assert!(!none.contains(&key(1)), "no room for even one answer");
    }

    #[test]
    fn cache_validators_do_not_split_the_cache() {
        let read = |uri| answer(Action::Read, uri);
        assert_eq!(read("urn:a:1.0//X?cv=1"), read("urn:a:1.0//X"));
        assert_eq!(
            read("urn:a:1.0/(x)/?nv=(x)/ID:1&cv=2"),
            read("urn:a:1.0/(x)/?nv=(x)/ID:1")
        );
        assert_ne!(read("urn:a:1.0//X"), read("urn:a:1.0//Y"));
        assert_ne!(read("urn:a:1.0//X"), answer(Action::Watch, "urn:a:1.0//X"));
    }

    fn result(authorized: bool, challenge: bool, details: &[(&str, &str)]) -> AuthorizationResult {
        AuthorizationResult {
            is_authorized: authorized,
            is_challenge: challenge,
            details: details
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn only_a_yes_nobody_authenticated_for_stands() {
        let kept = [("polkit.temporary_authorization_id", "tmpauthz1")];
        assert_eq!(
            Verdict::of(&result(true, false, &[]), false),
            Verdict::Standing
        );
        // A kept authentication (auth_admin_keep) expires: polkit is asked again next time.
        assert_eq!(
            Verdict::of(&result(true, false, &kept), false),
            Verdict::ForNow
        );
        // A yes after a prompt may be for this call only (auth_admin), with or without keep.
        assert_eq!(
            Verdict::of(&result(true, false, &[]), true),
            Verdict::ForNow
        );
        assert_eq!(
            Verdict::of(&result(true, false, &kept), true),
            Verdict::ForNow
        );
        for verdict in [Verdict::Standing, Verdict::ForNow] {
            assert!(verdict.authorized());
        }
    }

    #[test]
    fn refusals_say_whether_asking_would_help() {
        let retained = [("polkit.retains_authorization_after_challenge", "1")];
        let challenge = Verdict::of(&result(false, true, &retained), false);
        assert_eq!(challenge, Verdict::Challenge);
        assert!(
            challenge
                .refusal(false)
                .contains("did not allow interactive")
        );
        // Allowed to ask, but no agent was there to ask.
        assert_eq!(
            Verdict::of(&result(false, true, &[]), true),
            Verdict::Challenge
        );
        assert!(challenge.refusal(true).contains("no polkit agent"));
        let dismissed = [("polkit.dismissed", "true")];
        let failed = Verdict::of(&result(false, false, &dismissed), true);
        assert_eq!(failed, Verdict::NotAuthenticated);
        assert_eq!(
            failed.refusal(true),
            "authentication failed or was dismissed"
        );
        assert_eq!(Verdict::of(&result(false, false, &[]), false), Verdict::No);
        for verdict in [Verdict::Challenge, Verdict::NotAuthenticated, Verdict::No] {
            assert!(!verdict.authorized());
        }
    }

    #[test]
    fn each_uid_has_a_few_prompts_pending_at_most() {
        let mut asking = Asking::default();
        for _ in 0..ASKING_PER_UID {
            assert!(asking.enter(1000));
        }
        assert!(!asking.enter(1000), "one more than allowed");
        assert!(asking.enter(1001), "another uid has its own");
        asking.leave(1000);
        assert!(asking.enter(1000), "a finished one makes room");
        for _ in 0..ASKING_PER_UID {
            asking.leave(1000);
        }
        asking.leave(1001);
        assert!(asking.0.is_empty(), "nothing left behind: {:?}", asking.0);
    }

    #[test]
    fn the_call_header_decides_whether_polkit_may_ask() {
        let call = |flags: Flags| {
            zbus::Message::method_call("/org/omadm/Client1", "Set")
                .with_flags(flags)
                .build(&())
                .unwrap()
        };
        assert!(allows_interaction(
            &call(Flags::ALLOW_INTERACTIVE_AUTH).header()
        ));
        assert!(!allows_interaction(&call(Flags::NO_AUTO_START).header()));
    }

    #[test]
    fn callers_are_admin_app_or_user() {
        let peer = |uid, app: Option<&str>| Peer {
            uid,
            pid: 1,
            app_id: app.map(str::to_owned),
        };
        assert_eq!(principal(&peer(0, Some("x.service"))), Principal::Admin);
        assert_eq!(
            principal(&peer(1000, Some("x.service"))),
            Principal::App("x.service".into())
        );
        assert_eq!(principal(&peer(1000, None)), Principal::User(1000));
    }
}
