//! How to reach one Kafka cluster: bootstrap servers, timeouts, SASL and TLS
//! (`SCALER_KAFKA_*`), and the client settings librdkafka gets from them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, parse_bool, ConfigError, Vars};

/// How to reach one Kafka cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Seed brokers, `host:port` each, in the order given.
    pub bootstrap_servers: Vec<String>,
    /// Timeout of each request made to the cluster.
    pub request_timeout: Duration,
    /// How often librdkafka reports statistics, whose request counts are logged; `None` is
    /// off.
    pub stats_interval: Option<Duration>,
    /// SASL authentication, if any.
    pub sasl: Option<KafkaSasl>,
    /// TLS to the brokers, if on.
    pub tls: Option<KafkaTls>,
    /// Where committed offsets come from (`SCALER_COMMIT_SOURCE`).
    pub commit_source: CommitSource,
    /// A commit reader no poll used for this long stops (see `commit_reader_idle` in the
    /// config module).
    pub commit_reader_idle: Duration,
}

/// Where committed offsets come from (`SCALER_COMMIT_SOURCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitSource {
    /// The commit stream where `__consumer_offsets` can be read, else OffsetFetch per watch.
    Auto,
    /// The commit stream only: a cluster where it cannot be read fails the polls.
    Stream,
    /// OffsetFetch per watch and poll.
    Fetch,
}

impl CommitSource {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitSource::Auto => "auto",
            CommitSource::Stream => "stream",
            CommitSource::Fetch => "fetch",
        }
    }
}

/// A secret value: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

/// SASL mechanisms lagscaler can use with Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (KEDA: `plaintext`).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` with a token from an OpenID Connect token endpoint (client credentials).
    OAuthBearer,
    /// `GSSAPI`: Kerberos, with a keytab.
    Gssapi,
}

impl SaslMechanism {
    /// librdkafka's name of it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
            SaslMechanism::Gssapi => "GSSAPI",
        }
    }
}

/// SASL credentials for Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name; OAUTHBEARER's OAuth client id (as KEDA's `username`); GSSAPI's
    /// principal, with its realm.
    pub username: String,
    /// The password; OAUTHBEARER's OAuth client secret (as KEDA's `password`); empty for
    /// GSSAPI, which logs in with a keytab.
    pub password: Secret,
    /// Where OAUTHBEARER gets its tokens; `None` for the other mechanisms.
    pub oauth: Option<OAuthClient>,
    /// GSSAPI's keytab and service name; `None` for the other mechanisms.
    pub kerberos: Option<KerberosLogin>,
}

/// GSSAPI's login: librdkafka runs `kinit` with the keytab for the principal (at start and
/// every minute), and the brokers' service principal is `<service_name>/<broker host>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KerberosLogin {
    /// The keytab (KEDA: `keytab`); its keys are never read by lagscaler itself.
    pub keytab: PathBuf,
    /// The brokers' Kerberos service name (KEDA: `kerberosServiceName`), `kafka` unless set.
    pub service_name: String,
}

/// OAUTHBEARER's OpenID Connect client: librdkafka asks `token_endpoint` for a token with
/// the client credentials grant and asks again before the token expires.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// The token endpoint (KEDA: `oauthTokenEndpointUri`).
    pub token_endpoint: String,
    /// Scopes asked for (KEDA: `scopes`); none asks for the endpoint's default.
    pub scopes: Vec<String>,
    /// SASL extensions sent to the brokers with the token (KEDA: `oauthExtensions`), as
    /// `key=value` pairs.
    pub extensions: Vec<(String, String)>,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Extension values can be credentials (a pool or tenant id, a key): only their keys.
        let keys: Vec<&str> = self
            .extensions
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        f.debug_struct("OAuthClient")
            .field("token_endpoint", &self.token_endpoint)
            .field("scopes", &self.scopes)
            .field("extensions", &keys)
            .finish()
    }
}

/// TLS to the brokers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// CA bundle to check the brokers against; the system's when `None`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The password of the client key, when the key file is encrypted (KEDA:
    /// `keyPassword`).
    pub key_password: Option<Secret>,
}

impl KafkaConfig {
    /// The bootstrap list as librdkafka takes it.
    pub fn bootstrap_string(&self) -> String {
        self.bootstrap_servers.join(",")
    }
}

/// A secret given directly (`name`) or as a file (`file_name`): the file's content without
/// one trailing newline. Empty is unset.
pub(super) fn secret(
    vars: &Vars,
    name: &'static str,
    file_name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let direct = vars.get(name).filter(|value| !value.is_empty());
    let file = vars.set(file_name);
    match (direct, file) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice { name, file_name }),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let content = std::fs::read_to_string(path).map_err(|err| ConfigError::SecretFile {
                file_name,
                path: path.to_owned(),
                cause: err.to_string(),
            })?;
            let value = content
                .strip_suffix("\r\n")
                .or_else(|| content.strip_suffix('\n'))
                .unwrap_or(&content);
            Ok((!value.is_empty()).then(|| value.to_owned()))
        }
    }
}

/// SASL for Kafka: a mechanism with a user name and a password, or none.
pub(super) fn parse_kafka_sasl(vars: &Vars) -> Result<Option<KafkaSasl>, ConfigError> {
    let mechanism = match vars.get("SCALER_KAFKA_SASL") {
        None => None,
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => None,
            "plaintext" | "plain" => Some(SaslMechanism::Plain),
            "scram_sha256" | "scram-sha-256" => Some(SaslMechanism::ScramSha256),
            "scram_sha512" | "scram-sha-512" => Some(SaslMechanism::ScramSha512),
            "oauthbearer" => Some(SaslMechanism::OAuthBearer),
            "gssapi" => Some(SaslMechanism::Gssapi),
            _ => {
                return Err(invalid(
                    "SCALER_KAFKA_SASL",
                    value,
                    "none, plaintext, scram_sha256, scram_sha512, oauthbearer or gssapi",
                ))
            }
        },
    };
    let oauth = parse_oauth(vars, mechanism == Some(SaslMechanism::OAuthBearer))?;
    let kerberos = parse_kerberos(vars, mechanism == Some(SaslMechanism::Gssapi))?;
    let username = vars.set("SCALER_KAFKA_USERNAME");
    let password = secret(vars, "SCALER_KAFKA_PASSWORD", "SCALER_KAFKA_PASSWORD_FILE")?;
    let Some(mechanism) = mechanism else {
        if let Some(user) = username {
            return Err(invalid(
                "SCALER_KAFKA_USERNAME",
                user,
                "to be set only with SCALER_KAFKA_SASL (plaintext, scram_sha256, scram_sha512, \
                 oauthbearer or gssapi)",
            ));
        }
        if password.is_some() {
            return Err(invalid(
                "SCALER_KAFKA_PASSWORD",
                "(hidden)",
                "to be set only with SCALER_KAFKA_SASL (plaintext, scram_sha256, scram_sha512 \
                 or oauthbearer)",
            ));
        }
        return Ok(None);
    };
    if let Some(kerberos) = kerberos {
        return kerberos_sasl(vars, username, password.is_some(), kerberos);
    }
    let Some(username) = username else {
        return Err(invalid(
            "SCALER_KAFKA_USERNAME",
            "",
            "a user name (oauthbearer: the OAuth client id): SCALER_KAFKA_SASL needs one",
        ));
    };
    let Some(password) = password else {
        return Err(invalid(
            "SCALER_KAFKA_PASSWORD",
            "",
            "a password (oauthbearer: the OAuth client secret), or SCALER_KAFKA_PASSWORD_FILE: \
             SCALER_KAFKA_SASL needs one",
        ));
    };
    Ok(Some(KafkaSasl {
        mechanism,
        username: username.to_owned(),
        password: Secret(password),
        oauth,
        kerberos: None,
    }))
}

/// Refuses any of `names` that is set: a mechanism's settings without that mechanism.
fn only_with(vars: &Vars, names: &[&'static str], rule: &'static str) -> Result<(), ConfigError> {
    match names.iter().find(|name| vars.set(name).is_some()) {
        Some(name) => Err(invalid(name, "(hidden)", rule)),
        None => Ok(()),
    }
}

const KEYTAB: &str = "SCALER_KAFKA_KERBEROS_KEYTAB";
const SERVICE_NAME: &str = "SCALER_KAFKA_KERBEROS_SERVICE_NAME";
const REALM: &str = "SCALER_KAFKA_KERBEROS_REALM";

/// The keytab and service name of `SCALER_KAFKA_SASL=gssapi` (`wanted`); none of them may be
/// set without it. The keytab must be readable now: a start that cannot log in stops.
fn parse_kerberos(vars: &Vars, wanted: bool) -> Result<Option<KerberosLogin>, ConfigError> {
    if !wanted {
        only_with(
            vars,
            &[KEYTAB, SERVICE_NAME, REALM],
            "to be set only with SCALER_KAFKA_SASL=gssapi",
        )?;
        return Ok(None);
    }
    let Some(keytab) = vars.set(KEYTAB) else {
        return Err(invalid(
            KEYTAB,
            "",
            "the keytab file of SCALER_KAFKA_USERNAME's principal: SCALER_KAFKA_SASL=gssapi \
             logs in with one",
        ));
    };
    // librdkafka puts the path in double quotes in the kinit command it runs with sh.
    if keytab
        .chars()
        .any(|ch| matches!(ch, '"' | '$' | '`' | '\\') || ch.is_control())
    {
        return Err(invalid(
            KEYTAB,
            "(hidden)",
            "a file path without quotes, $, backquotes, backslashes or control characters",
        ));
    }
    if let Err(err) = std::fs::File::open(keytab) {
        return Err(ConfigError::SecretFile {
            file_name: KEYTAB,
            path: keytab.to_owned(),
            cause: err.to_string(),
        });
    }
    // librdkafka logs in by running `kinit` (its sasl.kerberos.kinit.cmd) through sh.
    if !on_path("kinit") {
        return Err(invalid(
            "SCALER_KAFKA_SASL",
            "gssapi",
            "a mechanism whose parts are installed: gssapi needs kinit (MIT Kerberos, \
             Debian's krb5-user) on PATH, which librdkafka runs with the keytab",
        ));
    }
    let service_name = vars.set(SERVICE_NAME).unwrap_or("kafka");
    if !service_name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(invalid(
            SERVICE_NAME,
            service_name,
            "a Kerberos service name: letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(Some(KerberosLogin {
        keytab: PathBuf::from(keytab),
        service_name: service_name.to_owned(),
    }))
}

/// Whether an executable file `name` is in one of PATH's directories.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|found| found.is_file() && found.permissions().mode() & 0o111 != 0)
        })
    })
}

/// GSSAPI's credentials: the principal (`SCALER_KAFKA_USERNAME`, with
/// `SCALER_KAFKA_KERBEROS_REALM` when it has no realm of its own) and the keytab; a
/// password is refused, since librdkafka logs in with a keytab only.
fn kerberos_sasl(
    vars: &Vars,
    username: Option<&str>,
    has_password: bool,
    kerberos: KerberosLogin,
) -> Result<Option<KafkaSasl>, ConfigError> {
    if has_password {
        return Err(invalid(
            "SCALER_KAFKA_PASSWORD",
            "(hidden)",
            "unset with SCALER_KAFKA_SASL=gssapi: lagscaler logs in with a keytab \
             (SCALER_KAFKA_KERBEROS_KEYTAB), not a Kerberos password",
        ));
    }
    let Some(username) = username else {
        return Err(invalid(
            "SCALER_KAFKA_USERNAME",
            "",
            "the Kerberos principal (user or user@REALM): SCALER_KAFKA_SASL=gssapi needs one",
        ));
    };
    let realm = vars.set(REALM);
    let principal = match realm {
        Some(realm) if !username.contains('@') => format!("{username}@{realm}"),
        _ => username.to_owned(),
    };
    // librdkafka puts the principal unquoted in the kinit command it runs with sh.
    let principal_ok = principal
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '/' | '@'))
        && principal.matches('@').count() <= 1
        && !principal.starts_with(['@', '-']);
    if !principal_ok {
        return Err(invalid(
            "SCALER_KAFKA_USERNAME",
            username,
            "a Kerberos principal: letters, digits, '-', '_', '.', '/' and one '@' before the \
             realm (SCALER_KAFKA_KERBEROS_REALM)",
        ));
    }
    Ok(Some(KafkaSasl {
        mechanism: SaslMechanism::Gssapi,
        username: principal,
        password: Secret(String::new()),
        oauth: None,
        kerberos: Some(kerberos),
    }))
}

/// The OAuth client of `SCALER_KAFKA_SASL=oauthbearer` (`wanted`): its token endpoint
/// (required), scopes and extensions; none of them may be set without it.
fn parse_oauth(vars: &Vars, wanted: bool) -> Result<Option<OAuthClient>, ConfigError> {
    const ENDPOINT: &str = "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI";
    const SCOPES: &str = "SCALER_KAFKA_OAUTH_SCOPES";
    const EXTENSIONS: &str = "SCALER_KAFKA_OAUTH_EXTENSIONS";
    if !wanted {
        only_with(
            vars,
            &[ENDPOINT, SCOPES, EXTENSIONS],
            "to be set only with SCALER_KAFKA_SASL=oauthbearer",
        )?;
        return Ok(None);
    }
    let Some(endpoint) = vars.set(ENDPOINT) else {
        return Err(invalid(
            ENDPOINT,
            "",
            "the OAuth token endpoint (https://...): SCALER_KAFKA_SASL=oauthbearer needs one",
        ));
    };
    let lower = endpoint.to_ascii_lowercase();
    let has_host = |rest: &str| {
        rest.split(['/', '?', '#'])
            .next()
            .is_some_and(|host| !host.is_empty())
    };
    let url_ok = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .is_some_and(has_host)
        && !endpoint
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control());
    if !url_ok {
        return Err(invalid(
            ENDPOINT,
            "(hidden)",
            "an http:// or https:// URL with a host, without spaces",
        ));
    }
    let scopes: Vec<String> = vars
        .set(SCOPES)
        .map(|value| {
            value
                .split([',', ' '])
                .map(str::trim)
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if scopes.iter().any(|scope| {
        scope
            .chars()
            .any(|ch| !ch.is_ascii_graphic() || ch == '"' || ch == '\\')
    }) {
        return Err(invalid(
            SCOPES,
            "(hidden)",
            "scopes separated by commas or spaces, each printable ASCII without quotes or \
             backslashes",
        ));
    }
    let mut extensions = Vec::new();
    for pair in vars.set(EXTENSIONS).unwrap_or_default().split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        // Kafka's rules for SASL extensions (RFC 7628): a key of letters other than
        // "auth", a value of printable ASCII, spaces and tabs; a comma cannot be in one.
        let parsed = pair.split_once('=').filter(|(key, value)| {
            !key.is_empty()
                && key.chars().all(|ch| ch.is_ascii_alphabetic())
                && key != &"auth"
                && value
                    .chars()
                    .all(|ch| ch.is_ascii_graphic() || ch == ' ' || ch == '\t')
        });
        let Some((key, value)) = parsed else {
            return Err(invalid(
                EXTENSIONS,
                "(hidden)",
                "key=value pairs separated by commas: each key letters only and not \"auth\", \
                 each value printable ASCII",
            ));
        };
        extensions.push((key.to_owned(), value.to_owned()));
    }
    Ok(Some(OAuthClient {
        token_endpoint: endpoint.to_owned(),
        scopes,
        extensions,
    }))
}

/// SASL PLAIN sends the password as it is: without TLS anyone on the path reads it, so that
/// takes an explicit `SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true`.
pub(super) fn check_plain_password(vars: &Vars, kafka: &KafkaConfig) -> Result<(), ConfigError> {
    const NAME: &str = "SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD";
    let allowed = match vars.get(NAME) {
        None => false,
        Some(value) => parse_bool(value).ok_or_else(|| invalid(NAME, value, "true or false"))?,
    };
    let mechanism = kafka.sasl.as_ref().map(|sasl| sasl.mechanism);
    if allowed {
        return Ok(());
    }
    if mechanism == Some(SaslMechanism::Plain) && kafka.tls.is_none() {
        return Err(invalid(
            "SCALER_KAFKA_SASL",
            "plaintext",
            "TLS as well (SCALER_KAFKA_TLS=true): SASL PLAIN without TLS sends the password \
             readable to anyone on the network; set SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true \
             to accept that, or use scram_sha256/scram_sha512",
        ));
    }
    if mechanism == Some(SaslMechanism::OAuthBearer) && kafka.tls.is_none() {
        return Err(invalid(
            "SCALER_KAFKA_SASL",
            "oauthbearer",
            "TLS as well (SCALER_KAFKA_TLS=true): OAUTHBEARER without TLS sends the token, \
             which anyone on the network can then use until it expires; set \
             SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true to accept that",
        ));
    }
    let http_endpoint = kafka
        .sasl
        .as_ref()
        .and_then(|sasl| sasl.oauth.as_ref())
        .is_some_and(|oauth| {
            oauth
                .token_endpoint
                .to_ascii_lowercase()
                .starts_with("http://")
        });
    if http_endpoint {
        return Err(invalid(
            "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
            "(hidden)",
            "an https:// URL: over http:// the client secret goes to the token endpoint \
             readable to anyone on the network; set SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true \
             to accept that",
        ));
    }
    Ok(())
}

/// TLS to Kafka: on or off, with an optional CA and client certificate.
pub(super) fn parse_kafka_tls(vars: &Vars) -> Result<Option<KafkaTls>, ConfigError> {
    let on = match vars.get("SCALER_KAFKA_TLS") {
        None => false,
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "enable" => true,
            "disable" => false,
            _ => parse_bool(value).ok_or_else(|| {
                invalid(
                    "SCALER_KAFKA_TLS",
                    value,
                    "true or false (also enable/disable)",
                )
            })?,
        },
    };
    let path = |name: &str| vars.set(name).map(PathBuf::from);
    let ca_file = path("SCALER_KAFKA_TLS_CA_FILE");
    let cert = path("SCALER_KAFKA_TLS_CERT_FILE");
    let key = path("SCALER_KAFKA_TLS_KEY_FILE");
    let key_password = secret(
        vars,
        "SCALER_KAFKA_TLS_KEY_PASSWORD",
        "SCALER_KAFKA_TLS_KEY_PASSWORD_FILE",
    )?
    .map(Secret);
    if key_password.is_some() && key.is_none() {
        return Err(invalid(
            "SCALER_KAFKA_TLS_KEY_PASSWORD",
            "(hidden)",
            "to be set only with SCALER_KAFKA_TLS_KEY_FILE (the password of that key)",
        ));
    }
    if !on {
        for (name, value) in [
            ("SCALER_KAFKA_TLS_CA_FILE", &ca_file),
            ("SCALER_KAFKA_TLS_CERT_FILE", &cert),
            ("SCALER_KAFKA_TLS_KEY_FILE", &key),
        ] {
            if let Some(value) = value {
                return Err(invalid(
                    name,
                    &value.display().to_string(),
                    "to be set only with SCALER_KAFKA_TLS=true",
                ));
            }
        }
        return Ok(None);
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(invalid(
                "SCALER_KAFKA_TLS_CERT_FILE",
                &cert.display().to_string(),
                "to be set together with SCALER_KAFKA_TLS_KEY_FILE",
            ))
        }
        (None, Some(key)) => {
            return Err(invalid(
                "SCALER_KAFKA_TLS_KEY_FILE",
                &key.display().to_string(),
                "to be set together with SCALER_KAFKA_TLS_CERT_FILE",
            ))
        }
    };
    Ok(Some(KafkaTls {
        ca_file,
        client,
        key_password,
    }))
}

/// Parses `host:port[,host:port...]`; `None` when any entry is malformed.
pub(crate) fn parse_bootstrap(value: &str) -> Option<Vec<String>> {
    let servers: Vec<String> = value
        .split(',')
        .map(|server| server.trim().to_owned())
        .collect();
    let valid = servers.iter().all(|server| {
        let Some((host, port)) = server.rsplit_once(':') else {
            return false;
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._[]:".contains(ch));
        host_ok && port.parse::<u16>().is_ok_and(|port| port > 0)
    });
    valid.then_some(servers)
}

impl KafkaConfig {
    /// librdkafka's `security.protocol` for these settings.
    pub fn security_protocol(&self) -> &'static str {
        match (&self.sasl, &self.tls) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }

    /// How lagscaler authenticates to the cluster, without secrets, for the start-up log.
    pub fn describe_security(&self) -> String {
        let mut text = self.security_protocol().to_owned();
        if let Some(sasl) = &self.sasl {
            match (&sasl.oauth, &sasl.kerberos) {
                (None, Some(kerberos)) => text.push_str(&format!(
                    " GSSAPI principal={} keytab={} service={}",
                    sasl.username,
                    kerberos.keytab.display(),
                    kerberos.service_name
                )),
                (None, None) => text.push_str(&format!(
                    " {} user={}",
                    sasl.mechanism.name(),
                    sasl.username
                )),
                (Some(oauth), _) => text.push_str(&format!(
                    " {} client_id={} token_endpoint={}",
                    sasl.mechanism.name(),
                    sasl.username,
                    oauth.token_endpoint
                )),
            }
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                text.push_str(&format!(" ca={}", ca.display()));
            }
            if tls.client.is_some() {
                text.push_str(" client-certificate");
            }
            if tls.key_password.is_some() {
                text.push_str(" (encrypted key)");
            }
        }
        text
    }
}

impl fmt::Display for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bootstrap_string())
    }
}
