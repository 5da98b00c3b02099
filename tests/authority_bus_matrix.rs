//! The local-app side of the Management Authority matrix (issue 9, "Show it"), over the
//! real system bus: the real `omadmd` with a real `polkitd`, callers running as separate
//! Unix users, and a DM server — a real `omadm-devserver` over TLS — that writes into the
//! tree in a real session. The servers' side (three servers, their priorities, MOIDs) is
//! `authority_matrix`.
//!
//! Callers: app A (a system service running as user `omadmd-t-mx-a`, so `app:<its unit>`;
//! polkit `read`, `watch` and, by a rule, `write`), app B (a service running as
//! `omadmd-t-mx-b`; `read` and `watch` only, the actions' defaults), N (the plain user
//! `omadmd-t-mx-none`, `uid:<n>`, refused every omadmd action by a rule) and root (the
//! administrator: no polkit, outside the priority ordering). Instances: `own` (a weather
//! MO without a DDF, created by A, which grants the server `op` Read and Write on it),
//! `admin's` (created by root), `server's` (`W/srvw/`, created by `op`'s HGET), `account`
//! (`op`'s DM account, created by root; its `Auth/Trsp/Secret` is No-Get) and `absent` (an
//! MIID no instance has).
//!
//! The table is caller × method × target × grant, where grant is what root has granted the
//! caller on the target before the call (none, Read, Write, Read+Write+Delegate) and the
//! methods are Get, GetJson, Holder, ChangesSince, Watch, Set, Delete, Grant, Revoke and
//! ListGrants. The full product is 800 rows, seven times the run time for little more, so
//! the rows are **all-pairs**: every pair of values of any two dimensions is in some row
//! ([`all_pairs`], a greedy generator, after 14 rows that must be there: 54 rows in all).
//! Each row's expected outcome comes from a model of the rules — polkit; a DM account needs
//! `manage` to change; an instance the caller holds no right on is not there; then the
//! right the method needs; then priority (a node a server last wrote is not a local
//! caller's to change) — that follows who last wrote each node, so rows see earlier rows'
//! writes. After each row: a denied write changed nothing (root's GetJson and ListGrants
//! before and after), a `NotFound` on an existing instance is word for word the answer for
//! the absent instance (modulo the ClientURI), a write that succeeded happened, and a read
//! returned what the model holds. Every mismatch is collected, and all are shown at once.
//!
//! Steps around the table: a priority conflict (the owner's Set and Delete over the node
//! `op` wrote are `Conflict` naming `srv:op`, `Holder` says so, root is outside the
//! ordering), delegation then revocation (A grants B Read, B reads, A revokes, B gets the
//! answer for a missing instance; a holder of Delegate passes on only what it holds), the
//! account's secret unreadable by every path (Get, wildcard Get, GetJson, Holder,
//! ChangesSince, Watch, `nv=`) for A, B and root, and a server whose account is gone
//! ranking no more. No reply in the whole test, and nothing in the daemon's log, carries
//! the secret.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::omadmctl_cli::TestServer;
use crate::support::client::{self, Step};
use crate::support::daemon::{Daemon, call_with};
use crate::support::sysbus::{KillOnDrop, SysBus, TestUser, show, test_user, wait_until};
use crate::support::unit::SystemUnit;

/// The apps' MO: no DDF, so any node name goes and the DDF forbids nothing.
const W: &str = "urn:oma:mo:ext-busmatrix-weather:1.0";
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// `op`'s `Auth/Trsp/Secret`, and what root changes it to later.
const SECRET: &str = "s3cret-busmatrix-4711";
const NEW_SECRET: &str = "s3cret-busmatrix-0815";
/// The principal Grant and Revoke rows hand rights to: nobody who calls.
const DUMMY: &str = "app:busmatrix.dummy";
/// The account's `Name`, and what a successful Delete of it is followed by.
const ACCOUNT_NAME: &str = "Operator";
/// Every right, as ListGrants shows an owner's.
const ALL_RIGHTS: &str = "['Read', 'Write', 'Exec', 'Delegate']";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    A,
    B,
    N,
    Root,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Method {
    Get,
    GetJson,
    Holder,
    ChangesSince,
    Watch,
    Set,
    Delete,
    Grant,
    Revoke,
    ListGrants,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    Own,
    Admins,
    Servers,
    Account,
    Absent,
}

/// What root granted the caller on the target before the row's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Grant {
    None,
    Read,
    Write,
    All,
}

const CALLERS: [Caller; 4] = [Caller::A, Caller::B, Caller::N, Caller::Root];
const METHODS: [Method; 10] = [
    Method::Get,
    Method::GetJson,
    Method::Holder,
    Method::ChangesSince,
    Method::Watch,
    Method::Set,
    Method::Delete,
    Method::Grant,
    Method::Revoke,
    Method::ListGrants,
];
const TARGETS: [Target; 5] = [
    Target::Own,
    Target::Admins,
    Target::Servers,
    Target::Account,
    Target::Absent,
];
const GRANTS: [Grant; 4] = [Grant::None, Grant::Read, Grant::Write, Grant::All];

/// Rows that must be in the table whatever the generator picks, in this order (before the
/// generated ones, so the first two meet the nodes `op` wrote).
const SEEDS: [Row; 14] = [
    // Local callers rank below every server: a node op wrote is not A's to change.
    row(Caller::A, Method::Set, Target::Servers, Grant::Write),
    row(Caller::A, Method::Delete, Target::Servers, Grant::All),
    // A visible instance without the right: denied; Write alone does not read.
    row(Caller::A, Method::Set, Target::Admins, Grant::Read),
    row(Caller::A, Method::Get, Target::Admins, Grant::Write),
    row(Caller::A, Method::Set, Target::Admins, Grant::Write),
    row(Caller::A, Method::ListGrants, Target::Admins, Grant::Read),
    row(Caller::A, Method::Grant, Target::Admins, Grant::All),
    // Not granted: not there.
    row(Caller::A, Method::Get, Target::Admins, Grant::None),
    row(Caller::B, Method::Get, Target::Own, Grant::Read),
    // polkit first: B may not write, N may do nothing, accounts take manage.
    row(Caller::B, Method::Set, Target::Own, Grant::All),
    row(Caller::N, Method::Get, Target::Own, Grant::All),
    row(Caller::A, Method::Get, Target::Account, Grant::Read),
    row(Caller::A, Method::Set, Target::Account, Grant::All),
    // The administrator is outside the ordering.
    row(Caller::Root, Method::Set, Target::Servers, Grant::None),
];

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    caller: Caller,
    method: Method,
    target: Target,
    grant: Grant,
}

const fn row(caller: Caller, method: Method, target: Target, grant: Grant) -> Row {
    Row {
        caller,
        method,
        target,
        grant,
    }
}

impl Row {
    /// The leaf the row's call names, if it names one: Delete's own, or the target's.
    fn leaf(self) -> &'static str {
        let (leaf, scratch) = self.target.leaves();
        if self.method == Method::Delete {
            scratch
        } else {
            leaf
        }
    }
}

impl Method {
    /// The D-Bus method name.
    fn name(self) -> &'static str {
        match self {
            Method::Get => "Get",
            Method::GetJson => "GetJson",
            Method::Holder => "Holder",
            Method::ChangesSince => "ChangesSince",
            Method::Watch => "Watch",
            Method::Set => "Set",
            Method::Delete => "Delete",
            Method::Grant => "Grant",
            Method::Revoke => "Revoke",
            Method::ListGrants => "ListGrants",
        }
    }

    /// Its polkit action (short name).
    fn action(self) -> &'static str {
        match self {
            Method::Get | Method::GetJson | Method::Holder | Method::ChangesSince => "read",
            Method::Watch => "watch",
            Method::Set | Method::Delete | Method::Grant | Method::Revoke | Method::ListGrants => {
                "write"
            }
        }
    }

    fn writes(self) -> bool {
        matches!(
            self,
            Method::Set | Method::Delete | Method::Grant | Method::Revoke
        )
    }
}

impl Caller {
    /// Whether polkit (as the rules of this test set it up) allows `action`.
    fn allowed(self, action: &str) -> bool {
        match self {
            Caller::Root => true,
            Caller::A => matches!(action, "read" | "watch" | "write"),
            Caller::B => matches!(action, "read" | "watch"),
            Caller::N => false,
        }
    }
}

impl Target {
    /// The leaf Get, Holder, Watch and Set name, and the one Delete names.
    fn leaves(self) -> (&'static str, &'static str) {
        match self {
            Target::Account => ("Name", "Name"),
            _ => ("City", "Tmp"),
        }
    }

    fn moid(self) -> &'static str {
        match self {
            Target::Account => DMACC,
            _ => W,
        }
    }

    /// The same MO's instance that does not exist, for "not there" answers.
    fn absent_root(self) -> String {
        format!("{}/nosuch/", self.moid())
    }

    /// The value a deleted leaf is put back with.
    fn restored(self) -> &'static str {
        match self {
            Target::Account => ACCOUNT_NAME,
            _ => "t",
        }
    }
}

/// Rights as the model counts them.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    read: bool,
    write: bool,
    delegate: bool,
}

impl Held {
    const ALL: Held = Held {
        read: true,
        write: true,
        delegate: true,
    };

    fn any(self) -> bool {
        self.read || self.write || self.delegate
    }
}

impl Grant {
    fn held(self) -> Held {
        match self {
            Grant::None => Held::default(),
            Grant::Read => Held {
                read: true,
                ..Held::default()
            },
            Grant::Write => Held {
                write: true,
                ..Held::default()
            },
            Grant::All => Held::ALL,
        }
    }

    /// The `as` argument of Grant; `None` for no rights (Revoke).
    fn rights(self) -> Option<&'static str> {
        match self {
            Grant::None => None,
            Grant::Read => Some("['Read']"),
            Grant::Write => Some("['Write']"),
            Grant::All => Some("['Read', 'Write', 'Delegate']"),
        }
    }
}

/// Rows in which every pair of values of any two dimensions (of `sizes` values each)
/// occurs, `seeds` first: greedily, each new row starts from the first pair not covered yet
/// and fills the other dimensions with the value that covers most new pairs (the lowest on
/// a tie), so the result is the same on every run.
fn all_pairs(sizes: &[usize], seeds: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut uncovered = BTreeSet::new();
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            for a in 0..sizes[i] {
                for b in 0..sizes[j] {
                    uncovered.insert((i, a, j, b));
                }
            }
        }
    }
    let cover = |row: &[usize], uncovered: &mut BTreeSet<(usize, usize, usize, usize)>| {
        for i in 0..row.len() {
            for j in i + 1..row.len() {
                uncovered.remove(&(i, row[i], j, row[j]));
            }
        }
    };
    let mut rows = seeds.to_vec();
    for r in &rows {
        cover(r, &mut uncovered);
    }
    while let Some(&(i, a, j, b)) = uncovered.iter().next() {
        let mut fixed: Vec<Option<usize>> = vec![None; sizes.len()];
        fixed[i] = Some(a);
        fixed[j] = Some(b);
        for k in 0..sizes.len() {
            if fixed[k].is_some() {
                continue;
            }
            let gain = |v: usize| {
                fixed
                    .iter()
                    .enumerate()
                    .filter_map(|(m, x)| x.map(|x| (m, x)))
                    .filter(|&(m, x)| {
                        let pair = if m < k { (m, x, k, v) } else { (k, v, m, x) };
                        uncovered.contains(&pair)
                    })
                    .count()
            };
            let best = (0..sizes[k])
                .max_by_key(|&v| (gain(v), std::cmp::Reverse(v)))
                .expect("a dimension has values");
            fixed[k] = Some(best);
        }
        let row: Vec<usize> = fixed.into_iter().map(|v| v.expect("filled")).collect();
        cover(&row, &mut uncovered);
        rows.push(row);
    }
    rows
}

/// The table's rows: [`SEEDS`], then all-pairs over the four dimensions.
fn table() -> Vec<Row> {
    let index = |r: &Row| {
        vec![
            CALLERS.iter().position(|c| *c == r.caller).expect("caller"),
            METHODS.iter().position(|m| *m == r.method).expect("method"),
            TARGETS.iter().position(|t| *t == r.target).expect("target"),
            GRANTS.iter().position(|g| *g == r.grant).expect("grant"),
        ]
    };
    let seeds: Vec<Vec<usize>> = SEEDS.iter().map(index).collect();
    all_pairs(
        &[CALLERS.len(), METHODS.len(), TARGETS.len(), GRANTS.len()],
        &seeds,
    )
    .into_iter()
    .map(|r| row(CALLERS[r[0]], METHODS[r[1]], TARGETS[r[2]], GRANTS[r[3]]))
    .collect()
}

#[test]
fn all_pairs_covers_every_pair_in_fewer_rows_than_the_product() {
    let sizes = [CALLERS.len(), METHODS.len(), TARGETS.len(), GRANTS.len()];
    let rows = all_pairs(&sizes, &[vec![3, 9, 4, 3]]);
    assert_eq!(rows[0], [3, 9, 4, 3], "seeds first");
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            for a in 0..sizes[i] {
                for b in 0..sizes[j] {
                    assert!(
                        rows.iter().any(|r| r[i] == a && r[j] == b),
                        "dimensions {i}, {j}: no row with {a}, {b}"
                    );
                }
            }
        }
    }
    // At least one row per (method, target) pair; far fewer than the 800 of the product.
    assert!(rows.len() >= 50 && rows.len() <= 70, "{}", rows.len());
    assert_eq!(table(), table(), "the same on every run");
    assert_eq!(&table()[..SEEDS.len()], &SEEDS);
}

/// `s` as a GVariant text string, for gdbus.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `Ok`, or the name (after `org.omadm.Client1.Error.`) of the error a call failed with.
fn outcome(out: &Output) -> String {
    if out.status.success() {
        return "Ok".into();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .split_once("org.omadm.Client1.Error.")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .map_or_else(|| format!("other error: {}", stderr.trim()), str::to_owned)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// A scratch directory every test user may write to.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The callers and instances of the test, and calls through the bus as each caller.
struct World<'a> {
    bus: &'a SysBus,
    a: TestUser,
    b: TestUser,
    n: TestUser,
    app_a: SystemUnit,
    app_b: SystemUnit,
    own: String,
    admins: String,
    servers: String,
    account: String,
}

impl World<'_> {
    fn user(&self, who: Caller) -> Option<&TestUser> {
        match who {
            Caller::A => Some(&self.a),
            Caller::B => Some(&self.b),
            Caller::N => Some(&self.n),
            Caller::Root => None,
        }
    }

    /// Whom omadmd takes the caller for.
    fn principal(&self, who: Caller) -> String {
        match who {
            Caller::A => self.app_a.principal(),
            Caller::B => self.app_b.principal(),
            Caller::N => format!("uid:{}", self.n.uid),
            Caller::Root => "admin".into(),
        }
    }

    /// Makes `cmd` start where the caller runs: A and B in their service's unit.
    fn contain(&self, who: Caller, cmd: &mut Command) {
        match who {
            Caller::A => {
                self.app_a.contain(cmd);
            }
            Caller::B => {
                self.app_b.contain(cmd);
            }
            Caller::N | Caller::Root => {}
        }
    }

    /// Calls `method` as `who`. No reply carries a secret, unless the caller sent it itself
    /// (an error message echoes the ClientURI).
    fn call(&self, who: Caller, method: &str, args: &[&str]) -> Output {
        let mut gdbus = self.bus.command(self.user(who), "gdbus");
        self.contain(who, &mut gdbus);
        let out = call_with(gdbus, method, args);
        for secret in [SECRET, NEW_SECRET] {
            let echoed = args.iter().any(|a| a.contains(secret));
            assert!(
                echoed || !show(&out).contains(secret),
                "{method} {args:?} as {who:?} returned a secret: {}",
                show(&out)
            );
        }
        out
    }

    /// The stdout of a call that must succeed.
    fn ok(&self, who: Caller, method: &str, args: &[&str]) -> String {
        let out = self.call(who, method, args);
        assert!(
            out.status.success(),
            "{method} {args:?} as {who:?}: {}",
            show(&out)
        );
        stdout(&out)
    }

    /// The stderr of a call that must fail with `org.omadm.Client1.Error.<name>`.
    #[track_caller]
    fn err(&self, who: Caller, method: &str, args: &[&str], name: &str) -> String {
        let out = self.call(who, method, args);
        assert_eq!(
            outcome(&out),
            name,
            "{method} {args:?} as {who:?}: {}",
            show(&out)
        );
        stderr(&out)
    }

    fn root(&self, target: Target) -> String {
        match target {
            Target::Own => self.own.clone(),
            Target::Admins => self.admins.clone(),
            Target::Servers => self.servers.clone(),
            Target::Account => self.account.clone(),
            Target::Absent => target.absent_root(),
        }
    }

    /// The owner ListGrants names first.
    fn owner(&self, target: Target) -> String {
        match target {
            Target::Own => self.principal(Caller::A),
            Target::Servers => "srv:op".into(),
            Target::Admins | Target::Account | Target::Absent => "admin".into(),
        }
    }

    /// What root sees of the target's MO and the target's grants: unchanged by a denied
    /// write.
    fn snapshot(&self, target: Target) -> String {
        let all = quoted(&format!("{}/*/", target.moid()));
        let mut seen = self.ok(Caller::Root, "GetJson", &[&all]);
        if target != Target::Absent {
            seen += &self.ok(Caller::Root, "ListGrants", &[&quoted(&self.root(target))]);
        }
        seen
    }

    /// Gives `who` exactly `grant` on `target` (root's Grant, or Revoke for none).
    fn set_grant(&self, who: Caller, target: Target, grant: Grant) {
        let (root, principal) = (quoted(&self.root(target)), quoted(&self.principal(who)));
        match grant.rights() {
            Some(rights) => self.ok(Caller::Root, "Grant", &[&root, &principal, rights]),
            None => self.ok(Caller::Root, "Revoke", &[&root, &principal]),
        };
    }
}

/// A call's answer with the instances' ClientURIs taken out: "not there" and "not yours"
/// must read the same.
fn shape(out: &Output, roots: &[String]) -> String {
    let mut text = stderr(out);
    for r in roots {
        text = text.replace(r.as_str(), "<instance>/");
    }
    text
}

/// Who last wrote each node the table names, and the value of each target's Set leaf.
struct Model {
    holders: HashMap<(Target, &'static str), String>,
    values: HashMap<Target, String>,
}

impl Model {
    fn holder(&self, target: Target, leaf: &'static str) -> &str {
        self.holders.get(&(target, leaf)).map_or("", String::as_str)
    }

    /// The rights the row's caller holds on its target.
    fn held(w: &World<'_>, r: Row) -> Held {
        match (r.caller, r.target) {
            (_, Target::Absent) => Held::default(),
            (Caller::Root, _) => Held::ALL,
            (who, t) if w.owner(t) == w.principal(who) => Held::ALL,
            _ => r.grant.held(),
        }
    }

    /// What the rules give the row: `Ok` or an error name.
    fn expected(&self, w: &World<'_>, r: Row) -> &'static str {
        if !r.caller.allowed(r.method.action()) {
            return "AccessDenied";
        }
        // DM accounts are changed by administrators only: polkit manage as well.
        if r.target == Target::Account
            && matches!(r.method, Method::Set | Method::Delete)
            && r.caller != Caller::Root
        {
            return "AccessDenied";
        }
        let held = Model::held(w, r);
        match r.method {
            Method::Get | Method::GetJson | Method::Holder if held.read => "Ok",
            Method::Get | Method::GetJson | Method::Holder => "NotFound",
            Method::ChangesSince | Method::Watch => "Ok",
            Method::Set | Method::Delete => {
                if !held.any() {
                    "NotFound"
                } else if !held.write {
                    "AccessDenied"
                } else if r.caller != Caller::Root
                    && self.holder(r.target, r.leaf()).starts_with("srv:")
                {
                    "Conflict"
                } else {
                    "Ok"
                }
            }
            Method::Grant | Method::Revoke | Method::ListGrants => {
                if !held.any() {
                    "NotFound"
                } else if !held.delegate {
                    "AccessDenied"
                } else {
                    "Ok"
                }
            }
        }
    }
}

/// The arguments of the row's call on the instance at `root`; `n` makes a Set's value.
fn args(r: Row, root: &str, n: usize) -> Vec<String> {
    let node = quoted(&format!("{root}{}", r.leaf()));
    match r.method {
        Method::Get | Method::Holder | Method::Watch | Method::Delete => vec![node],
        Method::GetJson | Method::ListGrants => vec![quoted(root)],
        Method::ChangesSince => vec![quoted(root), "0".into()],
        Method::Set => vec![node, "''".into(), format!("<'v{n}'>")],
        Method::Grant => vec![quoted(root), quoted(DUMMY), "['Read']".into()],
        Method::Revoke => vec![quoted(root), quoted(DUMMY)],
    }
}

/// Runs row `n`; returns what went against the model, if anything.
fn run_row(w: &World<'_>, model: &mut Model, n: usize, r: Row) -> Vec<String> {
    let mut wrong = Vec::new();
    let root = w.root(r.target);
    if r.target != Target::Absent
        && r.caller != Caller::Root
        && w.owner(r.target) != w.principal(r.caller)
    {
        w.set_grant(r.caller, r.target, r.grant);
    }
    let expected = model.expected(w, r);
    let before = r.method.writes().then(|| w.snapshot(r.target));
    let args = args(r, &root, n);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.call(r.caller, r.method.name(), &argv);
    let got = outcome(&out);
    println!(
        "row {n:2}: {:<4} {:<12} {:<8} grant={:<5} -> {got}",
        format!("{:?}", r.caller),
        r.method.name(),
        format!("{:?}", r.target),
        format!("{:?}", r.grant)
    );
    let mut fail = |what: String| wrong.push(format!("row {n} {r:?}: {what}"));
    if got != expected {
        fail(format!("expected {expected}, got {}", show(&out)));
    }
    let (set_leaf, del_leaf) = r.target.leaves();
    if got == "Conflict" {
        let holder = model.holder(r.target, r.leaf());
        if !stderr(&out).contains(holder) {
            fail(format!(
                "the conflict does not name {holder}: {}",
                stderr(&out)
            ));
        }
    }
    if got == "Ok" {
        let reply = stdout(&out);
        let value = model.values.get(&r.target).cloned().unwrap_or_default();
        let root_get =
            |leaf: &str| w.call(Caller::Root, "Get", &[&quoted(&format!("{root}{leaf}"))]);
        match r.method {
            Method::Get | Method::GetJson if !reply.contains(&value) => {
                fail(format!("the reply lacks {value:?}: {reply}"));
            }
            Method::Holder => {
                let holder = model.holder(r.target, set_leaf);
                if reply != format!("('{holder}',)") {
                    fail(format!("Holder should be {holder}: {reply}"));
                }
            }
            Method::ChangesSince => {
                let listed = reply.contains(&root);
                if listed != Model::held(w, r).read {
                    fail(format!("changes listed: {listed}: {reply}"));
                }
            }
            Method::ListGrants
                if !reply.starts_with(&format!("([('{}', {ALL_RIGHTS})", w.owner(r.target))) =>
            {
                fail(format!("the owner is not first: {reply}"));
            }
            Method::Set => {
                let now = stdout(&root_get(set_leaf));
                if !now.contains(&format!("'v{n}'")) {
                    fail(format!("the value did not change: {now}"));
                }
                model
                    .holders
                    .insert((r.target, set_leaf), w.principal(r.caller));
                model.values.insert(r.target, format!("v{n}"));
            }
            Method::Delete => {
                let now = outcome(&root_get(del_leaf));
                if now != "NotFound" {
                    fail(format!("the node is still there: {now}"));
                }
                let restored = format!("<'{}'>", r.target.restored());
                w.ok(
                    Caller::Root,
                    "Set",
                    &[&quoted(&format!("{root}{del_leaf}")), "''", &restored],
                );
                model.holders.insert((r.target, del_leaf), "admin".into());
                if del_leaf == set_leaf {
                    model.holders.insert((r.target, set_leaf), "admin".into());
                    model
                        .values
                        .insert(r.target, r.target.restored().to_owned());
                }
            }
            Method::Grant | Method::Revoke => {
                let grants = w.ok(Caller::Root, "ListGrants", &[&quoted(&root)]);
                if grants.contains(DUMMY) != (r.method == Method::Grant) {
                    fail(format!("grants after {}: {grants}", r.method.name()));
                }
            }
            _ => {}
        }
    } else {
        if got == "NotFound" && r.target != Target::Absent {
            let absent = r.target.absent_root();
            let args = self::args(r, &absent, n);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let missing = w.call(r.caller, r.method.name(), &argv);
            let roots = [root.clone(), absent];
            if shape(&out, &roots) != shape(&missing, &roots) {
                fail(format!(
                    "not yours and not there differ:\n  {}\n  {}",
                    stderr(&out),
                    stderr(&missing)
                ));
            }
        }
        if let Some(before) = before {
            let after = w.snapshot(r.target);
            if after != before {
                fail(format!(
                    "a refused write changed something:\n  before {before}\n  after  {after}"
                ));
            }
        }
    }
    wrong
}

/// `op`'s scenario: over TLS, one session that writes `own`'s Unit (A granted it Write),
/// creates `W/srvw/`, and reads what it may and may not.
fn scenario(own: &str, admins: &str) -> String {
    let servers = format!("{W}/srvw/");
    json!({
        "name": "busmatrix",
        "repository": {
            "unit": [{"ClientURI": format!("{own}Unit"), "MOData": {"Unit": "K"}}],
            "srvw": [{"ClientURI": servers,
                      "MOData": {"Weather": {"City": "Turku", "Tmp": "t", "Station": "S1"}}}]
        },
        "packages": [{
            "commands": [
                ["HGET", "{repo}/unit", format!("{own}Unit")],
                ["HGET", "{repo}/srvw"],
                ["GET", format!("{own}City")],
                // Not granted and not there: the same 404.
                ["GET", format!("{admins}City")],
                ["GET", format!("{W}/nosuch/City")]
            ],
            "expect": [200, 200, 200, 404, 404]
        }]
    })
    .to_string()
}

/// Runs a client (this test binary, `support::client`) as `who` that watches `uri`, and
/// waits until its watch is made; it then waits for a `Changed` about `until`.
fn watcher(w: &World<'_>, who: Caller, uri: &str, until: &str, dir: &Path) -> KillOnDrop {
    let name = format!("{who:?}");
    let ready = dir.join(format!("{name}.ready"));
    let steps = [
        Step::Watch(uri.to_owned()),
        Step::Touch(ready.clone()),
        Step::Changes {
            uri: until.to_owned(),
            count: 1,
        },
    ];
    let mut cmd = client::command(w.bus, w.user(who), &steps, &dir.join(format!("{name}.out")));
    w.contain(who, &mut cmd);
    let child = KillOnDrop::spawn(&mut cmd);
    assert!(
        wait_until(Duration::from_secs(60), || ready.exists()),
        "the {name} watcher did not get going"
    );
    child
}

#[test]
fn local_apps_on_the_system_bus_get_what_the_rules_give_them() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let (a, b, n) = (
        test_user("omadmd-t-mx-a"),
        test_user("omadmd-t-mx-b"),
        test_user("omadmd-t-mx-none"),
    );
    let (app_a, app_b) = (
        SystemUnit::new("omadmd-t-mx-a"),
        SystemUnit::new("omadmd-t-mx-b"),
    );
    let _main_a = app_a.start_main(&bus, Some(&a));
    let _main_b = app_b.start_main(&bus, Some(&b));
    bus.allow("60-busmatrix", &[&a], &["write"]);
    bus.add_polkit_rules(
        "59-busmatrix-none",
        &format!(
            r#"polkit.addRule(function(action, subject) {{
                if (action.id.indexOf("org.omadm.client1.") == 0 && subject.user == "{}")
                    return polkit.Result.NO;
            }});"#,
            n.name
        ),
    );
    let mut w = World {
        bus: &bus,
        a,
        b,
        n,
        app_a,
        app_b,
        own: String::new(),
        admins: String::new(),
        servers: format!("{W}/srvw/"),
        account: String::new(),
    };
    let created = |out: String| out.trim_matches(|c| "(',)".contains(c)).to_owned();

    // Creation: A may, B and N may not; a DM account takes manage.
    let weather = |city: &str| quoted(&json!({"Weather": {"City": city, "Tmp": "t"}}).to_string());
    w.own = created(w.ok(Caller::A, "CreateInstance", &[&quoted(W), &weather("Oulu")]));
    w.admins = created(w.ok(
        Caller::Root,
        "CreateInstance",
        &[&quoted(W), &weather("Espoo")],
    ));
    for who in [Caller::B, Caller::N] {
        let e = w.err(
            who,
            "CreateInstance",
            &[&quoted(W), &weather("X")],
            "AccessDenied",
        );
        assert!(e.contains("org.omadm.client1.write"), "{e}");
    }
    let e = w.err(
        Caller::A,
        "CreateInstance",
        &[&quoted(DMACC), &quoted(r#"{"DMAcc": {"SrvID": "evil"}}"#)],
        "AccessDenied",
    );
    assert!(e.contains("manage"), "{e}");
    assert_eq!(
        w.ok(Caller::Root, "Holder", &[&quoted(&w.own)]),
        format!("('{}',)", w.principal(Caller::A)),
        "the creator owns"
    );
    // A lets the server op write its instance (DM-HLF-013, to a server).
    w.ok(
        Caller::A,
        "Grant",
        &[&quoted(&w.own), "'srv:op'", "['Read', 'Write']"],
    );

    // op, a real devserver over TLS, with priority 10, may manage the weather MO.
    let srv = TestServer::start(Some(&scenario(&w.own, &w.admins)));
    let account = json!({"DMAcc": {
        "SrvID": "op", "SrvURI": srv.server.url(), "Name": ACCOUNT_NAME,
        "Perm": {"p0": {"MOID": W}},
        "Auth": {"Trsp": {"Data": "op", "Secret": SECRET}},
        "Ext": {"CACert": srv.server.ca_pem(), "Priority": 10}}});
    w.account = created(w.ok(
        Caller::Root,
        "CreateInstance",
        &[&quoted(DMACC), &quoted(&account.to_string())],
    ));
    w.ok(Caller::Root, "StartSession", &["'op'", "''"]);
    srv.wait_for_sessions(1);
    let results = srv.server.results();
    assert!(
        results.len() == 1 && results[0].passed(),
        "{results:?}\n{:#?}",
        srv.server.summary()
    );

    priority_over_an_apps_node(&w);
    delegation_then_revocation(&w);
    secrets_by_every_path(&w);
    let (rows, wrong) = the_table(&w);
    a_server_without_an_account_ranks_no_more(&w);

    let log = daemon.log();
    for secret in [SECRET, NEW_SECRET] {
        assert!(!log.contains(secret), "the daemon logged a secret");
    }
    assert!(
        wrong.is_empty(),
        "{} of {rows} rows went against the rules:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A grants B Read on its instance: B reads it. A revokes: B gets what it gets for an
/// instance that does not exist, and hears of no more changes to it.
fn delegation_then_revocation(w: &World<'_>) {
    let (own, b) = (quoted(&w.own), quoted(&w.principal(Caller::B)));
    let city = format!("{}City", w.own);
    let absent = Target::Own.absent_root();
    let at = |root: &str| {
        [
            ("Get", vec![quoted(&format!("{root}City"))]),
            ("GetJson", vec![quoted(root)]),
            ("Holder", vec![quoted(&format!("{root}City"))]),
        ]
    };
    w.ok(Caller::A, "Revoke", &[&own, &b]);
    w.ok(Caller::A, "Grant", &[&own, &b, "['Read']"]);
    assert!(w.ok(Caller::B, "Get", &[&quoted(&city)]).contains("'Oulu'"));
    assert!(w.ok(Caller::B, "GetJson", &[&own]).contains("Oulu"));
    let changes = w.ok(Caller::B, "ChangesSince", &[&own, "0"]);
    assert!(changes.contains(&city), "{changes}");
    let grants = w.ok(Caller::A, "ListGrants", &[&own]);
    assert!(
        grants.contains(&format!("({b}, ['Read'])"))
            && grants.contains("('srv:op', ['Read', 'Write'])"),
        "{grants}"
    );
    // Reading is all B got: granting and listing grants take polkit write, and Delegate.
    w.err(Caller::B, "ListGrants", &[&own], "AccessDenied");
    w.err(
        Caller::B,
        "Set",
        &[&quoted(&city), "''", "<'x'>"],
        "AccessDenied",
    );

    w.ok(Caller::A, "Revoke", &[&own, &b]);
    assert!(!w.ok(Caller::A, "ListGrants", &[&own]).contains(&b));
    let roots = [w.own.clone(), absent.clone()];
    for ((method, hidden), (_, missing)) in at(&w.own).into_iter().zip(at(&absent)) {
        let hidden: Vec<&str> = hidden.iter().map(String::as_str).collect();
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        let (h, m) = (
            w.call(Caller::B, method, &hidden),
            w.call(Caller::B, method, &missing),
        );
        assert_eq!(outcome(&h), "NotFound", "{method}: {}", show(&h));
        assert_eq!(shape(&h, &roots), shape(&m, &roots), "{method}");
    }
    let changes = w.ok(Caller::B, "ChangesSince", &[&own, "0"]);
    assert!(!changes.contains(&w.own), "{changes}");

    // A holder of Delegate (A on root's instance, with Read) passes on only what it holds,
    // not to everyone at once and not to itself; what it refuses leaves the grants alone.
    let admins = quoted(&w.admins);
    let a = quoted(&w.principal(Caller::A));
    w.ok(
        Caller::Root,
        "Grant",
        &[&admins, &a, "['Read', 'Delegate']"],
    );
    let grants = w.ok(Caller::Root, "ListGrants", &[&admins]);
    for (to, rights) in [
        (b.as_str(), "['Write']"),
        ("'app:*'", "['Read']"),
        (a.as_str(), "['Read', 'Write', 'Delegate']"),
    ] {
        w.err(Caller::A, "Grant", &[&admins, to, rights], "AccessDenied");
    }
    assert_eq!(w.ok(Caller::Root, "ListGrants", &[&admins]), grants);
    let city = quoted(&format!("{}City", w.admins));
    w.ok(Caller::A, "Grant", &[&admins, &b, "['Read']"]);
    assert!(w.ok(Caller::B, "Get", &[&city]).contains("'Espoo'"));
    w.ok(Caller::A, "Revoke", &[&admins, &b]);
    w.err(Caller::B, "Get", &[&city], "NotFound");
    w.ok(Caller::Root, "Revoke", &[&admins, &a]);
}

/// The account's `Auth/Trsp/Secret` (No-Get) by every path, as A and B (granted Read on
/// the account) and root: it is not there, answered as a secret that is not set is; `nv=`
/// cannot test it; watchers do not hear of it changing.
fn secrets_by_every_path(w: &World<'_>) {
    let acc = &w.account;
    for who in [Caller::A, Caller::B] {
        w.set_grant(who, Target::Account, Grant::Read);
    }
    let secret = format!("{acc}Auth/Trsp/Secret");
    // A secret the account does not have (no Auth/Noti).
    let unset = format!("{acc}Auth/Noti/Secret");
    let all = |path: &str| quoted(&format!("{DMACC}/*/{path}"));
    // Changed since the account came: the secret and the name next to it.
    let new_secret = format!("<'{NEW_SECRET}'>");
    w.ok(Caller::Root, "Set", &[&quoted(&secret), "''", &new_secret]);
    let data = quoted(&format!("{acc}Auth/Trsp/Data"));
    w.ok(Caller::Root, "Set", &[&data, "''", "<'op-2'>"]);
    for who in [Caller::A, Caller::B, Caller::Root] {
        for method in ["Get", "Holder", "GetJson"] {
            let (set, not) = (
                w.call(who, method, &[&quoted(&secret)]),
                w.call(who, method, &[&quoted(&unset)]),
            );
            assert_eq!(
                outcome(&set),
                "NotFound",
                "{method} as {who:?}: {}",
                show(&set)
            );
            assert_eq!(
                stderr(&set).replace("Trsp", "<x>"),
                stderr(&not).replace("Noti", "<x>"),
                "{method} as {who:?}"
            );
        }
        w.err(who, "Get", &[&all("Auth/*/Secret")], "NotFound");
        let nodes = w.ok(who, "Get", &[&all("Auth/*/*")]);
        assert!(
            nodes.contains("Auth/Trsp/Data") && !nodes.contains("Secret"),
            "{who:?}: {nodes}"
        );
        let trsp = quoted(&format!("{acc}Auth/Trsp"));
        for uri in [quoted(acc), all(""), all("Auth/*"), trsp] {
            let json = w.ok(who, "GetJson", &[&uri]);
            assert!(
                json.contains("\"Data\"") && !json.contains("Secret"),
                "{who:?}: {json}"
            );
        }
        let changes = w.ok(who, "ChangesSince", &[&quoted(acc), "0"]);
        assert!(
            changes.contains("Auth/Trsp/Data") && !changes.contains("Secret"),
            "{who:?}: {changes}"
        );
        // Asked for the secret alone: the account's coming (its ancestor), not its change.
        let changes = w.ok(who, "ChangesSince", &[&all("Auth/Trsp/Secret"), "0"]);
        assert!(
            changes.contains(&format!("[('{acc}', 'added', ")) && !changes.contains("Secret"),
            "{who:?}: {changes}"
        );
        // A right guess and a wrong one get the same refusal, wherever the x-name stands.
        for form in [
            format!("{DMACC}/(x)/SrvID?nv=(x)/Auth/Trsp/Secret:"),
            format!("{DMACC}/*/Auth/(y)/Data?nv=(y)/Secret:"),
        ] {
            let guess = |g: &str| {
                let uri = format!("{form}{g}");
                w.err(who, "Get", &[&quoted(&uri)], "InvalidUri")
                    .replace(g, "<guess>")
            };
            let refusal = guess(NEW_SECRET);
            assert!(refusal.contains("No-Get"), "{refusal}");
            assert_eq!(refusal, guess("wrong"), "{who:?} {form}");
        }
    }

    // Watchers of the whole account hear of the Name changing, never of the secret.
    let dir = shared_dir();
    let name = format!("{acc}Name");
    let watchers: Vec<(Caller, KillOnDrop)> = [Caller::A, Caller::B, Caller::Root]
        .into_iter()
        .map(|who| (who, watcher(w, who, acc, &name, dir.path())))
        .collect();
    let old_secret = format!("<'{SECRET}'>");
    w.ok(Caller::Root, "Set", &[&quoted(&secret), "''", &old_secret]);
    w.ok(Caller::Root, "Set", &[&quoted(&name), "''", "<'Renamed'>"]);
    for (who, _client) in &watchers {
        let lines = client::outcomes(&dir.path().join(format!("{who:?}.out")));
        let id = lines[0]
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert!(
            lines.contains(&format!("changed {id} {name} replaced")),
            "{who:?}: {lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("Secret")),
            "{who:?}: {lines:?}"
        );
    }
    w.ok(
        Caller::Root,
        "Set",
        &[&quoted(&name), "''", &format!("<'{ACCOUNT_NAME}'>")],
    );
}

/// Priority: op (a server) last wrote own/Unit; its owner, A, ranks below every server, so
/// its Set and Delete there, or of its whole instance, are conflicts naming op, as `Holder`
/// tells. The administrator is outside the ordering.
fn priority_over_an_apps_node(w: &World<'_>) {
    let unit = quoted(&format!("{}Unit", w.own));
    for who in [Caller::Root, Caller::A] {
        assert_eq!(w.ok(who, "Holder", &[&unit]), "('srv:op',)");
    }
    let e = w.err(Caller::A, "Set", &[&unit, "''", "<'C'>"], "Conflict");
    assert!(e.contains("srv:op"), "{e}");
    let e = w.err(Caller::A, "Delete", &[&unit], "Conflict");
    assert!(e.contains("srv:op"), "{e}");
    // Deleting the instance would take op's node along.
    let e = w.err(Caller::A, "Delete", &[&quoted(&w.own)], "Conflict");
    assert!(e.contains("srv:op"), "{e}");
    assert!(w.ok(Caller::A, "Get", &[&unit]).contains("'K'"));
    // What A wrote itself stays A's.
    w.ok(
        Caller::A,
        "Set",
        &[&quoted(&format!("{}City", w.own)), "''", "<'Oulu'>"],
    );
    // An instance root's holder is its owner; A reads op's instance only once granted.
    w.err(Caller::A, "Holder", &[&quoted(&w.servers)], "NotFound");
    w.set_grant(Caller::A, Target::Servers, Grant::Write);
    w.err(Caller::A, "Holder", &[&quoted(&w.servers)], "NotFound");
    let e = w.err(
        Caller::A,
        "Set",
        &[&quoted(&format!("{}City", w.servers)), "''", "<'Oulu'>"],
        "Conflict",
    );
    assert!(e.contains("srv:op"), "{e}");
    w.set_grant(Caller::A, Target::Servers, Grant::Read);
    assert_eq!(
        w.ok(Caller::A, "Holder", &[&quoted(&w.servers)]),
        "('srv:op',)"
    );
    // The administrator is outside the ordering; after it, the node is A's to change.
    w.ok(Caller::Root, "Set", &[&unit, "''", "<'C'>"]);
    assert_eq!(w.ok(Caller::A, "Holder", &[&unit]), "('admin',)");
    w.ok(Caller::A, "Set", &[&unit, "''", "<'F'>"]);
    assert_eq!(
        w.ok(Caller::A, "Holder", &[&unit]),
        format!("('{}',)", w.principal(Caller::A))
    );
}

/// The table ([`table`], [`run_row`]): how many rows, and what went against the model.
fn the_table(w: &World<'_>) -> (usize, Vec<String>) {
    let mut model = Model {
        holders: HashMap::from([
            ((Target::Own, "City"), w.principal(Caller::A)),
            ((Target::Own, "Tmp"), w.principal(Caller::A)),
            ((Target::Admins, "City"), "admin".to_owned()),
            ((Target::Admins, "Tmp"), "admin".to_owned()),
            ((Target::Servers, "City"), "srv:op".to_owned()),
            ((Target::Servers, "Tmp"), "srv:op".to_owned()),
            ((Target::Account, "Name"), "admin".to_owned()),
        ]),
        values: HashMap::from([
            (Target::Own, "Oulu".to_owned()),
            (Target::Admins, "Espoo".to_owned()),
            (Target::Servers, "Turku".to_owned()),
            (Target::Account, ACCOUNT_NAME.to_owned()),
        ]),
    };
    let rows = table();
    let mut wrong = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        wrong.extend(run_row(w, &mut model, i + 1, *r));
    }
    (rows.len(), wrong)
}

/// Once op's account is gone, op ranks no more: its nodes are no one's to defend.
fn a_server_without_an_account_ranks_no_more(w: &World<'_>) {
    let station = quoted(&format!("{}Station", w.servers));
    w.set_grant(Caller::A, Target::Servers, Grant::All);
    let e = w.err(Caller::A, "Set", &[&station, "''", "<'S2'>"], "Conflict");
    assert!(e.contains("srv:op"), "{e}");
    w.ok(Caller::Root, "Delete", &[&quoted(&w.account)]);
    assert_eq!(w.ok(Caller::A, "Holder", &[&station]), "('srv:op',)");
    w.ok(Caller::A, "Set", &[&station, "''", "<'S2'>"]);
}
