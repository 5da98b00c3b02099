//! The documentation a package installs: the example configuration
//! (`packaging/omadmd.toml`) against [`Config`] — as shipped it gives the defaults,
//! uncommented it gives them exactly, it names every table and key of `Config` and no other,
//! and the bounds it states are those the parser enforces — and `packaging/gen-docs`, whose
//! man pages and completions must come out clean and whose pages, like the help texts, the
//! unit and the D-Bus interface files, name only man pages that exist.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use omadmd::config::Config;
use omadmd::manpage::omadmd_toml::{EXAMPLE, Example, Text};

/// The example with every `#[table]` and `#key = value` line uncommented.
fn uncommented() -> String {
    EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn the_example_as_shipped_gives_the_defaults() {
    assert_eq!(Config::parse(EXAMPLE).unwrap(), Config::default());
}

#[test]
fn the_example_uncommented_gives_exactly_the_defaults() {
    let text = uncommented();
    let keys = text.lines().filter(|l| l.contains(" = ")).count();
    assert!(keys >= 30, "only {keys} keys uncommented:\n{text}");
    assert_eq!(Config::parse(&text).unwrap(), Config::default());
}

/// The fields of the table `header` (the top level when `None`) as [`Config::parse`] names
/// them when refusing an unknown key ("unknown field `x`, expected one of `a`, `b`"); `None`
/// when `header` is no table of fields.
fn fields(header: Option<&str>) -> Option<Vec<String>> {
    let text = match header {
        Some(h) => format!("[{h}]\nzz_probe = 0\n"),
        None => "zz_probe = 0\n".to_owned(),
    };
    let err = Config::parse(&text).unwrap_err();
    let (_, expected) = err.split_once("unknown field `zz_probe`, expected")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every table (`[name]`) and key (`table.key`) `Config` accepts, the keys of a map of tables
/// (`[exec."<pattern>"]`) written `*`: found by asking the parser, not by a list that could
/// go stale.
fn config_names(header: Option<&str>, shown: &str, out: &mut BTreeSet<String>) {
    for field in fields(header).expect("a table") {
        let (header, shown) = match header {
            Some(h) => (format!("{h}.{field}"), format!("{shown}.{field}")),
            None => (field.clone(), field),
        };
        if fields(Some(&header)).is_some() {
            out.insert(format!("[{shown}]"));
            config_names(Some(&header), &shown, out);
        } else if fields(Some(&format!("{header}.\"p\""))).is_some() {
            out.insert(format!("[{shown}.*]"));
            config_names(Some(&format!("{header}.\"p\"")), &format!("{shown}.*"), out);
        } else {
            out.insert(shown);
        }
    }
}

/// A table name with its quoted keys (`exec."<ClientURI pattern>"`) written `*`.
fn normalized(table: &str) -> String {
    table
        .split('"')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "*" } else { part })
        .collect()
}

fn example() -> Example {
    Example::parse(EXAMPLE).unwrap()
}

#[test]
fn the_example_names_every_table_and_key_of_config_and_no_other() {
    let mut in_config = BTreeSet::new();
    config_names(None, "", &mut in_config);
    assert!(in_config.contains("[notification.mqtt]"), "{in_config:?}");
    assert!(in_config.contains("exec.*.command"), "{in_config:?}");
    assert!(
        in_config.contains("limits.server_uri_bytes"),
        "{in_config:?}"
    );

    let mut in_example = BTreeSet::new();
    for table in example().tables {
        let name = normalized(&table.name);
        assert!(
            in_example.insert(format!("[{name}]")),
            "[{name}] described twice"
        );
        for key in table.keys {
            assert!(
                in_example.insert(format!("{name}.{}", key.name)),
                "{name}.{} described twice",
                key.name
            );
        }
    }
    let missing: Vec<_> = in_config.difference(&in_example).collect();
    let unknown: Vec<_> = in_example.difference(&in_config).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "packaging/omadmd.toml lacks {missing:?} and describes {unknown:?}, which Config does not have"
    );
}

#[test]
fn every_key_is_described_and_the_examples_of_keys_without_defaults_parse() {
    for table in example().tables {
        for key in &table.keys {
            assert!(
                matches!(key.text.first(), Some(Text::Prose(_))),
                "{}.{} has no description",
                table.name,
                key.name
            );
            if key.default.is_none() {
                let Some(Text::Example(lines)) = key.text.last() else {
                    panic!("{}.{} has no example", table.name, key.name);
                };
                let text = format!("[{}]\n{}\n", table.name, lines.join("\n"));
                if let Err(e) = Config::parse(&text) {
                    panic!(
                        "the example of {}.{} does not parse: {e}",
                        table.name, key.name
                    );
                }
            }
        }
    }
}

/// `(lowest, highest)` from a description's "(an integer, A to B" or "(an integer of at least
/// A" or, for a whole table, "Each is an integer of at least A".
fn stated_bounds(text: &[Text]) -> Option<(u64, Option<u64>)> {
    let prose: String = text
        .iter()
        .filter_map(|t| match t {
            Text::Prose(p) => Some(p.as_str()),
            Text::Example(_) => None,
        })
        .collect::<Vec<_>>()
        .join(" ");
    let number = |s: &str| -> u64 {
        s.trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap()
    };
    if let Some((_, rest)) = prose.split_once("(an integer, ") {
        let (lo, rest) = rest.split_once(" to ").unwrap();
        let hi = rest.split([')', ':', ';']).next().unwrap();
        return Some((number(lo), Some(number(hi))));
    }
    for phrase in [
        "(an integer of at least ",
        "Each is an integer of at least ",
    ] {
        if let Some((_, rest)) = prose.split_once(phrase) {
            let lo = rest.split([')', '.']).next().unwrap();
            return Some((number(lo), None));
        }
    }
    None
}

#[test]
fn the_bounds_the_example_states_are_those_the_parser_enforces() {
    let mut checked = 0;
    for table in example().tables {
        let table_bounds = stated_bounds(&table.text);
        for key in &table.keys {
            let Some((lo, hi)) = stated_bounds(&key.text).or(table_bounds) else {
                continue;
            };
            let with = |v: u64| Config::parse(&format!("[{}]\n{} = {v}\n", table.name, key.name));
            let name = format!("{}.{}", table.name, key.name);
            let accepted = |v: u64| {
                if let Err(e) = with(v) {
                    panic!("{name} = {v} is within its stated bounds but refused: {e}");
                }
            };
            let refused = |v: u64| match with(v) {
                Ok(_) => panic!("{name} = {v} is beyond its stated bounds but accepted"),
                Err(e) => assert!(e.contains(&key.name), "{name} = {v}: {e}"),
            };
            accepted(lo);
            if lo > 0 {
                refused(lo - 1);
            }
            if let Some(hi) = hi {
                accepted(hi);
                refused(hi + 1);
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} keys state bounds");
}

/// The directory of the binaries under test.
fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_omadmd"))
        .parent()
        .expect("a binary lives in a directory")
}

/// Man pages other packages provide, which ours may name.
const OTHER_PAGES: [&str; 7] = [
    "busctl(1)",
    "journalctl(1)",
    "polkit(8)",
    "systemctl(1)",
    "systemd.service(5)",
    "pkttyagent(1)",
    "man(1)",
];

/// Every `name(N)` reference to a man page in `text` (roff escapes of `-` undone).
fn page_references(text: &str) -> BTreeSet<String> {
    let text = text
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "");
    let mut refs = BTreeSet::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('(') {
        let Some(&section) = bytes.get(i + 1) else {
            continue;
        };
        if !(b'1'..=b'8').contains(&section) || bytes.get(i + 2) != Some(&b')') {
            continue;
        }
        let start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .map_or(0, |p| p + 1);
        let name = &text[start..i];
        if !name.is_empty() && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            refs.insert(format!("{name}({})", section as char));
        }
    }
    refs
}

#[test]
fn gen_docs_writes_clean_pages_and_completions_that_name_only_pages_that_exist() {
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/gen-docs");
    let run = Command::new(script)
        .arg(bin_dir())
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "gen-docs failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let mut pages = BTreeSet::new();
    let mut texts = Vec::new();
    for section in ["man1", "man5", "man8"] {
        for entry in std::fs::read_dir(out.path().join("man").join(section)).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_str().unwrap().to_owned();
            let (name, n) = file.rsplit_once('.').unwrap();
            pages.insert(format!("{name}({n})"));
            texts.push((file.clone(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    for page in [
        "omadmd(8)",
        "omadmd.toml(5)",
        "omadmctl(1)",
        "omadmctl-ddf-check(1)",
        "omadm-devserver(1)",
    ] {
        assert!(pages.contains(page), "{page} not written: {pages:?}");
    }
    for (dir, prefix, suffix) in [("bash", "", ""), ("zsh", "_", ""), ("fish", "", ".fish")] {
        for name in ["omadmd", "omadmctl", "omadm-devserver"] {
            let file = out
                .path()
                .join("completions")
                .join(dir)
                .join(format!("{prefix}{name}{suffix}"));
            let script = std::fs::read_to_string(&file).unwrap();
            assert!(script.contains(name), "{}", file.display());
        }
    }

    let bin = |name: &str, args: &[&str]| {
        let out = Command::new(bin_dir().join(name))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    texts.push(("omadmd --help".into(), bin("omadmd", &["--help"])));
    texts.push(("omadmctl --help".into(), bin("omadmctl", &["--help"])));
    texts.push((
        "omadm-devserver --help".into(),
        bin("omadm-devserver", &["--help"]),
    ));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "packaging/systemd/omadmd.service",
        "packaging/omadmd.toml",
        "dbus/org.omadm.Client1.xml",
        "dbus/org.omadm.Client1.Server.xml",
        "dbus/org.omadm.Client1.ExecHandler.xml",
        "dbus/org.omadm.client1.policy",
        "dbus/org.omadm.Client1.conf",
        "dbus/org.omadm.Client1.service",
    ] {
        texts.push((
            file.into(),
            std::fs::read_to_string(root.join(file)).unwrap(),
        ));
    }
    for (source, text) in &texts {
        for reference in page_references(text) {
            assert!(
                pages.contains(&reference) || OTHER_PAGES.contains(&reference.as_str()),
                "{source} names {reference}, which is neither written by gen-docs nor another package's page"
            );
        }
    }
}
