//! The commands that talk to omadmd: each calls `org.omadm.Client1` and prints the answer as
//! text or, with `--json`, as JSON.

use std::io::Read;
use std::path::Path;

use serde::Serialize;
use zbus::Variant;

use omadmd::tree::json::parse_items;

use crate::account::{self, ServerInfo};
use crate::cli::{
    AccountCommand, ChangesArgs, ChildrenCommand, Command, CreateArgs, GetArgs, GrantArgs,
    RevokeArgs, SessionCommand, SetArgs, TransfersCommand, UriArgs,
};
use crate::client::{AskPassword, Client};
use crate::failure::{Bus, Failure};
use crate::output::{NodeValue, columns, emit, one_line, pretty, use_color};
use crate::tree_view::{self, Formats};
use crate::{alert, bootstrap, children, dmacc, session, transfers, watch};

/// Runs one of the D-Bus commands on a current-thread tokio runtime.
pub fn run_blocking(
    bus: Bus,
    ask: AskPassword,
    as_json: bool,
    command: Command,
) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(bus, ask, as_json, command))
}

async fn run(bus: Bus, ask: AskPassword, as_json: bool, command: Command) -> Result<(), Failure> {
    // Check arguments and read local input before connecting, so that their errors come
    // first. (clap cannot see a conflict with --json given before the command.)
    if matches!(&command, Command::Get(args) if args.value && as_json) {
        return Err(Failure::usage("--value cannot be used with --json"));
    }
    let create_json = match &command {
        Command::Create(args) => Some(modata(&args.modata_json)?),
        _ => None,
    };
    let set_value = match &command {
        Command::Set(args) => Some(set_value(args)?),
        _ => None,
    };
    let account = match &command {
        Command::Account(AccountCommand::Add(args)) => {
            Some(dmacc::modata(args).map_err(|e| Failure::usage(e.to_string()))?)
        }
        _ => None,
    };
    let alert_data = match &command {
        Command::Alert(args) => Some(alert::data(args)?),
        _ => None,
    };
    let bootstrap_path = match &command {
        Command::Bootstrap(args) => Some(bootstrap::absolute(&args.file)?),
        _ => None,
    };
    if let Command::FactoryReset(args) = &command {
        bootstrap::confirm_reset(args.yes)?;
    }
    let client = Client::connect(bus, ask).await?;
    match command {
        Command::Status => status(&client, as_json).await,
        Command::Get(args) => get(&client, &args, as_json).await,
        Command::Tree(args) => tree(&client, &args, as_json).await,
        Command::Set(args) => {
            let format = args.format.as_deref().unwrap_or("");
            let value = set_value.unwrap_or_else(|| Variant::from(""));
            client
                .proxy
                .set(&args.client_uri, format, &value)
                .await
                .map_err(|e| client.fail(e))
        }
        Command::Delete(UriArgs { client_uri }) => client
            .proxy
            .delete(&client_uri)
            .await
            .map_err(|e| client.fail(e)),
        Command::Create(CreateArgs { moid, .. }) => {
            let json = create_json.unwrap_or_default();
            create(&client, &moid, &json, as_json).await
        }
        Command::Watch(UriArgs { client_uri }) => watch::run(&client, &client_uri, as_json).await,
        Command::Changes(args) => changes(&client, &args, as_json).await,
        Command::Grant(GrantArgs {
            instance_uri,
            principal,
            rights,
        }) => {
            let rights: Vec<&str> = rights.iter().map(String::as_str).collect();
            client
                .proxy
                .grant(&instance_uri, &principal, &rights)
                .await
                .map_err(|e| client.fail(e))
        }
        Command::Revoke(RevokeArgs {
            instance_uri,
            principal,
        }) => client
            .proxy
            .revoke(&instance_uri, &principal)
            .await
            .map_err(|e| client.fail(e)),
        Command::Grants(args) => grants(&client, &args.client_uri, as_json).await,
        Command::Account(AccountCommand::Add(args)) => {
            let modata = account.unwrap_or_default();
            account::add(&client, &args.id, &modata, as_json).await
        }
        Command::Account(AccountCommand::List) => account::list(&client, as_json).await,
        Command::Account(AccountCommand::Remove(args)) => account::remove(&client, &args).await,
        Command::Bootstrap(_) => {
            bootstrap::apply(&client, &bootstrap_path.unwrap_or_default()).await
        }
        Command::FactoryReset(_) => bootstrap::factory_reset(&client).await,
        Command::Session(SessionCommand::Start(args)) => {
            session::start(&client, &args, as_json).await
        }
        Command::Session(SessionCommand::Status) => session::status(&client, as_json).await,
        Command::Alert(args) => alert::send(&client, &args, &alert_data.unwrap_or_default()).await,
        Command::Transfers(args) => match args.command {
            None => transfers::list(&client, as_json).await,
            Some(TransfersCommand::Watch(args)) => {
                transfers::watch(&client, args.id, as_json).await
            }
            Some(TransfersCommand::Suspend(args)) => {
                transfers::switch(&client, args.id, true).await
            }
            Some(TransfersCommand::Resume(args)) => {
                transfers::switch(&client, args.id, false).await
            }
        },
        Command::Children(args) => match args.command {
            None => children::list(&client, as_json).await,
            Some(ChildrenCommand::Detach(args)) => children::detach(&client, &args.key).await,
        },
        // main handles the offline commands and never passes them here.
        Command::Ddf(_) | Command::Tnds(_) | Command::Completions(_) | Command::Man(_) => {
            Err(Failure::new(1, "this command does not talk to omadmd"))
        }
    }
}

#[derive(Serialize)]
struct Status {
    version: String,
    dev_id: String,
    state: String,
    access_technology: String,
    features: Vec<String>,
    servers: Vec<ServerInfo>,
}

async fn status(client: &Client, as_json: bool) -> Result<(), Failure> {
    let p = &client.proxy;
    let (version, dev_id, state, access_technology, features) = tokio::try_join!(
        p.version(),
        p.dev_id(),
        p.state(),
        p.access_technology(),
        p.features()
    )
    .map_err(|e| client.fail(e))?;
    let servers = account::servers_for_status(client).await?;
    let status = Status {
        version,
        dev_id,
        state,
        access_technology,
        features,
        servers,
    };
    if as_json {
        return emit(&pretty(&status));
    }
    let mut rows = vec![
        vec!["Version:".to_owned(), status.version],
        vec!["DevId:".to_owned(), status.dev_id],
        vec!["State:".to_owned(), status.state],
        vec!["Network:".to_owned(), status.access_technology],
        vec!["Features:".to_owned(), status.features.join(", ")],
    ];
    if status.servers.is_empty() {
        rows.push(vec![
            "Servers:".to_owned(),
            "none (omadmctl account add adds one)".to_owned(),
        ]);
    }
    for server in status.servers {
        rows.push(vec![
            "Server:".to_owned(),
            format!(
                "{} {} (priority {}, last session {}, notifications via {}, {} ignored)",
                server.server_id,
                server.url,
                server.priority,
                account::last_session_text(server.last_session),
                match server.notification_channel.as_str() {
                    "" => "none",
                    channel => channel,
                },
                server.ignored_notifications
            ),
        ]);
    }
    emit(&columns(&rows))
}

#[derive(Serialize)]
struct NodeRow {
    client_uri: String,
    format: String,
    value: serde_json::Value,
}

async fn grants(client: &Client, instance_uri: &str, as_json: bool) -> Result<(), Failure> {
    let grants = client
        .proxy
        .list_grants(instance_uri)
        .await
        .map_err(|e| client.fail(e))?;
    if as_json {
        let rows: Vec<serde_json::Value> = grants
            .into_iter()
            .map(
                |(principal, rights)| serde_json::json!({"principal": principal, "rights": rights}),
            )
            .collect();
        return emit(&pretty(&rows));
    }
    let rows: Vec<Vec<String>> = grants
        .into_iter()
        .map(|(principal, rights)| vec![principal, rights.join(",")])
        .collect();
    emit(&columns(&rows))
}

async fn get(client: &Client, args: &GetArgs, as_json: bool) -> Result<(), Failure> {
    if args.holder {
        let holder = client
            .proxy
            .holder(&args.client_uri)
            .await
            .map_err(|e| client.fail(e))?;
        return if as_json {
            emit(&pretty(&serde_json::json!({
                "client_uri": args.client_uri,
                "holder": holder,
            })))
        } else {
            emit(&format!("{holder}\n"))
        };
    }
    let nodes: Vec<(String, String, NodeValue)> = client
        .proxy
        .get(&args.client_uri)
        .await
        .map_err(|e| client.fail(e))?
        .into_iter()
        .map(|(uri, format, value)| {
            let value = NodeValue::from_dbus(&format, value);
            (uri, format, value)
        })
        .collect();
    if as_json {
        let rows: Vec<NodeRow> = nodes
            .into_iter()
            .map(|(client_uri, format, value)| NodeRow {
                value: value.json(&format),
                client_uri,
                format,
            })
            .collect();
        return emit(&pretty(&rows));
    }
    if args.value {
        let mut text = String::new();
        for (_, _, value) in nodes.iter().filter(|n| n.2 != NodeValue::Interior) {
            text.push_str(&value.text());
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        return emit(&text);
    }
    let rows: Vec<Vec<String>> = nodes
        .into_iter()
        .map(|(uri, format, value)| vec![uri, format, one_line(&value.text())])
        .collect();
    emit(&columns(&rows))
}

async fn tree(client: &Client, args: &UriArgs, as_json: bool) -> Result<(), Failure> {
    let text = client
        .proxy
        .get_json(&args.client_uri)
        .await
        .map_err(|e| client.fail(e))?;
    let items = parse_items(&text);
    if as_json {
        // Keep the item's field order when it parses; any other JSON is shown as it came.
        return match items {
            Ok(items) => emit(&pretty(&items)),
            Err(_) => {
                let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    Failure::new(1, format!("omadmd sent JSON omadmctl cannot read: {e}"))
                })?;
                emit(&pretty(&json))
            }
        };
    }
    let items = items.map_err(|e| {
        Failure::new(
            1,
            format!("omadmd sent an MO serialization omadmctl cannot read: {e}"),
        )
    })?;
    let mut formats = Formats::new();
    for item in &items {
        for query in tree_view::format_queries(item) {
            // Levels the serialization holds must resolve; if one does not (a json leaf
            // holding an object, or a race with a writer), the rest is inferred.
            let Ok(nodes) = client.proxy.get(&query).await else {
                break;
            };
            formats.extend(nodes.into_iter().map(|(uri, format, _)| (uri, format)));
        }
    }
    emit(&tree_view::render(&items, &formats, use_color()))
}

#[derive(Serialize)]
struct Created<'a> {
    client_uri: &'a str,
}

async fn create(client: &Client, moid: &str, json: &str, as_json: bool) -> Result<(), Failure> {
    let client_uri = client
        .proxy
        .create_instance(moid, json)
        .await
        .map_err(|e| client.fail(e))?;
    if as_json {
        emit(&pretty(&Created {
            client_uri: &client_uri,
        }))
    } else {
        emit(&format!("{client_uri}\n"))
    }
}

/// One change, as `watch` and `changes` print it.
#[derive(Serialize)]
pub struct ChangeRow {
    pub seq: u64,
    pub change: String,
    pub client_uri: String,
}

impl ChangeRow {
    /// `seq change client_uri`, or one line of JSON; with a final newline.
    pub fn line(&self, as_json: bool) -> String {
        if as_json {
            format!("{}\n", serde_json::to_string(self).unwrap_or_default())
        } else {
            format!("{} {} {}\n", self.seq, self.change, self.client_uri)
        }
    }
}

#[derive(Serialize)]
struct Changes {
    current_seq: u64,
    changes: Vec<ChangeRow>,
}

async fn changes(client: &Client, args: &ChangesArgs, as_json: bool) -> Result<(), Failure> {
    let (current_seq, list) = client
        .proxy
        .changes_since(&args.client_uri, args.since)
        .await
        .map_err(|e| client.fail(e))?;
    let changes: Vec<ChangeRow> = list
        .into_iter()
        .map(|(client_uri, change, seq)| ChangeRow {
            seq,
            change,
            client_uri,
        })
        .collect();
    if as_json {
        return emit(&pretty(&Changes {
            current_seq,
            changes,
        }));
    }
    let mut text = format!("current seq: {current_seq}\n");
    for change in &changes {
        text.push_str(&change.line(false));
    }
    emit(&text)
}

/// The MOData argument of create: literal JSON, `@FILE`, or `-` for standard input.
fn modata(arg: &str) -> Result<String, Failure> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("cannot read MOData from standard input: {e}")))?;
        Ok(text)
    } else if let Some(file) = arg.strip_prefix('@') {
        std::fs::read_to_string(file).map_err(|e| Failure::usage(format!("{file}: {e}")))
    } else {
        Ok(arg.to_owned())
    }
}

/// The value set sends: the argument as a string, or a file's content (as a string when it is
/// UTF-8 text and the format is not b64 or bin, else as bytes).
fn set_value(args: &SetArgs) -> Result<Variant<'static>, Failure> {
    if let Some(value) = &args.value {
        return Ok(Variant::from(value.clone()));
    }
    let Some(file) = &args.from_file else {
        return Err(Failure::usage("give a VALUE or --from-file FILE"));
    };
    let bytes = read_file(file)?;
    let binary = matches!(args.format.as_deref(), Some("b64" | "bin"));
    if binary {
        return Ok(Variant::from(bytes));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Variant::from(text)),
        Err(e) => Ok(Variant::from(e.into_bytes())),
    }
}

fn read_file(file: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(file).map_err(|e| Failure::usage(format!("{}: {e}", file.display())))
}
