//! The gRPC server's TLS files (`SCALER_TLS_*`).

use std::path::PathBuf;

use super::{invalid, ConfigError, Vars};

/// The gRPC server's TLS files, read at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `SCALER_TLS_CERT_FILE`: the server's PEM certificate chain.
    pub cert_file: PathBuf,
    /// `SCALER_TLS_KEY_FILE`: its PEM private key.
    pub key_file: PathBuf,
    /// `SCALER_TLS_CLIENT_CA_FILE`: when set, clients must present a certificate this CA
    /// signed.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// `plaintext`, `tls` or `mutual-tls`, for the start-up log.
    pub fn describe(tls: Option<&TlsConfig>) -> &'static str {
        match tls {
            None => "plaintext",
            Some(TlsConfig {
                client_ca_file: None,
                ..
            }) => "tls",
            Some(_) => "mutual-tls",
        }
    }
}

/// The TLS settings: certificate and key together or neither; a client CA only with them.
/// The files are read at start, not here.
pub(super) fn parse_tls(vars: &Vars) -> Result<Option<TlsConfig>, ConfigError> {
    let path = |name: &str| {
        vars.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    let cert = path("SCALER_TLS_CERT_FILE");
    let key = path("SCALER_TLS_KEY_FILE");
    let client_ca = path("SCALER_TLS_CLIENT_CA_FILE");
    match (cert, key) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file: client_ca,
        })),
        (None, None) => match client_ca {
            None => Ok(None),
            Some(ca) => Err(invalid(
                "SCALER_TLS_CLIENT_CA_FILE",
                &ca.display().to_string(),
                "to be set only with SCALER_TLS_CERT_FILE and SCALER_TLS_KEY_FILE (mutual TLS \
                 needs the server's own certificate)",
            )),
        },
        (Some(cert), None) => Err(invalid(
            "SCALER_TLS_CERT_FILE",
            &cert.display().to_string(),
            "to be set together with SCALER_TLS_KEY_FILE",
        )),
        (None, Some(key)) => Err(invalid(
            "SCALER_TLS_KEY_FILE",
            &key.display().to_string(),
            "to be set together with SCALER_TLS_CERT_FILE",
        )),
    }
}
