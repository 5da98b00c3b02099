//! Unit tests of factory bootstrap: real files in a temporary dir, a real store.

use std::sync::Mutex;

use super::*;
use crate::authority::Rights;
use crate::tree::registry::Registry;
use crate::tree::value::Value;

const DMACC: &str = builtin::DMACC;
const SETTINGS: &str = "urn:oma:mo:ext-omadmd-test-settings:1.0";

struct Fixture {
    auth: Arc<Authority>,
    store: Arc<Pool>,
    boot: Bootstrap,
    /// The two bootstrap dirs, in order.
    dirs: [PathBuf; 2],
    /// What the factory reset reported through its sink.
    reset_changes: Arc<Mutex<Vec<Change>>>,
    _tmp: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Pool::open(
            &tmp.path().join("store.db"),
            crate::store::Bounds::default(),
            1,
        )
        .unwrap(),
    );
    let auth = Arc::new(Authority::new(
        store.clone(),
        Registry::with_builtin(),
        Box::new(|_| {}),
    ));
    let dirs = [tmp.path().join("usr"), tmp.path().join("etc")];
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let reset_changes = Arc::new(Mutex::new(Vec::new()));
    let sink = reset_changes.clone();
    let boot = Bootstrap::new(
        auth.clone(),
        store.clone(),
        dirs.to_vec(),
        Arc::new(move |c: &[Change]| sink.lock().unwrap().extend_from_slice(c)),
    );
    Fixture {
        auth,
        store,
        boot,
        dirs,
        reset_changes,
        _tmp: tmp,
    }
}

/// One JSON item: the DM account `miid` for server `srv`.
fn account(miid: &str, srv: &str, url: &str) -> String {
    format!(
        r#"{{"ClientURI": "{DMACC}/{miid}/",
  "MOData": {{"DMAcc": {{"SrvID": "{srv}", "SrvURI": "{url}", "Perm": {{"p": {{"MOID": "{SETTINGS}"}}}}}}}}}}"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn leaf(f: &Fixture, uri: &str) -> Option<Value> {
    let addr = crate::tree::uri::ClientUri::parse(uri).unwrap();
    let path = addr.names_path().unwrap();
    let crate::tree::uri::InstanceSel::Miid(miid) = &addr.instance else {
        panic!("{uri}")
    };
    let at = NodeAddr::root(addr.moid.as_str(), miid).child(&path);
    f.store.reader().leaf(&at).unwrap().map(|(v, _)| v)
}

fn instances(f: &Fixture, moid: &str) -> Vec<String> {
    f.auth.instances_of(moid).unwrap()
}

fn refused_problems(e: FileError) -> Vec<(usize, String)> {
    match e {
        FileError::Refused { problems, .. } => {
            problems.into_iter().map(|p| (p.line, p.reason)).collect()
        }
        other => panic!("not refused for its content: {other}"),
    }
}

const TNDS_ACCOUNT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MgmtTree xmlns="syncml:dmddf1.2">
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>DMAcc</NodeName>
    <RTProperties><Type><DDFName>urn:oma:mo:oma-dm-dmacc:1.2</DDFName></Type></RTProperties>
    <Node><NodeName>SrvID</NodeName><Value>tnds</Value></Node>
    <Node><NodeName>SrvURI</NodeName><Value>https://tnds.example/dm</Value></Node>
    <Node><NodeName>Perm</NodeName></Node>
    <Node><NodeName>Ext</NodeName><Node><NodeName>Priority</NodeName><Value>7</Value></Node></Node>
  </Node>
  <Node>
    <NodeName>DMAcc</NodeName>
    <RTProperties><Type><DDFName>urn:oma:mo:oma-dm-dmacc:1.2</DDFName></Type></RTProperties>
    <Node><NodeName>SrvID</NodeName><Value>tnds2</Value></Node>
    <Node><NodeName>SrvURI</NodeName><Value>https://tnds2.example/dm</Value></Node>
    <Node><NodeName>Perm</NodeName></Node>
  </Node>
</MgmtTree>
"#;

#[test]
fn a_json_file_is_applied_once_as_the_admin() {
    let f = fixture();
    let path = write(
        &f.dirs[0],
        "10-acme.json",
        &format!(
            "[\n{}\n]\n",
            account("acme", "acme", "https://acme.example/dm")
        ),
    );
    let report = f.boot.apply_dirs().unwrap();
    assert_eq!(report.applied, std::slice::from_ref(&path));
    assert_eq!(
        leaf(&f, &format!("{DMACC}/acme/SrvID")),
        Some(Value::Chr("acme".into()))
    );
    let info = f.store.reader().instance(DMACC, "acme").unwrap().unwrap();
    assert_eq!(info.owner, "admin");
    let seq = f.store.reader().last_seq().unwrap();
    let again = f.boot.apply_dirs().unwrap();
    assert_eq!(
        again,
        Report {
            applied: vec![],
            unchanged: 1,
            refused: vec![],
        }
    );
    assert_eq!(f.store.reader().last_seq().unwrap(), seq, "nothing written");
}

#[test]
fn a_changed_file_is_applied_again_over_what_it_wrote() {
    let f = fixture();
    let name = "10-acme.json";
    write(
        &f.dirs[1],
        name,
        &format!("[{}]", account("acme", "acme", "https://old.example/dm")),
    );
    f.boot.apply_dirs().unwrap();
    let path = write(
        &f.dirs[1],
        name,
        &format!("[{}]", account("acme", "acme", "https://new.example/dm")),
    );
    assert_eq!(f.boot.apply_dirs().unwrap().applied, [path]);
    assert_eq!(
        leaf(&f, &format!("{DMACC}/acme/SrvURI")),
        Some(Value::Chr("https://new.example/dm".into()))
    );
    assert_eq!(instances(&f, DMACC), ["acme"]);
}

#[test]
fn a_tnds_file_gives_instances_named_after_the_file() {
    let f = fixture();
    let path = write(&f.dirs[0], "20-tnds.xml", TNDS_ACCOUNT);
    assert_eq!(f.boot.apply_dirs().unwrap().applied, [path]);
    assert_eq!(instances(&f, DMACC), ["20-tnds", "20-tnds-2"]);
    assert_eq!(
        leaf(&f, &format!("{DMACC}/20-tnds/Ext/Priority")),
        Some(Value::Int(7)),
        "formats from the DDF"
    );
    assert_eq!(
        leaf(&f, &format!("{DMACC}/20-tnds-2/SrvID")),
        Some(Value::Chr("tnds2".into()))
    );
    // Without its MOID, a top-level node is refused at its line, with a hint.
    let unnamed = TNDS_ACCOUNT.replacen(
        "<RTProperties><Type><DDFName>urn:oma:mo:oma-dm-dmacc:1.2</DDFName></Type></RTProperties>",
        "",
        1,
    );
    let path = write(&f.dirs[0], "30-unnamed.xml", &unnamed);
    let problems = refused_problems(f.boot.apply_file(&path).unwrap_err());
    assert_eq!(
        problems,
        [(
            4,
            format!(
                "DMAcc: a top-level node names its MOID in RTProperties/Type/DDFName ({DMACC} for DMAcc)"
            )
        )]
    );
}

#[test]
fn a_bad_file_is_refused_whole_with_its_line_and_the_others_apply() {
    let f = fixture();
    // Item 2 (line 4) lacks SrvURI, which the DDF requires; item 1 is fine but must not
    // be applied either.
    let bad = write(
        &f.dirs[0],
        "10-bad.json",
        &format!(
            "[\n{},\n{{\"ClientURI\": \"{DMACC}/two/\", \"MOData\": {{\"DMAcc\": {{\"SrvID\": \"two\", \"Perm\": {{}}}}}}}}\n]",
            account("one", "one", "https://one.example/")
        ),
    );
    let good = write(
        &f.dirs[1],
        "10-good.json",
        &format!("[{}]", account("good", "good", "https://good.example/")),
    );
    let report = f.boot.apply_dirs().unwrap();
    assert_eq!(report.applied, [good]);
    assert_eq!(report.refused, std::slice::from_ref(&bad));
    assert_eq!(instances(&f, DMACC), ["good"]);
    let problems = refused_problems(f.boot.apply_file(&bad).unwrap_err());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, 4);
    assert!(
        problems[0].1.starts_with(&format!(
            "{DMACC}/two/: DMAcc: has 0 child(ren) named SrvURI"
        )),
        "{problems:?}"
    );
    // Refused files are not recorded: tried again at the next start.
    assert_eq!(f.boot.apply_dirs().unwrap().refused, [bad]);
}

#[test]
fn json_syntax_and_item_errors_carry_lines() {
    let f = fixture();
    let syntax = write(
        &f.dirs[0],
        "a.json",
        "[\n  {\"ClientURI\": \"x\",\n  \"Bogus\": 1}\n]",
    );
    let problems = refused_problems(f.boot.apply_file(&syntax).unwrap_err());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, 3);
    assert!(
        problems[0].1.contains("unknown field `Bogus`"),
        "{problems:?}"
    );
    let text = format!(
        "[\n{},\n  {{\"ClientURI\": \"{DMACC}//\", \"MOData\": {{\"DMAcc\": {{}}}}}},\n  \
         {{\"ClientURI\": \"urn:oma:mo:oma-dm-devinfo:1.0/0/\", \"MOData\": {{\"DevInfo\": {{}}}}}}\n]",
        account("a", "a", "https://a.example/")
    );
    let items = write(&f.dirs[0], "b.json", &text);
    let problems = refused_problems(f.boot.apply_file(&items).unwrap_err());
    let lines: Vec<usize> = problems.iter().map(|p| p.0).collect();
    assert_eq!(lines, [4, 5], "{problems:?}");
    assert!(
        problems[0].1.contains("names its instance's MIID"),
        "{problems:?}"
    );
    assert!(problems[1].1.contains("omadmd's own MO"), "{problems:?}");
    assert!(instances(&f, DMACC).is_empty());
    let binary = write(&f.dirs[0], "c.json", "[\n\n\u{0}");
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes.push(0xff);
    std::fs::write(&binary, bytes).unwrap();
    assert_eq!(
        refused_problems(f.boot.apply_file(&binary).unwrap_err()),
        [(3, "not UTF-8 text".to_owned())]
    );
    let neither = write(&f.dirs[0], "d.json", "\n  {}");
    let problems = refused_problems(f.boot.apply_file(&neither).unwrap_err());
    assert_eq!(problems[0].0, 2);
}

#[test]
fn an_error_found_while_writing_names_the_item_and_leaves_nothing() {
    let f = fixture();
    write(
        &f.dirs[0],
        "10-first.json",
        &format!("[{}]", account("first", "same", "https://a.example/")),
    );
    let second = write(
        &f.dirs[0],
        "20-second.json",
        &format!(
            "[\n{},\n{}]",
            account("other", "other", "https://b.example/"),
            account("second", "same", "https://c.example/")
        ),
    );
    let report = f.boot.apply_dirs().unwrap();
    assert_eq!(report.refused, std::slice::from_ref(&second));
    assert_eq!(
        instances(&f, DMACC),
        ["first"],
        "nothing of the second file"
    );
    let problems = refused_problems(f.boot.apply_file(&second).unwrap_err());
    assert_eq!(problems.len(), 1);
    assert!(problems[0].1.contains("SrvID \"same\""), "{problems:?}");
    assert_eq!(problems[0].0, 2, "the first item's line: {problems:?}");
}

#[test]
fn tnds_problems_carry_the_readers_lines() {
    let f = fixture();
    let bad = TNDS_ACCOUNT.replace("<Value>7</Value>", "<Value>seven</Value>");
    let path = write(&f.dirs[0], "bad.xml", &bad);
    let problems = refused_problems(f.boot.apply_file(&path).unwrap_err());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, 10);
    assert!(
        problems[0].1.starts_with("DMAcc/Ext/Priority: "),
        "{problems:?}"
    );
    // A format only a DDF carries, in an MO without one: refused at its top-level node.
    let blob = r#"<MgmtTree><VerDTD>1.2</VerDTD>
<Node><NodeName>Blob</NodeName>
<RTProperties><Type><DDFName>urn:oma:mo:ext-test-blob:1.0</DDFName></Type></RTProperties>
<Node><NodeName>Data</NodeName><RTProperties><Format><b64/></Format></RTProperties><Value>AAEC</Value></Node>
</Node></MgmtTree>"#;
    let path = write(&f.dirs[0], "blob.xml", blob);
    let problems = refused_problems(f.boot.apply_file(&path).unwrap_err());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, 2);
    assert!(problems[0].1.contains("needs the DDF"), "{problems:?}");
    // The same without the format applies.
    let path = write(
        &f.dirs[0],
        "plain.xml",
        &blob.replace("<RTProperties><Format><b64/></Format></RTProperties>", ""),
    );
    assert_eq!(
        f.boot.apply_file(&path).unwrap(),
        [NodeAddr::root("urn:oma:mo:ext-test-blob:1.0", "plain")]
    );
}

#[test]
fn dirs_in_order_names_in_order_only_regular_bootstrap_files() {
    let f = fixture();
    // Both files set the same account; the later one (second dir) wins.
    write(
        &f.dirs[1],
        "00-late.json",
        &format!("[{}]", account("acc", "acc", "https://etc.example/")),
    );
    write(
        &f.dirs[0],
        "50-early.json",
        &format!("[{}]", account("acc", "acc", "https://usr.example/")),
    );
    write(&f.dirs[0], "README", "not a bootstrap file");
    write(&f.dirs[0], ".hidden.json", "[");
    write(&f.dirs[0], "old.json~", "[");
    std::fs::create_dir(f.dirs[0].join("dir.json")).unwrap();
    let fifo = f.dirs[0].join("fifo.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let target = write(
        f.dirs[0].parent().unwrap(),
        "elsewhere.json",
        &format!("[{}]", account("linked", "linked", "https://l.example/")),
    );
    std::os::unix::fs::symlink(&target, f.dirs[1].join("10-link.json")).unwrap();
    let report = f.boot.apply_dirs().unwrap();
    let names: Vec<_> = report
        .applied
        .iter()
        .map(|p| {
            p.strip_prefix(f.dirs[0].parent().unwrap())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            PathBuf::from("usr/50-early.json"),
            PathBuf::from("etc/00-late.json"),
            PathBuf::from("etc/10-link.json")
        ]
    );
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(
        leaf(&f, &format!("{DMACC}/acc/SrvURI")),
        Some(Value::Chr("https://etc.example/".into()))
    );
    assert_eq!(instances(&f, DMACC), ["acc", "linked"]);
    // Named directly, the FIFO and the directory are refused, without blocking.
    for path in [fifo, f.dirs[0].join("dir.json")] {
        assert!(
            matches!(f.boot.apply_file(&path), Err(FileError::NotRegular { .. })),
            "{}",
            path.display()
        );
    }
}

#[test]
fn named_files_are_absolute_bounded_and_applied_whatever_was_before() {
    let f = fixture();
    assert!(matches!(
        f.boot.apply_file(Path::new("x.json")),
        Err(FileError::NotAbsolute { .. })
    ));
    let missing = f.dirs[0].join("missing.json");
    assert!(matches!(
        f.boot.apply_file(&missing),
        Err(FileError::Read { .. })
    ));
    let big = f.dirs[0].join("big.json");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(MAX_FILE_BYTES + 1).unwrap();
    assert!(matches!(
        f.boot.apply_file(&big),
        Err(FileError::TooLarge { .. })
    ));
    let report = f.boot.apply_dirs().unwrap();
    assert_eq!(report.refused, std::slice::from_ref(&big));
    std::fs::remove_file(&big).unwrap();
    let path = write(
        &f.dirs[0],
        "a.json",
        &format!("[{}]", account("a", "a", "https://a.example/")),
    );
    assert_eq!(
        f.boot.apply_dirs().unwrap().applied,
        std::slice::from_ref(&path)
    );
    let seq = f.store.reader().last_seq().unwrap();
    assert_eq!(
        f.boot.apply_file(&path).unwrap(),
        [NodeAddr::root(DMACC, "a")]
    );
    assert!(
        f.store.reader().last_seq().unwrap() > seq,
        "applied again on request"
    );
}

#[test]
fn factory_reset_returns_to_the_bootstrap_state() {
    let f = fixture();
    write(
        &f.dirs[0],
        "10-acme.json",
        &format!("[{}]", account("acme", "acme", "https://acme.example/")),
    );
    f.boot.apply_dirs().unwrap();
    let devinfo = Node::Interior(
        [("DevID".to_owned(), Node::Leaf(Value::Chr("dev".into())))]
            .into_iter()
            .collect(),
    );
    f.auth
        .provide(builtin::DEVINFO, "0", "DevInfo", &devinfo, Rights::READ)
        .unwrap();
    let app = Principal::App("org.example.A".into());
    let mine = f
        .auth
        .create_instance(&app, SETTINGS, r#"{"Settings": {"A": "x"}}"#)
        .unwrap();
    f.auth
        .grant(&app, &mine.to_string(), "app:org.example.B", Rights::READ)
        .unwrap();
    f.auth
        .set(
            &Principal::Admin,
            &format!("{DMACC}/acme/SrvURI"),
            None,
            crate::authority::Input::Text("https://changed.example/".into()),
        )
        .unwrap();
    let before = f.store.reader().last_seq().unwrap();

    let reset = f.boot.factory_reset().unwrap();
    assert_eq!(reset.removed, 2);
    assert_eq!(reset.report.applied.len(), 1, "the file applies again");
    let gone: Vec<String> = f
        .reset_changes
        .lock()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind.as_str(), c.addr))
        .collect();
    // The app's grant goes with its instance: its DACL entry first.
    let [entry, rest @ ..] = gone.as_slice() else {
        panic!("changes: {gone:?}")
    };
    assert!(
        entry.starts_with(&format!("deleted {}/", crate::tree::builtin::DACL)),
        "{entry}"
    );
    assert_eq!(
        rest,
        [
            format!("deleted {SETTINGS}/{}/", mine.miid),
            format!("deleted {DMACC}/acme/")
        ]
    );
    assert!(f.store.reader().last_seq().unwrap() > before + 2);
    assert!(instances(&f, SETTINGS).is_empty());
    assert_eq!(instances(&f, DMACC), ["acme"]);
    assert_eq!(
        leaf(&f, &format!("{DMACC}/acme/SrvURI")),
        Some(Value::Chr("https://acme.example/".into()))
    );
    assert_eq!(instances(&f, builtin::DEVINFO), ["0"], "DevInfo stays");
    assert!(
        f.auth
            .may_read(
                &Principal::App("any".into()),
                &NodeAddr::root(builtin::DEVINFO, "0")
            )
            .unwrap(),
        "and stays readable"
    );
}

#[test]
fn element_lines_find_each_item() {
    let text = "[\n {\"a\": \"[,{\\\"\"},\n\n [1, {\"b\": [2]}], \"x\"\n ,3]";
    assert_eq!(element_lines(text), [2, 4, 4, 5]);
    assert!(element_lines("[ ]").is_empty());
}

#[test]
fn miid_stems_are_node_names() {
    for (file, miid) in [
        ("/b/10-acme.xml", "10-acme"),
        ("/b/a b(c).xml", "a_b_c_"),
        ("/b/.xml", ".xml"),
        ("/b/..xml", "bootstrap"),
    ] {
        assert_eq!(miid_stem(Path::new(file)), miid, "{file}");
    }
}
