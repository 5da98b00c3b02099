//! The frames between a guest omadmd and its host (docs/gateway.md §6.2): a 4-byte
//! big-endian length and one JSON object of at most the configured size
//! (`[gateway] guest_frame_bytes`). A frame over the bound is never read: the connection
//! closes. ClientURIs in frames are the guest's own; the host adds and strips `<key>.`.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::tree::json::MoItem;

/// The version of the frames a hello announces.
pub const VERSION: u32 = 1;
/// Bytes of a guest token.
pub const TOKEN_BYTES: usize = 32;

/// One frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase", deny_unknown_fields)]
pub enum Frame {
    /// Guest → host, first: who it is, proven by the token (hex).
    Hello {
        v: u32,
        token: String,
        devid: String,
        /// The guest's journal position (informational: every sync carries whole
        /// instances, docs/gateway.md §6.2).
        seq: u64,
    },
    /// Host → guest: the hello was accepted; `since` is always 0 (send everything).
    Welcome {
        since: u64,
    },
    /// Guest → host: whole exported instances (`items`, one MO serialization item per
    /// instance root) and the instance roots gone; with `full`, `items` is every exported
    /// instance and the host drops those it mirrors but `items` leaves out.
    Sync {
        seq: u64,
        full: bool,
        items: Vec<MoItem>,
        #[serde(default)]
        deleted: Vec<String>,
    },
    /// Host → guest: run one operation on the guest's tree as `app:omadmd-host`.
    Call {
        id: u64,
        op: Op,
        uri: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        items: Vec<MoItem>,
    },
    /// Guest → host: the DM status of call `id`, and an EXEC's result text.
    Reply {
        id: u64,
        sc: u16,
        #[serde(default)]
        result: String,
    },
    Ping,
    Pong,
}

/// What a call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Write the one item's data at `uri` (an HGET's data).
    Put,
    Delete,
    Exec,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("a frame of {len} bytes is over the bound of {max} ([gateway] guest_frame_bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("a frame that is not one: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame of at most `max` bytes. A frame over the bound is refused before its
/// body is read.
pub async fn read(reader: &mut (impl AsyncRead + Unpin), max: usize) -> Result<Frame, WireError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            e.into()
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Writes `frame`, refused when it would be over `max` bytes.
pub async fn write(
    writer: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
    max: usize,
) -> Result<(), WireError> {
    let body = encode(frame, max)?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

/// Frames read from `reader` as they come, each at most `max` bytes, until the first error
/// (which is handed on too) or until the receiver is dropped. The task reading them is the
/// caller's to abort when it is done with the connection.
pub fn frames(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    max: usize,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<Frame, WireError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let reading = tokio::spawn(async move {
        loop {
            let got = read(&mut reader, max).await;
            let end = got.is_err();
            if tx.send(got).await.is_err() || end {
                return;
            }
        }
    });
    (reading, rx)
}

/// `frame` with its length in front, refused when the body is over `max` bytes.
pub fn encode(frame: &Frame, max: usize) -> Result<Vec<u8>, WireError> {
    let body = serde_json::to_vec(frame).map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= max)
        .ok_or(WireError::TooLarge {
            len: body.len(),
            max,
        })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Whether two tokens are equal, in time that depends on their lengths only.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_with_their_length_in_front() {
        let frame = Frame::Call {
            id: 7,
            op: Op::Exec,
            uri: "urn:oma:mo:ext-test:1.0/0/Reboot".into(),
            items: Vec::new(),
        };
        let bytes = encode(&frame, 1024).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        let text = std::str::from_utf8(&bytes[4..]).unwrap();
        assert!(text.contains(r#""t":"call""#), "{text}");
        assert!(text.contains(r#""op":"exec""#), "{text}");
        assert_eq!(read(&mut &bytes[..], 1024).await.unwrap(), frame);
        let ping = encode(&Frame::Ping, 16).unwrap();
        assert_eq!(&ping[4..], br#"{"t":"ping"}"#);
    }

    #[tokio::test]
    async fn a_frame_over_the_bound_is_refused_unread_and_an_end_is_closed() {
        let mut bytes = 1_000_000u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{");
        assert!(matches!(
            read(&mut &bytes[..], 1024).await,
            Err(WireError::TooLarge {
                len: 1_000_000,
                max: 1024
            })
        ));
        assert!(matches!(
            read(&mut &b""[..], 1024).await,
            Err(WireError::Closed)
        ));
        assert!(matches!(
            read(&mut &[0u8, 0, 0, 9, b'{'][..], 1024).await,
            Err(WireError::Closed)
        ));
        let bad = encode(&Frame::Pong, 1024).unwrap();
        let mut junk = bad[..4].to_vec();
        junk.extend(std::iter::repeat_n(b'x', bad.len() - 4));
        assert!(matches!(
            read(&mut &junk[..], 1024).await,
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            encode(&Frame::Welcome { since: 0 }, 4),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("ab12", "ab12"));
        assert!(!same_token("ab12", "ab13"));
        assert!(!same_token("ab12", "ab1"));
        assert!(!same_token("", "a"));
    }
}
