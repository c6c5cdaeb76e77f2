//! lagscaler's OAUTHBEARER login as KEDA's Kafka trigger configures it (`sasl: oauthbearer`,
//! client id and secret, `oauthTokenEndpointUri`, `scopes`, `oauthExtensions`):
//! librdkafka's own OpenID Connect client asks a token endpoint the test serves on loopback,
//! and Apache Kafka's own validator checks each token against the test's JWKS.

use std::time::{Duration, Instant};

use crate::support::oauth::{IdentityProvider, Issue, CLIENT_ID, CLIENT_SECRET};
use crate::support::{wait_for, Kafka, Listener, Process};

const METADATA: [(&str, &str); 2] = [("consumerGroup", "bearers"), ("topic", "tokens")];
/// How long the provider's tokens live: short, so that a run outlives several.
const LIFETIME: Duration = Duration::from_secs(8);

/// Logs in, reads the true lag through three token lifetimes (Kafka re-authenticates each
/// connection when its token expires, KIP-368, so a client that did not fetch a new token
/// in time would be cut off), and is refused an expired token, a token signed with a key
/// the JWKS does not hold, and a wrong client secret, answering UNAVAILABLE. Neither the
/// client secret nor any token it was issued appears in lagscaler's debug log.
#[test]
fn oauthbearer_logs_in_with_client_credentials_refreshes_its_token_and_is_refused_bad_ones() {
    let provider = IdentityProvider::start(LIFETIME);
    let kafka = Kafka::start_with_oauth(&provider.jwks_url());
    kafka.create_topic("tokens", 1);
    kafka.produce("tokens", 0, 5);
    kafka.commit("bearers", &[("tokens", 0, 2)]);
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("write the secret");
    let wrong_file = dir.path().join("wrong-secret");
    std::fs::write(&wrong_file, "wrong-secret-5be2-never-logged\n").expect("write");
    let (secret_file, wrong_file) = (
        secret_file.display().to_string(),
        wrong_file.display().to_string(),
    );
    let token_url = provider.token_url();
    let settings = |secret_file: &str| -> Vec<(String, String)> {
        [
            ("SCALER_POLL_INTERVAL", "300ms"),
            ("SCALER_KAFKA_TIMEOUT", "2s"),
            ("SCALER_KAFKA_SASL", "oauthbearer"),
            ("SCALER_KAFKA_USERNAME", CLIENT_ID),
            ("SCALER_KAFKA_PASSWORD_FILE", secret_file),
            ("SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI", &token_url),
            ("SCALER_KAFKA_OAUTH_SCOPES", "kafka,lag.read"),
            ("SCALER_KAFKA_OAUTH_EXTENSIONS", "tenant=acme"),
            // The test's provider and listener are plain HTTP and SASL_PLAINTEXT.
            ("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD", "true"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    };
    let start = |secret_file: &str| {
        let owned = settings(secret_file);
        let env: Vec<(&str, &str)> = owned
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        Process::start(&kafka.bootstrap_for(Listener::OAuth), &env)
    };
    let no_secret_in = |process: &Process, case: &str| {
        let log = process.log();
        assert!(log.contains(" DEBUG "), "{case}: debug logging is on");
        assert!(
            !log.contains(CLIENT_SECRET),
            "{case}: the client secret in the log"
        );
        assert!(
            !log.contains("wrong-secret-5be2"),
            "{case}: a secret in the log"
        );
        for token in provider.asked().tokens {
            let signature = token.rsplit('.').next().unwrap_or(&token);
            assert!(
                !log.contains(signature),
                "{case}: an issued token in the log:\n{log}"
            );
        }
    };

    // Valid tokens: the lag, through three lifetimes, and a record produced after two is
    // counted (fresh reads, not a kept answer).
    let process = start(&secret_file);
    let client = process.client();
    let first = wait_for(Duration::from_secs(15), || client.lag(&METADATA).ok());
    assert_eq!(first, Some(3), "log:\n{}", process.log());
    assert!(
        process
            .log()
            .contains("OAUTHBEARER client_id=lagscaler-test"),
        "{}",
        process.log()
    );
    let started = Instant::now();
    let (mut answers, mut wrong, mut produced) = (0, Vec::new(), false);
    while started.elapsed() < 3 * LIFETIME {
        if !produced && started.elapsed() >= 2 * LIFETIME {
            kafka.produce("tokens", 0, 1);
            produced = true;
        }
        match client.lag(&METADATA) {
            Ok(3) => {}
            Ok(4) if produced => {}
            other => wrong.push(format!("{other:?} at {:?}", started.elapsed())),
        }
        answers += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let counted = wait_for(Duration::from_secs(5), || {
        (client.lag(&METADATA).ok()? == 4).then_some(())
    });
    let asked = provider.asked();
    println!(
        "{answers} answers over {:?} with {}-second tokens: {} wrong; the token endpoint \
         issued {} tokens, refused {} requests",
        3 * LIFETIME,
        LIFETIME.as_secs(),
        wrong.len(),
        asked.tokens.len(),
        asked.refused
    );
    assert!(wrong.is_empty(), "{wrong:?}\n{}", process.log());
    assert!(counted.is_some(), "the new record was not counted");
    assert_eq!(asked.refused, 0, "requests with other credentials");
    // Each of lagscaler's Kafka clients asked at start and again before each expiry: at
    // least three tokens for the one client that lived through three lifetimes.
    assert!(
        asked.tokens.len() >= 3,
        "{} tokens issued",
        asked.tokens.len()
    );
    for body in &asked.bodies {
        assert!(
            body.contains("grant_type=client_credentials")
                && body.contains("kafka")
                && body.contains("lag.read"),
            "a token request without the grant or the scopes: {body}"
        );
    }
    drop(client);
    no_secret_in(&process, "valid tokens");
    drop(process);

    // Refused: the broker's validator, or librdkafka itself for the expired token.
    // librdkafka's error, in the log: the token it refused itself, the broker's refusal,
    // the token endpoint's.
    for (case, issue, secret, refusal, answer) in [
        (
            "an expired token",
            Issue::Expired,
            &secret_file,
            "Must supply an unexpired token",
            "Must supply an unexpired token",
        ),
        (
            "a token signed with another key",
            Issue::WrongKey,
            &secret_file,
            "SASL authentication error: {\"status\":\"invalid_token\"}",
            "invalid_token",
        ),
        (
            "a wrong client secret",
            Issue::Valid,
            &wrong_file,
            "invalid_client",
            "invalid_client",
        ),
    ] {
        provider.issue(issue);
        let refused_before = provider.asked().refused;
        let process = start(secret);
        let client = process.client();
        // Until the first poll has failed, the answer says only that it has not finished.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let status = match client.lag(&METADATA) {
                Ok(lag) => panic!("{case}: lag {lag} read\n{}", process.log()),
                Err(status) => status,
            };
            if !status.message().contains("has not finished") || Instant::now() > deadline {
                break status;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        println!("{case}: {}", status.message());
        assert_eq!(
            status.code(),
            grpcio::RpcStatusCode::UNAVAILABLE,
            "{case}: {status:?}"
        );
        assert!(
            !status.message().contains("has not finished"),
            "{case}: no poll failed within 20 s: {status:?}\n{}",
            process.log()
        );
        assert!(
            process.log().contains(refusal),
            "{case}: no {refusal:?} in the log:\n{}",
            process.log()
        );
        // KEDA's message says why, not only that Kafka did not answer.
        assert!(
            status.message().contains("the login was refused") && status.message().contains(answer),
            "{case}: no {answer:?} in the answer: {status:?}"
        );
        assert!(
            !status.message().contains(CLIENT_SECRET)
                && !status.message().contains("wrong-secret-5be2"),
            "{status:?}"
        );
        if secret == &wrong_file {
            assert!(provider.asked().refused > refused_before, "{case}");
        }
        drop(client);
        no_secret_in(&process, case);
    }
}
