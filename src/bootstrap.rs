//! Factory bootstrap (PROTOCOL.md §13, ARCHITECTURE.md §7): MO instances — DM accounts above
//! all — preinstalled as files, written through the [`Authority`] as the admin, so every rule
//! and limit of the access model holds; and the factory reset, which returns the store to
//! what those files make of it.
//!
//! - **Where**: `[bootstrap] dirs` (default `/usr/lib/omadmd/bootstrap.d/` then
//!   `/etc/omadmd/bootstrap.d/`), dirs in order, within each dir the files whose names end in
//!   `.json` or `.xml` in byte order of their names; hidden files (`.name`) and other names
//!   are left alone. A missing dir is no error. A symbolic link is followed wherever it
//!   points (only root can place one in these dirs); an entry that is not a regular file —
//!   after following — is skipped with a log line. A file larger than [`MAX_FILE_BYTES`]
//!   (4 MiB) is refused.
//! - **What**: an MO serialization array (JSON, PROTOCOL.md §7) or a TNDS document (XML),
//!   told apart by their first character (after a byte-order mark and blanks): `[` or `<`.
//!   JSON items name their instance, `<MOID>/<MIID>/` (an empty MIID, "the only instance",
//!   is refused: it could overwrite another file's instance), or a node below one. In a TNDS
//!   document each top-level node is an instance root: its MOID is the node's
//!   `RTProperties/Type/DDFName` (required); its MIID comes from the file name
//!   (`10-acme.xml` → `10-acme`, further top-level nodes `10-acme-2`, `10-acme-3`, ...), so
//!   a changed file replaces what it wrote before. A TNDS value whose format only a DDF
//!   carries (`b64`, `date`, ...) needs its MO type's DDF.
//!   Instance roots of known MO types are checked against their DDF (required nodes,
//!   formats). DevInfo and SessionInfo are omadmd's own: a file writing them is refused.
//! - **Once**: at every start and reload ([`crate::service::reload`]: SIGHUP), each file new or
//!   changed since it was last applied (recorded by path with the SHA-256 of its content) is
//!   applied whole, in one transaction, or not at all. A refused file is logged as `file:line:
//!   reason` (each problem on its own line), is not recorded — so it is tried again at the next
//!   start or reload — and the other files still apply. A file removed from a dir leaves its
//!   instances in place. The record is written just after the file's transaction: a crash
//!   between the two applies the file again at the next start, which rewrites the same
//!   instances (items name their MIIDs). An error the access rules or the store find only while
//!   writing (a `SrvID` already taken, a tree too deep) is reported at the line of the item
//!   whose ClientURI it names, else the first item's.
//! - **On request**: [`Bootstrap::apply_file`] (D-Bus `Bootstrap`) applies a file whatever
//!   was applied before, and records it like the others.
//! - **Factory reset**: [`Bootstrap::factory_reset`] removes every MO instance but DevInfo
//!   and SessionInfo (whose grants omadmd sets itself), and every grant, `SUB`
//!   subscription, `DEFAULT` source, pending alert, poll due time, last-session time and
//!   bootstrap record, in one transaction whose deletions are journaled (the journal's
//!   sequence keeps rising; watchers see the instances go); then the files are applied
//!   again.
//! - **From a bootstrap server**: [`client`] fetches the bootstrap of every DM account naming
//!   one in `Auth/Bootstrap/ServerURI`, checks it with the same rules and applies it the same
//!   way (client-initiated bootstrap).
//! - **One at a time**: applying the dirs, a named file and the factory reset each hold
//!   [`Bootstrap`]'s lock throughout, so that a reload running beside a factory reset
//!   neither applies a file twice nor records one whose instances the reset removed.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest as _, Sha256};

use crate::authority::{AccessError, Authority, Principal};
use crate::store::{Change, Placement, Pool, StoreError};
use crate::tree::builtin;
use crate::tree::json::{MoItem, node_from_json};
use crate::tree::mo_type::MoType;
use crate::tree::node::{MAX_NAME_LEN, Node};
use crate::tree::tnds::{self, TndsTree};
use crate::tree::uri::NodeAddr;
use crate::tree::xml;

pub mod client;

pub use client::ServerBootstrap;

/// Largest bootstrap file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// MOIDs of the MOs omadmd keeps itself: no bootstrap file writes them, and a factory reset
/// keeps them.
const PROVIDED: [&str; 3] = [builtin::DEVINFO, builtin::SESSIONINFO, builtin::NETWORK];

/// Called with the journal entries of the factory reset's deletions (the daemon routes them
/// as it routes the [`Authority`]'s own).
pub type ChangeSink = Arc<dyn Fn(&[Change]) + Send + Sync>;

/// Applies bootstrap files; see the module documentation.
pub struct Bootstrap {
    auth: Arc<Authority>,
    store: Arc<Pool>,
    /// `[bootstrap] dirs`; replaced by a reload ([`Bootstrap::set_dirs`]).
    dirs: Mutex<Vec<PathBuf>>,
    changes: ChangeSink,
    /// Held by whatever applies files (module documentation, "One at a time").
    applying: Mutex<()>,
}

/// One problem of a refused file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    pub reason: String,
}

/// Why a bootstrap file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: a bootstrap file is named by its absolute path", .path.display())]
    NotAbsolute { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file", .path.display())]
    NotRegular { path: PathBuf },
    #[error("{}: {size} bytes; a bootstrap file holds at most {MAX_FILE_BYTES}", .path.display())]
    TooLarge { path: PathBuf, size: u64 },
    /// The file's content is refused; nothing of it was applied.
    #[error("{}", problem_lines(.path, .problems))]
    Refused {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// The store failed (not the file's fault).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What applying the dirs did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files applied now, in order.
    pub applied: Vec<PathBuf>,
    /// Files applied before with the same content, left alone.
    pub unchanged: usize,
    /// Files refused (each logged with its problems).
    pub refused: Vec<PathBuf>,
}

/// What a factory reset did.
#[derive(Debug, PartialEq, Eq)]
pub struct Reset {
    /// MO instances removed.
    pub removed: usize,
    /// The bootstrap files applied again.
    pub report: Report,
}

/// A file read into MO serialization items, with the line each starts on.
struct Parsed {
    items: Vec<MoItem>,
    lines: Vec<usize>,
}

impl Bootstrap {
    /// Bootstrap files from `dirs`, written through `auth`, recorded in `store` (the pool
    /// behind `auth`); `changes` hears of the factory reset's deletions.
    pub fn new(
        auth: Arc<Authority>,
        store: Arc<Pool>,
        dirs: Vec<PathBuf>,
        changes: ChangeSink,
    ) -> Bootstrap {
        Bootstrap {
            auth,
            store,
            dirs: Mutex::new(dirs),
            changes,
            applying: Mutex::new(()),
        }
    }

    /// Reads bootstrap files from `dirs` from now on (a reload of `[bootstrap] dirs`); the
    /// next [`Bootstrap::apply_dirs`] applies those that are new or changed.
    pub fn set_dirs(&self, dirs: Vec<PathBuf>) {
        *self.dirs.lock().unwrap_or_else(PoisonError::into_inner) = dirs;
    }

    /// Applies every file of the dirs that is new or changed since it was last applied, and
    /// logs what happened to each. Fails only when the store does.
    pub fn apply_dirs(&self) -> Result<Report, StoreError> {
        let _one = self.one_at_a_time();
        self.apply_dirs_held()
    }

    /// [`Bootstrap::apply_dirs`], the lock held by the caller.
    fn apply_dirs_held(&self) -> Result<Report, StoreError> {
        let mut report = Report::default();
        for path in self.files() {
            match self.apply(&path, false) {
                Ok(Some(written)) => {
                    tracing::info!(
                        "bootstrap file {} applied: {}",
                        path.display(),
                        written
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    report.applied.push(path);
                }
                Ok(None) => {
                    tracing::debug!("bootstrap file {} applied before", path.display());
                    report.unchanged += 1;
                }
                Err(FileError::Store(e)) => return Err(e),
                Err(e) => {
                    log_refusal(&e);
                    report.refused.push(path);
                }
            }
        }
        Ok(report)
    }

    /// Applies the file at `path` (absolute; a regular file, or a link to one) whatever was
    /// applied before, and records it. Returns the ClientURIs written.
    pub fn apply_file(&self, path: &Path) -> Result<Vec<NodeAddr>, FileError> {
        if !path.is_absolute() {
            return Err(FileError::NotAbsolute {
                path: path.to_owned(),
            });
        }
        let _one = self.one_at_a_time();
        Ok(self.apply(path, true)?.unwrap_or_default())
    }

    /// The factory reset (see the module documentation). Returns what it removed and what
    /// it applied again.
    pub fn factory_reset(&self) -> Result<Reset, StoreError> {
        let _one = self.one_at_a_time();
        let admin = Principal::Admin.to_string();
        let (removed, changes) = self
            .store
            .writer()
            .write(|tx| tx.factory_reset(&PROVIDED, &admin))?;
        (self.changes)(&changes);
        tracing::warn!(
            "factory reset: {removed} MO instance(s) removed; applying the bootstrap files again"
        );
        let report = self.apply_dirs_held()?;
        Ok(Reset { removed, report })
    }

    /// The lock whoever applies files holds. A holder that panicked left nothing half
    /// done that the lock guards (each file is its own transaction), so a poisoned lock
    /// is taken over.
    fn one_at_a_time(&self) -> MutexGuard<'_, ()> {
        self.applying.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bootstrap files of the dirs, in order; other entries are logged and left out.
    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let dirs = self
            .dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for dir in &dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!("no bootstrap dir {}", dir.display());
                    continue;
                }
                Err(e) => {
                    tracing::warn!("cannot list bootstrap dir {}: {e}", dir.display());
                    continue;
                }
            };
            let mut names: Vec<_> = entries
                .filter_map(|entry| match entry {
                    Ok(entry) => Some(entry.file_name()),
                    Err(e) => {
                        tracing::warn!("cannot list bootstrap dir {}: {e}", dir.display());
                        None
                    }
                })
                .collect();
            names.sort();
            for name in names {
                let path = dir.join(&name);
                if !is_bootstrap_name(&name) {
                    tracing::debug!("{}: not a bootstrap file (*.json, *.xml)", path.display());
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => out.push(path),
                    Ok(_) => tracing::warn!(
                        "bootstrap file {} skipped: not a regular file",
                        path.display()
                    ),
                    Err(e) => tracing::warn!("bootstrap file {} skipped: {e}", path.display()),
                }
            }
        }
        out
    }

    /// Applies the file at `path` unless (without `force`) its content was applied before;
    /// `None` when it was.
    fn apply(&self, path: &Path, force: bool) -> Result<Option<Vec<NodeAddr>>, FileError> {
        let bytes = read(path)?;
        let digest = crate::tree::value::hex(&Sha256::digest(&bytes));
        let key = path.to_string_lossy();
        if !force && self.store.reader().bootstrap_digest(&key)?.as_deref() == Some(&digest) {
            return Ok(None);
        }
        let parsed = parse(path, &bytes, self.auth.types().types())?;
        let written = self
            .auth
            .import_items(&Principal::Admin, &parsed.items, None, &|_| true)
            .map_err(|e| match e {
                AccessError::Store(e) => FileError::Store(e),
                refused => {
                    let reason = refused.to_string();
                    FileError::Refused {
                        path: path.to_owned(),
                        problems: vec![Problem {
                            line: parsed.line_named_in(&reason),
                            reason,
                        }],
                    }
                }
            })?;
        self.store
            .writer()
            .write(|tx| tx.record_bootstrap(&key, &digest))?;
        Ok(Some(written))
    }
}

impl Parsed {
    /// The line of the item whose ClientURI (the longest, of several) starts `message`, else
    /// of the first item.
    fn line_named_in(&self, message: &str) -> usize {
        self.items
            .iter()
            .zip(&self.lines)
            .filter(|(item, _)| message.starts_with(&item.client_uri))
            .max_by_key(|(item, _)| item.client_uri.len())
            .map(|(_, line)| *line)
            .or_else(|| self.lines.first().copied())
            .unwrap_or(1)
    }
}

/// Reads the file at `path`: a regular file (after following links) of at most
/// [`MAX_FILE_BYTES`]. Anything else is refused before it is opened, so that opening a
/// device or a FIFO never has an effect; the open file is checked again.
fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let regular = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            Err(FileError::NotRegular {
                path: path.to_owned(),
            })
        } else if meta.len() > MAX_FILE_BYTES {
            Err(FileError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
            })
        } else {
            Ok(())
        }
    };
    regular(&std::fs::metadata(path).map_err(failed)?)?;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(failed)?;
    regular(&file.metadata().map_err(failed)?)?;
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Whether a dir entry named `name` is a bootstrap file: `*.json` or `*.xml`, not hidden.
fn is_bootstrap_name(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| !n.starts_with('.') && (n.ends_with(".json") || n.ends_with(".xml")))
}

/// Reads a bootstrap file's content into checked items.
fn parse(path: &Path, bytes: &[u8], types: &[MoType]) -> Result<Parsed, FileError> {
    let refused = |problems| FileError::Refused {
        path: path.to_owned(),
        problems,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        refused(vec![Problem {
            line: line_at(bytes, e.valid_up_to()),
            reason: "not UTF-8 text".into(),
        }])
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body = text.trim_start();
    let (items, lines) = match body.chars().next() {
        Some('[') => json_items(text),
        Some('<') => tnds_items(path, text, types),
        _ => {
            return Err(refused(vec![Problem {
                line: line_at(text.as_bytes(), text.len() - body.len()),
                reason: "neither an MO serialization (a JSON array) nor a TNDS document (XML)"
                    .into(),
            }]));
        }
    }
    .map_err(refused)?;
    let problems: Vec<Problem> = items
        .iter()
        .zip(&lines)
        .filter_map(|(item, line)| {
            check_item(item, types).err().map(|reason| Problem {
                line: *line,
                reason,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(Parsed { items, lines })
    } else {
        Err(refused(problems))
    }
}

/// The items of an MO serialization and the line each starts on.
type Items = Result<(Vec<MoItem>, Vec<usize>), Vec<Problem>>;

fn json_items(text: &str) -> Items {
    match serde_json::from_str::<Vec<MoItem>>(text) {
        Ok(items) => Ok((items, element_lines(text))),
        Err(e) => {
            let message = e.to_string();
            let reason = message
                .rfind(" at line ")
                .map_or(message.as_str(), |at| &message[..at]);
            Err(vec![Problem {
                line: e.line().max(1),
                reason: format!("{reason} (column {})", e.column()),
            }])
        }
    }
}

fn tnds_items(path: &Path, text: &str, types: &[MoType]) -> Items {
    let trees = match tnds::import(text, types) {
        Ok(trees) => trees,
        Err(e) => {
            return Err(e
                .problems
                .into_iter()
                .map(|p| Problem {
                    line: p.line,
                    reason: if p.path.is_empty() {
                        p.reason
                    } else {
                        format!("{}: {}", p.path, p.reason)
                    },
                })
                .collect());
        }
    };
    // The document was read, so it parses; its top-level nodes are the trees, in order.
    let lines: Vec<usize> = xml::parse(text)
        .map(|root| root.children_named("Node").map(|n| n.line).collect())
        .unwrap_or_default();
    let stem = miid_stem(path);
    let mut items = Vec::with_capacity(trees.len());
    let mut problems = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(1);
        let miid = if i == 0 {
            stem.clone()
        } else {
            format!("{stem}-{}", i + 1)
        };
        match tree_item(tree, &miid, types) {
            Ok(item) => items.push(item),
            Err(reason) => problems.push(Problem { line, reason }),
        }
    }
    if problems.is_empty() {
        Ok((items, lines))
    } else {
        Err(problems)
    }
}

/// The MO serialization item of a TNDS top-level node, as the instance `miid`.
fn tree_item(tree: &TndsTree, miid: &str, types: &[MoType]) -> Result<MoItem, String> {
    let name = &tree.name;
    let Some(moid) = &tree.moid else {
        let hint = match types.iter().find(|t| t.root_name() == *name) {
            Some(t) => format!(" ({} for {name})", t.moid),
            None => String::new(),
        };
        return Err(format!(
            "{name}: a top-level node names its MOID in RTProperties/Type/DDFName{hint}"
        ));
    };
    if !matches!(tree.node, Node::Interior(_)) {
        return Err(format!(
            "{name}: a top-level node is an MO instance root, an interior node"
        ));
    }
    if types.iter().all(|t| t.moid != *moid) {
        // Without a DDF the MO serialization tells formats by JSON type only.
        let mut lost = None;
        tree.node.walk(&mut |rel, node| {
            if let Node::Leaf(v) = node
                && lost.is_none()
                && node_from_json(&v.to_json(), None, rel).ok().as_ref() != Some(node)
            {
                lost = Some(format!(
                    "{name}/{rel}: a {} value needs the DDF of {moid} (in [ddf] dirs) to be \
                     bootstrapped",
                    v.format()
                ));
            }
        });
        if let Some(reason) = lost {
            return Err(reason);
        }
    }
    Ok(MoItem::new(format!("{moid}/{miid}/"), name, &tree.node))
}

/// The MIID a TNDS file's first top-level node gets: the file name without its extension,
/// with every character but ASCII letters, digits, `-`, `_` and `.` made `_`.
fn miid_stem(path: &Path) -> String {
    /// Room left in a node name for the `-<n>` of further top-level nodes.
    const MAX: usize = MAX_NAME_LEN - 16;
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .take(MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() || stem == "." || stem == ".." {
        "bootstrap".into()
    } else {
        stem
    }
}

/// The rules every bootstrap item keeps beyond what the import checks (module
/// documentation).
fn check_item(item: &MoItem, types: &[MoType]) -> Result<(), String> {
    let placement = Placement::of(item, types).map_err(|e| e.to_string())?;
    let uri = &item.client_uri;
    if placement.miid.is_none() {
        return Err(format!(
            "{uri}: a bootstrap item names its instance's MIID ({}/<MIID>/...)",
            placement.moid
        ));
    }
    if PROVIDED.contains(&placement.moid.as_str()) {
        return Err(format!(
            "{uri}: {} is omadmd's own MO; bootstrap files cannot write it",
            placement.moid
        ));
    }
    if placement.path.is_empty()
        && let Some(t) = types.iter().find(|t| t.moid == placement.moid)
    {
        let mismatches: Vec<String> = t
            .root
            .check(&placement.node)
            .into_iter()
            .map(|m| {
                if m.path.is_empty() {
                    format!("{}: {}", placement.name, m.reason)
                } else {
                    format!("{}/{}: {}", placement.name, m.path, m.reason)
                }
            })
            .collect();
        if !mismatches.is_empty() {
            return Err(format!("{uri}: {}", mismatches.join("; ")));
        }
    }
    Ok(())
}

/// The 1-based line on which each element of the JSON array `text` starts (`text` is known
/// to parse).
fn element_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth) = (1, 0usize);
    let (mut in_string, mut escaped, mut awaiting) = (false, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if b == b'\n' {
            line += 1;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if awaiting && b != b']' {
            lines.push(line);
        }
        awaiting = false;
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                awaiting = b == b'[' && depth == 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => awaiting = depth == 1,
            _ => {}
        }
    }
    lines
}

/// The 1-based line of byte `offset` of `bytes`.
fn line_at(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// `path:line: reason` for each problem, one per line.
fn problem_lines(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}: {}", path.display(), p.line, p.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Logs why a file of the dirs was not applied: each problem on its own line.
fn log_refusal(e: &FileError) {
    match e {
        FileError::Refused { path, problems } => {
            for p in problems {
                tracing::warn!("{}:{}: {}", path.display(), p.line, p.reason);
            }
            tracing::warn!(
                "bootstrap file {} refused: nothing of it applied",
                path.display()
            );
        }
        other => tracing::warn!("bootstrap file refused: {other}"),
    }
}

#[cfg(test)]
mod tests;
