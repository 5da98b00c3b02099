//! Scenarios: what the server says in each DM session, what it expects back, and what its
//! data repository holds. A scenario is a JSON file (`//` and `/* */` comments allowed):
//!
//! ```json
//! {"name": "weather",                         // shown in the summary
//!  "description": "free text",                // optional
//!  "repository": {                            // preloaded content of /repo/<path>
//!    "settings/weather": [ {"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/station1/",
//!                           "MOData": {"Weather": {"City": "Oulu"}}} ],  // MO serialization
//!    "settings/tnds": {"content_type": "application/vnd.syncml.dmtnds+xml",
//!                      "body": "<MgmtTree/>",       // text, or any JSON value, or
//!                      "ignore_accept": false},     // "body_base64": "..."
//!    "deep": {"nested": {"client_uri": "urn:oma:mo:ext-devserver-weather:1.0/deep/",
//!                        "node": "Weather", "depth": 60}}   // a generated deep MO
//!  },
//!  "uploads": {                               // rules for PUT/POST to /repo/<path>
//!    "sub/weather": {"accept": ["application/vnd.oma.dm.mo+json"], "refuse_first": true}
//!  },
//!  "packages": [                              // one entry per Package#2 of a session
//!    {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"], ["HGET", "{repo}/settings/weather"]],
//!     "expect": [200, 200]},                  // sc per command: a code, [alternatives] or null
//!    {"http_status": 503},                    // answer Package#3 with this status, no body
//!    {"raw": "{\"CMD\": [[\"FROB\"]]}"},      // this body verbatim as Package#2
//!    {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]],
//!     "repeat_commands": 1000},               // the command list 1000 times in one package
//!    {"commands": [["CONT", "{dm}"]], "repeat": "forever"},  // or "repeat": 5
//!    {"commands": [["END"]], "delay_ms": 500, "comment": "free text"}
//!  ]}
//! ```
//!
//! Rules, in the order the server applies them:
//!
//! - `{repo}` in command parameters and raw bodies becomes the repository base URL
//!   (`https://host:port/repo`), `{dm}` the DM URL (`https://host:port/dm`) and `{base}`
//!   `https://host:port`.
//! - Commands are checked with the protocol's own parser when the scenario is loaded, so a
//!   scenario cannot send a malformed command by accident; use `raw` for that on purpose.
//! - Every session runs `packages` from the start. Instead of `packages`, `sessions` may list
//!   one `{"packages": [...]}` per session: the Nth session (counting every device) runs the
//!   Nth entry, and the last entry repeats (e.g. a `503` first, a working session after).
//! - A package that ends the session must be the last one: one containing `END`, an
//!   `http_status` package (the client aborts on any status it cannot read as Package#2), or
//!   a `raw` body that is not a valid Package#2.
//! - If the last package has no `END`, the server appends `END` to it — or, when that
//!   package has `expect` or `repeat`, sends `[["END"]]` as a package of its own after it, so
//!   that the expected statuses still come back in a Package#3. When a `raw` last package is valid and
//!   has no `END`, the server answers its Package#3 with `[["END"]]`.
//! - `expect` needs one entry per command; `null` accepts any status.
//! - `repeat_commands: N` puts the package's command list N times into it (and its
//!   `expect` list N times): a server asking for very many results at once.
//! - `repeat: N` sends the package N times in a row (each Package#3 answered by the next
//!   copy); `repeat: "forever"` sends it on every Package#3 and never ends the session — a
//!   server that keeps a session going (with `CONT`, or with `delay_ms`, a slow one). A
//!   package that ends the session cannot repeat, and a `"forever"` package must be the
//!   last. A repeated last package gets its `END` as a package of its own after it; a
//!   `"forever"` one gets none.
//! - `delay_ms` delays the answer by that long: with a long delay, a server that stalls.
//! - Repository entries given as an array are MO serializations, checked as such and served as
//!   `application/vnd.oma.dm.mo+json`. An object gives `content_type` (default: the MO type for
//!   a JSON body, else `application/octet-stream`) and `body` (a string is sent as its text,
//!   any other JSON value as JSON) or `body_base64`. A GET whose `Accept` does not allow the
//!   entry's type is answered `406` with `OMADM-Accept: <type>` unless `ignore_accept` is true
//!   (then the entry is served anyway, to test the client's `415` status).
//! - An object with only `nested` generates an MO serialization of one item: the node
//!   `node` at `client_uri` holding `depth` levels of interior nodes named `N`, the deepest
//!   `N` a leaf (so the leaf is `depth` segments below `client_uri`). It is written as text,
//!   without recursion, so any depth up to [`MAX_NESTED_DEPTH`] can be served — deeper than
//!   the client's tree may go, or than its JSON parser reads.
//! - `uploads.<path>.accept` lists the content types a PUT/POST there may have (others get
//!   `415` with `OMADM-Accept: <list>`); `refuse_first` answers the first upload `415` with
//!   that list (default: the MO type) whatever its type, once, to test the client's retry. A
//!   retry with a type that is not listed is recorded as a failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::error::DevServerError;
use super::repository::{RepoEntry, UploadRule};
use crate::protocol::{Command, MO_JSON, Package2};
use crate::tree::json::MoItem;

/// The built-in scenario, used when no `--scenario` is given: GET DevInfo, HGET a small
/// settings MO from the repository, END.
pub const DEFAULT_SCENARIO: &str = r#"// omadm-devserver's built-in scenario (used when no --scenario FILE is given).
// The DM account needs permission for urn:oma:mo:ext-devserver-weather:1.0 for the HGET
// to succeed.
{
  "name": "default",
  "description": "Reads DevInfo, installs a small weather-settings MO from the repository, ends.",
  "repository": {
    "settings/weather": [
      {"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/station1/",
       "MOData": {"Weather": {"City": "Helsinki", "Unit": "C", "IntervalSeconds": 3600, "Alerts": true}}}
    ]
  },
  "packages": [
    {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"],
                  ["HGET", "{repo}/settings/weather"]],
     "expect": [200, 200]},
    {"commands": [["END"]]}
  ]
}
"#;

/// A loaded, checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The scenario's name (the file name when the file gives none).
    pub name: String,
    /// Its description, if any.
    pub description: Option<String>,
    pub(crate) repository: Vec<(String, RepoEntry)>,
    pub(crate) uploads: BTreeMap<String, UploadRule>,
    sessions: Vec<Vec<PackageSpec>>,
}

/// The URLs that `{repo}`, `{dm}` and `{base}` stand for.
#[derive(Clone, Debug)]
pub(crate) struct Urls {
    pub base: String,
    pub dm: String,
    pub repo: String,
}

impl Urls {
    pub fn new(base: &str) -> Urls {
        Urls {
            base: base.to_owned(),
            dm: format!("{base}/dm"),
            repo: format!("{base}/repo"),
        }
    }

    fn substitute(&self, s: &str) -> String {
        s.replace("{repo}", &self.repo)
            .replace("{dm}", &self.dm)
            .replace("{base}", &self.base)
    }
}

/// One Package#2 of a compiled session script.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub reply: Reply,
    /// Acceptable `sc` values per command (`None`: any).
    pub expect: Option<Vec<Option<Vec<u16>>>>,
    pub delay: Option<Duration>,
    /// How many times the package is sent in a row.
    pub repeat: Repeat,
    /// Added by the server (the `END` package), not written in the scenario.
    pub appended: bool,
}

/// How many times a package is sent in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeat {
    Times(u64),
    /// On every Package#3: the session never ends.
    Forever,
}

impl Repeat {
    /// Whether the package is done with once it has been sent `sent` times.
    pub fn done_after(self, sent: u64) -> bool {
        match self {
            Repeat::Times(n) => sent >= n,
            Repeat::Forever => false,
        }
    }
}

/// The deepest `nested` repository entry a scenario may ask for.
pub const MAX_NESTED_DEPTH: usize = 100_000;

#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// A Package#2 body.
    Package {
        body: Vec<u8>,
        /// The commands, for messages.
        commands: Vec<CmdText>,
        /// The client stops after it (END, or a body it cannot read).
        ends: bool,
        /// Sent verbatim from `raw`.
        raw: bool,
    },
    /// An HTTP status without a body; ends the session.
    HttpStatus(u16),
}

/// A command as messages show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CmdText {
    /// `GET`, or `FROB (invalid)` for a command the client cannot run.
    pub name: String,
    /// The whole command, `GET urn:...`.
    pub text: String,
}

impl CmdText {
    fn of(c: &Command) -> CmdText {
        CmdText {
            name: c.name().to_owned(),
            text: c.to_wire().join(" "),
        }
    }
}

impl Step {
    pub fn ends(&self) -> bool {
        match &self.reply {
            Reply::Package { ends, .. } => *ends,
            Reply::HttpStatus(_) => true,
        }
    }

    /// The `[["END"]]` package the server sends when a script runs out.
    pub fn end() -> Step {
        Step {
            reply: Reply::Package {
                body: Package2::encode(&[Command::End]),
                commands: vec![CmdText::of(&Command::End)],
                ends: true,
                raw: false,
            },
            expect: None,
            delay: None,
            repeat: Repeat::Times(1),
            appended: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "comment")]
    _comment: Option<Value>,
    #[serde(default)]
    repository: BTreeMap<String, Value>,
    #[serde(default)]
    uploads: BTreeMap<String, UploadSpec>,
    #[serde(default)]
    packages: Option<Vec<PackageSpec>>,
    #[serde(default)]
    sessions: Option<Vec<SessionSpec>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSpec {
    packages: Vec<PackageSpec>,
    #[serde(default, rename = "comment")]
    _comment: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageSpec {
    #[serde(default)]
    commands: Option<Vec<Vec<String>>>,
    #[serde(default)]
    expect: Option<Vec<Option<ExpectSpec>>>,
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    repeat: Option<RepeatSpec>,
    #[serde(default)]
    repeat_commands: Option<usize>,
    #[serde(default, rename = "comment")]
    _comment: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum RepeatSpec {
    Times(u64),
    Word(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum ExpectSpec {
    One(u16),
    AnyOf(Vec<u16>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadSpec {
    #[serde(default)]
    accept: Vec<String>,
    #[serde(default)]
    refuse_first: bool,
    #[serde(default, rename = "comment")]
    _comment: Option<Value>,
}

/// A generated deep MO serialization (`{"nested": {...}}`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NestedEntry {
    nested: NestedSpec,
    #[serde(default, rename = "comment")]
    _comment: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NestedSpec {
    client_uri: String,
    node: String,
    depth: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    ignore_accept: bool,
    #[serde(default, rename = "comment")]
    _comment: Option<Value>,
}

impl Scenario {
    /// The built-in scenario ([`DEFAULT_SCENARIO`]).
    pub fn builtin() -> Scenario {
        Scenario::parse(DEFAULT_SCENARIO, "default").expect("the built-in scenario is valid")
    }

    /// Reads and checks a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, DevServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| DevServerError::io(path, e))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        Scenario::parse(&text, &stem)
            .map_err(|e| DevServerError::Scenario(format!("{}: {e}", path.display())))
    }

    /// Parses and checks scenario text; `default_name` names it when the text gives no name.
    pub fn parse(text: &str, default_name: &str) -> Result<Scenario, String> {
        let file: ScenarioFile =
            serde_json::from_str(&strip_comments(text)).map_err(|e| e.to_string())?;
        let sessions: Vec<Vec<PackageSpec>> = match (file.packages, file.sessions) {
            (Some(p), None) => vec![p],
            (None, Some(s)) if !s.is_empty() => s.into_iter().map(|s| s.packages).collect(),
            (None, Some(_)) => return Err("sessions must list at least one session".into()),
            (Some(_), Some(_)) => return Err("give either packages or sessions, not both".into()),
            (None, None) => return Err("the scenario needs packages (or sessions)".into()),
        };
        let mut repository = Vec::new();
        for (path, value) in &file.repository {
            let key = repo_key(path).map_err(|e| format!("repository {path:?}: {e}"))?;
            let entry = parse_entry(value).map_err(|e| format!("repository {path:?}: {e}"))?;
            repository.push((key, entry));
        }
        let mut uploads = BTreeMap::new();
        for (path, spec) in file.uploads {
            let key = repo_key(&path).map_err(|e| format!("uploads {path:?}: {e}"))?;
            uploads.insert(
                key,
                UploadRule {
                    accept: spec.accept,
                    refuse_first: spec.refuse_first,
                },
            );
        }
        let scenario = Scenario {
            name: file.name.unwrap_or_else(|| default_name.to_owned()),
            description: file.description,
            repository,
            uploads,
            sessions,
        };
        scenario.scripts(&Urls::new("https://localhost:8443"))?;
        Ok(scenario)
    }

    /// How many packages each session script has, as written (one entry unless the
    /// scenario uses `sessions`).
    pub fn packages_per_session(&self) -> Vec<usize> {
        self.sessions.iter().map(Vec::len).collect()
    }

    /// A short description: `2 package(s)` or `3 session scripts (1, 1, 1 packages)`.
    pub fn shape(&self) -> String {
        let counts = self.packages_per_session();
        match counts.as_slice() {
            [one] => format!("{one} package(s)"),
            many => {
                let list: Vec<String> = many.iter().map(usize::to_string).collect();
                format!(
                    "{} session scripts ({} packages)",
                    many.len(),
                    list.join(", ")
                )
            }
        }
    }

    /// The compiled scripts, one per `sessions` entry.
    pub(crate) fn scripts(&self, urls: &Urls) -> Result<Vec<Vec<Step>>, String> {
        self.sessions
            .iter()
            .enumerate()
            .map(|(i, packages)| {
                compile(packages, urls).map_err(|e| {
                    if self.sessions.len() > 1 {
                        format!("session {}: {e}", i + 1)
                    } else {
                        e
                    }
                })
            })
            .collect()
    }
}

fn compile(packages: &[PackageSpec], urls: &Urls) -> Result<Vec<Step>, String> {
    if packages.is_empty() {
        return Err("packages must not be empty".into());
    }
    let mut steps = Vec::new();
    let mut last_commands: Option<Vec<Command>> = None;
    for (i, p) in packages.iter().enumerate() {
        let at = |e: String| format!("package {}: {e}", i + 1);
        let kinds = [
            p.commands.is_some(),
            p.http_status.is_some(),
            p.raw.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(at("give exactly one of commands, http_status, raw".into()));
        }
        if p.repeat_commands.is_some() && p.commands.is_none() {
            return Err(at("repeat_commands needs commands".into()));
        }
        let repeat = match &p.repeat {
            None => Repeat::Times(1),
            Some(RepeatSpec::Times(0)) => return Err(at("repeat must be at least 1".into())),
            Some(RepeatSpec::Times(n)) => Repeat::Times(*n),
            Some(RepeatSpec::Word(w)) if w == "forever" => Repeat::Forever,
            Some(RepeatSpec::Word(w)) => {
                return Err(at(format!("repeat is a count or \"forever\", not {w:?}")));
            }
        };
        let mut expect = p.expect.as_ref().map(|list| {
            list.iter()
                .map(|e| {
                    e.as_ref().map(|e| match e {
                        ExpectSpec::One(c) => vec![*c],
                        ExpectSpec::AnyOf(v) => v.clone(),
                    })
                })
                .collect::<Vec<_>>()
        });
        last_commands = None;
        let reply = if let Some(cmds) = &p.commands {
            let mut parsed = Vec::new();
            for (j, c) in cmds.iter().enumerate() {
                let wire = Value::Array(
                    c.iter()
                        .map(|s| Value::String(urls.substitute(s)))
                        .collect(),
                );
                let cmd = Command::parse(&wire)
                    .map_err(|e| at(format!("command {} {wire}: {}", j + 1, e.reason)))?;
                parsed.push(cmd);
            }
            if parsed.is_empty() {
                return Err(at("commands must not be empty".into()));
            }
            if let Some(times) = p.repeat_commands {
                if times == 0 {
                    return Err(at("repeat_commands must be at least 1".into()));
                }
                if let Some(list) = &mut expect {
                    if list.len() != parsed.len() {
                        return Err(at(format!(
                            "expect lists {} status(es) for {} command(s)",
                            list.len(),
                            parsed.len()
                        )));
                    }
                    *list = repeated(list, times);
                }
                parsed = repeated(&parsed, times);
            }
            let reply = package_of(&parsed);
            last_commands = Some(parsed);
            reply
        } else if let Some(raw) = &p.raw {
            let body = urls.substitute(raw).into_bytes();
            match Package2::parse(&body) {
                Ok(pkg) => {
                    let elements: Vec<Value> = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("CMD").and_then(Value::as_array).cloned())
                        .unwrap_or_default();
                    let commands = pkg
                        .commands
                        .iter()
                        .zip(elements)
                        .map(|(c, v)| match c {
                            Ok(c) => CmdText::of(c),
                            Err(e) => CmdText {
                                name: format!(
                                    "{} (invalid)",
                                    v.get(0).and_then(Value::as_str).unwrap_or("?")
                                ),
                                text: format!("{v} (invalid: {})", e.reason),
                            },
                        })
                        .collect();
                    Reply::Package {
                        commands,
                        ends: pkg.commands.iter().any(|c| matches!(c, Ok(Command::End))),
                        body,
                        raw: true,
                    }
                }
                Err(_) => Reply::Package {
                    body,
                    commands: Vec::new(),
                    ends: true,
                    raw: true,
                },
            }
        } else {
            let status = p.http_status.unwrap_or_default();
            if !(100..=599).contains(&status) {
                return Err(at(format!("http_status {status} is not an HTTP status")));
            }
            if p.expect.is_some() {
                return Err(at(
                    "an http_status package has no commands to expect statuses of".into(),
                ));
            }
            Reply::HttpStatus(status)
        };
        if let (
            Some(expect),
            Reply::Package {
                commands,
                ends,
                raw,
                ..
            },
        ) = (&expect, &reply)
        {
            if *raw && commands.is_empty() && *ends {
                return Err(at("expect given, but the raw body is not a valid Package#2, so the client sends no statuses".into()));
            }
            if expect.len() != commands.len() {
                return Err(at(format!(
                    "expect lists {} status(es) for {} command(s)",
                    expect.len(),
                    commands.len()
                )));
            }
            if commands.iter().any(|c| c.name == "END") {
                return Err(at(
                    "expect given, but the package contains END, so no Package#3 answers it".into(),
                ));
            }
        }
        let step = Step {
            reply,
            expect,
            delay: p.delay_ms.map(Duration::from_millis),
            repeat,
            appended: false,
        };
        if step.ends() && repeat != Repeat::Times(1) {
            return Err(at(
                "this package ends the session, so it cannot repeat".into()
            ));
        }
        if repeat == Repeat::Forever && i + 1 < packages.len() {
            return Err(at(format!(
                "this package repeats forever, but {} more package(s) follow",
                packages.len() - i - 1
            )));
        }
        if step.ends() && i + 1 < packages.len() {
            return Err(at(format!(
                "this package ends the session, but {} more package(s) follow",
                packages.len() - i - 1
            )));
        }
        steps.push(step);
    }
    // END append rule.
    if let Some(mut cmds) = last_commands {
        let last = steps.last_mut().expect("at least one step");
        if !last.ends() && last.repeat != Repeat::Forever {
            if last.expect.is_some() || last.repeat != Repeat::Times(1) {
                steps.push(Step::end());
            } else {
                cmds.push(Command::End);
                last.reply = package_of(&cmds);
            }
        }
    }
    Ok(steps)
}

/// `items` `times` times over.
fn repeated<T: Clone>(items: &[T], times: usize) -> Vec<T> {
    items
        .iter()
        .cycle()
        .take(items.len().saturating_mul(times))
        .cloned()
        .collect()
}

fn package_of(cmds: &[Command]) -> Reply {
    Reply::Package {
        body: Package2::encode(cmds),
        commands: cmds.iter().map(CmdText::of).collect(),
        ends: cmds.iter().any(|c| matches!(c, Command::End)),
        raw: false,
    }
}

/// The repository key of a path: without leading `/` (and without a leading `repo/`).
pub(crate) fn repo_key(path: &str) -> Result<String, String> {
    let p = path.trim_start_matches('/');
    let p = p.strip_prefix("repo/").unwrap_or(p);
    if p.is_empty()
        || p.contains(['?', '#'])
        || p.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("a repository path must be non-empty, without '?', '#' or spaces".into());
    }
    Ok(p.to_owned())
}

fn parse_entry(value: &Value) -> Result<RepoEntry, String> {
    if value.is_array() {
        let items: Vec<MoItem> = serde_json::from_value(value.clone())
            .map_err(|e| format!("not an MO serialization: {e}"))?;
        for item in &items {
            item.single().map_err(|e| e.to_string())?;
        }
        return Ok(RepoEntry {
            content_type: MO_JSON.to_owned(),
            body: serde_json::to_vec(&items).map_err(|e| e.to_string())?,
            ignore_accept: false,
        });
    }
    if value.get("nested").is_some() {
        let entry: NestedEntry =
            serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        return nested_entry(&entry.nested);
    }
    let spec: EntrySpec = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let (body, json) = match (&spec.body, &spec.body_base64) {
        (Some(Value::String(s)), None) => (s.clone().into_bytes(), false),
        (Some(v), None) => (serde_json::to_vec(v).map_err(|e| e.to_string())?, true),
        (None, Some(b)) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("body_base64: {e}"))?;
            (bytes, false)
        }
        (None, None) => {
            return Err("give body or body_base64 (or an MO serialization array)".into());
        }
        (Some(_), Some(_)) => return Err("give body or body_base64, not both".into()),
    };
    let content_type = spec.content_type.unwrap_or_else(|| {
        if json {
            MO_JSON.to_owned()
        } else {
            "application/octet-stream".to_owned()
        }
    });
    Ok(RepoEntry {
        content_type,
        body,
        ignore_accept: spec.ignore_accept,
    })
}

/// The MO serialization of a `nested` entry, written as text (no recursion at any depth).
fn nested_entry(spec: &NestedSpec) -> Result<RepoEntry, String> {
    if spec.depth > MAX_NESTED_DEPTH {
        return Err(format!(
            "nested depth {} is more than {MAX_NESTED_DEPTH}",
            spec.depth
        ));
    }
    let text = |s: &str| serde_json::to_string(s).map_err(|e| e.to_string());
    let mut body = format!(
        "[{{\"ClientURI\":{},\"MOData\":{{{}:",
        text(&spec.client_uri)?,
        text(&spec.node)?
    );
    body.push_str(&"{\"N\":".repeat(spec.depth));
    body.push_str("\"deep\"");
    body.push_str(&"}".repeat(spec.depth));
    body.push_str("}}]");
    Ok(RepoEntry {
        content_type: MO_JSON.to_owned(),
        body: body.into_bytes(),
        ignore_accept: false,
    })
}

/// Replaces `//` and `/* */` comments outside strings with spaces (newlines kept, so that
/// error positions stay right).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                chars.next();
                out.push_str("  ");
                let mut prev = ' ';
                for n in chars.by_ref() {
                    out.push(if n == '\n' { '\n' } else { ' ' });
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::uri::ClientUri;

    fn commands(step: &Step) -> Vec<String> {
        match &step.reply {
            Reply::Package { commands, .. } => commands.iter().map(|c| c.text.clone()).collect(),
            Reply::HttpStatus(s) => vec![format!("HTTP {s}")],
        }
    }

    #[test]
    fn builtin_scenario_gets_devinfo_hgets_settings_and_ends() {
        let s = Scenario::builtin();
        let steps = &s.scripts(&Urls::new("https://h:1")).unwrap()[0];
        assert_eq!(
            commands(&steps[0]),
            [
                "GET urn:oma:mo:oma-dm-devinfo:1.0//",
                "HGET https://h:1/repo/settings/weather"
            ]
        );
        assert_eq!(commands(&steps[1]), ["END"]);
        assert_eq!(steps.len(), 2);
        let (_, entry) = &s.repository[0];
        let items: Vec<MoItem> = serde_json::from_slice(&entry.body).unwrap();
        ClientUri::parse(&items[0].client_uri).unwrap();
    }

    #[test]
    fn end_is_appended_to_the_last_package_or_after_it_when_expected() {
        let s = Scenario::parse(
            r#"{"packages": [{"commands": [["GET", "urn:a:1.0//X"]]}]}"#,
            "x",
        )
        .unwrap();
        let steps = &s.scripts(&Urls::new("https://h")).unwrap()[0];
        assert_eq!(steps.len(), 1);
        assert_eq!(commands(&steps[0]), ["GET urn:a:1.0//X", "END"]);
        let s = Scenario::parse(
            r#"{"packages": [{"commands": [["GET", "urn:a:1.0//X"]], "expect": [null]}]}"#,
            "x",
        )
        .unwrap();
        let steps = &s.scripts(&Urls::new("https://h")).unwrap()[0];
        assert_eq!(steps.len(), 2);
        assert!(steps[1].appended);
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_place() {
        for (text, want) in [
            (r#"{"packages": []}"#, "must not be empty"),
            (
                r#"{"packages": [{"commands": [["GET"]]}]}"#,
                "package 1: command 1",
            ),
            (
                r#"{"packages": [{"commands": [["END"]]}, {"commands": [["END"]]}]}"#,
                "ends the session",
            ),
            (
                r#"{"packages": [{"commands": [["GET", "urn:a:1.0//"]], "expect": [200, 200]}]}"#,
                "1 command",
            ),
            (
                r#"{"packages": [{"http_status": 503, "raw": "x"}]}"#,
                "exactly one",
            ),
            (
                r#"{"packages": [{"raw": "nope", "expect": [200]}]}"#,
                "not a valid Package#2",
            ),
            (
                r#"{"packages": [{"http_status": 99}]}"#,
                "not an HTTP status",
            ),
            (
                r#"{"packages": [{"commands": [["END"]]}], "repository": {"x": [{"ClientURI": "u"}]}}"#,
                "repository \"x\"",
            ),
            (
                r#"{"packages": [{"commands": [["END"]]}], "bogus": 1}"#,
                "unknown field",
            ),
            (r#"{}"#, "needs packages"),
        ] {
            let err = Scenario::parse(text, "x").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn repeats_and_repeated_commands() {
        let s = Scenario::parse(
            r#"{"packages": [
                 {"commands": [["GET", "urn:a:1.0//X"], ["GET", "urn:a:1.0//Y"]],
                  "repeat_commands": 3, "expect": [200, [200, 404]]},
                 {"commands": [["CONT", "{dm}"]], "repeat": 4}]}"#,
            "x",
        )
        .unwrap();
        let steps = &s.scripts(&Urls::new("https://h")).unwrap()[0];
        assert_eq!(
            steps.len(),
            3,
            "the repeated last package gets END after it"
        );
        assert_eq!(commands(&steps[0]).len(), 6);
        assert_eq!(commands(&steps[0])[5], "GET urn:a:1.0//Y");
        let expect = steps[0].expect.as_ref().unwrap();
        assert_eq!(expect.len(), 6);
        assert_eq!(expect[5], Some(vec![200, 404]));
        assert_eq!(steps[1].repeat, Repeat::Times(4));
        assert_eq!(commands(&steps[1]), ["CONT https://h/dm"]);
        assert!(steps[2].appended);

        let s = Scenario::parse(
            r#"{"packages": [{"commands": [["CONT", "{dm}"]], "repeat": "forever"}]}"#,
            "x",
        )
        .unwrap();
        let steps = &s.scripts(&Urls::new("https://h")).unwrap()[0];
        assert_eq!(
            steps.len(),
            1,
            "no END after a package that repeats forever"
        );
        assert_eq!(steps[0].repeat, Repeat::Forever);
        assert!(!steps[0].ends());

        for (text, want) in [
            (
                r#"{"packages": [{"commands": [["GET", "urn:a:1.0//X"]], "repeat": "forever"}, {"commands": [["END"]]}]}"#,
                "repeats forever, but 1 more",
            ),
            (
                r#"{"packages": [{"commands": [["END"]], "repeat": 2}]}"#,
                "cannot repeat",
            ),
            (
                r#"{"packages": [{"http_status": 503, "repeat": "forever"}]}"#,
                "cannot repeat",
            ),
            (
                r#"{"packages": [{"commands": [["END"]], "repeat": 0}]}"#,
                "at least 1",
            ),
            (
                r#"{"packages": [{"commands": [["END"]], "repeat": "often"}]}"#,
                "not \"often\"",
            ),
            (
                r#"{"packages": [{"raw": "{}", "repeat_commands": 2}]}"#,
                "needs commands",
            ),
            (
                r#"{"packages": [{"commands": [["GET", "urn:a:1.0//X"]], "repeat_commands": 2, "expect": [200, 200]}]}"#,
                "2 status(es) for 1 command",
            ),
        ] {
            let err = Scenario::parse(text, "x").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn nested_entries_are_deep_mo_serializations() {
        let s = Scenario::parse(
            r#"{"packages": [{"commands": [["END"]]}],
                "repository": {"deep": {"nested": {"client_uri": "urn:a:1.0/d/", "node": "A", "depth": 3}}}}"#,
            "x",
        )
        .unwrap();
        let (key, entry) = &s.repository[0];
        assert_eq!(key, "deep");
        assert_eq!(entry.content_type, MO_JSON);
        let items: Vec<MoItem> = serde_json::from_slice(&entry.body).unwrap();
        assert_eq!(items[0].client_uri, "urn:a:1.0/d/");
        assert_eq!(
            Value::Object(items[0].mo_data.clone()),
            serde_json::json!({"A": {"N": {"N": {"N": "deep"}}}})
        );

        // Deeper than any JSON parser's default nesting limit: still written.
        let s = Scenario::parse(
            r#"{"packages": [{"commands": [["END"]]}],
                "repository": {"deep": {"nested": {"client_uri": "urn:a:1.0/d/", "node": "A", "depth": 5000}}}}"#,
            "x",
        )
        .unwrap();
        let body = String::from_utf8(s.repository[0].1.body.clone()).unwrap();
        assert_eq!(body.matches("{\"N\":").count(), 5000);

        for (entry, want) in [
            (
                r#"{"nested": {"client_uri": "u", "node": "A", "depth": 100001}}"#,
                "more than",
            ),
            (r#"{"nested": {"client_uri": "u", "node": "A"}}"#, "depth"),
            (
                r#"{"nested": {"client_uri": "u", "node": "A", "depth": 1}, "body": "x"}"#,
                "unknown field",
            ),
        ] {
            let text = format!(
                r#"{{"packages": [{{"commands": [["END"]]}}], "repository": {{"d": {entry}}}}}"#
            );
            let err = Scenario::parse(&text, "x").unwrap_err();
            assert!(err.contains(want), "{entry}: {err}");
        }
    }

    #[test]
    fn comments_are_stripped_outside_strings_only() {
        let text = "{\"a\": \"urn:x:1.0//y\", // comment\n /* block\n */ \"b\": \"/*not*/\"}";
        let v: Value = serde_json::from_str(&strip_comments(text)).unwrap();
        assert_eq!(v, serde_json::json!({"a": "urn:x:1.0//y", "b": "/*not*/"}));
    }
}
