//! systemd's readiness protocol (`sd_notify(3)`) without libsystemd: a unit with
//! `Type=notify` learns that lagscaler serves when `READY=1` arrives on the datagram socket
//! named by `NOTIFY_SOCKET`, and that it is stopping on `STOPPING=1`. Outside systemd the
//! variable is unset and nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to the socket named by `NOTIFY_SOCKET`. `Ok(false)` when
/// the variable is unset, i.e. not run by systemd as a notify service.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let addr = address(&socket)?;
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// The socket address in `NOTIFY_SOCKET`: a path, or `@name` for Linux's abstract namespace.
fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    match socket.as_bytes() {
        [] => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is empty",
        )),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        _ => SocketAddr::from_pathname(socket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_both_addresses() {
        let path = address(OsStr::new("/run/systemd/notify")).expect("a path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = address(OsStr::new("@lagscaler-test")).expect("an abstract name");
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"lagscaler-test"[..])
        );
        assert!(address(OsStr::new("")).is_err());
    }

    #[test]
    fn a_datagram_reaches_a_bound_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let addr = address(path.as_os_str()).expect("address");
        UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(b"READY=1", &addr))
            .expect("send");
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).expect("receive");
        assert_eq!(&buffer[..n], b"READY=1");
    }
}
