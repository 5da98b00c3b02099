//! The SessionInfo MO (`urn:oma:mo:oma-sessioninfomo:1.0`) in a real session: a session the
//! scheduler runs against `omadm-devserver` over TLS finds its own instance with PROTOCOL.md's
//! `GET …sessioninfomo:1.0//CBT`, and the instance is gone once the session ended.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use omadmd::authority::Principal;
use omadmd::session::{Event, Limits, Origin, Scheduler, Start};
use omadmd::tree::builtin;

use crate::session_tls::{account, client, package_bodies, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_session_info_and_it_goes_with_the_session() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "info", "packages": [
              {"commands": [["GET", "urn:oma:mo:oma-sessioninfomo:1.0//CBT"],
                            ["GET", "urn:oma:mo:oma-sessioninfomo:1.0//SrvID"],
                            ["GET", "urn:oma:mo:oma-sessioninfomo:1.0//Reason"],
                            ["GET", "urn:oma:mo:oma-sessioninfomo:1.0//SessionID"],
                            ["GET", "urn:oma:mo:oma-sessioninfomo:1.0//StartTime"]],
               "expect": [200, 200, 200, 200, 200]}]}"#,
        certs.path(),
    )
    .await;
    let c = client(BTreeMap::new(), Limits::default());
    account(&c, &srv, srv.ca_pem(), &[]);
    let scheduler = Scheduler::new(
        c.engine.clone(),
        c.auth.clone(),
        c.store.clone(),
        PathBuf::from("/"),
    );
    let mut events = scheduler.subscribe();
    let Start::Now { session_id, .. } =
        scheduler.start("devserver", "", Origin::Bus).await.unwrap()
    else {
        panic!("nothing else runs")
    };
    // A failure bound, not a measurement.
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Event::Finished { status, .. } = events.recv().await.unwrap() {
                return status;
            }
        }
    })
    .await
    .expect("the session ended");
    assert_eq!(status, 200);
    srv.wait_for_sessions(1).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());

    let p3 = package_bodies(&srv, "package#3").remove(0)["Status"].clone();
    let data = |i: usize| p3[i]["Data"].to_string();
    assert!(
        !data(0).is_empty() && data(0).contains("CBT"),
        "{}",
        data(0)
    );
    assert!(data(1).contains("\"devserver\""), "{}", data(1));
    assert!(
        // The account's first session: BootstrapComplete, whatever started it.
        data(2).contains("urn:oma:at:dm:2.0:BootstrapComplete"),
        "{}",
        data(2)
    );
    assert!(data(3).contains(&session_id), "{} {session_id}", data(3));

    // Gone with the session, for everyone.
    assert!(
        c.auth
            .instances_of(builtin::SESSIONINFO)
            .unwrap()
            .is_empty()
    );
    assert!(
        c.auth
            .get(
                &Principal::Server("devserver".into()),
                "urn:oma:mo:oma-sessioninfomo:1.0//CBT"
            )
            .is_err()
    );
}
