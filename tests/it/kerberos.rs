//! GSSAPI (Kerberos) to Kafka: the real binary logs in with a keytab to Apache Kafka's
//! GSSAPI listener, tickets coming from a real MIT KDC on loopback; a keytab whose keys the
//! KDC no longer has is refused.

use std::time::Duration;

use grpcio::RpcStatusCode;

use crate::support::kerberos::{Kdc, BROKER_PRINCIPAL, CLIENT_PRINCIPAL, REALM};
use crate::support::{wait_for, Kafka, Listener, Process};

/// The binary on `kafka`'s GSSAPI listener as lagscaler@REALM with `keytab`, its Kerberos
/// configuration and credential cache its own.
fn start(kafka: &Kafka, kdc: &Kdc, keytab: &str, cache: &str) -> Process {
    let krb5_conf = kdc.krb5_conf().display().to_string();
    Process::start(
        &kafka.bootstrap_for(Listener::Kerberos),
        &[
            ("SCALER_KAFKA_SASL", "gssapi"),
            ("SCALER_KAFKA_USERNAME", CLIENT_PRINCIPAL),
            ("SCALER_KAFKA_KERBEROS_REALM", REALM),
            ("SCALER_KAFKA_KERBEROS_KEYTAB", keytab),
            ("SCALER_POLL_INTERVAL", "500ms"),
            ("KRB5_CONFIG", &krb5_conf),
            ("KRB5CCNAME", cache),
        ],
    )
}

#[test]
fn gssapi_logs_in_with_a_keytab_and_a_keytab_with_old_keys_is_refused() {
    let kdc = Kdc::start();
    let kafka = Kafka::start_with_kerberos(&kdc);
    kafka.create_topic("tickets", 2);
    kafka.produce("tickets", 0, 9);
    kafka.produce("tickets", 1, 4);
    kafka.commit("inspectors", &[("tickets", 0, 2), ("tickets", 1, 4)]);
    let caches = tempfile::tempdir().expect("temp dir");
    let cache = |name: &str| format!("FILE:{}", caches.path().join(name).display());

    // A keytab made, then the principal's keys changed: that keytab is stale.
    let old_keytab = kdc.keytab(CLIENT_PRINCIPAL);
    kdc.change_keys(CLIENT_PRINCIPAL);
    let keytab = kdc.keytab(CLIENT_PRINCIPAL);

    let metadata = [("consumerGroup", "inspectors"), ("topic", "tickets")];
    let good = start(&kafka, &kdc, &keytab.display().to_string(), &cache("good"));
    let lag = wait_for(Duration::from_secs(30), || {
        good.client().lag(&metadata).ok()
    });
    assert_eq!(
        lag,
        Some(7),
        "no lag over GSSAPI within 30 s\nlagscaler:\n{}\nKDC:\n{}",
        good.log(),
        kdc.log()
    );
    // The KDC issued lagscaler a ticket for the broker's service principal.
    let service_ticket = format!("{CLIENT_PRINCIPAL}@{REALM} for {BROKER_PRINCIPAL}@{REALM}");
    assert!(kdc.log().contains(&service_ticket), "{}", kdc.log());

    let stale = start(
        &kafka,
        &kdc,
        &old_keytab.display().to_string(),
        &cache("stale"),
    );
    // Its first poll ends in a failure (no ticket, so no login): UNAVAILABLE, never a lag.
    let client = stale.client();
    let refused = wait_for(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(250));
        match client.lag(&metadata) {
            Ok(lag) => panic!("a stale keytab read the lag {lag}"),
            Err(status) if status.message().contains("first poll") => None,
            Err(status) => Some(status),
        }
    })
    .unwrap_or_else(|| panic!("the first poll never ended; log:\n{}", stale.log()));
    assert_eq!(refused.code(), RpcStatusCode::UNAVAILABLE, "{refused:?}");
    assert!(
        refused.message().contains("the login was refused"),
        "KEDA's message does not say why: {refused:?}"
    );
    let log = stale.log();
    assert!(
        log.contains("kinit: Password incorrect"),
        "kinit's refusal is not in the log:\n{log}"
    );
    println!(
        "stale keytab: UNAVAILABLE {:?}; kinit in the log: {:?}",
        refused.message(),
        log.lines().find(|line| line.contains("kinit"))
    );
    println!("KDC issued lagscaler a ticket for {BROKER_PRINCIPAL}@{REALM}");
}
