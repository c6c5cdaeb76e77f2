//! A test OpenID Connect provider on loopback: a token endpoint that issues RS256 JWTs for
//! one client with the client credentials grant, and the JWKS a Kafka broker checks them
//! against (Kafka's own `OAuthBearerValidatorCallbackHandler`). It can be told to issue
//! expired tokens or tokens signed with a key its JWKS does not hold.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use parking_lot::Mutex;

/// The client the provider knows.
pub const CLIENT_ID: &str = "lagscaler-test";
/// Its secret.
pub const CLIENT_SECRET: &str = "client-secret-9f3a61c2-never-logged";

/// What tokens the endpoint issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issue {
    /// Signed with the JWKS key, valid for the provider's lifetime.
    Valid,
    /// Signed with the JWKS key, expired ten minutes ago.
    Expired,
    /// Valid times, signed with a key the JWKS does not hold.
    WrongKey,
}

/// What the token endpoint was asked.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    /// Requests with the right client credentials, each answered with a token.
    pub tokens: Vec<String>,
    /// The form bodies of those requests.
    pub bodies: Vec<String>,
    /// Requests refused (wrong or missing credentials, or not a client credentials grant).
    pub refused: usize,
}

struct Shared {
    key: PKey<Private>,
    other_key: PKey<Private>,
    lifetime: Duration,
    issue: AtomicU8,
    asked: Mutex<Asked>,
}

/// The provider; stops its thread when dropped.
pub struct IdentityProvider {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const KEY_ID: &str = "lagscaler-test-key";

impl IdentityProvider {
    /// Starts it on a free loopback port; its tokens live for `lifetime`.
    pub fn start(lifetime: Duration) -> IdentityProvider {
        let new_key = || PKey::from_rsa(Rsa::generate(2048).expect("an RSA key")).expect("key");
        let shared = Arc::new(Shared {
            key: new_key(),
            other_key: new_key(),
            lifetime,
            issue: AtomicU8::new(Issue::Valid as u8),
            asked: Mutex::new(Asked::default()),
        });
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind the provider");
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("test-oidc".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(100)) {
                            shared.answer(request);
                        }
                    }
                })
                .expect("start the provider's thread")
        };
        IdentityProvider {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }

    /// Sets what tokens are issued from now on.
    pub fn issue(&self, issue: Issue) {
        self.shared.issue.store(issue as u8, Ordering::SeqCst);
    }

    /// What the token endpoint was asked so far.
    pub fn asked(&self) -> Asked {
        self.shared.asked.lock().clone()
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn answer(&self, mut request: tiny_http::Request) {
        let (status, body) = match request.url() {
            "/jwks" => (200, self.jwks()),
            "/token" => {
                let mut form = String::new();
                let _ = request.as_reader().read_to_string(&mut form);
                let credentials = request
                    .headers()
                    .iter()
                    .find(|header| header.field.equiv("Authorization"))
                    .map(|header| header.value.as_str().to_owned());
                self.token(credentials.as_deref(), &form)
            }
            _ => (404, "{}".to_owned()),
        };
        let header =
            tiny_http::Header::from_bytes("Content-Type", "application/json").expect("a header");
        let _ = request.respond(
            tiny_http::Response::from_string(body)
                .with_status_code(status)
                .with_header(header),
        );
    }

    fn jwks(&self) -> String {
        let rsa = self.key.rsa().expect("an RSA key");
        serde_json::json!({"keys": [{
            "kty": "RSA",
            "kid": KEY_ID,
            "alg": "RS256",
            "use": "sig",
            "n": base64url(&rsa.n().to_vec()),
            "e": base64url(&rsa.e().to_vec()),
        }]})
        .to_string()
    }

    /// Answers a token request: the client's credentials in HTTP Basic and a client
    /// credentials grant, or 401.
    fn token(&self, credentials: Option<&str>, form: &str) -> (u16, String) {
        let expected = format!(
            "Basic {}",
            openssl::base64::encode_block(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
        );
        let grant = form
            .split('&')
            .any(|pair| pair == "grant_type=client_credentials");
        if credentials != Some(expected.as_str()) || !grant {
            self.asked.lock().refused += 1;
            return (401, r#"{"error":"invalid_client"}"#.to_owned());
        }
        let issue = match self.issue.load(Ordering::SeqCst) {
            0 => Issue::Valid,
            1 => Issue::Expired,
            _ => Issue::WrongKey,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let (issued_at, expires) = match issue {
            Issue::Expired => (now - 1200, now - 600),
            _ => (now, now + self.lifetime.as_secs()),
        };
        let key = match issue {
            Issue::WrongKey => &self.other_key,
            _ => &self.key,
        };
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID});
        let claims = serde_json::json!({
            "sub": CLIENT_ID,
            "iss": super::OAUTH_ISSUER,
            "aud": super::OAUTH_AUDIENCE,
            "scope": "kafka",
            "iat": issued_at,
            "exp": expires,
        });
        let signed = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let mut signer = Signer::new(MessageDigest::sha256(), key).expect("a signer");
        signer.update(signed.as_bytes()).expect("sign");
        let signature = signer.sign_to_vec().expect("a signature");
        let token = format!("{signed}.{}", base64url(&signature));
        let mut asked = self.asked.lock();
        asked.tokens.push(token.clone());
        asked.bodies.push(form.to_owned());
        let body = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires.saturating_sub(now),
        });
        (200, body.to_string())
    }
}

/// Base64url without padding (RFC 7515).
fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}
