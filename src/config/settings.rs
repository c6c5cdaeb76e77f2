//! Every setting the daemon reads, with its default and meaning: the spine the parser in
//! `mod.rs` follows and what `lagscaler --help` prints, so that the two cannot drift apart.

/// One environment variable the daemon reads.
pub struct Setting {
    /// The variable's name, upper case.
    pub name: &'static str,
    /// The default, as the user would write it; empty when there is none.
    pub default: &'static str,
    /// What the variable means, one line.
    pub help: &'static str,
}

/// Every variable the daemon reads, in `--help` order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "SCALER_PORT",
        default: "8090",
        help: "gRPC port KEDA connects to (1-65535)",
    },
    Setting {
        name: "SCALER_LISTEN_ADDR",
        default: "::",
        help: "IP address to listen on; :: is every interface, IPv4 and IPv6",
    },
    Setting {
        name: "SCALER_GRPC_MAX_CONNECTION_AGE",
        default: "0s",
        help: "close each gRPC connection (GOAWAY, calls in flight finish) after this long, so \
               that KEDA resolves the Service again and spreads its calls over new replicas; \
               0s is never (1s to 24h otherwise)",
    },
    Setting {
        name: "SCALER_HTTP_PORT",
        default: "",
        help: "port of the HTTP listener for /metrics, /healthz and /readyz, e.g. 9100 \
               (on SCALER_LISTEN_ADDR); unset: no HTTP listener",
    },
    Setting {
        name: "SCALER_TLS_CERT_FILE",
        default: "",
        help: "PEM certificate chain for gRPC over TLS (with SCALER_TLS_KEY_FILE); unset: \
               plaintext, as the Azul scaler",
    },
    Setting {
        name: "SCALER_TLS_KEY_FILE",
        default: "",
        help: "PEM private key of SCALER_TLS_CERT_FILE",
    },
    Setting {
        name: "SCALER_TLS_CLIENT_CA_FILE",
        default: "",
        help: "PEM CA bundle: gRPC clients must present a certificate it signed (mutual TLS; \
               needs SCALER_TLS_CERT_FILE)",
    },
    Setting {
        name: "SCALER_KAFKA_BOOTSTRAP_SERVERS",
        default: "localhost:9092",
        help: "the default Kafka cluster: comma-separated host:port list",
    },
    Setting {
        name: "SCALER_KAFKA_CLUSTERS_FILE",
        default: "",
        help: "a TOML file of more Kafka clusters, one table each ([name] with \
               bootstrap_servers, sasl/username/password(_file), oauth_*, kerberos_*, tls, \
               tls_*_file and tls_key_password(_file) as the \
               SCALER_KAFKA_* settings); triggers pick one with cluster=<name>",
    },
    Setting {
        name: "SCALER_KAFKA_SASL",
        default: "none",
        help: "SASL mechanism for Kafka, as KEDA's sasl: none, plaintext (PLAIN), scram_sha256, \
               scram_sha512, oauthbearer or gssapi (each needs SCALER_KAFKA_USERNAME; a \
               password, except gssapi, which needs SCALER_KAFKA_KERBEROS_KEYTAB; \
               oauthbearer also SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI)",
    },
    Setting {
        name: "SCALER_KAFKA_USERNAME",
        default: "",
        help: "SASL user name; with oauthbearer the OAuth client id; with gssapi the Kerberos \
               principal (user or user@REALM)",
    },
    Setting {
        name: "SCALER_KAFKA_PASSWORD",
        default: "",
        help: "SASL password; with oauthbearer the OAuth client secret (never logged)",
    },
    Setting {
        name: "SCALER_KAFKA_PASSWORD_FILE",
        default: "",
        help: "a file holding the SASL password instead (one trailing newline is dropped)",
    },
    Setting {
        name: "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
        default: "",
        help: "oauthbearer: the OpenID Connect token endpoint asked for tokens with the client \
               credentials grant (KEDA's oauthTokenEndpointUri); https:// unless \
               SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true",
    },
    Setting {
        name: "SCALER_KAFKA_OAUTH_SCOPES",
        default: "",
        help: "oauthbearer: scopes to ask for, separated by commas (KEDA's scopes); unset asks \
               for the endpoint's default",
    },
    Setting {
        name: "SCALER_KAFKA_OAUTH_EXTENSIONS",
        default: "",
        help: "oauthbearer: SASL extensions sent with the token, key=value separated by commas \
               (KEDA's oauthExtensions)",
    },
    Setting {
        name: "SCALER_KAFKA_KERBEROS_KEYTAB",
        default: "",
        help: "gssapi: the keytab of SCALER_KAFKA_USERNAME's principal (KEDA's keytab, as a \
               file); librdkafka runs kinit with it at start and every minute, so kinit \
               (krb5-user) must be installed, and Cyrus SASL's GSSAPI plugin \
               (libsasl2-modules-gssapi-mit, found in SASL_PATH or its built-in directory); \
               the Kerberos configuration is KRB5_CONFIG's (default /etc/krb5.conf)",
    },
    Setting {
        name: "SCALER_KAFKA_KERBEROS_SERVICE_NAME",
        default: "kafka",
        help: "gssapi: the brokers' Kerberos service name (KEDA's kerberosServiceName)",
    },
    Setting {
        name: "SCALER_KAFKA_KERBEROS_REALM",
        default: "",
        help: "gssapi: the realm added to SCALER_KAFKA_USERNAME when it has none (KEDA's \
               realm); unset: krb5.conf's default realm",
    },
    Setting {
        name: "SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD",
        default: "false",
        help: "allow SASL PLAIN or OAUTHBEARER without TLS, and an http:// token endpoint, \
               which send the password, token or client secret readable to anyone on the \
               network (true/false); refused at start unless true",
    },
    Setting {
        name: "SCALER_KAFKA_TLS",
        default: "false",
        help: "TLS to the brokers (true/false), as KEDA's tls: enable",
    },
    Setting {
        name: "SCALER_KAFKA_TLS_CA_FILE",
        default: "",
        help: "PEM CA bundle the brokers' certificates are checked against (default: the \
               system's); needs SCALER_KAFKA_TLS=true",
    },
    Setting {
        name: "SCALER_KAFKA_TLS_CERT_FILE",
        default: "",
        help: "PEM client certificate for mutual TLS with the brokers (with \
               SCALER_KAFKA_TLS_KEY_FILE; needs SCALER_KAFKA_TLS=true)",
    },
    Setting {
        name: "SCALER_KAFKA_TLS_KEY_FILE",
        default: "",
        help: "PEM private key of SCALER_KAFKA_TLS_CERT_FILE",
    },
    Setting {
        name: "SCALER_KAFKA_TLS_KEY_PASSWORD",
        default: "",
        help: "the password of an encrypted SCALER_KAFKA_TLS_KEY_FILE (KEDA's keyPassword; \
               never logged)",
    },
    Setting {
        name: "SCALER_KAFKA_TLS_KEY_PASSWORD_FILE",
        default: "",
        help: "a file holding that password instead (one trailing newline is dropped)",
    },
    Setting {
        name: "SCALER_POLL_INTERVAL",
        default: "5s",
        help: "how often each watch reads Kafka offsets (100ms to 1h)",
    },
    Setting {
        name: "SCALER_RATE_WINDOW",
        default: "5m",
        help: "produce and consume rates are estimated over this much history \
               (at least 2 poll intervals, at most 1h)",
    },
    Setting {
        name: "SCALER_STALE_AFTER",
        default: "3 poll intervals + SCALER_KAFKA_TIMEOUT",
        help: "while polls fail, the last good sample is served until it is this old; then \
               UNAVAILABLE. Failed polls spanning less do not restart an idle window, and the \
               offsets of a partition whose leader cannot be reached stand in for at most \
               this long (at least SCALER_POLL_INTERVAL, at most 1h)",
    },
    Setting {
        name: "SCALER_WATCH_TTL",
        default: "10m",
        help: "a watch no RPC asked about for this long is stopped (1s to 7d)",
    },
    Setting {
        name: "SCALER_MAX_WATCHES",
        default: "10000",
        help: "most consumer group/topic watches at once; triggers needing more get \
               RESOURCE_EXHAUSTED (1 to 1000000)",
    },
    Setting {
        name: "SCALER_KAFKA_TIMEOUT",
        default: "5s",
        help: "timeout of each Kafka request a watch makes (100ms to 60s)",
    },
    Setting {
        name: "SCALER_COMMIT_SOURCE",
        default: "auto",
        help: "where committed offsets come from: auto (one reader per cluster of \
               __consumer_offsets, the commit stream, where it can be read; else OffsetFetch \
               per watch), stream (the stream only) or fetch (OffsetFetch per watch and poll)",
    },
    Setting {
        name: "SCALER_KAFKA_STATS_INTERVAL",
        default: "0s",
        help: "every this often, log how many requests of each kind lagscaler has sent to \
               Kafka (librdkafka statistics); 0s is off (1s to 1h otherwise)",
    },
    Setting {
        name: "SCALER_REDIS_URL",
        default: "localhost:6379",
        help: "the Azul dispatcher's Redis, for plugin triggers: [redis:// or rediss://]\
               [user:password@]host:port[/db]; database 2 unless the URL names one",
    },
    Setting {
        name: "SCALER_REDIS_USERNAME",
        default: "",
        help: "Redis ACL user name (overrides one in the URL)",
    },
    Setting {
        name: "SCALER_REDIS_PASSWORD",
        default: "",
        help: "Redis password, with or without a user name (overrides one in the URL; \
               never logged)",
    },
    Setting {
        name: "SCALER_REDIS_PASSWORD_FILE",
        default: "",
        help: "a file holding the Redis password instead (a mounted secret or a systemd \
               credential; one trailing newline is dropped)",
    },
    Setting {
        name: "SCALER_TOPIC_PREFIX",
        default: "",
        help: "the dispatcher's topic prefix: a plugin's consumer groups are named \
               <prefix>-azul-<kafka_prefix>[-...]",
    },
    Setting {
        name: "SCALER_FLEET_REDIS_URL",
        default: "",
        help: "fleet mode: replicas share polling and history through this Redis \
               (redis:// or rediss://[user:password@]host:port[/db], database 0 unless \
               named, or redis+sentinel://[user:password@]host:port[,host:port]/<master>[/db]); \
               unset: this replica runs alone",
    },
    Setting {
        name: "SCALER_FLEET_REDIS_PASSWORD_FILE",
        default: "",
        help: "a file holding the fleet Redis's password (overrides one in the URL)",
    },
    Setting {
        name: "SCALER_FLEET_NAME",
        default: "lagscaler",
        help: "the fleet's name: its Redis keys start lagscaler:fleet:<name>:",
    },
    Setting {
        name: "SCALER_FLEET_MEMBER",
        default: "<host name>:<SCALER_PORT>",
        help: "this replica's name in the fleet, unique in it and kept across restarts",
    },
    Setting {
        name: "SCALER_FLEET_MEMBER_TTL",
        default: "10s",
        help: "a replica that has not renewed its membership for this long is out of the \
               fleet and its watches move (3s to 5m); it renews every TTL/10",
    },
    Setting {
        name: "SCALER_DEBUG",
        default: "false",
        help: "debug logging for lagscaler (true/false); RUST_LOG overrides it",
    },
    Setting {
        name: "RUST_LOG",
        default: "",
        help: "env_logger filter, e.g. info,lagscaler=debug,librdkafka=warn",
    },
];

/// The `--help` text: usage and every variable with its default.
pub fn help_text() -> String {
    let mut text = format!(
        "lagscaler {}\nKEDA external scaler that watches Kafka consumer-group lag.\n\n\
         Usage: lagscaler [--help | --version]\n       \
         lagscaler --check-config (the settings below, checked without starting)\n       \
         lagscaler check key=value ... (one trigger's answers from two polls; check --help)\n\n\
         Settings come from the environment (names are case-insensitive):\n",
        env!("CARGO_PKG_VERSION")
    );
    let width = SETTINGS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for setting in SETTINGS {
        let default = if setting.default.is_empty() {
            "unset".to_owned()
        } else {
            setting.default.to_owned()
        };
        text.push_str(&format!(
            "  {:width$}  {} (default: {})\n",
            setting.name, setting.help, default
        ));
    }
    text
}
