//! A counting proxy for Kafka's protocol: every request a client sends to a broker through
//! it is counted by the client's id and the request's API, read from the protocol's own
//! framing (a 4-byte size, then the request header: API key, API version, correlation id
//! and client id). A node started with [`super::Kafka::start_counted`] advertises the
//! proxy's port as its plaintext listener, so that every connection a client opens after
//! bootstrap goes through it too, whatever the client.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;

/// Requests counted: by client id, then by API name.
pub type Counts = BTreeMap<String, BTreeMap<&'static str, u64>>;

/// A proxy on a loopback port in front of one broker port.
pub struct WireCounter {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    counts: Mutex<Counts>,
    stop: AtomicBool,
    /// Every connection's client side, to close when the proxy stops.
    open: Mutex<Vec<TcpStream>>,
}

impl WireCounter {
    /// Listens on a free loopback port; each connection is forwarded to
    /// `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> WireCounter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the counting proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("wire-counter".into())
                .spawn(move || accept(listener, upstream, &shared))
                .expect("start the counting proxy")
        };
        WireCounter {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests counted since the start.
    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().clone()
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wakes the acceptor.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for stream in self.shared.open.lock().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: TcpListener, upstream: u16, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        let (Ok(client_back), Ok(broker_back)) = (client.try_clone(), broker.try_clone()) else {
            continue;
        };
        if let Ok(kept) = client.try_clone() {
            let mut open = shared.open.lock();
            open.retain(|stream| stream.peer_addr().is_ok());
            open.push(kept);
        }
        // Answers go back as they come; requests are read frame by frame and counted.
        thread::spawn(move || copy_back(broker_back, client_back));
        let shared = Arc::clone(shared);
        thread::spawn(move || count_requests(client, broker, &shared));
    }
}

fn copy_back(mut broker: TcpStream, mut client: TcpStream) {
    let _ = io::copy(&mut broker, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
}

fn count_requests(mut client: TcpStream, mut broker: TcpStream, shared: &Shared) {
    let mut frame = Vec::new();
    loop {
        let mut size = [0u8; 4];
        if client.read_exact(&mut size).is_err() {
            break;
        }
        let len = i32::from_be_bytes(size);
        let Ok(len) = usize::try_from(len) else { break };
        frame.resize(len, 0);
        if client.read_exact(&mut frame).is_err() {
            break;
        }
        if let Some((api, client_id)) = header(&frame) {
            *shared
                .counts
                .lock()
                .entry(client_id)
                .or_default()
                .entry(api_name(api))
                .or_default() += 1;
        }
        if broker.write_all(&size).is_err() || broker.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
}

/// The API key and client id of a request frame (after its size). A SASL handshake's
/// authentication bytes (SASL v0, no header) would not parse; every client here speaks
/// plaintext.
fn header(frame: &[u8]) -> Option<(i16, String)> {
    let api = i16::from_be_bytes(frame.get(0..2)?.try_into().ok()?);
    let id_len = i16::from_be_bytes(frame.get(8..10)?.try_into().ok()?);
    let client_id = match usize::try_from(id_len) {
        Ok(len) => String::from_utf8_lossy(frame.get(10..10 + len)?).into_owned(),
        Err(_) => String::new(),
    };
    Some((api, client_id))
}

/// Kafka's name of the API with key `key` (the ones clients here send, and a number for
/// any other).
fn api_name(key: i16) -> &'static str {
    match key {
        0 => "Produce",
        1 => "Fetch",
        2 => "ListOffsets",
        3 => "Metadata",
        8 => "OffsetCommit",
        9 => "OffsetFetch",
        10 => "FindCoordinator",
        11 => "JoinGroup",
        12 => "Heartbeat",
        13 => "LeaveGroup",
        14 => "SyncGroup",
        15 => "DescribeGroups",
        16 => "ListGroups",
        17 => "SaslHandshake",
        18 => "ApiVersions",
        19 => "CreateTopics",
        22 => "InitProducerId",
        24 => "AddPartitionsToTxn",
        25 => "AddOffsetsToTxn",
        26 => "EndTxn",
        28 => "TxnOffsetCommit",
        32 => "DescribeConfigs",
        36 => "SaslAuthenticate",
        60 => "DescribeCluster",
        68 => "ConsumerGroupHeartbeat",
        69 => "ConsumerGroupDescribe",
        75 => "DescribeTopicPartitions",
        _ => "other",
    }
}

/// `later` minus `earlier`, client by client and API by API (what was sent between the
/// two readings).
pub fn since(later: &Counts, earlier: &Counts) -> Counts {
    later
        .iter()
        .map(|(client, apis)| {
            let before = earlier.get(client);
            let apis = apis
                .iter()
                .map(|(api, count)| {
                    let was = before.and_then(|b| b.get(api)).copied().unwrap_or(0);
                    (*api, count - was)
                })
                .filter(|(_, count)| *count > 0)
                .collect();
            (client.clone(), apis)
        })
        .filter(|(_, apis): &(String, BTreeMap<&'static str, u64>)| !apis.is_empty())
        .collect()
}

/// The total of `counts`.
pub fn total(counts: &Counts) -> u64 {
    counts.values().flat_map(|apis| apis.values()).sum()
}
