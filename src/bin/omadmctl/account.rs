//! `omadmctl account add|list|remove`: DM server accounts. `add` creates the DM Account MO
//! instance [`dmacc`](crate::dmacc) builds and waits until omadmd publishes the server's
//! object; `list` (and `status`) read the servers through the main object's `Servers`
//! property and the `org.omadm.Client1.Server` objects; `remove` deletes the instance whose
//! `SrvID` is given.

use futures_util::StreamExt as _;
use serde::Serialize;
use zbus::Variant;

use omadmd::bus::servers;
use omadmd::tree::builtin::DMACC;

use crate::cli::AccountRemoveArgs;
use crate::client::{Client, ServerProxy};
use crate::failure::Failure;
use crate::output::{columns, emit, pretty, utc_time};

/// How long `add` waits for omadmd to publish the new server's object (it does so right
/// after the account is stored; past this, `add` reports success anyway).
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Serialize)]
struct Created<'a> {
    client_uri: &'a str,
}

/// Creates the account from `modata` (checked by [`crate::dmacc::modata`]) for the server
/// `srv_id` and prints its ClientURI.
pub async fn add(
    client: &Client,
    srv_id: &str,
    modata: &serde_json::Value,
    as_json: bool,
) -> Result<(), Failure> {
    let objects = zbus::fdo::ObjectManagerProxy::builder(client.proxy.inner().connection())
        .destination(omadmd::bus::NAME)
        .path(omadmd::bus::PATH)
        .build()
        .await
        .map_err(|e| client.fail(e))?;
    // Subscribed before the account exists, so that its announcement cannot be missed.
    let mut added = objects
        .receive_interfaces_added()
        .await
        .map_err(|e| client.fail(e))?;
    let client_uri = client
        .proxy
        .create_instance(DMACC, &modata.to_string())
        .await
        .map_err(|e| client.fail(e))?;
    let wanted = servers::path(srv_id).map_err(|e| client.fail(e))?;
    let published = client.proxy.servers().await.map_err(|e| client.fail(e))?;
    if !published.contains(&wanted) {
        let announced = async {
            while let Some(signal) = added.next().await {
                if signal
                    .args()
                    .is_ok_and(|a| a.object_path().as_str() == wanted.as_str())
                {
                    break;
                }
            }
        };
        // Published later or not at all, the account exists: `list` shows it once it is.
        let _ = tokio::time::timeout(PUBLISH_WAIT, announced).await;
    }
    if as_json {
        emit(&pretty(&Created {
            client_uri: &client_uri,
        }))
    } else {
        emit(&format!("{client_uri}\n"))
    }
}

/// A DM server as its `org.omadm.Client1.Server` object shows it to everyone.
#[derive(Serialize)]
pub struct ServerInfo {
    pub server_id: String,
    pub name: String,
    pub url: String,
    pub priority: i64,
    /// POSIX seconds; `None`: never.
    pub last_session: Option<u64>,
    /// Notifications naming the server that omadmd ignored since it started.
    pub ignored_notifications: u64,
    /// How the server can reach omadmd: `""` (it cannot), `udp`, `mqtt:connecting`,
    /// `mqtt:connected`.
    pub notification_channel: String,
}

/// A row of `account list`: a server and, for administrators, what it may manage.
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    info: ServerInfo,
    /// `None`: the caller may not see it.
    permitted_moids: Option<Vec<String>>,
}

/// The servers omadmd has accounts for, the highest priority first (then by SrvID), each
/// with its permitted MOIDs when `permitted` is asked for and the caller may read them.
async fn read_servers(
    client: &Client,
    permitted: bool,
) -> Result<Vec<(ServerInfo, Option<Vec<String>>)>, Failure> {
    let paths = client.proxy.servers().await.map_err(|e| client.fail(e))?;
    let mut out = Vec::new();
    for path in paths {
        let server = client.server(path).await?;
        let read = tokio::try_join!(
            server.server_id(),
            server.name(),
            server.server_uri(),
            server.priority(),
            server.last_session(),
        );
        let (server_id, name, url, priority, last) = match read {
            Ok(r) => r,
            // Removed since Servers was read.
            Err(e) if is_gone(&e) => continue,
            Err(e) => return Err(client.fail(e)),
        };
        let notifications = tokio::try_join!(
            server.ignored_notifications(),
            server.notification_channel()
        );
        let (ignored_notifications, notification_channel) = match notifications {
            Ok(n) => n,
            Err(e) if is_gone(&e) => continue,
            Err(e) => return Err(client.fail(e)),
        };
        let moids = if permitted {
            permitted_moids(client, &server).await?
        } else {
            None
        };
        let info = ServerInfo {
            server_id,
            name,
            url,
            priority,
            last_session: (last != 0).then_some(last),
            ignored_notifications,
            notification_channel,
        };
        out.push((info, moids));
    }
    out.sort_by(|a, b| {
        b.0.priority
            .cmp(&a.0.priority)
            .then_with(|| a.0.server_id.cmp(&b.0.server_id))
    });
    Ok(out)
}

/// `PermittedMoids`, or `None` when omadmd refuses it to this caller.
async fn permitted_moids(
    client: &Client,
    server: &ServerProxy<'_>,
) -> Result<Option<Vec<String>>, Failure> {
    match server.permitted_moids().await {
        Ok(moids) => Ok(Some(moids)),
        Err(e) => {
            let failure = client.fail(e);
            if failure.status == crate::failure::ACCESS_DENIED {
                Ok(None)
            } else {
                Err(failure)
            }
        }
    }
}

/// Whether `e` says the object is no longer there.
fn is_gone(e: &zbus::Error) -> bool {
    let name = match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(e) => zbus::DBusError::name(&**e).to_string(),
        _ => return false,
    };
    name == "org.freedesktop.DBus.Error.UnknownObject"
        || name == "org.freedesktop.DBus.Error.UnknownInterface"
}

/// The servers for `status`: what everyone may see.
pub async fn servers_for_status(client: &Client) -> Result<Vec<ServerInfo>, Failure> {
    Ok(read_servers(client, false)
        .await?
        .into_iter()
        .map(|(info, _)| info)
        .collect())
}

/// `last_session` for text output.
pub fn last_session_text(last: Option<u64>) -> String {
    last.map_or_else(|| "never".to_owned(), utc_time)
}

/// Prints every account: SrvID, URL, priority, permitted MOIDs and last session.
pub async fn list(client: &Client, as_json: bool) -> Result<(), Failure> {
    let rows: Vec<Listed> = read_servers(client, true)
        .await?
        .into_iter()
        .map(|(info, permitted_moids)| Listed {
            info,
            permitted_moids,
        })
        .collect();
    if as_json {
        return emit(&pretty(&rows));
    }
    if rows.is_empty() {
        return emit("No DM accounts (omadmctl account add adds one).\n");
    }
    let mut table = vec![vec![
        "SRVID".to_owned(),
        "URL".to_owned(),
        "PRIORITY".to_owned(),
        "PERMITTED MOIDS".to_owned(),
        "LAST SESSION".to_owned(),
    ]];
    for row in rows {
        let moids = match row.permitted_moids {
            None => "(hidden)".to_owned(),
            Some(m) if m.is_empty() => "-".to_owned(),
            Some(m) => m.join(","),
        };
        table.push(vec![
            row.info.server_id,
            row.info.url,
            row.info.priority.to_string(),
            moids,
            last_session_text(row.info.last_session),
        ]);
    }
    emit(&columns(&table))
}

/// Deletes the account whose SrvID is `server_id` (status 4 when there is none).
pub async fn remove(client: &Client, args: &AccountRemoveArgs) -> Result<(), Failure> {
    const LEAF: &str = "SrvID";
    let nodes = match client.proxy.get(&format!("{DMACC}/*/{LEAF}")).await {
        Ok(nodes) => nodes,
        Err(e) => {
            let failure = client.fail(e);
            // No account at all.
            if failure.status == crate::failure::NOT_FOUND {
                Vec::new()
            } else {
                return Err(failure);
            }
        }
    };
    let instances: Vec<String> = nodes
        .into_iter()
        .filter(|(_, _, value)| matches!(&**value, Variant::Str(s) if s.as_str() == args.server_id))
        .filter_map(|(uri, _, _)| uri.strip_suffix(LEAF).map(str::to_owned))
        .collect();
    if instances.is_empty() {
        // Servers are public; the account itself only to those who may see it.
        let servers = client.proxy.servers().await.map_err(|e| client.fail(e))?;
        let path = servers::path(&args.server_id).map_err(|e| client.fail(e))?;
        if servers.contains(&path) {
            return Err(Failure::access_denied(format!(
                "the DM account {:?} is not yours to remove: that takes uid 0 or the polkit \
                 action org.omadm.client1.manage",
                args.server_id
            )));
        }
        return Err(Failure::new(
            crate::failure::NOT_FOUND,
            format!(
                "no DM account with SrvID {:?} (omadmctl account list shows them)",
                args.server_id
            ),
        ));
    }
    for instance in instances {
        client
            .proxy
            .delete(&instance)
            .await
            .map_err(|e| client.fail(e))?;
    }
    Ok(())
}
