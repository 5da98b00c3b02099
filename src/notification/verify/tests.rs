use std::time::{Duration, Instant};

use base64::Engine as _;

use super::*;
use crate::authority::Principal;
use crate::notification::package0::{self, ConType};
use crate::store::Bounds;
use crate::tree::registry::Registry;

const KEY: Credentials<'static> = Credentials {
    secret: b"s3cret",
    data: b"auth-data",
};

/// A store with DM accounts: `signed` (Auth/Noti Secret and Data), `plain` (none), `odd`
/// (an unsupported Auth/Noti/Type), `boot` (bootstrap-only, no credentials).
struct Setup {
    dir: tempfile::TempDir,
    auth: Arc<Authority>,
    store: Arc<Pool>,
}

fn open(dir: &std::path::Path) -> (Arc<Authority>, Arc<Pool>) {
    let store = Arc::new(Pool::open(&dir.join("store.db"), Bounds::default(), 1).unwrap());
    let auth = Arc::new(Authority::new(
        store.clone(),
        Registry::with_builtin(),
        Box::new(|_| {}),
    ));
    (auth, store)
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (auth, store) = open(dir.path());
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let accounts = [
        serde_json::json!({"SrvID": "signed", "SrvURI": "https://signed.invalid/",
            "Auth": {"Noti": {"Secret": b64(KEY.secret), "Data": b64(KEY.data)}}}),
        serde_json::json!({"SrvID": "plain", "SrvURI": "https://plain.invalid/"}),
        serde_json::json!({"SrvID": "odd", "SrvURI": "https://odd.invalid/",
            "Auth": {"Noti": {"Type": "HMAC-MD5", "Secret": b64(b"x")}}}),
        serde_json::json!({"SrvID": "boot", "SrvURI": "https://boot.invalid/b",
            "Auth": {"Bootstrap": {"ServerURI": "https://boot.invalid/b"}}}),
    ];
    for mut account in accounts {
        account["Perm"] = serde_json::json!({"p0": {"MOID": "urn:x:1.0"}});
        auth.create_instance(
            &Principal::Admin,
            DMACC,
            &serde_json::json!({ "DMAcc": account }).to_string(),
        )
        .unwrap();
    }
    Setup { dir, auth, store }
}

const NOW: u64 = 1_800_000_000;

fn settings() -> Settings {
    Settings {
        timestamp_window_s: 300,
        rate_per_minute: 6,
    }
}

impl Setup {
    fn verifier(&self, settings: Settings) -> Verifier {
        Verifier::new(
            self.auth.clone(),
            self.store.clone(),
            settings,
            Arc::new(IgnoredCounts::default()),
        )
    }

    /// The same store reopened, as after a daemon restart.
    fn reopened(self) -> Setup {
        let Setup { dir, auth, store } = self;
        drop((auth, store));
        let (auth, store) = open(dir.path());
        Setup { dir, auth, store }
    }
}

/// A notification from `srv_id` with NOTIFICATION-ID `id` and TIMESTAMP `timestamp`, signed
/// with `key` when given.
fn note(srv_id: &str, id: u16, timestamp: u64, key: Option<Credentials<'_>>) -> Vec<u8> {
    let n = Notification {
        notification_id: Some(id),
        timestamp: Some(timestamp),
        req_mos: true,
        con_type: ConType::Wireline,
        ..Notification::new(srv_id)
    };
    package0::build(&n, key).unwrap()
}

fn at(posix: u64, instant: Instant) -> Now {
    Now { posix, instant }
}

async fn reason(v: &mut Verifier, payload: &[u8], now: Now) -> (Option<String>, Ignored) {
    match v.check(payload, now).await {
        Ok(ok) => panic!("passed: {ok:?}"),
        Err(Rejected { srv_id, reason }) => (srv_id, reason),
    }
}

#[tokio::test]
async fn a_good_notification_passes_and_every_bad_one_is_ignored_with_its_reason() {
    let s = setup();
    let mut v = s.verifier(settings());
    let now = at(NOW, Instant::now());

    let ok = v
        .check(&note("signed", 1, NOW, Some(KEY)), now)
        .await
        .unwrap();
    assert_eq!(ok.target, Target::Session);
    assert_eq!(ok.notification.notification_id, Some(1));
    assert!(ok.notification.req_mos);
    assert_eq!(ok.notification.con_type, ConType::Wireline);
    let ok = v.check(&note("plain", 1, NOW, None), now).await.unwrap();
    assert_eq!(ok.target, Target::Session, "no credentials, no digest");

    // Not attributable to an account: not counted for one.
    let (srv, r) = reason(&mut v, &[0x10], now).await;
    assert!(srv.is_none() && matches!(r, Ignored::Malformed(_)), "{r}");
    let (srv, r) = reason(&mut v, &note("nosuch", 2, NOW, None), now).await;
    assert!(
        srv.is_none() && matches!(r, Ignored::UnknownServer(_)),
        "{r}"
    );
    assert_eq!(r.to_string(), "no DM account has SrvID \"nosuch\"");

    let forged = Credentials {
        secret: b"guess",
        data: KEY.data,
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (note("signed", 3, NOW, Some(forged)), "the digest is wrong"),
        (
            note("signed", 4, NOW, None),
            "it carries no digest, but the DM account has Auth/Noti credentials",
        ),
        (
            note("plain", 5, NOW, Some(KEY)),
            "it carries a digest, but the DM account has no Auth/Noti/Secret",
        ),
        (
            note("odd", 6, NOW, None),
            "Auth/Noti/Type \"HMAC-MD5\" is not supported (SHA256 is)",
        ),
        (
            note("signed", 7, NOW - 301, Some(KEY)),
            "its TIMESTAMP 1799999699 is 301 s from the device's clock (1800000000); \
             [notification] timestamp_window_s is 300",
        ),
        (
            note("signed", 8, NOW + 301, Some(KEY)),
            "its TIMESTAMP 1800000301 is 301 s from the device's clock (1800000000); \
             [notification] timestamp_window_s is 300",
        ),
        (
            note("signed", 1, NOW, Some(KEY)),
            "NOTIFICATION-ID 1 was seen already (ids are kept for [notification] \
             timestamp_window_s)",
        ),
    ];
    for (payload, want) in cases {
        let (srv, r) = reason(&mut v, &payload, now).await;
        assert_eq!(r.to_string(), want);
        assert!(srv.is_some(), "{r}");
    }
    // At the edges of the window, either way.
    for (id, ts) in [(9, NOW - 300), (10, NOW + 300)] {
        v.check(&note("signed", id, ts, Some(KEY)), now)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_replay_is_refused_after_a_restart_and_ids_wrap_once_the_window_passed() {
    let s = setup();
    let start = Instant::now();
    let mut v = s.verifier(settings());
    let first = note("signed", 7, NOW, Some(KEY));
    v.check(&first, at(NOW, start)).await.unwrap();
    // Sent with a TIMESTAMP at the far edge of the window: kept until a window past it.
    let ahead = note("signed", 8, NOW + 300, Some(KEY));
    v.check(&ahead, at(NOW, start)).await.unwrap();
    drop(v);

    let s = s.reopened();
    let mut v = s.verifier(settings());
    let (_, r) = reason(&mut v, &first, at(NOW + 10, start)).await;
    assert!(matches!(r, Ignored::Duplicate(7)), "{r}");
    // Past its window the replay's TIMESTAMP gives it away...
    let (_, r) = reason(&mut v, &first, at(NOW + 301, start)).await;
    assert!(matches!(r, Ignored::Stale { .. }), "{r}");
    // ... and the one sent ahead is still kept while its TIMESTAMP would pass.
    let (_, r) = reason(&mut v, &ahead, at(NOW + 550, start)).await;
    assert!(matches!(r, Ignored::Duplicate(8)), "{r}");
    // The 2-byte id wrapped around: a new notification with an old id passes.
    v.check(
        &note("signed", 7, NOW + 400, Some(KEY)),
        at(NOW + 400, start),
    )
    .await
    .unwrap();
    // Ids are per server.
    v.check(&note("plain", 8, NOW + 400, None), at(NOW + 400, start))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_rate_is_per_server_and_counts_only_what_passed() {
    let s = setup();
    let mut v = s.verifier(Settings {
        rate_per_minute: 2,
        ..settings()
    });
    let start = Instant::now();
    let forged = Credentials {
        secret: b"guess",
        data: b"",
    };
    for id in 1..=5 {
        let (_, r) = reason(
            &mut v,
            &note("signed", 100 + id, NOW, Some(forged)),
            at(NOW, start),
        )
        .await;
        assert!(matches!(r, Ignored::WrongDigest), "{r}");
    }
    for id in [1, 2] {
        v.check(&note("signed", id, NOW, Some(KEY)), at(NOW, start))
            .await
            .unwrap();
    }
    let third = note("signed", 3, NOW, Some(KEY));
    let (srv, r) = reason(&mut v, &third, at(NOW, start + Duration::from_secs(59))).await;
    assert_eq!(srv.as_deref(), Some("signed"));
    assert_eq!(
        r.to_string(),
        "more than 2 notifications in a minute ([notification] rate_per_minute)"
    );
    // Another server has its own rate.
    v.check(&note("plain", 3, NOW, None), at(NOW, start))
        .await
        .unwrap();
    // A minute on, the refused one passes: being refused did not record its id.
    v.check(&third, at(NOW + 60, start + Duration::from_secs(60)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bootstrap_only_account_is_notified_for_its_bootstrap() {
    let s = setup();
    let mut v = s.verifier(settings());
    let ok = v
        .check(&note("boot", 1, NOW, None), at(NOW, Instant::now()))
        .await
        .unwrap();
    let miid = s
        .auth
        .instances_of(DMACC)
        .unwrap()
        .into_iter()
        .find(|m| {
            let node = s.auth.read_internal(&NodeAddr::root(DMACC, m)).unwrap();
            text(&node, "SrvID").as_deref() == Some("boot")
        })
        .unwrap();
    assert_eq!(ok.target, Target::Bootstrap { miid });
}

#[tokio::test]
async fn ignored_notifications_are_counted_for_the_server_they_name() {
    let s = setup();
    let mut v = s.verifier(settings());
    let counts = v.ignored.clone();
    let now = at(NOW, Instant::now());
    for payload in [
        note("signed", 1, NOW, None),
        note("signed", 2, NOW - 1000, Some(KEY)),
        note("nosuch", 3, NOW, None),
        vec![0xff],
    ] {
        let rejected = v.check(&payload, now).await.unwrap_err();
        v.ignore(rejected, Via::Udp);
    }
    assert_eq!(counts.of("signed"), 2);
    assert_eq!(counts.of("nosuch"), 0);
    assert_eq!(counts.of("plain"), 0);
}

#[test]
fn ignored_notifications_are_logged_one_by_one_only_up_to_a_budget_per_span() {
    let mut budget = LogBudget::default();
    let t0 = Instant::now();
    for i in 0..LOGGED_PER_SPAN {
        assert_eq!(budget.admit(t0), (true, 0), "#{i} is logged");
    }
    for _ in 0..5 {
        assert_eq!(budget.admit(t0 + Duration::from_secs(30)), (false, 0));
    }
    // The next span logs again, and says first how many went unlogged.
    assert_eq!(budget.admit(t0 + RATE_SPAN), (true, 5));
    assert_eq!(budget.admit(t0 + RATE_SPAN), (true, 0));
}
