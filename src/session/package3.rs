//! Package#3 kept within `[limits] package3_bytes` (PROTOCOL.md §4). The body is written
//! status by status as the commands finish, so a Package#2 asking for more than fits never
//! makes the client hold or send more than the bound:
//!
//! - before any command runs, room is kept for a bare status (`{"sc":NNN}`) for every
//!   command; a Package#2 with so many commands that even bare statuses would not fit is
//!   refused whole (the session ends with `413`, none of its commands run);
//! - a status that does not fit in what is left is cut: a `GET` result loses its data and is
//!   answered `413` (too large: the server should narrow the query), an HGET's `URI` list is
//!   left out (its `sc` stays, since the tree did change); a synchronous EXEC's result is
//!   left out before it is pushed (its `sc` stays: the handler ran; see [`Package3Body::fits`]);
//! - once not even the smallest result fits, [`Package3Body::has_room_for_data`] says so, and
//!   the session answers further GETs `413` without running them: computing a result that
//!   cannot be sent is wasted work.
//!
//! The bytes are exactly those of [`Package3`](crate::protocol::Package3) serialized with
//! its statuses and no alerts.

use crate::protocol::Status;

const OPEN: &[u8] = br#"{"Status":["#;
const CLOSE: &[u8] = b"]}";
/// The most a status without data or URIs takes, with its comma: `,{"sc":65535}`.
const BARE: usize = 13;
/// The least a status with data takes: `{"sc":200,"Data":[{"ClientURI":"","MOData":{}}]}`.
const SMALLEST_DATA: usize = 48;

/// A Package#3 being written.
#[derive(Debug)]
pub struct Package3Body {
    limit: usize,
    body: Vec<u8>,
    /// Statuses still to come.
    remaining: usize,
}

/// How a status went into the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Whole,
    /// It did not fit: sent bare (a GET's data replaced by `413`).
    Cut,
}

/// Even bare statuses for every command of a Package#2 would be larger than the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the statuses of {commands} commands alone need up to {needed} bytes, more than \
     package3_bytes = {limit}"
)]
pub struct TooManyCommands {
    pub commands: usize,
    pub needed: usize,
    pub limit: usize,
}

impl Package3Body {
    /// A Package#3 for `commands` statuses, at most `limit` bytes long.
    pub fn new(limit: usize, commands: usize) -> Result<Package3Body, TooManyCommands> {
        let needed = commands
            .saturating_mul(BARE)
            .saturating_add(OPEN.len() + CLOSE.len());
        if needed > limit {
            return Err(TooManyCommands {
                commands,
                needed,
                limit,
            });
        }
        let mut body = Vec::with_capacity(needed);
        body.extend_from_slice(OPEN);
        Ok(Package3Body {
            limit,
            body,
            remaining: commands,
        })
    }

    /// Whether the next command's status could still carry data (a GET result), room for
    /// the bare statuses of the commands after it kept.
    pub fn has_room_for_data(&self) -> bool {
        let comma = usize::from(self.body.len() > OPEN.len());
        let after = self.body.len()
            + comma
            + SMALLEST_DATA
            + CLOSE.len()
            + self.remaining.saturating_sub(1) * BARE;
        after <= self.limit
    }

    /// Whether `status` would go in whole as the next command's status.
    pub fn fits(&self, status: &Status) -> Result<bool, serde_json::Error> {
        let comma = usize::from(self.body.len() > OPEN.len());
        let len = serde_json::to_vec(status)?.len();
        let after =
            self.body.len() + comma + len + CLOSE.len() + self.remaining.saturating_sub(1) * BARE;
        Ok(after <= self.limit)
    }

    /// Adds the next command's status, cut to a bare one if it does not fit. The status is
    /// serialized straight into the body (a GET's items copied once) and taken back out
    /// when it does not fit.
    pub fn push(&mut self, status: &Status) -> Result<Fit, serde_json::Error> {
        self.remaining = self.remaining.saturating_sub(1);
        let mark = self.body.len();
        if mark > OPEN.len() {
            self.body.push(b',');
        }
        let start = self.body.len();
        serde_json::to_writer(&mut self.body, status)?;
        if self.body.len() + CLOSE.len() + self.remaining * BARE <= self.limit {
            return Ok(Fit::Whole);
        }
        self.body.truncate(start);
        let bare = Status::code(if status.data.is_some() {
            413
        } else {
            status.sc
        });
        serde_json::to_writer(&mut self.body, &bare)?;
        Ok(Fit::Cut)
    }

    /// The finished body.
    pub fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(CLOSE);
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Items, Package3};
    use crate::tree::json::MoItem;

    fn get_result(bytes: usize) -> Status {
        let mut data = serde_json::Map::new();
        data.insert("V".into(), serde_json::json!("x".repeat(bytes)));
        Status {
            sc: 200,
            uri: None,
            data: Some(Items::of(&[MoItem {
                ddf: None,
                client_uri: "urn:a:1.0/i/V".into(),
                cv: None,
                mo_data: data,
            }])),
        }
    }

    #[test]
    fn the_bytes_are_those_of_the_serialized_package() {
        let statuses = vec![
            Status::code(200),
            get_result(10),
            Status {
                sc: 200,
                uri: Some(vec!["urn:a:1.0/i/".into()]),
                data: None,
            },
        ];
        let mut p = Package3Body::new(1 << 20, statuses.len()).unwrap();
        for s in &statuses {
            assert_eq!(p.push(s).unwrap(), Fit::Whole);
        }
        let want = serde_json::to_vec(&Package3 {
            status: statuses,
            alert: vec![],
        })
        .unwrap();
        assert_eq!(p.finish(), want);
        let empty = Package3Body::new(100, 0).unwrap().finish();
        assert_eq!(empty, br#"{"Status":[]}"#);
    }

    #[test]
    fn results_that_do_not_fit_are_answered_413_and_the_package_stays_bounded() {
        let limit = 1000;
        let commands = 20;
        let mut p = Package3Body::new(limit, commands).unwrap();
        let mut fits = Vec::new();
        for i in 0..commands {
            let s = if i % 5 == 4 {
                Status {
                    sc: 200,
                    uri: Some(vec!["urn:a:1.0/very/long/uri/".repeat(20)]),
                    data: None,
                }
            } else {
                get_result(100)
            };
            fits.push(p.push(&s).unwrap());
        }
        let body = p.finish();
        assert!(body.len() <= limit, "{} bytes", body.len());
        let sent: Package3 = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent.status.len(), commands);
        let codes: Vec<u16> = sent.status.iter().map(|s| s.sc).collect();
        assert_eq!(&codes[..2], [200, 200], "the first results fit: {codes:?}");
        assert!(matches!(fits[0], Fit::Whole));
        for (s, fit) in sent.status.iter().zip(&fits) {
            match fit {
                Fit::Whole => assert_eq!(s.sc, 200),
                Fit::Cut => {
                    assert!(s.data.is_none() && s.uri.is_none());
                    assert!(s.sc == 413 || s.sc == 200, "{s:?}");
                }
            }
        }
        assert!(codes.contains(&413), "{codes:?}");
        assert_eq!(codes[19], 200, "an HGET's status stays, without its URIs");
    }

    #[test]
    fn room_for_data_runs_out_before_the_package_does() {
        let smallest = Status {
            sc: 200,
            uri: None,
            data: Some(Items::of(&[MoItem {
                ddf: None,
                client_uri: String::new(),
                cv: None,
                mo_data: serde_json::Map::new(),
            }])),
        };
        assert_eq!(serde_json::to_vec(&smallest).unwrap().len(), SMALLEST_DATA);
        // Room for exactly one smallest result and one bare status after it.
        let limit = OPEN.len() + SMALLEST_DATA + BARE + CLOSE.len();
        let mut p = Package3Body::new(limit, 2).unwrap();
        assert!(p.has_room_for_data());
        assert_eq!(p.push(&smallest).unwrap(), Fit::Whole);
        assert!(!p.has_room_for_data(), "only a bare status is left");
        assert_eq!(p.push(&Status::code(413)).unwrap(), Fit::Whole);
        assert!(p.finish().len() <= limit);
        let p = Package3Body::new(limit - 1, 2).unwrap();
        assert!(!p.has_room_for_data());
    }

    #[test]
    fn fits_says_whether_push_would_keep_a_status_whole() {
        // Room for a status of exactly `room` bytes and one bare status after it.
        let room = serde_json::to_vec(&get_result(30)).unwrap().len();
        let limit = OPEN.len() + room + BARE + CLOSE.len();
        for (bytes, whole) in [(29, true), (30, true), (31, false)] {
            let status = get_result(bytes);
            let mut p = Package3Body::new(limit, 2).unwrap();
            assert_eq!(p.fits(&status).unwrap(), whole, "{bytes} bytes");
            let pushed = p.push(&status).unwrap();
            assert_eq!(pushed == Fit::Whole, whole, "{bytes} bytes");
        }
    }

    #[test]
    fn too_many_commands_for_even_bare_statuses_are_refused() {
        let err = Package3Body::new(1000, 100).unwrap_err();
        assert_eq!(err.needed, 100 * BARE + OPEN.len() + CLOSE.len());
        assert!(err.to_string().contains("package3_bytes = 1000"), "{err}");
        let mut p = Package3Body::new(100 * BARE + 13, 100).unwrap();
        for _ in 0..100 {
            p.push(&Status::code(65535)).unwrap();
        }
        assert!(p.finish().len() <= 100 * BARE + 13);
    }
}
