//! What the server did with each file-backed object: body bytes sent, responses started
//! and how they ended, faults injected. Read in-process with
//! [`RunningServer::object_stats`](crate::devserver::RunningServer::object_stats) and over
//! HTTPS as `GET /admin/stats` (the [`ObjectStats`] as JSON).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::body::Ending;

/// Live counters of one object (by repository path), kept across its file's versions.
#[derive(Default)]
pub(crate) struct Counters {
    size: AtomicU64,
    gets: AtomicU64,
    bytes_sent: AtomicU64,
    complete: AtomicU64,
    cut: AtomicU64,
    abandoned: AtomicU64,
    unavailable: AtomicU64,
}

impl Counters {
    /// The size of the version last served.
    pub fn size(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }

    /// A `GET` answered with a body (`200` or `206`).
    pub fn started(&self) {
        self.gets.fetch_add(1, Ordering::Relaxed);
    }

    /// Body bytes handed to the connection.
    pub fn sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// A `GET` answered `503` by `--object-5xx-after`.
    pub fn unavailable(&self) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ended(&self, ending: Ending) {
        let counter = match ending {
            Ending::Complete => &self.complete,
            Ending::Cut => &self.cut,
            Ending::Failed | Ending::Abandoned => &self.abandoned,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> ObjectCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ObjectCounters {
            size: get(&self.size),
            gets: get(&self.gets),
            bytes_sent: get(&self.bytes_sent),
            complete: get(&self.complete),
            cut: get(&self.cut),
            abandoned: get(&self.abandoned),
            unavailable: get(&self.unavailable),
        }
    }
}

/// One object's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCounters {
    /// The size in bytes of the version last served (or found at start).
    pub size: u64,
    /// `GET`s answered with a body (`200` or `206`), including cut ones.
    pub gets: u64,
    /// Body bytes handed to connections, over every `GET` (a cut or abandoned response
    /// counts what was handed over before it ended).
    pub bytes_sent: u64,
    /// Responses whose body was sent to its end.
    pub complete: u64,
    /// Responses cut by `--cut-object-after`.
    pub cut: u64,
    /// Responses that ended early otherwise (the client went away, a read failed).
    pub abandoned: u64,
    /// `GET`s answered `503` by `--object-5xx-after`.
    pub unavailable: u64,
}

/// Every file-backed object's counters, by repository path (`objects/NAME`, or the path
/// of a streamed upload), and the total of body bytes sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStats {
    pub objects: BTreeMap<String, ObjectCounters>,
    /// Body bytes sent of all objects together.
    pub bytes_sent: u64,
}
