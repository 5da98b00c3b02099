//! Part 6 of the bench, the obuspa-shaped read: [`INSTANCES`] instances of [`LEAVES`] leaves
//! each (the shape of obuspa's 11,154-parameter dump: USP object instances of about eleven
//! parameters), read whole with one `GetJson` of `<MOID>/*`. Beside it, in the same run: raw
//! rusqlite reading the same rows from the daemon's own store file with one `SELECT` and
//! writing the same JSON text straight into a buffer (what the read costs without D-Bus,
//! access checks or the store's layers), and the bus's own `Peer.Ping` and
//! `Peer.GetMachineId` on the same daemon (the transport floor of a call). obuspa's figure,
//! measured on this machine kind, is a labelled constant: obuspa cannot be built here.
//!
//! Beside `GetJson`, `Get` of every leaf of every instance (`<MOID>/*/*`, one `(ssv)` per
//! leaf): the same data as D-Bus typed values, its time held against `GetJson`'s.
//!
//! Also what [`memory`](super::memory) fills its daemon with.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection as Sqlite, OpenFlags};
use serde_json::Value as J;
use tokio::task::JoinSet;
use zbus::Connection;

use super::{Cpu, DEST, IFACE, PATH, PEER_IFACE, Procs, Result, Row, Target, group, num, ping};
use crate::common::{SLICES, Samples};

/// The MO of the instances; no DDF, so leaf formats follow the JSON given.
pub const MOID: &str = "urn:oma:mo:ext-omadmd-bench-flat:1.0";
const ROOT: &str = "Entry";
/// Leaves per instance, right below its root: `P0`..`P5` chr, `P6`..`P10` int.
pub const LEAVES: usize = 11;
const CHR_LEAVES: usize = 6;
/// Instances read at once (1,000 x 11 = 11,000 leaves, obuspa's dump has 11,154).
pub const INSTANCES: usize = 1_000;
/// `CreateInstance` calls in flight while filling the store.
const CREATORS: usize = 8;
/// Untimed, then timed reads of each kind.
const WARMUP: usize = 3;
const ITERS: usize = 50;

/// obuspa 11.0.4 dumping 11,154 parameters over its local API, measured on this machine kind
/// (not run here: it cannot be built in CI).
const OBUSPA_DUMP_MS: f64 = 64.5;
const OBUSPA_DUMP_PARAMS: usize = 11_154;
/// The goal for ours: at least 8x faster than obuspa's dump, i.e. at most 8 ms (the issue's
/// two wordings; the table holds ours to the stricter, 8 ms).
const GOAL_SPEEDUP: f64 = 8.0;
const GOAL_MS: f64 = 8.0;

/// The ClientURI reading every instance of [`MOID`] whole.
fn all_uri() -> String {
    format!("{MOID}/*")
}

/// The content of instance `i` as `CreateInstance` takes it.
fn modata(i: usize) -> String {
    let leaves: Vec<String> = (0..LEAVES)
        .map(|l| {
            if l < CHR_LEAVES {
                format!(r#""P{l}": "value {i}.{l}""#)
            } else {
                format!(r#""P{l}": {}"#, i * 100 + l)
            }
        })
        .collect();
    format!(r#"{{"{ROOT}": {{{}}}}}"#, leaves.join(", "))
}

/// Creates `n` instances of [`MOID`] as root, [`CREATORS`] calls in flight.
pub async fn create(conn: &Connection, n: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..CREATORS {
        let (conn, next) = (conn.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(());
                }
                conn.call_method(
                    Some(DEST),
                    PATH,
                    Some(IFACE),
                    "CreateInstance",
                    &(MOID, modata(i).as_str()),
                )
                .await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// `GetJson` of every instance of [`MOID`]: the reply's length in bytes, and the text when
/// `keep` (otherwise it is only checked to be a string, as a client reading it would).
pub async fn get_json(conn: &Connection, keep: bool) -> Result<(usize, Option<String>)> {
    let reply = conn
        .call_method(Some(DEST), PATH, Some(IFACE), "GetJson", &(all_uri(),))
        .await?;
    let body = reply.body();
    let text: &str = body.deserialize()?;
    Ok((text.len(), keep.then(|| text.to_owned())))
}

/// The ClientURI of every leaf of every instance of [`MOID`].
fn leaves_uri() -> String {
    format!("{MOID}/*/*")
}

/// `Get` of every leaf of every instance of [`MOID`], decoded as a client would: the number
/// of nodes. With `check: Some(n)`, refuses an answer that is not [`LEAVES`] leaves of each
/// of `n` instances with the formats and values [`modata`] gave them.
pub async fn get_leaves(conn: &Connection, check: Option<usize>) -> Result<usize> {
    let reply = conn
        .call_method(Some(DEST), PATH, Some(IFACE), "Get", &(leaves_uri(),))
        .await?;
    let body = reply.body();
    let nodes: Vec<(&str, &str, zbus::Variant<'_>)> = body.deserialize()?;
    if let Some(n) = check {
        if nodes.len() != n * LEAVES {
            return Err(format!("Get gave {} nodes, expected {}", nodes.len(), n * LEAVES).into());
        }
        for (uri, format, value) in &nodes {
            let leaf = uri
                .strip_prefix(MOID)
                .and_then(|r| r.strip_prefix('/'))
                .and_then(|r| r.split_once('/'))
                .and_then(|(_, leaf)| leaf.strip_prefix('P')?.parse::<usize>().ok());
            let ok = match (leaf, *format, value) {
                (Some(l), "chr", zbus::Variant::Str(s)) => {
                    l < CHR_LEAVES && s.starts_with("value ") && s.ends_with(&format!(".{l}"))
                }
                (Some(l), "int", zbus::Variant::I64(i)) => {
                    l >= CHR_LEAVES && usize::try_from(*i).is_ok_and(|i| i % 100 == l)
                }
                _ => false,
            };
            if !ok {
                return Err(format!("Get gave {uri} = {format} {value:?}").into());
            }
        }
    }
    Ok(nodes.len())
}

async fn machine_id(conn: &Connection) -> Result<()> {
    conn.call_method(Some(DEST), PATH, Some(PEER_IFACE), "GetMachineId", &())
        .await?;
    Ok(())
}

/// The daemon's store file, from its command line (`--state-dir <dir>`).
pub fn store_file(pid: u32) -> Result<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let mut args = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    while let Some(arg) = args.next() {
        if arg == "--state-dir" {
            let dir = args.next().ok_or("--state-dir without a directory")?;
            return Ok(Path::new(&dir).join("store.db"));
        }
    }
    Err(format!("omadmd (pid {pid}) was started without --state-dir").into())
}

/// The baseline: a read-only rusqlite connection to the daemon's store file.
struct Raw {
    conn: Sqlite,
    epoch: i64,
}

impl Raw {
    fn open(store: &Path) -> Result<Raw> {
        let conn = Sqlite::open_with_flags(
            store,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let epoch = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })?;
        Ok(Raw { conn, epoch })
    }

    /// Every instance of [`MOID`] as one JSON array of MO serialization items (ClientURI,
    /// CV, MOData), written straight from one `SELECT` into the output buffer.
    fn read(&self) -> Result<Vec<u8>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.miid, i.root_name, i.cv_seq, n.parent, n.name, n.value \
             FROM instances i JOIN nodes n ON n.inst = i.id \
             WHERE i.moid = ?1 ORDER BY i.miid, n.parent, n.name",
        )?;
        let mut rows = stmt.query([MOID])?;
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        out.push(b'[');
        while let Some(row) = rows.next()? {
            let miid = row.get_ref(0)?.as_str()?;
            if current.as_deref() == Some(miid) {
                out.push(b',');
            } else {
                if current.is_some() {
                    out.extend_from_slice(b"}}},");
                }
                out.extend_from_slice(b"{\"ClientURI\":");
                serde_json::to_writer(&mut out, &format!("{MOID}/{miid}/"))?;
                let seq: i64 = row.get(2)?;
                write!(out, ",\"CV\":\"{:08x}{seq:x}\",\"MOData\":{{", self.epoch)?;
                serde_json::to_writer(&mut out, row.get_ref(1)?.as_str()?)?;
                out.extend_from_slice(b":{");
                current = Some(miid.to_owned());
            }
            if !row.get_ref(3)?.as_str()?.is_empty() {
                return Err("the bench's instances have leaves right below their root only".into());
            }
            serde_json::to_writer(&mut out, row.get_ref(4)?.as_str()?)?;
            out.push(b':');
            match row.get_ref(5)? {
                ValueRef::Integer(n) => write!(out, "{n}")?,
                ValueRef::Text(t) => serde_json::to_writer(&mut out, std::str::from_utf8(t)?)?,
                other => return Err(format!("the bench's leaves have no {other:?} values").into()),
            }
        }
        if current.is_some() {
            out.extend_from_slice(b"}}}");
        }
        out.push(b']');
        Ok(out)
    }
}

/// Refuses ours unless it is the baseline's text up to the order of items and of keys: the
/// same `n` items, each with the same ClientURI, CV and MOData.
fn same_items(ours: &str, base: &[u8], n: usize) -> Result<()> {
    let sorted = |text: &[u8]| -> Result<Vec<J>> {
        let mut items: Vec<J> = serde_json::from_slice(text)?;
        items.sort_by(|a, b| a["ClientURI"].as_str().cmp(&b["ClientURI"].as_str()));
        Ok(items)
    };
    let (ours, base) = (sorted(ours.as_bytes())?, sorted(base)?);
    if ours.len() != n || base.len() != n {
        return Err(format!(
            "GetJson gave {} items and the baseline {}, expected {n}",
            ours.len(),
            base.len()
        )
        .into());
    }
    match ours.iter().zip(&base).find(|(a, b)| a != b) {
        None => Ok(()),
        Some((a, b)) => Err(format!("GetJson and the baseline differ: {a} against {b}").into()),
    }
}

/// The figures of [`measure`].
pub struct BulkRead {
    ours: Samples,
    /// `Get` of every leaf ([`get_leaves`]).
    get: Samples,
    raw: Samples,
    ping: Samples,
    machine_id: Samples,
    bytes: usize,
    /// CPU of the timed `GetJson` calls.
    cpu: Cpu,
    /// CPU of the timed `Get` calls.
    get_cpu: Cpu,
}

#[derive(Clone, Copy)]
enum Kind {
    GetJson,
    Get,
    Raw,
    Ping,
    MachineId,
}

async fn call(kind: Kind, conn: &Connection, raw: &Raw) -> Result<()> {
    match kind {
        Kind::GetJson => get_json(conn, false).await.map(drop),
        Kind::Get => get_leaves(conn, None).await.map(drop),
        Kind::Raw => raw.read().map(drop),
        Kind::Ping => ping(conn).await,
        Kind::MachineId => machine_id(conn).await,
    }
}

/// Creates the instances on the daemon `procs` names, checks that `GetJson` and the baseline
/// give the same items, then times the four kinds of call, taking turns in [`SLICES`] slices.
pub async fn measure(conn: &Connection, procs: &Procs) -> Result<BulkRead> {
    create(conn, INSTANCES).await?;
    let raw = Raw::open(&store_file(procs.omadmd)?)?;
    let (bytes, text) = get_json(conn, true).await?;
    same_items(text.as_deref().unwrap_or_default(), &raw.read()?, INSTANCES)?;
    get_leaves(conn, Some(INSTANCES)).await?;

    let kinds = [
        Kind::GetJson,
        Kind::Get,
        Kind::Raw,
        Kind::Ping,
        Kind::MachineId,
    ];
    for _ in 0..WARMUP {
        for kind in kinds {
            call(kind, conn, &raw).await?;
        }
    }
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let mut cpu = Cpu::default();
    let mut get_cpu = Cpu::default();
    for _ in 0..SLICES {
        for (kind, samples) in kinds.into_iter().zip(&mut samples) {
            let timed_cpu = matches!(kind, Kind::GetJson | Kind::Get);
            for _ in 0..ITERS / SLICES {
                // CPU is read outside the timed call (it reads three /proc files).
                let before = timed_cpu.then(|| procs.cpu());
                let start = Instant::now();
                call(kind, conn, &raw).await?;
                samples.push(start.elapsed());
                if let Some(before) = before {
                    match kind {
                        Kind::Get => get_cpu += procs.cpu() - before,
                        _ => cpu += procs.cpu() - before,
                    }
                }
            }
        }
    }
    let [ours, get, raw, ping, machine_id] = samples.map(Samples::new);
    Ok(BulkRead {
        ours,
        get,
        raw,
        ping,
        machine_id,
        bytes,
        cpu,
        get_cpu,
    })
}

impl BulkRead {
    /// Its rows of the table and its notes.
    pub fn report(&self, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
        let name = format!(
            "GetJson {} x {LEAVES} leaves / raw SQL",
            group(&INSTANCES.to_string())
        );
        rows.push(Row::timed(
            &name,
            "ms",
            1e-3,
            &self.ours,
            Some(&self.raw),
            Some(Target::AtMost(GOAL_MS)),
        ));
        rows.push(Row::timed(
            &format!(
                "Get {} x {LEAVES} leaves / GetJson",
                group(&INSTANCES.to_string())
            ),
            "ms",
            1e-3,
            &self.get,
            Some(&self.ours),
            None,
        ));
        rows.push(Row::timed(
            "Peer.GetMachineId / Peer.Ping",
            "µs",
            1e-6,
            &self.machine_id,
            Some(&self.ping),
            None,
        ));
        let ms = self.ours.median().as_secs_f64() * 1e3;
        notes.push(format!(
            "obuspa-shaped read: GetJson of {} ({} instances x {LEAVES} leaves, {} bytes of \
             JSON) {} ms, {:.1}x faster than obuspa 11.0.4's dump of {} parameters ({} ms, a \
             constant measured on this machine kind; goal >= {GOAL_SPEEDUP}x and <= {} ms: {}); \
             raw rusqlite reading the same rows from the same store file into the same JSON {} \
             ms; transport floor Peer.Ping {} µs, Peer.GetMachineId {} µs",
            all_uri(),
            group(&INSTANCES.to_string()),
            group(&self.bytes.to_string()),
            num(ms),
            OBUSPA_DUMP_MS / ms,
            group(&OBUSPA_DUMP_PARAMS.to_string()),
            num(OBUSPA_DUMP_MS),
            num(GOAL_MS),
            if OBUSPA_DUMP_MS / ms >= GOAL_SPEEDUP && ms <= GOAL_MS {
                "met"
            } else {
                "MISSED"
            },
            num(self.raw.median().as_secs_f64() * 1e3),
            num(self.ping.median().as_secs_f64() * 1e6),
            num(self.machine_id.median().as_secs_f64() * 1e6),
        ));
        notes.push(format!(
            "CPU per GetJson of {} instances (ms; omadmd / dbus-daemon / bench client): {}",
            group(&INSTANCES.to_string()),
            self.cpu.per(ITERS, 1e-3)
        ));
        notes.push(format!(
            "CPU per Get of {} ({} nodes as (ssv), decoded by the client; ms; omadmd / \
             dbus-daemon / bench client): {}",
            leaves_uri(),
            group(&(INSTANCES * LEAVES).to_string()),
            self.get_cpu.per(ITERS, 1e-3)
        ));
    }
}
