//! A real LwM2M 1.1 client that is not ours, for the gateway's tests: `lwm2m_client.py`
//! (beside this file) on aiocoap's CoAP stack, run as a child process. It registers with the
//! server it is given, from the UDP socket it serves requests on, serves Read, Write,
//! Execute, Observe, Write-Attributes and Discover on objects 3 and 3303, takes commands
//! on stdin (`{"cmd": "set", ...}`, `update`, `deregister`, `vanish`, ...) and reports
//! events on stdout, one JSON object a line: the script's docstring lists them.
//! `lwm2m_client_selftest.py` proves the script against a stand-in server; the tests below
//! run it, and drive the wrapper against a few raw CoAP datagrams.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value as J;

use super::sysbus::KillOnDrop;

/// What installs aiocoap (`.ci/run` does).
pub const INSTALL: &str = "python3 -m pip install --break-system-packages aiocoap==0.4.14";

/// How long the script may take to bind its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the client is started.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// The LwM2M server, `coap://HOST:PORT` (`coap://[::1]:PORT` for IPv6).
    pub server: String,
    /// The client's own `HOST:PORT`; `None`: loopback of the server's family, a free port.
    pub bind: Option<String>,
    /// The endpoint name (`ep`).
    pub endpoint: String,
    /// The registration lifetime (`lt`), seconds; the client updates at 80 % of it.
    pub lifetime: u32,
    /// The binding it registers with.
    pub binding: Binding,
    /// What Reads without an Accept option are answered in.
    pub format: Format,
    /// Answer `4.06` to an Accept of TLV (the default format is then SenML JSON).
    pub refuse_tlv: bool,
    /// The objects the client has, each with instance 0: 3 (Device), 3303 (Temperature).
    pub objects: Vec<u16>,
    /// Register at start (else on a `{"cmd": "register"}`).
    pub register: bool,
}

/// The binding the client registers with (`b=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `U`.
    Udp,
    /// `UQ`: UDP in queue mode.
    UdpQueue,
}

/// A Read payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OMA TLV, content-format 11542.
    Tlv,
    /// SenML JSON, content-format 110.
    Senml,
}

impl ClientOpts {
    /// Endpoint `endpoint` registering with `server` for 60 s, binding `U`, answering in
    /// TLV, with objects 3 and 3303.
    pub fn new(server: &str, endpoint: &str) -> ClientOpts {
        ClientOpts {
            server: server.to_owned(),
            bind: None,
            endpoint: endpoint.to_owned(),
            lifetime: 60,
            binding: Binding::Udp,
            format: Format::Tlv,
            refuse_tlv: false,
            objects: vec![3, 3303],
            register: true,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--server".to_owned(),
            self.server.clone(),
            "--ep".to_owned(),
            self.endpoint.clone(),
            "--lifetime".to_owned(),
            self.lifetime.to_string(),
            "--binding".to_owned(),
            match self.binding {
                Binding::Udp => "U",
                Binding::UdpQueue => "UQ",
            }
            .to_owned(),
            "--objects".to_owned(),
            self.objects
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ];
        if let Some(bind) = &self.bind {
            args.extend(["--bind".to_owned(), bind.clone()]);
        }
        if self.refuse_tlv {
            args.push("--refuse-tlv".to_owned());
        } else {
            let format = match self.format {
                Format::Tlv => "tlv",
                Format::Senml => "senml",
            };
            args.extend(["--format".to_owned(), format.to_owned()]);
        }
        if !self.register {
            args.push("--no-register".to_owned());
        }
        args
    }
}

/// A running client; killed on drop.
pub struct Lwm2mClient {
    child: KillOnDrop,
    stdin: ChildStdin,
    lines: Receiver<J>,
    /// Events received but not yet returned by [`Lwm2mClient::wait_for`].
    pending: VecDeque<J>,
    seen: Vec<J>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
    /// The UDP port the client serves on and registers from.
    pub port: u16,
}

impl Lwm2mClient {
    /// Starts the client and waits until its socket is bound (the `ready` event). Panics,
    /// naming the pip command, when aiocoap is not installed.
    pub fn spawn(opts: &ClientOpts) -> Lwm2mClient {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("lwm2m_client.stderr");
        let mut child = KillOnDrop(
            Command::new("python3")
                .arg(script("lwm2m_client.py"))
                .args(opts.args())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr).expect("stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start python3: {e}")),
        );
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"ev": "not_json", "line": line}));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut client = Lwm2mClient {
            child,
            stdin,
            lines,
            pending: VecDeque::new(),
            seen: Vec::new(),
            stderr,
            _dir: dir,
            port: 0,
        };
        let ready = client.wait_for("ready", READY_TIMEOUT);
        client.port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("ready without a port: {ready}"));
        client
    }

    /// Sends one command (`{"cmd": "set", "path": "/3303/0/5700", "value": 23.0}`).
    pub fn send(&mut self, cmd: J) {
        let line = format!("{cmd}\n");
        if let Err(e) = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
        {
            panic!(
                "cannot send {cmd} to the LwM2M client: {e}\n{}",
                self.report()
            );
        }
    }

    /// The next event named `ev` not returned before, waiting up to `timeout` for it;
    /// other events are kept for later calls and [`Lwm2mClient::events`]. Panics on
    /// timeout, when the client exits, and on an `error` event (a command it did not take).
    pub fn wait_for(&mut self, ev: &str, timeout: Duration) -> J {
        if let Some(i) = self.pending.iter().position(|e| e["ev"] == ev) {
            return self.pending.remove(i).expect("the position is in range");
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if event["ev"] == ev {
                        return event;
                    }
                    if event["ev"] == "error" {
                        panic!(
                            "the LwM2M client refused a command: {event}\n{}",
                            self.report()
                        );
                    }
                    self.pending.push_back(event);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {ev} event within {timeout:?}\n{}", self.report())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait for the client");
                    if status.code() == Some(3) {
                        panic!("aiocoap is missing: {INSTALL} (.ci/run installs it)");
                    }
                    panic!(
                        "the LwM2M client exited ({status}) before a {ev} event\n{}",
                        self.report()
                    );
                }
            }
        }
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> &[J] {
        &self.seen
    }

    /// The events so far and the client's stderr, for panic messages.
    fn report(&self) -> String {
        let events: Vec<String> = self.seen.iter().map(J::to_string).collect();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("events:\n{}\nstderr:\n{stderr}", events.join("\n"))
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use serde_json::json;

    use super::{Binding, ClientOpts, Format, Lwm2mClient, script};

    const BOUND: Duration = Duration::from_secs(15);

    /// The Python self-test: a stand-in LwM2M server on aiocoap drives the client through
    /// every operation.
    #[test]
    fn lwm2m_client_selftest_passes() {
        let out = std::process::Command::new("python3")
            .arg(script("lwm2m_client_selftest.py"))
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{}", super::super::sysbus::show(&out));
    }

    /// The wrapper against a server of raw CoAP datagrams: Register (queue mode) from the
    /// serving port, a Read without Accept answered in SenML JSON, De-register.
    #[test]
    fn wrapper_registers_reads_and_deregisters() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        server.set_read_timeout(Some(BOUND)).expect("timeout");
        let port = server.local_addr().expect("address").port();
        let mut opts = ClientOpts::new(&format!("coap://127.0.0.1:{port}"), "wrapper-1");
        opts.objects = vec![3303];
        opts.binding = Binding::UdpQueue;
        opts.format = Format::Senml;
        let mut client = Lwm2mClient::spawn(&opts);

        let (register, from) = receive(&server);
        assert_eq!(from.port(), client.port, "Register from the serving port");
        assert_eq!(
            (register.code, register.paths()),
            (0x02, vec!["rd".to_owned()])
        );
        assert!(register.queries().contains(&"b=UQ".to_owned()));
        server
            .send_to(&register.answer(0x41, &[(8, b"rd"), (8, b"w1")], b""), from)
            .expect("send");
        assert_eq!(client.wait_for("registered", BOUND)["location"], "/rd/w1");

        let get = Coap {
            kind: 0,
            code: 0x01,
            mid: 0x7001,
            token: vec![7],
            options: vec![
                (11, b"3303".to_vec()),
                (11, b"0".to_vec()),
                (11, b"5700".to_vec()),
            ],
            payload: vec![],
        };
        server.send_to(&get.encode(), from).expect("send");
        let (answer, _) = receive(&server);
        assert_eq!((answer.kind, answer.code, answer.mid), (2, 0x45, 0x7001));
        let records: serde_json::Value = serde_json::from_slice(&answer.payload).expect("JSON");
        assert_eq!(records, json!([{"bn": "/3303/0/", "n": "5700", "v": 21.5}]));
        let read = client.wait_for("read", BOUND);
        assert_eq!(
            read,
            json!({"ev": "read", "path": "/3303/0/5700", "format": "senml"})
        );

        client.send(json!({"cmd": "deregister"}));
        let (delete, from) = receive(&server);
        assert_eq!(
            (delete.code, delete.paths()),
            (0x04, vec!["rd".to_owned(), "w1".to_owned()])
        );
        server
            .send_to(&delete.answer(0x42, &[], b""), from)
            .expect("send");
        client.wait_for("deregistered", BOUND);
        let names: Vec<&str> = client
            .events()
            .iter()
            .filter_map(|e| e["ev"].as_str())
            .collect();
        assert_eq!(names, ["ready", "registered", "read", "deregistered"]);
    }

    fn receive(socket: &UdpSocket) -> (Coap, std::net::SocketAddr) {
        let mut buf = [0; 2048];
        let (n, from) = socket
            .recv_from(&mut buf)
            .expect("a datagram from the client");
        (Coap::decode(&buf[..n]), from)
    }

    /// A CoAP message (RFC 7252 §3), just enough for the test.
    struct Coap {
        kind: u8,
        code: u8,
        mid: u16,
        token: Vec<u8>,
        options: Vec<(u16, Vec<u8>)>,
        payload: Vec<u8>,
    }

    impl Coap {
        fn decode(b: &[u8]) -> Coap {
            let tkl = usize::from(b[0] & 0x0f);
            let mut m = Coap {
                kind: (b[0] >> 4) & 3,
                code: b[1],
                mid: u16::from_be_bytes([b[2], b[3]]),
                token: b[4..4 + tkl].to_vec(),
                options: vec![],
                payload: vec![],
            };
            let (mut i, mut number) = (4 + tkl, 0u16);
            while i < b.len() {
                if b[i] == 0xff {
                    m.payload = b[i + 1..].to_vec();
                    break;
                }
                let (mut delta, mut len) = (u16::from(b[i] >> 4), usize::from(b[i] & 0x0f));
                i += 1;
                // Extended deltas and lengths: 13 adds one byte, 14 two.
                match delta {
                    13 => (delta, i) = (u16::from(b[i]) + 13, i + 1),
                    14 => (delta, i) = (u16::from_be_bytes([b[i], b[i + 1]]) + 269, i + 2),
                    _ => {}
                }
                match len {
                    13 => (len, i) = (usize::from(b[i]) + 13, i + 1),
                    14 => {
                        (len, i) = (
                            usize::from(u16::from_be_bytes([b[i], b[i + 1]])) + 269,
                            i + 2,
                        )
                    }
                    _ => {}
                }
                number += delta;
                m.options.push((number, b[i..i + len].to_vec()));
                i += len;
            }
            m
        }

        fn encode(&self) -> Vec<u8> {
            let tkl = u8::try_from(self.token.len()).expect("a short token");
            let mut out = vec![0x40 | self.kind << 4 | tkl, self.code];
            out.extend(self.mid.to_be_bytes());
            out.extend(&self.token);
            let mut last = 0;
            for (number, value) in &self.options {
                // The test's options are short and their numbers close: one-nibble forms.
                let delta = u8::try_from(number - last).expect("a small delta");
                let len = u8::try_from(value.len()).expect("a short value");
                assert!(delta < 13 && len < 13, "only short options here");
                out.push(delta << 4 | len);
                out.extend(value);
                last = *number;
            }
            if !self.payload.is_empty() {
                out.push(0xff);
                out.extend(&self.payload);
            }
            out
        }

        /// The Uri-Path segments.
        fn paths(&self) -> Vec<String> {
            self.strings(11)
        }

        /// The Uri-Query items.
        fn queries(&self) -> Vec<String> {
            self.strings(15)
        }

        fn strings(&self, option: u16) -> Vec<String> {
            self.options
                .iter()
                .filter(|(n, _)| *n == option)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect()
        }

        /// The piggybacked answer (an ACK with this message id and token).
        fn answer(&self, code: u8, options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
            Coap {
                kind: 2,
                code,
                mid: self.mid,
                token: self.token.clone(),
                options: options.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
                payload: payload.to_vec(),
            }
            .encode()
        }
    }
}
