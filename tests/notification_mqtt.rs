//! The MQTT notification channel against a real broker (Debian's `mosquitto`, started by the
//! test on free loopback ports, TLS with a certificate from the devserver's test CA), with
//! `omadm-devserver`'s MQTT publishing as the DM server: the channel on its own (what comes
//! out of it, how it reconnects, what it refuses), and the real `omadmd` on a private session
//! bus, where a notification on the topic starts a session with an in-process devserver.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omadmd::devserver::Certificates;
use omadmd::devserver::mqtt_publish::{MqttTarget, publish};
use omadmd::notification::mqtt::{Mqtt, Settings, State, Status, Subscription, parse_addr};
use omadmd::notification::package0::{self, Credentials, Notification};
use omadmd::notification::{Inbound, Via};
use omadmd::protocol::alert;
use omadmd::session::Tasks;
use tokio::sync::{mpsc, watch};

use crate::omadmctl_cli::TestServer;
use crate::support::mosquitto::Mosquitto;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";

/// How long the waits below may take before the test fails (they end as soon as the awaited
/// state is reached).
const PATIENCE: Duration = Duration::from_secs(30);

fn settings() -> Settings {
    Settings {
        keepalive_s: 60,
        reconnect_max: Duration::from_secs(4),
        extra_ca_files: Vec::new(),
        dev_id: "IMEI:490154203237518".into(),
    }
}

/// Account `srv_id`'s push entry at `url`, logging in as `user`/`secret`, trusting `ca_pem`.
fn push(srv_id: &str, url: &str, user: &str, secret: &str, ca_pem: Option<&str>) -> Subscription {
    let (broker, topic) = parse_addr(url).unwrap();
    Subscription {
        srv_id: srv_id.into(),
        broker,
        topic,
        user: Some(user.into()),
        secret: Some(secret.into()),
        ca_pem: ca_pem.map(str::to_owned),
    }
}

/// The channel under test, on its own runtime.
struct Channel {
    runtime: tokio::runtime::Runtime,
    tasks: Tasks,
    mqtt: Mqtt,
    status: watch::Receiver<Status>,
    inbound: mpsc::Receiver<Inbound>,
}

impl Channel {
    fn start() -> Channel {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (tx, inbound) = mpsc::channel(8);
        let tasks = Tasks::new();
        let mqtt = Mqtt::new(settings(), tx, tasks.clone());
        let status = mqtt.status();
        Channel {
            runtime,
            tasks,
            mqtt,
            status,
            inbound,
        }
    }

    fn apply(&self, subs: Vec<Subscription>) {
        let _entered = self.runtime.enter();
        self.mqtt.apply(subs);
    }

    /// Waits until the channel's state per server is `want`.
    fn wait_for(&mut self, want: &[(&str, State)]) {
        let want: Status = want.iter().map(|(s, st)| (s.to_string(), *st)).collect();
        let status = &mut self.status;
        let reached = self.runtime.block_on(async {
            matches!(
                tokio::time::timeout(PATIENCE, status.wait_for(|s| *s == want)).await,
                Ok(Ok(_))
            )
        });
        assert!(
            reached,
            "the state never became {want:?}; it is {:?}",
            *self.status.borrow()
        );
    }

    /// Publishes `payload` at `url` as `user` and waits for it to come out of the channel.
    fn round_trip(&mut self, broker: &Mosquitto, url: &str, payload: &[u8]) {
        let target = MqttTarget {
            url: url.into(),
            user: Some("server".into()),
            password: Some("server-pw".into()),
            ca_pem: Some(broker.ca_pem.clone()),
        };
        let inbound = &mut self.inbound;
        let got = self.runtime.block_on(async {
            publish(&target, payload.to_vec())
                .await
                .expect("the devserver publishes");
            tokio::time::timeout(PATIENCE, inbound.recv()).await
        });
        assert_eq!(
            got,
            Ok(Some(Inbound {
                payload: payload.to_vec(),
                via: Via::Mqtt
            })),
            "broker log: {}",
            broker.log()
        );
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let tasks = self.tasks.clone();
        self.runtime.block_on(async move {
            tasks
                .shutdown(Duration::from_secs(1), Duration::from_secs(1))
                .await
        });
    }
}

/// Connections the broker accepted from omadmd's channel (its client ids start `omadmd`).
fn omadmd_connections(broker: &Mosquitto) -> usize {
    broker
        .log()
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(" as omadmd"))
        .count()
}

#[test]
fn messages_reach_the_verifier_across_broker_restarts_and_network_moves() {
    let mut broker = Mosquitto::start(&[("dev", "dev-pw"), ("server", "server-pw")]);
    let mut channel = Channel::start();
    let tls_a = broker.url(true, "omadm/dev-1/a");
    let tls_b = broker.url(true, "omadm/dev-1/b");
    let plain = broker.url(false, "omadm/dev-1/c");
    let ca = broker.ca_pem.clone();
    channel.apply(vec![
        push("a", &tls_a, "dev", "dev-pw", Some(&ca)),
        push("b", &tls_b, "dev", "dev-pw", Some(&ca)),
        push("c", &plain, "dev", "dev-pw", None),
    ]);
    channel.wait_for(&[
        ("a", State::Connected),
        ("b", State::Connected),
        ("c", State::Connected),
    ]);
    // One connection per (broker, user): a and b share the TLS one.
    assert_eq!(omadmd_connections(&broker), 2, "{}", broker.log());
    channel.round_trip(&broker, &tls_a, b"package0 for a");
    channel.round_trip(&broker, &tls_b, b"package0 for b");
    channel.round_trip(&broker, &plain, b"package0 for c");

    // The broker restarts: the channel notices, says so, and comes back by itself.
    broker.stop();
    channel.wait_for(&[
        ("a", State::Connecting),
        ("b", State::Connecting),
        ("c", State::Connecting),
    ]);
    broker.run();
    channel.wait_for(&[
        ("a", State::Connected),
        ("b", State::Connected),
        ("c", State::Connected),
    ]);
    channel.round_trip(&broker, &tls_a, b"after the restart");

    // A network move: every connection is made anew at once.
    let before = omadmd_connections(&broker);
    channel.mqtt.reconnect_all();
    assert!(
        wait_until(PATIENCE, || omadmd_connections(&broker) == before + 2),
        "{}",
        broker.log()
    );
    channel.wait_for(&[
        ("a", State::Connected),
        ("b", State::Connected),
        ("c", State::Connected),
    ]);
    channel.round_trip(&broker, &plain, b"after the move");

    // Account b goes: the shared connection is made anew for a alone; c's is left alone.
    let before = omadmd_connections(&broker);
    channel.apply(vec![
        push("a", &tls_a, "dev", "dev-pw", Some(&ca)),
        push("c", &plain, "dev", "dev-pw", None),
    ]);
    channel.wait_for(&[("a", State::Connected), ("c", State::Connected)]);
    assert!(
        wait_until(PATIENCE, || omadmd_connections(&broker) == before + 1),
        "{}",
        broker.log()
    );
    channel.round_trip(&broker, &tls_a, b"a still hears");
    channel.apply(Vec::new());
    channel.wait_for(&[]);
}

#[test]
fn wrong_credentials_and_an_untrusted_broker_keep_trying_and_stay_connecting() {
    let broker = Mosquitto::start(&[("dev", "dev-pw")]);
    let mut channel = Channel::start();
    let other_ca_dir = tempfile::tempdir().unwrap();
    let other_ca = Certificates::ensure(other_ca_dir.path(), &[])
        .unwrap()
        .ca_pem;
    channel.apply(vec![
        push("wrong-pw", &broker.url(false, "t/1"), "dev", "nope", None),
        // A CA that did not issue the broker's certificate.
        push(
            "untrusted",
            &broker.url(true, "t/2"),
            "dev",
            "dev-pw",
            Some(&other_ca),
        ),
        // No Ext/CACert: the system roots, which do not know the test CA either.
        push("no-ca", &broker.url(true, "t/3"), "other", "dev-pw", None),
    ]);
    channel.wait_for(&[
        ("no-ca", State::Connecting),
        ("untrusted", State::Connecting),
        ("wrong-pw", State::Connecting),
    ]);
    // Tried again (with backoff), refused each time.
    let refusals = |what: &str| broker.log().matches(what).count();
    assert!(
        wait_until(PATIENCE, || refusals("not authorised") >= 2
            && refusals("unknown ca") >= 4),
        "{}",
        broker.log()
    );
    assert_eq!(omadmd_connections(&broker), 0, "{}", broker.log());
    assert!(
        channel
            .status
            .borrow()
            .values()
            .all(|s| *s == State::Connecting)
    );
}

/// The account's `Auth/Noti/Secret` (its MO serialization holds the base64: `czNjcmV0`).
const NOTI_SECRET: &[u8] = b"s3cret";

/// A signed Package#0 from `srv_id` with NOTIFICATION-ID `id`, stamped now.
fn package0(srv_id: &str, id: u16) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let notification = Notification {
        notification_id: Some(id),
        timestamp: Some(now),
        ..Notification::new(srv_id)
    };
    let credentials = Credentials {
        secret: NOTI_SECRET,
        data: b"",
    };
    package0::build(&notification, Some(credentials)).unwrap()
}

/// `NotificationChannel` of server `srv_id`'s object, as busctl prints it (`s "..."`).
fn channel_of(bus: &SessionBus, srv_id: &str) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", bus.address()))
        .args([
            "get-property",
            "org.omadm.Client1",
            &format!("/org/omadm/Client1/server/{srv_id}"),
            "org.omadm.Client1.Server",
            "NotificationChannel",
        ])
        .output()
        .expect("busctl runs");
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_for_channel(bus: &SessionBus, dir: &Path, srv_id: &str, want: &str) {
    let want = format!("s \"{want}\"");
    assert!(
        wait_until(PATIENCE, || channel_of(bus, srv_id) == want),
        "NotificationChannel stayed {}, not {want}: {}",
        channel_of(bus, srv_id),
        daemon_log(dir)
    );
}

/// Lines of the daemon's log that say `what`.
fn logged(dir: &Path, what: &str) -> usize {
    daemon_log(dir).lines().filter(|l| l.contains(what)).count()
}

#[test]
fn a_notification_on_the_accounts_topic_starts_a_session() {
    let mut broker = Mosquitto::start(&[("dev", "dev-pw"), ("server", "server-pw")]);
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let srv = TestServer::start(None);
    let topic = broker.url(true, "omadm/dev-1");
    // Ext/CACert holds two CAs: the DM server's and the broker's.
    let both_cas = format!("{}{}", srv.server.ca_pem(), broker.ca_pem);
    let mut account: serde_json::Value =
        serde_json::from_str(&srv.account("mq", &both_cas, 0)).unwrap();
    account["DMAcc"]["Auth"] = serde_json::json!({"Noti": {"Secret": "czNjcmV0"}});
    account["DMAcc"]["Push"] = serde_json::json!(
        {"m": {"Type": "mqtt", "Addr": topic, "User": "dev", "Secret": "dev-pw"}});
    let out = bus.run(&["create", DMACC, &account.to_string()]);
    assert!(out.status.success(), "{}", show(&out));
    let instance = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(instance.starts_with(DMACC), "{instance}");
    wait_for_channel(&bus, dir.path(), "mq", "mqtt:connected");

    let target = MqttTarget {
        url: topic.clone(),
        user: Some("server".into()),
        password: Some("server-pw".into()),
        ca_pem: Some(broker.ca_pem.clone()),
    };
    let send = |id: u16| {
        srv.runtime
            .block_on(publish(&target, package0("mq", id)))
            .expect("the devserver publishes");
    };
    send(1);
    srv.wait_for_sessions(1);
    // The account's first session carries BootstrapComplete whatever started it; the log
    // says the notification did, over MQTT.
    let results = srv.server.results();
    assert!(results[0].passed(), "{:?}", results[0]);
    let accepted = |id: u16| {
        daemon_log(dir.path()).lines().any(|l| {
            l.contains(&format!("notification {id} accepted: session")) && l.contains("mqtt")
        })
    };
    assert!(accepted(1), "{}", daemon_log(dir.path()));

    // The broker restarts: the channel says so, comes back, and the next notification works.
    broker.stop();
    wait_for_channel(&bus, dir.path(), "mq", "mqtt:connecting");
    broker.run();
    wait_for_channel(&bus, dir.path(), "mq", "mqtt:connected");
    send(2);
    srv.wait_for_sessions(2);
    assert_eq!(
        srv.server.results()[1].reason.as_deref(),
        Some(alert::SERVER_INITIATED)
    );
    assert!(accepted(2), "{}", daemon_log(dir.path()));

    // Wrong broker credentials: refused, logged, tried again, and still connecting.
    let node = |path: &str| format!("{}/{path}", instance.trim_end_matches('/'));
    let secret = node("Push/m/Secret");
    let out = bus.run(&["set", &secret, "wrong"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(PATIENCE, || logged(
            dir.path(),
            "refused the connection: not authorized"
        ) >= 2),
        "{}",
        daemon_log(dir.path())
    );
    wait_for_channel(&bus, dir.path(), "mq", "mqtt:connecting");

    // Right credentials, but Ext/CACert no longer holds the broker's CA: the broker is not
    // trusted, which is logged, and the channel stays connecting.
    let out = bus.run(&["set", &secret, "dev-pw"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = bus.run(&["set", &node("Ext/CACert"), srv.server.ca_pem()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(PATIENCE, || logged(dir.path(), "invalid peer certificate")
            >= 2),
        "{}",
        daemon_log(dir.path())
    );
    wait_for_channel(&bus, dir.path(), "mq", "mqtt:connecting");
    assert_eq!(srv.server.results().len(), 2);
}

#[test]
fn devserver_notify_publishes_a_package0_on_the_topic() {
    let broker = Mosquitto::start(&[("dev", "dev-pw"), ("server", "server-pw")]);
    let mut channel = Channel::start();
    let url = broker.url(true, "omadm/dev-2");
    channel.apply(vec![push(
        "srv",
        &url,
        "dev",
        "dev-pw",
        Some(&broker.ca_pem),
    )]);
    channel.wait_for(&[("srv", State::Connected)]);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("broker-ca.pem");
    std::fs::write(&ca_file, &broker.ca_pem).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_omadm-devserver"))
        .args(["notify", "--mqtt", &url, "--mqtt-user", "server"])
        .args(["--mqtt-password", "server-pw", "--mqtt-ca"])
        .arg(&ca_file)
        .args(["--server-id", "srv", "--id", "9", "--secret", "s3cret"])
        .output()
        .expect("omadm-devserver runs");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("Package#0 for \"srv\" on {url}")),
        "{}",
        show(&out)
    );
    let inbound = &mut channel.inbound;
    let got = channel
        .runtime
        .block_on(async { tokio::time::timeout(PATIENCE, inbound.recv()).await })
        .expect("a message")
        .expect("the channel is open");
    assert_eq!(got.via, Via::Mqtt);
    let p = package0::Package0::parse(&got.payload).unwrap();
    assert!(p.digest_matches(Credentials {
        secret: NOTI_SECRET,
        data: b""
    }));
    assert_eq!(
        (
            p.notification.server_id.as_str(),
            p.notification.notification_id
        ),
        ("srv", Some(9))
    );

    // A broker that refuses the server: the command fails and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_omadm-devserver"))
        .args(["notify", "--mqtt", &broker.url(false, "t")])
        .args(["--mqtt-user", "server", "--mqtt-password", "wrong"])
        .args(["--server-id", "srv"])
        .output()
        .expect("omadm-devserver runs");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MQTT publish to mqtt://127.0.0.1") && stderr.contains("refused"),
        "{stderr}"
    );
}
