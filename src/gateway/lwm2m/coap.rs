//! CoAP message layer on one UDP socket (RFC 7252 §4, Observe RFC 7641 §3–§4): omadmd is
//! both the server LwM2M clients register with and the client that sends them Read, Write,
//! Execute and Observe — from the same address and port, as LwM2M requires (a child's NAT
//! binding is for that pair).
//!
//! What it owns: message ids and tokens; confirmable requests retransmitted with RFC 7252's
//! backoff until acknowledged or their deadline; piggybacked and separate responses matched
//! to their request; duplicate requests answered again with the answer already given
//! (without running them twice); Observe notifications handed on, acknowledged, and
//! refused with a Reset when nobody observes their token any more. The meaning of requests
//! and payloads is the adapter's ([`super::adapter`]).
//!
//! Bounds: datagrams beyond [`MAX_DATAGRAM`] are dropped, at most [`MAX_IN_FLIGHT`] requests
//! wait for answers, and [`REMEMBERED`] answers are kept for duplicates.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use coap_lite::{MessageClass, MessageType, Packet};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::gateway::lock;

/// Largest datagram read; a longer one is dropped (LwM2M payloads go in blocks beyond).
pub const MAX_DATAGRAM: usize = 4096;
/// Most requests of ours waiting for an answer at once.
pub const MAX_IN_FLIGHT: usize = 1024;
/// How many answers to requests are kept to answer their duplicates.
pub const REMEMBERED: usize = 256;
/// RFC 7252's ACK_TIMEOUT: the first wait for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7252's MAX_RETRANSMIT.
const MAX_RETRANSMIT: u32 = 4;

/// What arrives for the adapter.
#[derive(Debug)]
pub enum Incoming {
    /// A request from a child (Register, Update, De-register, Send), to be answered with
    /// [`Endpoint::respond`].
    Request { peer: SocketAddr, packet: Packet },
    /// A notification of an observation made with [`Endpoint::observe`] (already
    /// acknowledged).
    Notification { peer: SocketAddr, packet: Packet },
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoapError {
    #[error("no answer in time")]
    Timeout,
    #[error("the device refused the message (CoAP Reset)")]
    Reset,
    #[error("too many requests wait for answers")]
    Busy,
    #[error("cannot send to {peer}: {message}")]
    Send { peer: SocketAddr, message: String },
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

/// The socket and the exchanges under way on it.
#[derive(Debug)]
pub struct Endpoint {
    socket: UdpSocket,
    next_mid: AtomicU16,
    /// Our requests waiting for an answer, by peer and token.
    waiting: Mutex<HashMap<(SocketAddr, Vec<u8>), Waiter>>,
    /// Tokens of our observations, by peer: their notifications go to the adapter.
    observing: Mutex<HashMap<(SocketAddr, Vec<u8>), ()>>,
    /// Answers given to confirmable requests, for their duplicates, oldest first.
    answered: Mutex<VecDeque<Answered>>,
}

/// An answer given: to whom, for which message id, and its bytes.
type Answered = ((SocketAddr, u16), Vec<u8>);

#[derive(Debug)]
struct Waiter {
    mid: u16,
    events: mpsc::Sender<Event>,
}

#[derive(Debug)]
enum Event {
    Acked,
    Answer(Packet),
    Reset,
}

impl Endpoint {
    /// The endpoint on `socket`.
    pub fn new(socket: UdpSocket) -> Endpoint {
        Endpoint {
            socket,
            next_mid: AtomicU16::new(random_u16()),
            waiting: Mutex::default(),
            observing: Mutex::default(),
            answered: Mutex::default(),
        }
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Reads datagrams until `stop` resolves, handing requests and notifications to
    /// `incoming` and answers to the requests waiting for them.
    pub async fn run(&self, incoming: mpsc::Sender<Incoming>, stop: impl Future<Output = ()>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        tokio::pin!(stop);
        loop {
            let (n, peer) = tokio::select! {
                () = &mut stop => return,
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::warn!("LwM2M socket: {e}");
                        continue;
                    }
                },
            };
            if n > MAX_DATAGRAM {
                tracing::debug!(
                    "LwM2M: dropped a datagram of more than {MAX_DATAGRAM} bytes from {peer}"
                );
                continue;
            }
            let packet = match Packet::from_bytes(&buf[..n]) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!("LwM2M: dropped a malformed message from {peer}: {e}");
                    continue;
                }
            };
            if let Some(deliver) = self.receive(peer, packet).await
                && incoming.send(deliver).await.is_err()
            {
                return;
            }
        }
    }

    /// Files one message: answers to their requests, duplicates answered again; what is
    /// the adapter's is returned.
    async fn receive(&self, peer: SocketAddr, packet: Packet) -> Option<Incoming> {
        let mid = packet.header.message_id;
        let kind = packet.header.get_type();
        match packet.header.code {
            MessageClass::Request(_) => {
                let again = self.answer_given(peer, mid);
                if let Some(bytes) = again {
                    self.send_bytes(peer, &bytes).await;
                    return None;
                }
                Some(Incoming::Request { peer, packet })
            }
            MessageClass::Empty => {
                match kind {
                    MessageType::Acknowledgement => self.by_mid(peer, mid, Event::Acked),
                    MessageType::Reset => self.by_mid(peer, mid, Event::Reset),
                    // A CoAP ping: answered with a Reset (RFC 7252 §4.3).
                    MessageType::Confirmable => {
                        self.send_empty(peer, mid, MessageType::Reset).await
                    }
                    MessageType::NonConfirmable => {}
                }
                None
            }
            MessageClass::Response(_) => {
                let key = (peer, packet.get_token().to_vec());
                let waiter = lock(&self.waiting).remove(&key);
                let observed = waiter.is_none() && lock(&self.observing).contains_key(&key);
                if waiter.is_none() && !observed {
                    // Nobody waits for this token: a notification of an observation we gave
                    // up. A Reset tells the device to stop (RFC 7641 §3.6).
                    if kind != MessageType::Acknowledgement {
                        self.send_empty(peer, mid, MessageType::Reset).await;
                    }
                    return None;
                }
                if kind == MessageType::Confirmable {
                    self.send_empty(peer, mid, MessageType::Acknowledgement)
                        .await;
                }
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.events.try_send(Event::Answer(packet));
                        None
                    }
                    None => Some(Incoming::Notification { peer, packet }),
                }
            }
            MessageClass::Reserved(_) => None,
        }
    }

    /// Answers `request` from `peer` with `response` (its type, id and token are set here:
    /// piggybacked on the acknowledgement of a confirmable request).
    pub async fn respond(&self, peer: SocketAddr, request: &Packet, mut response: Packet) {
        let confirmable = request.header.get_type() == MessageType::Confirmable;
        response.header.set_type(if confirmable {
            MessageType::Acknowledgement
        } else {
            MessageType::NonConfirmable
        });
        response.header.message_id = if confirmable {
            request.header.message_id
        } else {
            self.mid()
        };
        response.set_token(request.get_token().to_vec());
        let bytes = match response.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("LwM2M: cannot encode an answer to {peer}: {e}");
                return;
            }
        };
        if confirmable {
            let mut answered = lock(&self.answered);
            if answered.len() >= REMEMBERED {
                answered.pop_front();
            }
            answered.push_back(((peer, request.header.message_id), bytes.clone()));
        }
        self.send_bytes(peer, &bytes).await;
    }

    /// Sends `request` to `peer` as a confirmable message and waits for its answer until
    /// `until`, retransmitting while it is not acknowledged (RFC 7252 §4.2).
    pub async fn request(
        &self,
        peer: SocketAddr,
        request: Packet,
        until: Instant,
    ) -> Result<Packet, CoapError> {
        let token = random_token();
        self.exchange(peer, request, token, until).await
    }

    /// Sends `request` (a GET) with Observe 0 and waits for its first answer until `until`;
    /// later notifications come as [`Incoming::Notification`] with the token returned,
    /// until [`Endpoint::forget`].
    pub async fn observe(
        &self,
        peer: SocketAddr,
        mut request: Packet,
        until: Instant,
    ) -> Result<(Vec<u8>, Packet), CoapError> {
        let token = random_token();
        request.set_observe_value(0);
        lock(&self.observing).insert((peer, token.clone()), ());
        match self.exchange(peer, request, token.clone(), until).await {
            Ok(answer) => {
                if answer.get_observe_value().is_none() {
                    lock(&self.observing).remove(&(peer, token.clone()));
                }
                Ok((token, answer))
            }
            Err(e) => {
                lock(&self.observing).remove(&(peer, token));
                Err(e)
            }
        }
    }

    /// Stops taking notifications for `token` from `peer`: the next one is answered with a
    /// Reset, which ends the observation on the device.
    pub fn forget(&self, peer: SocketAddr, token: &[u8]) {
        lock(&self.observing).remove(&(peer, token.to_vec()));
    }

    async fn exchange(
        &self,
        peer: SocketAddr,
        mut request: Packet,
        token: Vec<u8>,
        until: Instant,
    ) -> Result<Packet, CoapError> {
        let mid = self.mid();
        request.header.set_type(MessageType::Confirmable);
        request.header.message_id = mid;
        request.set_token(token.clone());
        let bytes = request
            .to_bytes()
            .map_err(|e| CoapError::Encode(e.to_string()))?;
        let (events, mut rx) = mpsc::channel(4);
        {
            let mut waiting = lock(&self.waiting);
            if waiting.len() >= MAX_IN_FLIGHT {
                return Err(CoapError::Busy);
            }
            waiting.insert((peer, token.clone()), Waiter { mid, events });
        }
        let outcome = self.await_answer(peer, &bytes, &mut rx, until).await;
        lock(&self.waiting).remove(&(peer, token));
        outcome
    }

    async fn await_answer(
        &self,
        peer: SocketAddr,
        bytes: &[u8],
        rx: &mut mpsc::Receiver<Event>,
        until: Instant,
    ) -> Result<Packet, CoapError> {
        let mut wait =
            ACK_TIMEOUT.mul_f64(1.0 + f64::from(random_u16()) / f64::from(u16::MAX) / 2.0);
        let mut sent = 0;
        let mut acked = false;
        loop {
            if !acked {
                self.socket
                    .send_to(bytes, peer)
                    .await
                    .map_err(|e| CoapError::Send {
                        peer,
                        message: e.to_string(),
                    })?;
                sent += 1;
            }
            let resend_at = if acked || sent > MAX_RETRANSMIT {
                until
            } else {
                (Instant::now() + wait).min(until)
            };
            loop {
                match tokio::time::timeout_at(resend_at, rx.recv()).await {
                    Ok(Some(Event::Answer(packet))) => return Ok(packet),
                    Ok(Some(Event::Acked)) => acked = true,
                    Ok(Some(Event::Reset)) => return Err(CoapError::Reset),
                    Ok(None) => return Err(CoapError::Timeout),
                    Err(_) if Instant::now() >= until => return Err(CoapError::Timeout),
                    Err(_) => break,
                }
            }
            wait *= 2;
        }
    }

    fn by_mid(&self, peer: SocketAddr, mid: u16, event: Event) {
        let waiting = lock(&self.waiting);
        if let Some(w) = waiting
            .iter()
            .find(|((p, _), w)| *p == peer && w.mid == mid)
            .map(|(_, w)| w)
        {
            let _ = w.events.try_send(event);
        }
    }

    fn answer_given(&self, peer: SocketAddr, mid: u16) -> Option<Vec<u8>> {
        lock(&self.answered)
            .iter()
            .rev()
            .find(|(key, _)| *key == (peer, mid))
            .map(|(_, bytes)| bytes.clone())
    }

    async fn send_empty(&self, peer: SocketAddr, mid: u16, kind: MessageType) {
        let mut packet = Packet::new();
        packet.header.set_type(kind);
        packet.header.code = MessageClass::Empty;
        packet.header.message_id = mid;
        if let Ok(bytes) = packet.to_bytes() {
            self.send_bytes(peer, &bytes).await;
        }
    }

    async fn send_bytes(&self, peer: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.socket.send_to(bytes, peer).await {
            tracing::debug!("LwM2M: cannot send to {peer}: {e}");
        }
    }

    fn mid(&self) -> u16 {
        self.next_mid.fetch_add(1, Ordering::Relaxed)
    }
}

fn random_token() -> Vec<u8> {
    let mut token = vec![0u8; 8];
    fill(&mut token);
    token
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    fill(&mut b);
    u16::from_be_bytes(b)
}

fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // Tokens need only be unpredictable enough to keep a stray answer from matching;
        // the clock serves when the system's generator cannot be read.
        tracing::warn!("no random bytes ({e}); taking them from the clock");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::{RequestType, ResponseType};
    use std::sync::Arc;

    async fn pair() -> (Arc<Endpoint>, UdpSocket, mpsc::Receiver<Incoming>) {
        let ours = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let theirs = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Arc::new(Endpoint::new(ours));
        let (tx, rx) = mpsc::channel(8);
        let running = endpoint.clone();
        tokio::spawn(async move { running.run(tx, std::future::pending()).await });
        (endpoint, theirs, rx)
    }

    async fn recv(socket: &UdpSocket) -> (Packet, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        (Packet::from_bytes(&buf[..n]).unwrap(), from)
    }

    fn get(path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Get);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(coap_lite::CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p
    }

    fn answer_to(request: &Packet, code: ResponseType, kind: MessageType) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(kind);
        p.header.code = MessageClass::Response(code);
        p.header.message_id = request.header.message_id;
        p.set_token(request.get_token().to_vec());
        p.payload = b"21.5".to_vec();
        p.to_bytes().unwrap()
    }

    #[tokio::test]
    async fn a_request_is_retransmitted_until_answered_and_the_answer_matched() {
        let (endpoint, theirs, _rx) = pair().await;
        let to = theirs.local_addr().unwrap();
        let asking = endpoint.clone();
        let call = tokio::spawn(async move {
            asking
                .request(
                    to,
                    get("/3303/0/5700"),
                    Instant::now() + Duration::from_secs(30),
                )
                .await
        });
        let (first, from) = recv(&theirs).await;
        assert_eq!(first.header.get_type(), MessageType::Confirmable);
        // Lost: the same message comes again, same id and token.
        let (again, _) = recv(&theirs).await;
        assert_eq!(again.header.message_id, first.header.message_id);
        assert_eq!(again.get_token(), first.get_token());
        theirs
            .send_to(
                &answer_to(&again, ResponseType::Content, MessageType::Acknowledgement),
                from,
            )
            .await
            .unwrap();
        let answer = call.await.unwrap().unwrap();
        assert_eq!(answer.payload, b"21.5");
    }

    #[tokio::test]
    async fn a_device_that_never_answers_times_out_at_the_deadline() {
        let (endpoint, theirs, _rx) = pair().await;
        let to = theirs.local_addr().unwrap();
        let until = Instant::now() + Duration::from_millis(300);
        let got = endpoint.request(to, get("/3/0/4"), until).await;
        assert_eq!(got.unwrap_err(), CoapError::Timeout);
        assert!(Instant::now() >= until);
    }

    #[tokio::test]
    async fn a_reset_ends_the_request_and_a_separate_answer_is_acknowledged() {
        let (endpoint, theirs, _rx) = pair().await;
        let to = theirs.local_addr().unwrap();
        let asking = endpoint.clone();
        let call = tokio::spawn(async move {
            asking
                .request(to, get("/3/0"), Instant::now() + Duration::from_secs(30))
                .await
        });
        let (req, from) = recv(&theirs).await;
        // An empty ACK first, then the answer as its own confirmable message.
        let mut ack = Packet::new();
        ack.header.set_type(MessageType::Acknowledgement);
        ack.header.code = MessageClass::Empty;
        ack.header.message_id = req.header.message_id;
        theirs
            .send_to(&ack.to_bytes().unwrap(), from)
            .await
            .unwrap();
        let mut separate = Packet::from_bytes(&answer_to(
            &req,
            ResponseType::Content,
            MessageType::Confirmable,
        ))
        .unwrap();
        separate.header.message_id = 4242;
        theirs
            .send_to(&separate.to_bytes().unwrap(), from)
            .await
            .unwrap();
        let (their_ack, _) = recv(&theirs).await;
        assert_eq!(their_ack.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(their_ack.header.message_id, 4242);
        assert_eq!(call.await.unwrap().unwrap().payload, b"21.5");

        let asking = endpoint.clone();
        let call = tokio::spawn(async move {
            asking
                .request(to, get("/3/0/4"), Instant::now() + Duration::from_secs(30))
                .await
        });
        let (req, from) = recv(&theirs).await;
        let mut rst = Packet::new();
        rst.header.set_type(MessageType::Reset);
        rst.header.code = MessageClass::Empty;
        rst.header.message_id = req.header.message_id;
        theirs
            .send_to(&rst.to_bytes().unwrap(), from)
            .await
            .unwrap();
        assert_eq!(call.await.unwrap().unwrap_err(), CoapError::Reset);
    }

    #[tokio::test]
    async fn a_duplicate_request_gets_the_same_answer_and_reaches_the_adapter_once() {
        let (endpoint, theirs, mut rx) = pair().await;
        let ours = endpoint.local_addr().unwrap();
        let mut register = Packet::new();
        register.header.set_type(MessageType::Confirmable);
        register.header.code = MessageClass::Request(RequestType::Post);
        register.header.message_id = 77;
        register.set_token(vec![1, 2]);
        let bytes = register.to_bytes().unwrap();
        theirs.send_to(&bytes, ours).await.unwrap();
        let Some(Incoming::Request { peer, packet }) = rx.recv().await else {
            panic!("no request")
        };
        let mut created = Packet::new();
        created.header.code = MessageClass::Response(ResponseType::Created);
        endpoint.respond(peer, &packet, created).await;
        let (first, _) = recv(&theirs).await;
        theirs.send_to(&bytes, ours).await.unwrap();
        let (second, _) = recv(&theirs).await;
        assert_eq!(first, second);
        assert_eq!(first.header.message_id, 77);
        assert_eq!(first.get_token(), [1, 2]);
        assert!(rx.try_recv().is_err(), "the duplicate reached the adapter");
    }

    #[tokio::test]
    async fn notifications_of_an_observation_are_handed_on_and_unknown_ones_reset() {
        let (endpoint, theirs, mut rx) = pair().await;
        let to = theirs.local_addr().unwrap();
        let asking = endpoint.clone();
        let call = tokio::spawn(async move {
            asking
                .observe(
                    to,
                    get("/3303/0/5700"),
                    Instant::now() + Duration::from_secs(30),
                )
                .await
        });
        let (req, from) = recv(&theirs).await;
        assert_eq!(req.get_observe_value(), Some(Ok(0)));
        let mut first = Packet::from_bytes(&answer_to(
            &req,
            ResponseType::Content,
            MessageType::Acknowledgement,
        ))
        .unwrap();
        first.set_observe_value(1);
        theirs
            .send_to(&first.to_bytes().unwrap(), from)
            .await
            .unwrap();
        let (token, _) = call.await.unwrap().unwrap();
        let mut notification = Packet::from_bytes(&answer_to(
            &req,
            ResponseType::Content,
            MessageType::Confirmable,
        ))
        .unwrap();
        notification.header.message_id = 900;
        notification.set_observe_value(2);
        theirs
            .send_to(&notification.to_bytes().unwrap(), from)
            .await
            .unwrap();
        let (ack, _) = recv(&theirs).await;
        assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
        let Some(Incoming::Notification { packet, .. }) = rx.recv().await else {
            panic!("no notification")
        };
        assert_eq!(packet.get_token(), token.as_slice());

        endpoint.forget(to, &token);
        notification.header.message_id = 901;
        theirs
            .send_to(&notification.to_bytes().unwrap(), from)
            .await
            .unwrap();
        let (reset, _) = recv(&theirs).await;
        assert_eq!(reset.header.get_type(), MessageType::Reset);
        assert_eq!(reset.header.message_id, 901);
    }
}
