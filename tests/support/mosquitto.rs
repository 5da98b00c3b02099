//! A real MQTT broker for one test: Debian's `mosquitto` on two free loopback ports — a plain
//! listener and a TLS one with a certificate from `omadm-devserver`'s test CA — requiring a
//! user name and password, logging everything to a file the test can read.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use omadmd::devserver::Certificates;

use super::sysbus::{KillOnDrop, wait_until};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A running broker. Dropping it stops the broker.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    child: Option<KillOnDrop>,
    /// The plain listener's port (`mqtt://`).
    pub port: u16,
    /// The TLS listener's port (`mqtts://`).
    pub tls_port: u16,
    /// The CA that issued the TLS listener's certificate (for `127.0.0.1`).
    pub ca_pem: String,
}

impl Mosquitto {
    /// Starts a broker that lets in `users` (name, password) and nobody else.
    pub fn start(users: &[(&str, &str)]) -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: apt-get install mosquitto (.ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let certs = Certificates::ensure(&dir.path().join("certs"), &[]).expect("certificates");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (user, password) in users {
            let out = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .output()
                .expect("mosquitto_passwd runs");
            assert!(out.status.success(), "mosquitto_passwd: {out:?}");
        }
        let (port, tls_port) = (free_port(), free_port());
        let config = format!(
            "per_listener_settings false\n\
             allow_anonymous false\n\
             password_file {passwd}\n\
             persistence false\n\
             user root\n\
             log_dest file {log}\n\
             log_type all\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\n\
             certfile {cert}\n\
             keyfile {key}\n",
            passwd = passwd.display(),
            log = dir.path().join("mosquitto.log").display(),
            cert = certs.server_cert_path.display(),
            key = certs.server_key_path.display(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut broker = Mosquitto {
            dir,
            child: None,
            port,
            tls_port,
            ca_pem: certs.ca_pem,
        };
        broker.run();
        broker
    }

    /// `mqtt://127.0.0.1:<port>/<topic>`, or `mqtts://` on the TLS port.
    pub fn url(&self, tls: bool, topic: &str) -> String {
        if tls {
            format!("mqtts://127.0.0.1:{}/{topic}", self.tls_port)
        } else {
            format!("mqtt://127.0.0.1:{}/{topic}", self.port)
        }
    }

    /// Stops the broker (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal("-TERM", Duration::from_secs(10));
        }
    }

    /// Starts the stopped broker again on the same ports.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "the broker runs already");
        let mut child = KillOnDrop::spawn(
            Command::new(MOSQUITTO)
                .arg("-c")
                .arg(self.dir.path().join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let up = wait_until(Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.tls_port)).is_ok()
        });
        assert!(up, "mosquitto did not listen: {}", self.log());
        self.child = Some(child);
    }

    /// What the broker has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
