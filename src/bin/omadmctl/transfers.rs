//! `omadmctl transfers`: the large-object transfers omadmd shows as
//! `org.omadm.Client1.Transfer` objects. Without a subcommand, a table of them (read with
//! the object manager's `GetManagedObjects`); `watch` follows them until they end, with a
//! progress bar each on a terminal ([`indicatif`]) and plain lines (or JSON lines) elsewhere;
//! `suspend` and `resume` call `SuspendTransfer` and `ResumeTransfer`.
//!
//! `watch` subscribes to omadmd's signals (the object manager's and each transfer's
//! `PropertiesChanged`, in one stream so that they keep their order) before it reads the
//! transfers, so that nothing between the two is missed.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;

use futures_util::StreamExt as _;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use omadmd::bus::transfers::{INTERFACE, id_of, path};

use crate::client::Client;
use crate::failure::{Failure, INTERRUPTED, NOT_FOUND, TRANSFER_FAILED};
use crate::output::{columns, emit, one_line, pretty};

/// One transfer as its object shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Transfer {
    pub id: u64,
    pub direction: String,
    pub state: String,
    pub bytes_done: u64,
    /// `None` while the size is unknown.
    pub bytes_total: Option<u64>,
    /// Bytes per second lately; 0 when not running.
    pub rate: u64,
    pub client_uri: String,
    pub server_id: String,
    pub error: String,
}

impl Transfer {
    /// Takes in the properties in `props` (all of them, or those a `PropertiesChanged`
    /// carries); other names and types are left alone.
    fn update(&mut self, props: &HashMap<String, OwnedVariant>) {
        for (name, value) in props {
            match (name.as_str(), &**value) {
                ("Direction", Variant::Str(s)) => self.direction = s.to_string(),
                ("State", Variant::Str(s)) => self.state = s.to_string(),
                ("BytesDone", Variant::U64(n)) => self.bytes_done = *n,
                ("BytesTotal", Variant::U64(n)) => self.bytes_total = (*n != 0).then_some(*n),
                ("Rate", Variant::U64(n)) => self.rate = *n,
                ("ClientUri", Variant::Str(s)) => self.client_uri = s.to_string(),
                ("ServerId", Variant::Str(s)) => self.server_id = s.to_string(),
                ("Error", Variant::Str(s)) => self.error = s.to_string(),
                _ => {}
            }
        }
    }

    fn finished(&self) -> bool {
        matches!(self.state.as_str(), "done" | "failed")
    }

    /// `12.00 MiB/256.00 MiB (4%)`, or `12.00 MiB/?` while the size is unknown.
    fn amount(&self) -> String {
        match self.bytes_total {
            Some(total) => format!(
                "{}/{} ({}%)",
                HumanBytes(self.bytes_done),
                HumanBytes(total),
                percent(self.bytes_done, total)
            ),
            None => format!("{}/?", HumanBytes(self.bytes_done)),
        }
    }

    /// `2.00 MiB/s`, or `-` when nothing moves.
    fn rate_text(&self) -> String {
        if self.rate == 0 {
            "-".to_owned()
        } else {
            format!("{}/s", HumanBytes(self.rate))
        }
    }

    /// The state, with why for one that waits or failed.
    fn state_text(&self) -> String {
        if self.error.is_empty() {
            self.state.clone()
        } else {
            format!("{} ({})", self.state, one_line(&self.error))
        }
    }

    /// One plain line: id, direction, state, amount, rate, ClientURI, server.
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}\n",
            self.id,
            self.direction,
            self.state_text(),
            self.amount(),
            self.rate_text(),
            self.client_uri,
            self.server_id
        )
    }
}

/// `done` in whole percent of `total` (100 for an empty object).
fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    }
}

/// The interfaces and properties of one object, as the object manager gives them.
type Interfaces = HashMap<String, HashMap<String, OwnedVariant>>;

/// The transfer an object shows, if `path` is a transfer object and `interfaces` has the
/// transfer interface.
fn from_object(path: &str, interfaces: &Interfaces) -> Option<Transfer> {
    let id = id_of(path)?;
    let props = interfaces.get(INTERFACE)?;
    let mut transfer = Transfer {
        id,
        ..Transfer::default()
    };
    transfer.update(props);
    Some(transfer)
}

/// Every transfer omadmd shows, by id.
async fn read_all(client: &Client) -> Result<BTreeMap<u64, Transfer>, Failure> {
    let manager = zbus::fdo::ObjectManagerProxy::builder(client.proxy.inner().connection())
        .destination(omadmd::bus::NAME)
        .path(omadmd::bus::PATH)
        .build()
        .await
        .map_err(|e| client.fail(e))?;
    let objects = manager
        .get_managed_objects()
        .await
        .map_err(|e| client.fail(e.into()))?;
    Ok(objects
        .iter()
        .filter_map(|(path, interfaces)| {
            let interfaces: Interfaces = interfaces
                .iter()
                .map(|(name, props)| (name.to_string(), props.clone()))
                .collect();
            from_object(path.as_str(), &interfaces)
        })
        .map(|t| (t.id, t))
        .collect())
}

/// Prints every transfer: id, direction, state, bytes, rate, ClientURI and server.
pub async fn list(client: &Client, as_json: bool) -> Result<(), Failure> {
    let transfers: Vec<Transfer> = read_all(client).await?.into_values().collect();
    if as_json {
        return emit(&pretty(&transfers));
    }
    if transfers.is_empty() {
        return emit("No transfers.\n");
    }
    let mut table = vec![
        [
            "ID",
            "DIRECTION",
            "STATE",
            "DONE/TOTAL",
            "RATE",
            "CLIENT URI",
            "SERVER",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for t in transfers {
        table.push(vec![
            t.id.to_string(),
            t.direction.clone(),
            t.state_text(),
            t.amount(),
            t.rate_text(),
            t.client_uri.clone(),
            t.server_id.clone(),
        ]);
    }
    emit(&columns(&table))
}

/// Suspends (`suspend`) or resumes transfer `id`.
pub async fn switch(client: &Client, id: u64, suspend: bool) -> Result<(), Failure> {
    let object = OwnedObjectPath::try_from(path(id))
        .map_err(|e| Failure::usage(format!("transfer {id}: {e}")))?;
    let call = if suspend {
        client.proxy.suspend_transfer(&object).await
    } else {
        client.proxy.resume_transfer(&object).await
    };
    call.map_err(|e| client.fail(e))
}

/// How `watch` shows what happens.
enum Show {
    /// A progress bar per transfer on stderr (a terminal).
    Bars {
        multi: MultiProgress,
        bars: BTreeMap<u64, ProgressBar>,
    },
    /// A line on stdout per state change and per tenth of the way.
    Lines(Lines),
}

/// `watch`'s plain (or JSON) lines: which are due.
struct Lines {
    json: bool,
    /// The state and tenth last printed, per transfer.
    printed: BTreeMap<u64, (String, u64)>,
}

impl Lines {
    /// The line to print for `t` as it is now: one when its state or its tenth of the way
    /// changed since the last.
    fn next(&mut self, t: &Transfer) -> Option<String> {
        let tenth = t
            .bytes_total
            .map_or(0, |total| percent(t.bytes_done, total) / 10);
        let now = (t.state.clone(), tenth);
        if self.printed.get(&t.id) == Some(&now) {
            return None;
        }
        self.printed.insert(t.id, now);
        Some(if self.json {
            format!("{}\n", serde_json::to_string(t).unwrap_or_default())
        } else {
            t.line()
        })
    }
}

impl Show {
    fn new(as_json: bool) -> Show {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if !as_json && std::io::stderr().is_terminal() && !dumb {
            Show::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: BTreeMap::new(),
            }
        } else {
            Show::Lines(Lines {
                json: as_json,
                printed: BTreeMap::new(),
            })
        }
    }

    /// Shows `t` as it is now.
    fn show(&mut self, t: &Transfer) -> Result<(), Failure> {
        match self {
            Show::Bars { multi, bars } => {
                let bar = bars.entry(t.id).or_insert_with(|| {
                    multi.add(
                        ProgressBar::no_length().with_prefix(format!("{} {}", t.id, t.direction)),
                    )
                });
                draw(bar, t);
                Ok(())
            }
            Show::Lines(lines) => match lines.next(t) {
                Some(line) => emit(&line),
                None => Ok(()),
            },
        }
    }

    /// Leaves the bars as they were last drawn, for the lines that follow.
    fn end(&self) {
        if let Show::Bars { bars, .. } = self {
            for bar in bars.values().filter(|b| !b.is_finished()) {
                bar.abandon();
            }
        }
    }
}

/// Styles and moves `bar` to show `t`.
fn draw(bar: &ProgressBar, t: &Transfer) {
    let template = match t.bytes_total {
        Some(total) => {
            bar.set_length(total);
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {percent:>3}% {msg}"
        }
        None => {
            bar.unset_length();
            "{prefix:>12} {bytes} {msg}"
        }
    };
    // Invariant: both templates are valid indicatif templates (unit-tested).
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(t.bytes_done);
    let message = match t.state.as_str() {
        "running" => format!("{} {}", t.rate_text(), t.client_uri),
        _ => format!("{} {}", t.state_text(), t.client_uri),
    };
    if t.finished() {
        if t.state == "done" {
            bar.finish_with_message(message);
        } else {
            bar.abandon_with_message(message);
        }
    } else {
        bar.set_message(message);
    }
}

/// What `watch` follows.
struct Followed {
    /// The transfers followed, as last seen.
    transfers: BTreeMap<u64, Transfer>,
    /// Whether transfers that appear are followed too (no ID was given).
    newcomers: bool,
}

impl Followed {
    fn all_finished(&self) -> bool {
        self.transfers.values().all(Transfer::finished)
    }

    fn any_failed(&self) -> bool {
        self.transfers.values().any(|t| t.state != "done")
    }
}

/// Follows transfer `id`, or every unfinished transfer (and those that start meanwhile),
/// until each has ended: status 0 when all are done, [`TRANSFER_FAILED`] when one failed.
pub async fn watch(client: &Client, id: Option<u64>, as_json: bool) -> Result<(), Failure> {
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(1, format!("cannot handle signals: {e}")))?;
    let conn = client.proxy.inner().connection();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(omadmd::bus::NAME)
        .path_namespace(omadmd::bus::PATH)
        .build()
        .map_err(|e| client.fail(e))?;
    let mut signals = zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .map_err(|e| client.fail(e))?;
    let mut owner = client
        .proxy
        .inner()
        .receive_owner_changed()
        .await
        .map_err(|e| client.fail(e))?;
    let all = read_all(client).await?;
    let mut followed = match id {
        Some(id) => {
            let t = all.get(&id).cloned().ok_or_else(|| {
                Failure::new(
                    NOT_FOUND,
                    format!("no transfer {id} (omadmctl transfers lists them)"),
                )
            })?;
            Followed {
                transfers: BTreeMap::from([(id, t)]),
                newcomers: false,
            }
        }
        None => Followed {
            transfers: all.into_iter().filter(|(_, t)| !t.finished()).collect(),
            newcomers: true,
        },
    };
    if followed.transfers.is_empty() {
        return emit("No transfers running.\n");
    }

    let mut show = Show::new(as_json);
    for t in followed.transfers.values() {
        show.show(t)?;
    }
    while !followed.all_finished() {
        tokio::select! {
            biased;
            _ = interrupt.recv() => {
                show.end();
                return Err(Failure::new(
                    INTERRUPTED,
                    "stopped watching; the transfers go on in omadmd",
                ));
            }
            message = signals.next() => {
                let Some(Ok(message)) = message else {
                    show.end();
                    return Err(Failure::new(3, format!("lost the connection to the {} bus", client.bus)));
                };
                if let Some(t) = followed.take(&message) {
                    show.show(&t)?;
                }
            }
            new_owner = owner.next() => {
                show.end();
                let why = match new_owner {
                    Some(Some(_)) => "omadmd restarted",
                    _ => "omadmd left the bus",
                };
                return Err(Failure::new(3, format!("{why} before the transfers ended")));
            }
        }
    }
    show.end();
    if followed.any_failed() {
        // What happened is on the bars or lines already.
        Err(Failure::new(TRANSFER_FAILED, ""))
    } else {
        Ok(())
    }
}

impl Followed {
    /// Takes in one of omadmd's signals; the transfer it changed, if followed.
    fn take(&mut self, message: &zbus::Message) -> Option<Transfer> {
        let header = message.header();
        let (interface, member, path) = (header.interface()?, header.member()?, header.path()?);
        match (interface.as_str(), member.as_str()) {
            ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
                let id = id_of(path.as_str())?;
                let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                    message.body().deserialize().ok()?;
                let t = self.transfers.get_mut(&id).filter(|_| iface == INTERFACE)?;
                t.update(&changed);
                Some(t.clone())
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") if self.newcomers => {
                let (object, interfaces): (OwnedObjectPath, Interfaces) =
                    message.body().deserialize().ok()?;
                let t = from_object(object.as_str(), &interfaces)?;
                if self.transfers.contains_key(&t.id) {
                    return None;
                }
                self.transfers.insert(t.id, t.clone());
                Some(t)
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
                let (object, _): (OwnedObjectPath, Vec<String>) =
                    message.body().deserialize().ok()?;
                let t = self.transfers.get_mut(&id_of(object.as_str())?)?;
                if t.finished() {
                    return None;
                }
                // Only finished transfers leave the board; one seen unfinished ended unseen.
                t.state = "failed".to_owned();
                t.error = "gone from omadmd before it was seen to end".to_owned();
                Some(t.clone())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, Variant<'static>)]) -> HashMap<String, OwnedVariant> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OwnedVariant::try_from(v.clone()).unwrap()))
            .collect()
    }

    fn running() -> Transfer {
        let mut t = Transfer {
            id: 3,
            ..Transfer::default()
        };
        t.update(&props(&[
            ("Direction", Variant::from("download")),
            ("State", Variant::from("running")),
            ("BytesDone", Variant::from(3u64 << 20)),
            ("BytesTotal", Variant::from(12u64 << 20)),
            ("Rate", Variant::from(1u64 << 20)),
            ("ClientUri", Variant::from("urn:oma:mo:x:1.0/1/Data")),
            ("ServerId", Variant::from("ma1")),
            ("ServerUri", Variant::from("https://repo.example/o")),
            ("Error", Variant::from("")),
        ]));
        t
    }

    #[test]
    fn properties_make_a_line() {
        let t = running();
        assert_eq!(
            t.line(),
            "3 download running 3.00 MiB/12.00 MiB (25%) 1.00 MiB/s urn:oma:mo:x:1.0/1/Data ma1\n"
        );
        let mut waiting = t.clone();
        waiting.update(&props(&[
            ("State", Variant::from("waiting")),
            ("Rate", Variant::from(0u64)),
            ("BytesTotal", Variant::from(0u64)),
            ("Error", Variant::from("HTTP 503\nretrying")),
        ]));
        assert_eq!(waiting.bytes_total, None);
        assert_eq!(
            waiting.line(),
            "3 download waiting (HTTP 503\\nretrying) 3.00 MiB/? - urn:oma:mo:x:1.0/1/Data ma1\n"
        );
    }

    #[test]
    fn percentages_never_pass_100() {
        assert_eq!(percent(0, 10), 0);
        assert_eq!(percent(5, 10), 50);
        assert_eq!(percent(20, 10), 100);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn only_transfer_objects_are_transfers() {
        let interfaces = Interfaces::from([(
            INTERFACE.to_owned(),
            props(&[("State", Variant::from("done"))]),
        )]);
        let t = from_object(&path(9), &interfaces).unwrap();
        assert_eq!((t.id, t.state.as_str()), (9, "done"));
        assert!(t.finished());
        assert!(from_object("/org/omadm/Client1/server/ma1", &interfaces).is_none());
        assert!(from_object(&path(9), &Interfaces::new()).is_none());
        assert!(omadmd::bus::transfers::PREFIX.starts_with(omadmd::bus::PATH));
    }

    #[test]
    fn lines_are_printed_on_state_changes_and_each_tenth() {
        let mut lines = Lines {
            json: false,
            printed: BTreeMap::new(),
        };
        let mut t = running();
        assert_eq!(lines.next(&t), Some(t.line()));
        t.bytes_done += 1;
        assert_eq!(lines.next(&t), None, "the same tenth");
        t.bytes_done = 6 << 20;
        assert!(lines.next(&t).unwrap().contains("(50%)"));
        t.state = "done".into();
        assert!(lines.next(&t).unwrap().contains(" done "));
        let mut json = Lines {
            json: true,
            printed: BTreeMap::new(),
        };
        let line: serde_json::Value = serde_json::from_str(&json.next(&t).unwrap()).unwrap();
        assert_eq!(
            (line["id"].as_u64(), line["state"].as_str()),
            (Some(3), Some("done"))
        );
    }

    #[test]
    fn bar_templates_are_valid() {
        let bar = ProgressBar::hidden();
        let mut t = running();
        draw(&bar, &t);
        assert_eq!(bar.length(), Some(12 << 20));
        t.bytes_total = None;
        t.state = "failed".into();
        draw(&bar, &t);
        assert_eq!(bar.length(), None);
        assert!(bar.is_finished());
        for template in [
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {percent:>3}% {msg}",
            "{prefix:>12} {bytes} {msg}",
        ] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
