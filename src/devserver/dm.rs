//! The DM endpoint's session engine: Package#1 opens a session and gets the script's first
//! Package#2, each Package#3 gets the next (or the same one again while it repeats), a
//! Package#2 with `END` (or a scripted HTTP status, or a body the client cannot read) ends
//! it.
//!
//! Sessions are keyed by the `OMADM-DevID` header (project choice): one open session per
//! device. A new Package#1 from a device whose session is still open abandons that session
//! (recorded as a failure) and starts a new one. Session numbers count every device's
//! sessions from 1; the Nth session runs the scenario's Nth script (the last one repeats).
//!
//! What the engine checks, each breach becoming a failure of the session:
//! - Package#1: `Content-Type` is the initiation type, `Accept` allows the request type,
//!   the body is a valid Package#1, with exactly one session-reason alert, first;
//! - Package#3: `Content-Type` is the response type, a session is open for the device, the
//!   body is a valid Package#3 with one `Status` per command of the previous Package#2, and
//!   the statuses match the scenario's `expect`.
//!
//! The engine is pure bookkeeping: the HTTP layer hands it requests and sends its replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::repository::{accepts, media_type};
use super::scenario::{CmdText, Reply, Step};
use crate::protocol::alert::{BOOTSTRAP_COMPLETE, CLIENT_INITIATED, SERVER_INITIATED};
use crate::protocol::{INITIATION, Package1, Package3, REQUEST, RESPONSE};

/// How one session went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionOutcome {
    /// The session number, from 1.
    pub number: u64,
    /// The device (`OMADM-DevID`).
    pub dev_id: String,
    /// The session-reason alert type of Package#1.
    pub reason: Option<String>,
    /// The session has ended (END sent, a scripted status, abandoned or broken off).
    pub finished: bool,
    /// How many Package#2 (or scripted answers) the server sent.
    pub packages_sent: usize,
    /// The `sc` values of each Package#3 received, in order.
    pub statuses: Vec<Vec<u16>>,
    /// Every broken rule and unmet expectation, in order.
    pub failures: Vec<String>,
}

impl SessionOutcome {
    /// Finished, and nothing failed.
    pub fn passed(&self) -> bool {
        self.finished && self.failures.is_empty()
    }
}

/// A request to the DM URL.
pub(crate) struct DmRequest<'a> {
    pub method: &'a str,
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub dev_id: Option<&'a str>,
    pub body: &'a [u8],
}

/// What to answer, and what to record about it.
pub(crate) struct DmReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub delay: Option<Duration>,
    pub session: u64,
    pub in_kind: &'static str,
    pub out_kind: &'static str,
    /// Broken rules found in the request.
    pub problems: Vec<String>,
    /// Summary lines.
    pub summary: Vec<String>,
}

struct Open {
    number: u64,
    script: Arc<Vec<Step>>,
    next: usize,
    /// How many times the step at `next` has been sent (it may repeat).
    sent: u64,
    awaiting: Option<Awaiting>,
}

/// The Package#2 whose statuses the next Package#3 must carry.
struct Awaiting {
    package: usize,
    commands: Vec<CmdText>,
    expect: Option<Vec<Option<Vec<u16>>>>,
}

pub(crate) struct Engine {
    scripts: Vec<Arc<Vec<Step>>>,
    outcomes: Vec<SessionOutcome>,
    open: HashMap<String, Open>,
    latest_by_dev: HashMap<String, u64>,
    latest: u64,
    stray: Vec<String>,
}

impl Engine {
    pub fn new(scripts: Vec<Vec<Step>>) -> Engine {
        Engine {
            scripts: scripts.into_iter().map(Arc::new).collect(),
            outcomes: Vec::new(),
            open: HashMap::new(),
            latest_by_dev: HashMap::new(),
            latest: 0,
            stray: Vec::new(),
        }
    }

    pub fn outcomes(&self) -> Vec<SessionOutcome> {
        self.outcomes.clone()
    }

    /// Problems that belong to no session.
    pub fn stray(&self) -> Vec<String> {
        self.stray.clone()
    }

    pub fn finished_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.finished).count()
    }

    /// The session repository traffic is attributed to: the latest one any device started
    /// (`0`: none yet).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// Records a failure against session `number` (or as stray when `0`).
    pub fn fail(&mut self, number: u64, problem: String) {
        match number
            .checked_sub(1)
            .and_then(|i| self.outcomes.get_mut(i as usize))
        {
            Some(o) => o.failures.push(problem),
            None => self.stray.push(problem),
        }
    }

    pub fn handle(&mut self, req: &DmRequest<'_>) -> DmReply {
        let dev = req.dev_id.map(str::trim).filter(|d| !d.is_empty());
        if req.method != "POST" {
            let problem = format!("{} to the DM URL: packages are POSTed", req.method);
            let session = dev
                .and_then(|d| self.latest_by_dev.get(d).copied())
                .unwrap_or(0);
            self.fail(session, problem.clone());
            let mut r = text_reply(405, "the DM URL takes POST only\n", session, "dm");
            r.headers.push(("allow", "POST".into()));
            r.problems.push(problem);
            return r;
        }
        let ct = req.content_type.map(media_type);
        let mut problems = Vec::new();
        let is_package3 = match ct.as_deref() {
            Some(INITIATION) => false,
            Some(RESPONSE) => true,
            other => {
                let guess = serde_json::from_slice::<serde_json::Value>(req.body)
                    .ok()
                    .is_some_and(|v| v.get("Status").is_some());
                problems.push(format!(
                    "Content-Type {} is neither {INITIATION} (Package#1) nor {RESPONSE} (Package#3); \
                     taken as Package#{}",
                    other.unwrap_or("(none)"),
                    if guess { 3 } else { 1 }
                ));
                guess
            }
        };
        let Some(dev) = dev else {
            let problem = format!(
                "{} without an OMADM-DevID header",
                if is_package3 {
                    "Package#3"
                } else {
                    "Package#1"
                }
            );
            self.stray.push(problem.clone());
            let mut r = text_reply(400, "missing OMADM-DevID header\n", 0, "dm");
            r.problems = problems;
            r.problems.push(problem.clone());
            r.summary.push(format!("POST /dm refused: {problem}"));
            return r;
        };
        if is_package3 {
            self.package3(dev, req, problems)
        } else {
            self.package1(dev, req, problems)
        }
    }

    fn package1(&mut self, dev: &str, req: &DmRequest<'_>, mut problems: Vec<String>) -> DmReply {
        let mut summary = Vec::new();
        if let Some(old) = self.open.remove(dev) {
            let o = &mut self.outcomes[old.number as usize - 1];
            o.failures.push(
                "abandoned: the device sent a new Package#1 before this session ended".into(),
            );
            o.finished = true;
            summary.push(format!(
                "session {} abandoned by a new Package#1 ✗",
                old.number
            ));
        }
        let number = self.outcomes.len() as u64 + 1;
        let script = self.scripts[(number as usize - 1).min(self.scripts.len() - 1)].clone();
        self.outcomes.push(SessionOutcome {
            number,
            dev_id: dev.to_owned(),
            reason: None,
            finished: false,
            packages_sent: 0,
            statuses: Vec::new(),
            failures: Vec::new(),
        });
        self.latest_by_dev.insert(dev.to_owned(), number);
        self.latest = number;
        match req.accept {
            None => problems.push(format!("Package#1 without Accept: {REQUEST}")),
            Some(a) if !accepts(Some(a), REQUEST) => problems.push(format!(
                "Package#1 has Accept: {a}, which does not allow {REQUEST}"
            )),
            Some(_) => {}
        }
        let p1 = match serde_json::from_slice::<Package1>(req.body) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("Package#1 is not valid: {e}"));
                summary.push(format!(
                    "session {number} package#1 ← device {dev:?}: invalid"
                ));
                let mut r = text_reply(400, "invalid Package#1\n", number, "package#1");
                self.note_problems(number, &problems, &mut summary);
                r.problems = problems;
                r.summary = summary;
                self.finish(number, dev, &mut r.summary);
                return r;
            }
        };
        let reasons: Vec<(usize, &str)> = p1
            .alert
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                [SERVER_INITIATED, CLIENT_INITIATED, BOOTSTRAP_COMPLETE]
                    .contains(&a.alert_type.as_str())
            })
            .map(|(i, a)| (i, a.alert_type.as_str()))
            .collect();
        match reasons.as_slice() {
            [(0, _)] => {}
            [(_, _)] => {
                problems.push("the session-reason alert must come first in Package#1".into())
            }
            list => problems.push(format!(
                "Package#1 has {} session-reason alerts; it needs exactly one",
                list.len()
            )),
        }
        let reason = reasons.first().map(|(_, r)| r.to_string());
        let short = reason
            .as_deref()
            .map(|r| r.rsplit(':').next().unwrap_or(r).to_owned())
            .unwrap_or_else(|| "no session reason".into());
        summary.push(format!(
            "session {number} package#1 ← device {dev:?}, {short}, {} MO(s), {} alert(s)",
            p1.mos.len(),
            p1.alert.len()
        ));
        self.outcomes[number as usize - 1].reason = reason;
        self.note_problems(number, &problems, &mut summary);
        self.open.insert(
            dev.to_owned(),
            Open {
                number,
                script,
                next: 0,
                sent: 0,
                awaiting: None,
            },
        );
        let mut r = self.send(dev, "package#1");
        r.problems = problems;
        summary.append(&mut r.summary);
        r.summary = summary;
        r
    }

    fn package3(&mut self, dev: &str, req: &DmRequest<'_>, mut problems: Vec<String>) -> DmReply {
        let mut summary = Vec::new();
        let Some(open) = self.open.get_mut(dev) else {
            let (session, problem) = match self.latest_by_dev.get(dev) {
                Some(&n) => (
                    n,
                    format!("Package#3 from device {dev:?} after session {n} ended"),
                ),
                None => (
                    0,
                    format!("Package#3 from device {dev:?}, which has no session (no Package#1)"),
                ),
            };
            self.fail(session, problem.clone());
            let mut r = text_reply(
                400,
                "no open DM session for this device; start one with Package#1\n",
                session,
                "package#3",
            );
            r.summary
                .push(format!("session {session} package#3 refused: {problem} ✗"));
            problems.push(problem);
            r.problems = problems;
            return r;
        };
        let number = open.number;
        let awaiting = open.awaiting.take();
        let p3 = match serde_json::from_slice::<Package3>(req.body) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("Package#3 is not valid: {e}"));
                summary.push(format!("session {number} package#3 ← invalid"));
                self.note_problems(number, &problems, &mut summary);
                let mut r = text_reply(400, "invalid Package#3\n", number, "package#3");
                r.problems = problems;
                r.summary = summary;
                self.finish(number, dev, &mut r.summary);
                return r;
            }
        };
        for (i, status) in p3.status.iter().enumerate() {
            if let Some(Err(e)) = status.data.as_ref().map(|d| d.parse()) {
                problems.push(format!("status {i} of Package#3 carries bad Data: {e}"));
            }
        }
        let codes: Vec<u16> = p3.status.iter().map(|s| s.sc).collect();
        let mut line = format!(
            "session {number} package#3 ← [{}]",
            listing(codes.iter().map(u16::to_string))
        );
        if !p3.alert.is_empty() {
            line.push_str(&format!(" + {} alert(s)", p3.alert.len()));
        }
        if let Some(aw) = &awaiting {
            if codes.len() != aw.commands.len() {
                problems.push(format!(
                    "Package#3 has {} status(es) for the {} command(s) of package#2 #{}",
                    codes.len(),
                    aw.commands.len(),
                    aw.package
                ));
            }
            if let Some(expect) = &aw.expect {
                let mut mismatch = false;
                for (i, (want, got)) in expect.iter().zip(&codes).enumerate() {
                    if let Some(want) = want
                        && !want.contains(got)
                    {
                        mismatch = true;
                        problems.push(format!(
                            "package#2 #{} command {} ({}): expected {}, got {got}",
                            aw.package,
                            i + 1,
                            aw.commands[i].text,
                            show_expect(want)
                        ));
                    }
                }
                if mismatch {
                    let want = expect
                        .iter()
                        .map(|w| w.as_deref().map_or("any".into(), show_expect));
                    line.push_str(&format!(" ✗ expected [{}]", listing(want)));
                }
            }
        }
        summary.push(line);
        let o = &mut self.outcomes[number as usize - 1];
        o.statuses.push(codes);
        self.note_problems(number, &problems, &mut summary);
        let mut r = self.send(dev, "package#3");
        r.problems = problems;
        summary.append(&mut r.summary);
        r.summary = summary;
        r
    }

    /// Sends the open session's next step.
    fn send(&mut self, dev: &str, in_kind: &'static str) -> DmReply {
        let open = self.open.get_mut(dev).expect("an open session");
        let number = open.number;
        let step = open
            .script
            .get(open.next)
            .cloned()
            .unwrap_or_else(Step::end);
        open.sent += 1;
        if step.repeat.done_after(open.sent) {
            open.next += 1;
            open.sent = 0;
        }
        let o = &mut self.outcomes[number as usize - 1];
        o.packages_sent += 1;
        let package = o.packages_sent;
        let mut summary = Vec::new();
        let mut r = match &step.reply {
            Reply::HttpStatus(status) => {
                summary.push(format!(
                    "session {number} package#2 → HTTP {status} (scripted, no body)"
                ));
                DmReply {
                    status: *status,
                    headers: Vec::new(),
                    body: Vec::new(),
                    delay: step.delay,
                    session: number,
                    in_kind,
                    out_kind: "package#2",
                    problems: Vec::new(),
                    summary: Vec::new(),
                }
            }
            Reply::Package {
                body,
                commands,
                raw,
                ends,
            } => {
                let names = || listing(commands.iter().map(|c| c.name.clone()));
                let mut line = format!(
                    "session {number} package#2 → {} command{} ({})",
                    commands.len(),
                    if commands.len() == 1 { "" } else { "s" },
                    names()
                );
                if *raw {
                    line = format!(
                        "session {number} package#2 → raw body ({} bytes)",
                        body.len()
                    );
                    if commands.is_empty() && *ends {
                        line.push_str(", not a valid Package#2");
                    } else {
                        line.push_str(&format!(", {} command(s) ({})", commands.len(), names()));
                    }
                }
                if step.appended {
                    line.push_str(" [END added by the server]");
                }
                summary.push(line);
                if !ends {
                    open.awaiting = Some(Awaiting {
                        package,
                        commands: commands.clone(),
                        expect: step.expect.clone(),
                    });
                }
                DmReply {
                    status: 200,
                    headers: vec![("content-type", REQUEST.to_owned())],
                    body: body.clone(),
                    delay: step.delay,
                    session: number,
                    in_kind,
                    out_kind: "package#2",
                    problems: Vec::new(),
                    summary: Vec::new(),
                }
            }
        };
        if step.ends() {
            self.finish(number, dev, &mut summary);
        }
        r.summary = summary;
        r
    }

    fn finish(&mut self, number: u64, dev: &str, summary: &mut Vec<String>) {
        self.open.remove(dev);
        let o = &mut self.outcomes[number as usize - 1];
        o.finished = true;
        summary.push(if o.failures.is_empty() {
            format!("session {number} finished: every expectation held")
        } else {
            format!(
                "session {number} finished: {} failure(s) ✗",
                o.failures.len()
            )
        });
    }

    fn note_problems(&mut self, number: u64, problems: &[String], summary: &mut Vec<String>) {
        for p in problems {
            summary.push(format!("  ✗ {p}"));
            self.fail(number, p.clone());
        }
    }
}

/// Summary lines list at most this many items of a package.
const LISTED: usize = 16;

/// `a, b, c`; a long list is cut after [`LISTED`] items, saying how many there are.
fn listing(items: impl ExactSizeIterator<Item = String>) -> String {
    let count = items.len();
    let shown: Vec<String> = items.take(LISTED).collect();
    if count > LISTED {
        format!("{}, … ({count} in all)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn show_expect(want: &[u16]) -> String {
    match want {
        [one] => one.to_string(),
        many => {
            let v: Vec<String> = many.iter().map(u16::to_string).collect();
            format!("one of {}", v.join("/"))
        }
    }
}

fn text_reply(status: u16, text: &str, session: u64, kind: &'static str) -> DmReply {
    DmReply {
        status,
        headers: vec![("content-type", "text/plain; charset=utf-8".into())],
        body: text.as_bytes().to_vec(),
        delay: None,
        session,
        in_kind: kind,
        out_kind: "dm",
        problems: Vec::new(),
        summary: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devserver::scenario::{Scenario, Urls};

    fn engine(text: &str) -> Engine {
        let s = Scenario::parse(text, "t").unwrap();
        Engine::new(s.scripts(&Urls::new("https://h")).unwrap())
    }

    fn post<'a>(ct: &'a str, body: &'a [u8]) -> DmRequest<'a> {
        DmRequest {
            method: "POST",
            content_type: Some(ct),
            accept: Some(REQUEST),
            dev_id: Some("dev1"),
            body,
        }
    }

    const P1: &[u8] = br#"{"Alert": [{"AlertType": "urn:oma:at:dm:2.0:ClientInitiatedMgmt"}]}"#;

    #[test]
    fn two_packages_with_a_mismatch() {
        let mut e = engine(
            r#"{"packages": [{"commands": [["GET", "urn:a:1.0//X"], ["GET", "urn:a:1.0//Y"]], "expect": [200, [200, 404]]},
                             {"commands": [["DELETE", "urn:a:1.0//X"]]}]}"#,
        );
        let r = e.handle(&post(INITIATION, P1));
        assert_eq!(r.status, 200);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let r = e.handle(&post(
            RESPONSE,
            br#"{"Status": [{"sc": 404}, {"sc": 404}]}"#,
        ));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("command 1 (GET urn:a:1.0//X): expected 200, got 404"));
        assert!(String::from_utf8(r.body).unwrap().contains("END"));
        let o = &e.outcomes()[0];
        assert!(o.finished && !o.passed());
        assert_eq!(o.statuses, [vec![404, 404]]);
        let r = e.handle(&post(RESPONSE, br#"{"Status": []}"#));
        assert_eq!(r.status, 400);
        assert!(r.problems[0].contains("after session 1 ended"));
    }

    #[test]
    fn repeating_packages_are_sent_again() {
        let mut e = engine(
            r#"{"sessions": [
                 {"packages": [{"commands": [["GET", "urn:a:1.0//X"]], "repeat": 2}]},
                 {"packages": [{"commands": [["CONT", "https://h/dm"]], "repeat": "forever"}]}]}"#,
        );
        let cmds = |r: &DmReply| String::from_utf8(r.body.clone()).unwrap();
        let r = e.handle(&post(INITIATION, P1));
        assert!(cmds(&r).contains("GET") && !cmds(&r).contains("END"));
        let r = e.handle(&post(RESPONSE, br#"{"Status": [{"sc": 200}]}"#));
        assert!(cmds(&r).contains("GET") && !cmds(&r).contains("END"));
        let r = e.handle(&post(RESPONSE, br#"{"Status": [{"sc": 200}]}"#));
        assert_eq!(cmds(&r), r#"{"CMD":[["END"]]}"#);
        assert!(e.outcomes()[0].passed());

        e.handle(&post(INITIATION, P1));
        for _ in 0..50 {
            let r = e.handle(&post(RESPONSE, br#"{"Status": [{"sc": 200}]}"#));
            assert!(cmds(&r).contains("CONT"), "{}", cmds(&r));
        }
        let o = &e.outcomes()[1];
        assert_eq!(o.packages_sent, 51);
        assert!(!o.finished);
        // Long packages are listed in part in the summary.
        assert!(listing((0..40).map(|i| i.to_string())).ends_with(", 15, … (40 in all)"));
    }

    #[test]
    fn package1_rules() {
        let mut e =
            engine(r#"{"packages": [{"commands": [["GET", "urn:a:1.0//X"]], "expect": [null]}]}"#);
        let two = br#"{"Alert": [{"AlertType": "x"}, {"AlertType": "urn:oma:at:dm:2.0:ClientInitiatedMgmt"},
                                 {"AlertType": "urn:oma:at:dm:2.0:BootstrapComplete"}]}"#;
        let r = e.handle(&post("text/plain", two));
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(r.problems[0].contains("neither"));
        assert!(r.problems[1].contains("2 session-reason alerts"));
        let r = e.handle(&post(INITIATION, br#"{"Alert": [{"AlertType": "x"}, {"AlertType": "urn:oma:at:dm:2.0:ClientInitiatedMgmt"}]}"#));
        assert!(r.problems[0].contains("must come first"));
        assert!(
            e.outcomes()[0]
                .failures
                .iter()
                .any(|f| f.contains("abandoned"))
        );
        let r = e.handle(&DmRequest {
            dev_id: None,
            ..post(INITIATION, P1)
        });
        assert_eq!(r.status, 400);
        assert_eq!(e.stray().len(), 1);
    }
}
