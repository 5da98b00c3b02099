//! `json`-format values (the constructed format, DM-HLF-024) over the real system bus:
//! written with `Set` as nested D-Bus variants (from zbus and from GLib's `gdbus`), read back
//! with `Get` as variants (`a{sv}`, `av`, `s`, `b`, `x`, `t`, `d`), with `GetJson` as JSON
//! text (nulls included), and printed by `omadmctl get` as JSON; nulls refused on the way
//! in, a value D-Bus cannot carry refused by `Get` and left to `GetJson`.

use std::collections::HashMap;
use std::path::Path;

use omadmd::bus::variant;
use serde_json::{Value as J, json};
use zbus::{OwnedVariant, Variant};

use crate::support::daemon::{Daemon, call_err, call_ok};
use crate::support::sysbus::{SysBus, show};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");

const MOID: &str = "urn:oma:mo:ext-omadmd-test-json:1.0";

/// An MO type whose `Data` leaf has the json format.
const DDF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MgmtTree>
  <VerDTD>1.2</VerDTD>
  <Man>omadmd tests</Man>
  <Node>
    <NodeName>Report</NodeName>
    <DFProperties>
      <AccessType><Add/><Delete/><Get/><Replace/></AccessType>
      <DFFormat><node/></DFFormat>
      <Occurrence><ZeroOrMore/></Occurrence>
      <Scope><Dynamic/></Scope>
      <DFType><DDFName>urn:oma:mo:ext-omadmd-test-json:1.0</DDFName></DFType>
    </DFProperties>
    <Node>
      <NodeName>Data</NodeName>
      <DFProperties>
        <AccessType><Add/><Delete/><Get/><Replace/></AccessType>
        <DFFormat><json/></DFFormat>
        <Occurrence><ZeroOrOne/></Occurrence>
        <Scope><Dynamic/></Scope>
        <DFType><MIME>application/json</MIME></DFType>
      </DFProperties>
    </Node>
    <Node>
      <NodeName>Name</NodeName>
      <DFProperties>
        <AccessType><Add/><Delete/><Get/><Replace/></AccessType>
        <DFFormat><chr/></DFFormat>
        <Occurrence><ZeroOrOne/></Occurrence>
        <Scope><Dynamic/></Scope>
        <DFType><MIME>text/plain</MIME></DFType>
      </DFProperties>
    </Node>
  </Node>
</MgmtTree>
"#;

/// omadmd on `bus` with the test MO type in its DDF dir (under `dir`).
fn daemon(bus: &SysBus, dir: &Path) -> Daemon {
    let ddf = dir.join("ddf");
    std::fs::create_dir_all(&ddf).unwrap();
    std::fs::write(ddf.join("50-json-test.ddf"), DDF).unwrap();
    Daemon::start_with_config(
        bus,
        &format!("[ddf]\ndirs = [{:?}]\n", ddf.display().to_string()),
    )
}

/// A new instance from `modata` (as root, with gdbus); its ClientURI.
fn create(bus: &SysBus, modata: &J) -> String {
    let out = call_ok(bus, None, "CreateInstance", &[MOID, &modata.to_string()]);
    out.trim_start_matches("('")
        .trim_end_matches("',)")
        .to_owned()
}

/// The test process's own connection to omadmd (as root, the administrator).
struct Client {
    runtime: tokio::runtime::Runtime,
    conn: zbus::Connection,
}

impl Client {
    fn connect(bus: &SysBus) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = runtime
            .block_on(zbus::connection::Builder::address(bus.address()).build())
            .unwrap();
        Client { runtime, conn }
    }

    fn call<B>(&self, method: &str, body: &B) -> Result<zbus::Message, String>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.runtime
            .block_on(self.conn.call_method(
                Some("org.omadm.Client1"),
                "/org/omadm/Client1",
                Some("org.omadm.Client1"),
                method,
                body,
            ))
            .map_err(|e| match e {
                zbus::Error::MethodError(name, message, _) => {
                    format!("{name}: {}", message.unwrap_or_default())
                }
                other => other.to_string(),
            })
    }

    fn set(&self, uri: &str, value: Variant<'_>) -> Result<(), String> {
        self.call("Set", &(uri, "", value)).map(drop)
    }

    /// `Get`'s answer for `uri`, which must name one node: its format and value.
    fn get(&self, uri: &str) -> Result<(String, OwnedVariant), String> {
        let reply = self.call("Get", &(uri,))?;
        let mut nodes: Vec<(String, String, OwnedVariant)> = reply.body().deserialize().unwrap();
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        let (at, format, value) = nodes.remove(0);
        assert_eq!(at, uri);
        Ok((format, value))
    }

    /// The JSON value `GetJson` gives for the one node `uri` names.
    fn get_json(&self, uri: &str) -> J {
        let reply = self.call("GetJson", &(uri,)).unwrap();
        let text: String = reply.body().deserialize().unwrap();
        let items: J = serde_json::from_str(&text).unwrap();
        let data = items[0]["MOData"].as_object().unwrap();
        data.values().next().unwrap().clone()
    }
}

/// A variant's D-Bus type.
fn signature(value: &Variant<'_>) -> String {
    value.value_signature().to_string()
}

/// The member `key` of an `a{sv}` variant.
fn member(value: &Variant<'_>, key: &str) -> OwnedVariant {
    let Variant::Dict(dict) = value else {
        panic!("not a dictionary: {value:?}")
    };
    let (_, found) = dict
        .iter()
        .find(|(k, _)| matches!(k, Variant::Str(s) if s.as_str() == key))
        .unwrap_or_else(|| panic!("no {key} in {value:?}"));
    match found {
        Variant::Variant(inner) => inner.try_to_owned().unwrap(),
        other => other.try_to_owned().unwrap(),
    }
}

/// `omadmctl ARGS` as root; must succeed; its stdout.
fn ctl(bus: &SysBus, args: &[&str]) -> String {
    let out = bus.command(None, CTL).args(args).output().unwrap();
    assert!(out.status.success(), "omadmctl {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn json_values_travel_as_variants_both_ways() {
    let bus = SysBus::start();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = daemon(&bus, dir.path());
    let client = Client::connect(&bus);
    let root = create(&bus, &json!({"Report": {"Name": "r"}}));
    let data = format!("{root}Data");

    // Set with nested variants (zbus): objects, arrays, every scalar kind.
    let position: HashMap<&str, Variant<'_>> =
        HashMap::from([("lat", Variant::from(47.25)), ("lon", Variant::from(-3i64))]);
    let value: HashMap<&str, Variant<'_>> = HashMap::from([
        ("pos", Variant::from(position)),
        (
            "tags",
            Variant::from(vec![Variant::from("a"), Variant::from(true)]),
        ),
        ("big", Variant::from(u64::MAX)),
        ("small", Variant::from(7u32)),
        ("names", Variant::from(vec!["x", "y"])),
    ]);
    client.set(&data, Variant::from(value)).unwrap();
    let written = json!({
        "pos": {"lat": 47.25, "lon": -3},
        "tags": ["a", true],
        "big": u64::MAX,
        "small": 7,
        "names": ["x", "y"],
    });

    // Get: the same structure, as variants of the mapped types.
    let (format, got) = client.get(&data).unwrap();
    assert_eq!(format, "json");
    assert_eq!(signature(&got), "a{sv}");
    assert_eq!(signature(&member(&got, "pos")), "a{sv}");
    assert_eq!(signature(&member(&member(&got, "pos"), "lat")), "d");
    assert_eq!(signature(&member(&member(&got, "pos"), "lon")), "x");
    assert_eq!(signature(&member(&got, "tags")), "av");
    assert_eq!(signature(&member(&got, "big")), "t");
    assert_eq!(signature(&member(&got, "small")), "x");
    assert_eq!(variant::to_json(&got).unwrap(), written);

    // GetJson: JSON text.
    assert_eq!(client.get_json(&data), written);

    // omadmctl get: compact JSON in the value column, alone with --value, typed with --json.
    let line = ctl(&bus, &["get", &data]);
    let compact = written.to_string();
    assert!(
        line.starts_with(&data) && line.contains("  json  ") && line.trim_end().ends_with(&compact),
        "{line}"
    );
    assert_eq!(
        ctl(&bus, &["get", "--value", &data]),
        format!("{compact}\n")
    );
    let rows: J = serde_json::from_str(&ctl(&bus, &["--json", "get", &data])).unwrap();
    assert_eq!(
        rows,
        json!([{"client_uri": data, "format": "json", "value": written}])
    );

    // GLib's gdbus writes and reads the same way (its own GVariant text).
    call_ok(
        &bus,
        None,
        "Set",
        &[
            &data,
            "",
            "<{'k': <[<int64 1>, <'two'>, <{'t': <false>}>]>}>",
        ],
    );
    let out = call_ok(&bus, None, "Get", &[&data]);
    assert!(
        out.contains("'json', <{'k': <[<int64 1>, <'two'>, <{'t': <false>}>]>}>"),
        "{out}"
    );
    assert_eq!(
        client.get_json(&data),
        json!({"k": [1, "two", {"t": false}]})
    );

    // A plain string is JSON text, as before (omadmctl set sends one); a JSON string is a
    // string in a variant.
    ctl(&bus, &["set", &data, r#"{"from": "text", "n": [1.5]}"#]);
    assert_eq!(client.get_json(&data), json!({"from": "text", "n": [1.5]}));
    client
        .set(&data, Variant::Variant(Box::new(Variant::from("hello"))))
        .unwrap();
    let (_, got) = client.get(&data).unwrap();
    assert_eq!(&*got, &Variant::from("hello"));
    assert_eq!(client.get_json(&data), json!("hello"));
    assert_eq!(ctl(&bus, &["get", "--value", &data]), "\"hello\"\n");

    // Nulls are refused on the way in, and so is a value nested too deep; nothing changes.
    for text in [r#"{"a": null}"#, "[1, null]", "null"] {
        let err = call_err(
            &bus,
            None,
            "Set",
            &[&data, "", &format!("<'{text}'>")],
            "InvalidValue",
        );
        assert!(err.contains("null"), "{text}: {err}");
    }
    let mut deep = Variant::from(1i64);
    for _ in 0..=variant::JSON_DEPTH {
        deep = Variant::from(vec![deep]);
    }
    let err = client.set(&data, deep).unwrap_err();
    assert!(
        err.starts_with("org.omadm.Client1.Error.InvalidValue") && err.contains("deeper than"),
        "{err}"
    );
    let err = client.set(&data, Variant::from((1i32, "a"))).unwrap_err();
    assert!(
        err.starts_with("org.omadm.Client1.Error.InvalidValue"),
        "{err}"
    );
    // A json value's containers are not taken by a node of another format.
    let err = client
        .set(&format!("{root}Name"), Variant::from(vec!["a"]))
        .unwrap_err();
    assert!(
        err.starts_with("org.omadm.Client1.Error.InvalidValue"),
        "{err}"
    );
    assert_eq!(client.get_json(&data), json!("hello"));
}

#[test]
fn nulls_written_by_others_are_left_out_or_left_to_get_json() {
    let bus = SysBus::start();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = daemon(&bus, dir.path());
    let client = Client::connect(&bus);

    // The MO serialization carries nulls (as a server's or a bootstrap file's would).
    let members = json!({"a": null, "b": [1, {"c": null, "d": "e"}]});
    let root = create(&bus, &json!({"Report": {"Data": members}}));
    let data = format!("{root}Data");
    let (format, got) = client.get(&data).unwrap();
    assert_eq!(format, "json");
    assert_eq!(
        variant::to_json(&got).unwrap(),
        json!({"b": [1, {"d": "e"}]})
    );
    assert_eq!(client.get_json(&data), members);
    assert_eq!(
        ctl(&bus, &["get", "--value", &data]),
        format!("{}\n", json!({"b": [1, {"d": "e"}]}))
    );

    // A null elsewhere cannot be carried: Get names the node and points to GetJson.
    let root = create(&bus, &json!({"Report": {"Data": [1, null], "Name": "n"}}));
    let data = format!("{root}Data");
    let err = client.get(&format!("{root}*")).unwrap_err();
    assert!(
        err.starts_with("org.omadm.Client1.Error.InvalidValue")
            && err.contains(&data)
            && err.contains("GetJson"),
        "{err}"
    );
    assert_eq!(client.get_json(&data), json!([1, null]));
    let out = bus
        .command(None, CTL)
        .args(["get", &data])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GetJson"),
        "{}",
        show(&out)
    );
    // The instance's other nodes are read as usual.
    let (format, name) = client.get(&format!("{root}Name")).unwrap();
    assert_eq!((format.as_str(), &*name), ("chr", &Variant::from("n")));
}
