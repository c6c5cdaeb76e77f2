//! Which SASL mechanisms Cyrus SASL can load here: librdkafka's GSSAPI speaks Kerberos to
//! the brokers through Cyrus SASL's GSSAPI plugin, a shared library Cyrus SASL loads at
//! run time from its plugin directory (`SASL_PATH`, else the one it was built with). A
//! missing plugin shows only as every broker connection failing ("No worthy mechs found"),
//! so a GSSAPI login asks first, before any Kafka client exists.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

// libsasl2 is the Cyrus SASL librdkafka is linked with (rdkafka-sys, `gssapi` feature):
// these are its own functions, so the answer is the library's, not a guess at its paths.
#[link(name = "sasl2")]
extern "C" {
    /// `int sasl_client_init(const sasl_callback_t *callbacks)`: loads the client plugins.
    fn sasl_client_init(callbacks: *const c_void) -> c_int;
    /// `const char **sasl_global_listmech(void)`: the loaded mechanisms' names, the array
    /// ended by a null pointer; owned by the library.
    fn sasl_global_listmech() -> *const *const c_char;
}

/// Cyrus SASL's `SASL_OK`.
const SASL_OK: c_int = 0;

/// The mechanisms Cyrus SASL's client side has a plugin for (`GSSAPI`, `PLAIN`, ...), or
/// why they could not be listed.
///
/// Call it before any Kafka client is created (the binary does, while it reads its
/// settings): `sasl_client_init` is not thread-safe, and librdkafka calls it when its
/// first client is created. The library is initialised once per process and never shut
/// down, as librdkafka itself does (the application may use SASL too, its comment says).
pub fn cyrus_mechanisms() -> Result<&'static [String], String> {
    static MECHANISMS: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    MECHANISMS
        .get_or_init(|| {
            // SAFETY: a null callback list is allowed (the library's defaults, which read
            // SASL_PATH); OnceLock runs this once per process, and the caller runs it before
            // librdkafka's own call (see above). Repeated calls are counted by the library.
            let status = unsafe { sasl_client_init(std::ptr::null()) };
            if status != SASL_OK {
                return Err(format!("sasl_client_init failed with status {status}"));
            }
            let mut names = Vec::new();
            // SAFETY: after a successful init the library returns its own array of C
            // strings, ended by a null pointer (or null if no plugin loaded); it is only
            // changed by another init or by sasl_done, which nothing in this process calls
            // while it is read here (OnceLock).
            unsafe {
                let mut entry = sasl_global_listmech();
                while !entry.is_null() && !(*entry).is_null() {
                    names.push(CStr::from_ptr(*entry).to_string_lossy().into_owned());
                    entry = entry.add(1);
                }
            }
            Ok(names)
        })
        .as_deref()
        .map_err(Clone::clone)
}
