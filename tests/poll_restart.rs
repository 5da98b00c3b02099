//! Polling with the real `omadmd` (on a private session bus) and an in-process
//! `omadm-devserver` over TLS: an account with `Ext/PollSeconds` gets client-initiated
//! sessions on schedule without anyone asking for them, and across SIGTERM and a restart on
//! the same state no poll is repeated (back before the persisted due time: nothing until
//! then) and none is lost (down across several due times: one session at restart, not one
//! per missed interval, then on schedule again).
//!
//! Nothing here asserts how soon something happens. Waits are generous (a minute), and each
//! bound is causal: a poll never starts before its due time, so a session whose Package#1
//! reached the server (by the server's clock, which is ours) before the due time the daemon
//! persisted ahead of it is a session too many. Due times are read from the daemon's store.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omadmd::devserver::Direction;
use omadmd::protocol::alert;
use omadmd::store::{PollDue, Store};

use crate::omadmctl_cli::TestServer;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{KillOnDrop, show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const SRV_ID: &str = "poller";
/// The account's `Ext/PollSeconds`. Below 10 s the ±10% jitter is under a second, so none:
/// each next due time is exactly this many seconds after the (whole) second it was set in.
const EVERY: i64 = 4;
/// The longest the test waits for anything it expects.
const WAIT: Duration = Duration::from_secs(60);
/// Restarts tried before the test gives up on bringing the daemon back before a due time.
const RESTART_TRIES: usize = 5;

/// A poll session as the server saw it.
#[derive(Debug)]
struct Poll {
    /// When its Package#1 arrived (POSIX milliseconds).
    at: i64,
    /// The next due time the daemon had persisted when it started (POSIX seconds).
    next_due: i64,
}

/// The daemon's directory (state, log) and the server it polls.
struct Setup {
    dir: tempfile::TempDir,
    bus: SessionBus,
    srv: TestServer,
}

impl Setup {
    fn start() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            bus: SessionBus::start(),
            srv: TestServer::start(Some(
                r#"{"name": "poll", "packages": [{"commands": [["END"]]}]}"#,
            )),
        }
    }

    fn daemon(&self) -> KillOnDrop {
        self.bus.daemon(self.dir.path())
    }

    fn log(&self) -> String {
        daemon_log(self.dir.path())
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(&self, mut daemon: KillOnDrop) {
        let status = daemon
            .signal("-TERM", WAIT)
            .unwrap_or_else(|| panic!("omadmd did not stop on SIGTERM: {}", self.log()));
        assert!(status.success(), "{status}: {}", self.log());
    }

    /// The account's persisted poll due time.
    fn due(&self) -> PollDue {
        let db: PathBuf = self.dir.path().join("state/store.db");
        let dues = Store::open(&db).unwrap().poll_due().unwrap();
        let due = dues
            .iter()
            .find(|(srv_id, _)| srv_id == SRV_ID)
            .map(|(_, due)| *due)
            .unwrap_or_else(|| panic!("no due time for {SRV_ID}: {dues:?}: {}", self.log()));
        assert_eq!(due.every, EVERY, "{due:?}");
        due
    }

    /// When each session's Package#1 arrived (POSIX milliseconds), in session order.
    fn arrivals(&self) -> Vec<i64> {
        let mut firsts: Vec<(u64, i64)> = Vec::new();
        for r in self.srv.server.transcript() {
            if r.kind == "package#1"
                && r.direction == Direction::In
                && !firsts.iter().any(|(s, _)| *s == r.session)
            {
                firsts.push((r.session, millis(&r.time)));
            }
        }
        firsts.sort_unstable();
        firsts.into_iter().map(|(_, at)| at).collect()
    }

    /// Waits for the `n`th session (from 1) to reach the server, and reads the due time the
    /// daemon persisted before starting it.
    fn poll(&self, n: usize) -> Poll {
        assert!(
            wait_until(WAIT, || self.arrivals().len() >= n),
            "no session {n} within {WAIT:?}; the server saw {:?}: {}",
            self.arrivals(),
            self.log()
        );
        let arrivals = self.arrivals();
        assert_eq!(arrivals.len(), n, "a session too many: {}", self.log());
        let at = arrivals[n - 1];
        let next_due = self.due().due;
        // Set by the decision that started this session, at or before its arrival; a later
        // one means another session had been started already.
        assert!(
            next_due <= at / 1000 + EVERY,
            "session {n} at {at} ms, yet the next due time is {next_due}: a later poll set it: {}",
            self.log()
        );
        Poll { at, next_due }
    }

    /// [`Setup::poll`] for a session that must not come before `due` (POSIX seconds); `what`
    /// says what an earlier one would be. Started at or after `due`, it moves the schedule on
    /// by at least an interval from there.
    fn poll_after(&self, n: usize, due: i64, what: &str) -> Poll {
        let poll = self.poll(n);
        assert!(
            poll.at >= due * 1000,
            "{what}: session {n} came before the due time {due}: {poll:?}: {}",
            self.log()
        );
        assert!(
            poll.next_due >= due + EVERY,
            "session {n} did not move the schedule on by an interval from {due}: {poll:?}: {}",
            self.log()
        );
        poll
    }

    /// Waits until the server has ended `n` sessions.
    fn finished(&self, n: usize) {
        assert!(
            wait_until(WAIT, || self.srv.server.finished_sessions() >= n),
            "the server ended {} sessions, not {n}: {:#?}",
            self.srv.server.finished_sessions(),
            self.srv.server.summary()
        );
    }
}

#[test]
fn poll_sessions_keep_their_schedule_across_restarts() {
    let s = Setup::start();
    let mut daemon = s.daemon();

    // On schedule, with no one asking: the first poll one interval after the account
    // appears, each next one no earlier than the due time persisted before the previous.
    let created = now_ms();
    let modata = serde_json::json!({"DMAcc": {"SrvID": SRV_ID, "SrvURI": s.srv.server.url(),
        "Perm": {"p0": {"MOID": "urn:oma:mo:ext-devserver-weather:1.0"}},
        "Ext": {"CACert": s.srv.server.ca_pem(), "PollSeconds": EVERY}}});
    let out = s.bus.run(&["create", DMACC, &modata.to_string()]);
    assert!(out.status.success(), "{}", show(&out));
    let first = s.poll(1);
    assert!(
        first.at >= created + (EVERY - 1) * 1000,
        "the first poll came before its interval: created {created} ms, polled {first:?}: {}",
        s.log()
    );
    let mut last = s.poll_after(2, first.next_due, "two polls within one interval");
    let mut seen = 2;

    // Stopped right after a poll and back before its next due time: nothing at start, the
    // next poll at the persisted due time, and one only. A restart slow enough to miss the
    // due time (a loaded machine) starts that poll at once, which is right but shows
    // nothing here: then the test stops after that poll and tries again.
    let mut tries = 0;
    loop {
        s.finished(seen);
        s.stop(daemon);
        let due = s.due().due;
        assert_eq!(
            due,
            last.next_due,
            "the due time persisted at the last poll is the one kept: {}",
            s.log()
        );
        daemon = s.daemon();
        let back = now_ms();
        last = s.poll_after(
            seen + 1,
            due,
            &format!("a poll at the restart at {back} ms"),
        );
        seen += 1;
        if back < due * 1000 {
            break;
        }
        tries += 1;
        assert!(
            tries < RESTART_TRIES,
            "{RESTART_TRIES} restarts all came back after the due time: {}",
            s.log()
        );
    }
    last = s.poll_after(seen + 1, last.next_due, "two polls at one due time");
    seen += 1;

    // Down across three due times: one poll at restart, and the schedule goes on from it.
    s.finished(seen);
    s.stop(daemon);
    let due = s.due().due;
    assert_eq!(due, last.next_due, "{}", s.log());
    let missed_all = (due + 2 * EVERY) * 1000;
    let now = now_ms();
    if now < missed_all {
        std::thread::sleep(Duration::from_millis((missed_all - now) as u64));
    }
    let restarted = now_ms();
    daemon = s.daemon();
    let catch_up = s.poll(seen + 1);
    // Decided at or after the restart, in a whole second: the next due time is more than an
    // interval less a second after the restart.
    assert!(
        catch_up.next_due * 1000 > restarted + (EVERY - 1) * 1000,
        "the schedule did not go on from the catch-up (restarted at {restarted} ms), but \
         from the missed due times: {catch_up:?}: {}",
        s.log()
    );
    s.poll_after(
        seen + 2,
        catch_up.next_due,
        "more than one poll for the missed due times",
    );
    seen += 2;

    s.finished(seen);
    s.stop(daemon);
    let outcomes = s.srv.server.results();
    assert!(outcomes.len() >= seen, "{outcomes:?}");
    for (i, o) in outcomes.iter().enumerate() {
        assert!(o.passed(), "{o:?}");
        // The account's first session carries BootstrapComplete, whatever started it.
        let reason = if i == 0 {
            alert::BOOTSTRAP_COMPLETE
        } else {
            alert::CLIENT_INITIATED
        };
        assert_eq!(o.reason.as_deref(), Some(reason), "{o:?}");
    }
    // Each was the poller's: no other trigger started a session.
    let log = s.log();
    let polls = log
        .lines()
        .filter(|l| l.contains("poll: session ") && !l.contains("queued"))
        .count();
    assert_eq!(polls, outcomes.len(), "{log}");
}

#[test]
fn transcript_times_read_as_posix_milliseconds() {
    assert_eq!(millis("1970-01-01T00:00:00.000Z"), 0);
    assert_eq!(millis("2000-03-01T00:00:00.001Z"), 951_868_800_001);
    assert_eq!(millis("2024-02-29T23:59:59.999Z"), 1_709_251_199_999);
}

/// POSIX milliseconds now.
fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// POSIX milliseconds of a transcript time (`YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC).
fn millis(time: &str) -> i64 {
    let n = |at: std::ops::Range<usize>| -> i64 {
        time.get(at)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a transcript time: {time}"))
    };
    let (month, day) = (n(5..7), n(8..10));
    // Days since 1970-01-01 of the civil date (H. Hinnant's algorithm).
    let year = n(0..4) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (((days * 24 + n(11..13)) * 60 + n(14..16)) * 60 + n(17..19)) * 1000 + n(20..23)
}
