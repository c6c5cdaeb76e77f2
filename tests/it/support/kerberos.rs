//! A real MIT Kerberos KDC (Debian's `krb5-kdc`) of the test's own, on a free loopback
//! port, with its database, configuration and keytabs in a temp dir: the broker's service
//! principal and lagscaler's client principal are made at start.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{free_port, LoggedChild};

/// The test realm.
pub const REALM: &str = "LAGSCALER.TEST";
/// Kafka's service name (`sasl.kerberos.service.name`), as brokers usually have it.
pub const SERVICE_NAME: &str = "kafka";
/// The broker's service principal: the service name and the host clients connect to.
pub const BROKER_PRINCIPAL: &str = "kafka/127.0.0.1";
/// lagscaler's principal.
pub const CLIENT_PRINCIPAL: &str = "lagscaler";

/// The running KDC; killed in `Drop`, its files removed.
pub struct Kdc {
    server: LoggedChild,
    dir: tempfile::TempDir,
}

impl Kdc {
    /// Creates the realm's database with the broker's and lagscaler's principals (random
    /// keys), and starts krb5kdc in the foreground on a free loopback port (TCP and UDP).
    pub fn start() -> Kdc {
        let dir = tempfile::tempdir().expect("temp dir for the KDC");
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        // No DNS anywhere: the broker's principal is the host name as given, 127.0.0.1.
        let krb5_conf = format!(
            "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  \
             dns_lookup_realm = false\n  dns_canonicalize_hostname = false\n  rdns = false\n  \
             udp_preference_limit = 1\n\n[realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n"
        );
        let kdc_conf = format!(
            "[kdcdefaults]\n  kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n\n\
             [realms]\n  {REALM} = {{\n    database_name = {database}\n    \
             key_stash_file = {stash}\n    acl_file = {acl}\n    \
             supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n  }}\n\n\
             [logging]\n  kdc = FILE:{log}\n",
            database = path("principal"),
            stash = path("stash"),
            acl = path("kadm5.acl"),
            log = path("kdc.log"),
        );
        std::fs::write(dir.path().join("krb5.conf"), krb5_conf).expect("write krb5.conf");
        std::fs::write(dir.path().join("kdc.conf"), kdc_conf).expect("write kdc.conf");
        std::fs::write(dir.path().join("kadm5.acl"), "").expect("write kadm5.acl");
        let kdc = |program: &str| {
            let mut command = Command::new(program);
            command
                .env("KRB5_CONFIG", dir.path().join("krb5.conf"))
                .env("KRB5_KDC_PROFILE", dir.path().join("kdc.conf"));
            command
        };
        run(kdc("kdb5_util").args(["create", "-s", "-r", REALM, "-P", "test-master-key"]));
        for principal in [BROKER_PRINCIPAL, CLIENT_PRINCIPAL] {
            run(kdc("kadmin.local").args(["-q", &format!("addprinc -randkey {principal}@{REALM}")]));
        }
        let mut server = kdc("krb5kdc");
        server.arg("-n");
        let server = LoggedChild::start(server, port, Duration::from_secs(20));
        Kdc { server, dir }
    }

    /// The krb5.conf that points at this KDC (`KRB5_CONFIG` for lagscaler and kinit).
    pub fn krb5_conf(&self) -> PathBuf {
        self.dir.path().join("krb5.conf")
    }

    /// `principal@REALM`.
    pub fn principal(&self, principal: &str) -> String {
        format!("{principal}@{REALM}")
    }

    /// A keytab file of `principal`'s current keys (a new file for each call; `kadmin`'s
    /// `ktadd -norandkey` keeps the keys the KDC has).
    pub fn keytab(&self, principal: &str) -> PathBuf {
        let file = self.dir.path().join(format!(
            "{}-{}.keytab",
            principal.replace('/', "_"),
            super::free_port()
        ));
        self.kadmin(&format!(
            "ktadd -norandkey -k {} {}",
            file.display(),
            self.principal(principal)
        ));
        file
    }

    /// Gives `principal` new random keys: keytabs made before no longer log in.
    pub fn change_keys(&self, principal: &str) {
        self.kadmin(&format!("cpw -randkey {}", self.principal(principal)));
    }

    /// The KDC's log so far.
    pub fn log(&self) -> String {
        let kdc = std::fs::read_to_string(self.dir.path().join("kdc.log")).unwrap_or_default();
        format!("{}{kdc}", self.server.log())
    }

    fn kadmin(&self, query: &str) {
        run(Command::new("kadmin.local")
            .env("KRB5_CONFIG", self.krb5_conf())
            .env("KRB5_KDC_PROFILE", self.dir.path().join("kdc.conf"))
            .args(["-q", query]));
    }
}

/// Runs an admin command of the KDC; a failure fails the test with its output.
fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|err| {
        panic!("run {command:?} (Debian's krb5-kdc, krb5-admin-server): {err}")
    });
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
