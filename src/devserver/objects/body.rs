//! [`ObjectBody`]: the body of every response [`objects`](super) sends. Either a small fixed
//! body (an error text, the stats) or a range of a file streamed from disk: a blocking
//! thread reads it chunk by chunk (`pread` on the open file) into a small bounded channel,
//! so at most a few chunks are in memory whatever the object's size. The stream counts
//! what it hands to the connection into the object's [`Counters`], may be cut
//! (`--cut-object-after`: the connection is aborted, no clean end), and reports how it
//! ended once it is dropped.

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use super::stats::Counters;

/// Bytes read from disk at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the connection.
const READ_AHEAD: usize = 4;
/// How long a cut stream waits, after its last byte, for the connection to send what it
/// holds before the connection is aborted.
const CUT_FLUSH: Duration = Duration::from_millis(200);

/// A response body: fixed bytes, or a streamed file range.
pub(crate) struct ObjectBody(Inner);

enum Inner {
    Fixed(Option<Bytes>),
    Stream(Box<Stream>),
}

/// How a streamed body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every byte was handed to the connection.
    Complete,
    /// Cut on purpose (`--cut-object-after`).
    Cut,
    /// The file could not be read.
    Failed,
    /// The connection went away before the end.
    Abandoned,
}

impl Ending {
    pub fn describe(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Cut => "connection cut (--cut-object-after)",
            Ending::Failed => "file read failed, connection aborted",
            Ending::Abandoned => "client went away",
        }
    }
}

/// Called once with the bytes sent and the ending when a streamed body is dropped.
pub(crate) type OnEnd = Box<dyn FnOnce(u64, Ending) + Send>;

struct Stream {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    /// Bytes of the announced length not sent yet.
    remaining: u64,
    sent: u64,
    /// Abort the connection once this many bytes are sent.
    cut_at: Option<u64>,
    pause: Option<Pin<Box<Sleep>>>,
    ending: Option<Ending>,
    counters: Arc<Counters>,
    on_end: Option<OnEnd>,
}

impl ObjectBody {
    pub fn fixed(bytes: impl Into<Bytes>) -> ObjectBody {
        let bytes = bytes.into();
        ObjectBody(Inner::Fixed((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> ObjectBody {
        ObjectBody(Inner::Fixed(None))
    }

    /// Streams `len` bytes of `file` from offset `first`; with `cut_at`, only that many are
    /// sent and the connection is then aborted.
    pub fn stream(
        file: Arc<File>,
        first: u64,
        len: u64,
        cut_at: Option<u64>,
        counters: Arc<Counters>,
        on_end: OnEnd,
    ) -> ObjectBody {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let to_read = cut_at.map_or(len, |c| c.min(len));
        tokio::task::spawn_blocking(move || read_range(&file, first, to_read, &tx));
        ObjectBody(Inner::Stream(Box::new(Stream {
            chunks: rx,
            remaining: len,
            sent: 0,
            cut_at: cut_at.filter(|c| *c < len),
            pause: None,
            ending: None,
            counters,
            on_end: Some(on_end),
        })))
    }
}

/// Reads `len` bytes from `first` into the channel (blocking), until done, a read error
/// (sent on) or the body is gone.
fn read_range(file: &File, first: u64, len: u64, tx: &mpsc::Sender<io::Result<Bytes>>) {
    let end = first + len;
    let mut at = first;
    while at < end {
        let n = usize::try_from(end - at).map_or(CHUNK, |left| left.min(CHUNK));
        let mut buf = vec![0; n];
        let chunk = file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf));
        let failed = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || failed {
            return;
        }
        at += n as u64;
    }
}

impl Body for ObjectBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().0 {
            Inner::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => s.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Fixed(bytes) => bytes.is_none(),
            Inner::Stream(s) => s.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Fixed(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(s) => SizeHint::with_exact(s.remaining),
        }
    }
}

impl Stream {
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(cut) = self.cut_at
            && self.sent >= cut
        {
            // Returning Pending first lets the connection flush what it holds.
            let pause = self
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_FLUSH)));
            ready!(pause.as_mut().poll(cx));
            self.ending = Some(Ending::Cut);
            return Poll::Ready(Some(Err(io::Error::other(format!(
                "connection cut after {cut} body bytes (--cut-object-after)"
            )))));
        }
        match ready!(self.chunks.poll_recv(cx)) {
            Some(Ok(chunk)) => {
                let n = chunk.len() as u64;
                self.sent += n;
                self.remaining = self.remaining.saturating_sub(n);
                self.counters.sent(n);
                if self.remaining == 0 {
                    self.ending = Some(Ending::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(e)) => {
                self.ending = Some(Ending::Failed);
                Poll::Ready(Some(Err(e)))
            }
            None if self.remaining == 0 => {
                self.ending = Some(Ending::Complete);
                Poll::Ready(None)
            }
            None => {
                self.ending = Some(Ending::Failed);
                Poll::Ready(Some(Err(io::Error::other("the file reader stopped early"))))
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let ending = match self.ending {
            Some(e) => e,
            None if self.remaining == 0 => Ending::Complete,
            None => Ending::Abandoned,
        };
        self.counters.ended(ending);
        if let Some(on_end) = self.on_end.take() {
            on_end(self.sent, ending);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Mutex;

    use http_body_util::BodyExt as _;

    use super::*;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        (f, data)
    }

    /// What a body's end reported: bytes sent and how it ended.
    type Seen = Arc<Mutex<Option<(u64, Ending)>>>;

    fn recorder() -> (Seen, OnEnd) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        (
            seen,
            Box::new(move |n, e| *s.lock().unwrap() = Some((n, e))),
        )
    }

    #[tokio::test]
    async fn a_range_streams_in_chunks_and_is_counted() {
        let (f, data) = file_of(3 * CHUNK + 10);
        let file = Arc::new(File::open(f.path()).unwrap());
        let counters = Arc::new(Counters::default());
        let (seen, on_end) = recorder();
        let len = (2 * CHUNK + 5) as u64;
        let body = ObjectBody::stream(file, 3, len, None, counters.clone(), on_end);
        assert_eq!(body.size_hint().exact(), Some(len));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[3..3 + len as usize]);
        assert_eq!(*seen.lock().unwrap(), Some((len, Ending::Complete)));
        let snap = counters.snapshot();
        assert_eq!((snap.bytes_sent, snap.complete, snap.cut), (len, 1, 0));
    }

    #[tokio::test]
    async fn a_cut_stream_sends_its_bytes_then_fails() {
        let (f, data) = file_of(CHUNK + 100);
        let file = Arc::new(File::open(f.path()).unwrap());
        let counters = Arc::new(Counters::default());
        let (seen, on_end) = recorder();
        let mut body = ObjectBody::stream(
            file,
            0,
            data.len() as u64,
            Some(1000),
            counters.clone(),
            on_end,
        );
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], &data[..1000]);
        assert!(!body.is_end_stream());
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        assert_eq!(*seen.lock().unwrap(), Some((1000, Ending::Cut)));
        assert_eq!(counters.snapshot().cut, 1);
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_fails_and_a_dropped_body_is_abandoned() {
        let (f, data) = file_of(100);
        let file = Arc::new(File::open(f.path()).unwrap());
        let counters = Arc::new(Counters::default());
        let (seen, on_end) = recorder();
        let body = ObjectBody::stream(file.clone(), 0, 200, None, counters.clone(), on_end);
        assert!(body.collect().await.is_err());
        assert_eq!(*seen.lock().unwrap(), Some((0, Ending::Failed)));
        let (seen, on_end) = recorder();
        drop(ObjectBody::stream(
            file,
            0,
            data.len() as u64,
            None,
            counters,
            on_end,
        ));
        assert_eq!(*seen.lock().unwrap(), Some((0, Ending::Abandoned)));
    }
}
