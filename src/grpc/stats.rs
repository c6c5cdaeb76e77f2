//! Counts and latencies of the gRPC calls by method and status code, for `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use grpcio::{RpcStatus, RpcStatusCode};
use parking_lot::Mutex;

/// Upper bounds of the latency histogram's buckets, seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 10] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0, 2.5,
];

/// Calls of one method that ended with one code.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calls {
    /// How many.
    pub count: u64,
    /// Their total handling time, seconds.
    pub seconds: f64,
    /// How many took at most each of [`BUCKETS`] (cumulative, as Prometheus wants).
    pub at_most: [u64; BUCKETS.len()],
}

/// Every method's calls, by status code.
#[derive(Default)]
pub struct RpcStats {
    calls: Mutex<BTreeMap<(&'static str, &'static str), Calls>>,
}

impl RpcStats {
    /// Counts one call of `method` answered with `answer` after `took`.
    pub fn record<T>(&self, method: &'static str, answer: &Result<T, RpcStatus>, took: Duration) {
        let code = match answer {
            Ok(_) => "OK",
            Err(status) => code_name(status.code()),
        };
        let seconds = took.as_secs_f64();
        let mut calls = self.calls.lock();
        let entry = calls.entry((method, code)).or_default();
        entry.count += 1;
        entry.seconds += seconds;
        for (bound, count) in BUCKETS.iter().zip(entry.at_most.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
    }

    /// A copy of every (method, code) → calls.
    pub fn snapshot(&self) -> Vec<((&'static str, &'static str), Calls)> {
        self.calls
            .lock()
            .iter()
            .map(|(key, calls)| (*key, calls.clone()))
            .collect()
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: RpcStatusCode) -> &'static str {
    match code {
        RpcStatusCode::OK => "OK",
        RpcStatusCode::CANCELLED => "CANCELLED",
        RpcStatusCode::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        RpcStatusCode::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        RpcStatusCode::NOT_FOUND => "NOT_FOUND",
        RpcStatusCode::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        RpcStatusCode::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        RpcStatusCode::INTERNAL => "INTERNAL",
        RpcStatusCode::UNAVAILABLE => "UNAVAILABLE",
        RpcStatusCode::UNIMPLEMENTED => "UNIMPLEMENTED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code_into_cumulative_buckets() {
        let stats = RpcStats::default();
        stats.record(
            "GetMetrics",
            &Ok::<(), RpcStatus>(()),
            Duration::from_micros(300),
        );
        stats.record(
            "GetMetrics",
            &Ok::<(), RpcStatus>(()),
            Duration::from_millis(2),
        );
        let refused = Err::<(), _>(RpcStatus::new(RpcStatusCode::INVALID_ARGUMENT));
        stats.record("GetMetrics", &refused, Duration::from_secs(3));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.len(), 2);
        let (key, ok) = &snapshot[0];
        assert_eq!(*key, ("GetMetrics", "INVALID_ARGUMENT"));
        assert_eq!(ok.at_most, [0; BUCKETS.len()], "3 s is beyond every bucket");
        let (key, ok) = &snapshot[1];
        assert_eq!(*key, ("GetMetrics", "OK"));
        assert_eq!(ok.count, 2);
        assert!((ok.seconds - 0.0023).abs() < 1e-9);
        assert_eq!(ok.at_most, [0, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
    }
}
