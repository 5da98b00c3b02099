//! `omadm-devserver notify`: a DM notification (Package#0, PROTOCOL.md §5) built from
//! account-ish parameters with the client's own codec ([`package0::build`]) and sent as one
//! UDP datagram to omadmd's `[notification.udp] listen` address.
//!
//! The digest is made with `--secret` and `--data` (the account's `Auth/Noti/Secret` and
//! `Auth/Noti/Data`, as bytes: the text given; in an MO serialization those `bin` nodes hold
//! the base64 of the same bytes). A wrong secret makes a forged notification.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

use super::error::DevServerError;
use super::mqtt_publish::{self, MqttArgs};
use crate::notification::package0::{self, ConType, Credentials, Notification};

/// When the notification says it was sent (TIMESTAMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The current time.
    Now,
    /// No TIMESTAMP option.
    Omitted,
    /// These POSIX seconds.
    At(u64),
}

impl std::str::FromStr for Stamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Stamp, String> {
        match s {
            "now" => Ok(Stamp::Now),
            "none" => Ok(Stamp::Omitted),
            n => n
                .parse()
                .map(Stamp::At)
                .map_err(|_| format!("{s:?}: give now, none or POSIX seconds")),
        }
    }
}

/// What `omadm-devserver notify` sends, and where.
#[derive(clap::Args, Clone, Debug)]
pub struct NotifyArgs {
    /// SERVER-ID: the SrvID of the DM account the notification is for.
    #[arg(long, value_name = "SRVID")]
    pub server_id: String,

    /// Send the notification as one UDP datagram to HOST:PORT (omadmd's [notification.udp]
    /// listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub udp: Option<String>,

    /// NOTIFICATION-ID (0 to 65535); none when not given.
    #[arg(long = "id", value_name = "N")]
    pub notification_id: Option<u16>,

    /// Sign with this secret (the account's Auth/Noti/Secret, as bytes of the text); no
    /// digest when not given.
    #[arg(long, value_name = "TEXT")]
    pub secret: Option<String>,

    /// The authentication data of the digest (the account's Auth/Noti/Data; empty when not
    /// given).
    #[arg(long, value_name = "TEXT", requires = "secret")]
    pub data: Option<String>,

    /// TIMESTAMP: now, none, or POSIX seconds.
    #[arg(long, value_name = "WHEN", default_value = "now")]
    pub timestamp: Stamp,

    /// REQ-MOS: ask for the MO list in Package#1.
    #[arg(long)]
    pub req_mos: bool,

    /// PREFERRED-CON-TYPE: any, cellular, wlan or wireline (or 0 to 3).
    #[arg(long, value_name = "TYPE", default_value = "any")]
    pub con_type: ConType,

    #[command(flatten)]
    pub mqtt: MqttArgs,
}

impl NotifyArgs {
    /// The Package#0 these arguments describe.
    pub fn package0(&self) -> Result<Vec<u8>, DevServerError> {
        let timestamp = match self.timestamp {
            Stamp::Now => Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            Stamp::Omitted => None,
            Stamp::At(t) => Some(t),
        };
        let notification = Notification {
            con_type: self.con_type,
            notification_id: self.notification_id,
            timestamp,
            req_mos: self.req_mos,
            ..Notification::new(&self.server_id)
        };
        let credentials = self.secret.as_ref().map(|secret| Credentials {
            secret: secret.as_bytes(),
            data: self.data.as_deref().unwrap_or_default().as_bytes(),
        });
        package0::build(&notification, credentials)
            .map_err(|e| DevServerError::Config(format!("notification: {e}")))
    }
}

/// Sends `payload` as one UDP datagram to `to` (`host:port`).
pub async fn send_udp(payload: &[u8], to: &str) -> Result<(), DevServerError> {
    let fail = |source| DevServerError::Udp {
        to: to.to_owned(),
        source,
    };
    let target = tokio::net::lookup_host(to)
        .await
        .map_err(fail)?
        .next()
        .ok_or_else(|| fail(std::io::Error::other("the name has no address")))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).await.map_err(fail)?;
    let sent = socket.send_to(payload, target).await.map_err(fail)?;
    if sent != payload.len() {
        return Err(fail(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            payload.len()
        ))));
    }
    Ok(())
}

/// `omadm-devserver notify`: builds the notification and sends it; prints what was sent.
pub async fn run(args: &NotifyArgs) -> Result<(), DevServerError> {
    let payload = args.package0()?;
    let mqtt = args.mqtt.target()?;
    if args.udp.is_none() && mqtt.is_none() {
        return Err(DevServerError::Config(
            "notify: say where to send it (--udp HOST:PORT or --mqtt URL)".into(),
        ));
    }
    if let Some(to) = &args.udp {
        send_udp(&payload, to).await?;
        println!(
            "sent a {}-byte Package#0 for {:?} to udp {to}",
            payload.len(),
            args.server_id
        );
    }
    if let Some(target) = mqtt {
        mqtt_publish::publish(&target, payload.clone()).await?;
        println!(
            "published a {}-byte Package#0 for {:?} on {}",
            payload.len(),
            args.server_id,
            target.url
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::package0::Package0;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: NotifyArgs,
    }

    fn args(line: &[&str]) -> NotifyArgs {
        Wrap::try_parse_from(std::iter::once("notify").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn builds_what_the_arguments_say() {
        let a = args(&[
            "--server-id",
            "srv",
            "--id",
            "42",
            "--secret",
            "s3cret",
            "--data",
            "d",
            "--timestamp",
            "1700000000",
            "--req-mos",
            "--con-type",
            "wlan",
        ]);
        let p = Package0::parse(&a.package0().unwrap()).unwrap();
        assert!(p.digest_matches(Credentials {
            secret: b"s3cret",
            data: b"d"
        }));
        let n = p.notification;
        assert_eq!(
            (n.server_id.as_str(), n.notification_id, n.timestamp),
            ("srv", Some(42), Some(1_700_000_000))
        );
        assert!(n.req_mos);
        assert_eq!(n.con_type, ConType::Wlan);

        let plain = args(&["--server-id", "srv", "--timestamp", "none"]);
        let n = Package0::parse(&plain.package0().unwrap())
            .unwrap()
            .notification;
        assert_eq!(n, Notification::new("srv"));
        let now = Package0::parse(&args(&["--server-id", "s"]).package0().unwrap())
            .unwrap()
            .notification;
        assert!(now.timestamp.unwrap() > 1_700_000_000);
        assert!(
            Wrap::try_parse_from(["notify", "--server-id", "s", "--timestamp", "soon"]).is_err()
        );
        assert!(Wrap::try_parse_from(["notify", "--server-id", "s", "--data", "d"]).is_err());
    }

    #[tokio::test]
    async fn sends_one_datagram() {
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap().to_string();
        send_udp(b"\x10\x80\x11a", &to).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = listener.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\x10\x80\x11a");
        let err = send_udp(b"x", "no port").await.unwrap_err();
        assert!(
            err.to_string().starts_with("UDP send to no port: "),
            "{err}"
        );
    }
}
