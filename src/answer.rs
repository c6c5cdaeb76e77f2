//! A watch's view and a trigger's rules become an answer here, in one place: whether the
//! latest good estimate may be served, and the decision the rules make from it. The gRPC
//! handlers, the push thread and `/metrics` all answer through this module; the gRPC module
//! only turns its results into protobuf messages and status codes. No IO, and no clock of
//! its own (the caller gives the time).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::estimate::{Decision, Estimate, Rules};
use crate::store::{Reading, View};

/// An estimate fit to serve.
#[derive(Clone, Debug)]
pub struct Served {
    /// The watch's latest good estimate.
    pub estimate: Arc<Estimate>,
    /// Why the polls since it failed, if they did.
    pub failing: Option<Arc<str>>,
    /// The time decisions are made for: the time of asking, or, while polls fail, the
    /// estimate's own: a sample served through failed polls answers as it stood when taken,
    /// so missing data neither completes an idle window nor wakes an idle workload.
    decided_at: Instant,
}

impl Served {
    /// The decision `rules` make from the served estimate.
    pub fn decide(&self, rules: &Rules) -> Decision {
        rules.decide(&self.estimate, self.decided_at)
    }

    /// Whether `rules` call the workload active (IsActive).
    pub fn active(&self, rules: &Rules) -> bool {
        rules.active(&self.estimate, self.decided_at)
    }
}

/// Why a watch has nothing to serve: KEDA is told `UNAVAILABLE` and applies its fallback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The watch's first poll has not finished.
    Pending,
    /// No poll succeeded since the watch started (or since its topic was deleted).
    NeverGood {
        /// Why the latest poll failed.
        cause: Option<Arc<str>>,
    },
    /// The latest good estimate is older than the stale bound.
    Stale {
        /// How old its oldest offsets are.
        age: Duration,
        /// The bound (`SCALER_STALE_AFTER`).
        stale_after: Duration,
        /// Why the polls since failed; `None` when the watcher has not delivered since.
        cause: Option<Arc<str>>,
    },
}

impl Unavailable {
    /// What to tell KEDA about `watch` (its key, as the logs name it).
    pub fn message(&self, watch: &dyn fmt::Display) -> String {
        match self {
            Unavailable::Pending => {
                format!("no sample yet for {watch}: the first poll of this watch has not finished")
            }
            Unavailable::NeverGood { cause } => format!(
                "polling {watch} failed: {}",
                cause.as_deref().unwrap_or("no poll succeeded")
            ),
            Unavailable::Stale {
                age,
                stale_after,
                cause,
            } => {
                let why = match cause {
                    Some(cause) => format!("polls fail since: {cause}"),
                    None => "the watcher has not delivered since".to_owned(),
                };
                format!(
                    "the latest good sample of {watch} is {} old (stale after {}); {why}",
                    humantime::format_duration(round_to_ms(*age)),
                    humantime::format_duration(*stale_after)
                )
            }
        }
    }
}

/// `duration` to whole milliseconds, for messages and logs.
pub fn round_to_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// What a watch whose view is `view` may serve at `now`: its latest good estimate while that
/// is at most `stale_after` old (by its oldest offsets), even if the polls since failed.
pub fn serve(view: View, stale_after: Duration, now: Instant) -> Result<Served, Unavailable> {
    let failing = match view.reading {
        Reading::Pending => return Err(Unavailable::Pending),
        Reading::Fresh(_) => None,
        Reading::Failed(cause) | Reading::Gone(cause) => Some(cause),
    };
    let Some(estimate) = view.last_good else {
        return Err(Unavailable::NeverGood { cause: failing });
    };
    let age = now.saturating_duration_since(estimate.oldest_read);
    if age > stale_after {
        return Err(Unavailable::Stale {
            age,
            stale_after,
            cause: failing,
        });
    }
    let decided_at = if failing.is_some() {
        estimate.taken_at.min(now)
    } else {
        now
    };
    Ok(Served {
        estimate,
        failing,
        decided_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::Window;
    use crate::lag::{LagRule, PartitionOffsets};

    const STALE: Duration = Duration::from_secs(20);

    /// An estimate of one partition with `lag`, taken at `at`.
    fn estimate(window: &mut Window, at: Instant, lag: i64) -> Arc<Estimate> {
        let offsets = PartitionOffsets {
            group: "g".into(),
            topic: "t".into(),
            topic_id: "id".into(),
            partition: 0,
            log_start: 0,
            high_watermark: 1000,
            committed: Some(1000 - lag),
            nothing_to_read: false,
            unread: None,
            waited: None,
        };
        Arc::new(window.record(at, vec![offsets], Some(1), LagRule::DEFAULT))
    }

    fn view(reading: Reading, last_good: Option<Arc<Estimate>>) -> View {
        View { reading, last_good }
    }

    #[test]
    fn nothing_is_served_before_a_good_poll_or_once_stale() {
        let t0 = Instant::now();
        assert_eq!(
            serve(view(Reading::Pending, None), STALE, t0).unwrap_err(),
            Unavailable::Pending
        );
        let failed = serve(view(Reading::Failed("down".into()), None), STALE, t0).unwrap_err();
        assert!(
            failed.message(&"w").contains("polling w failed: down"),
            "{failed:?}"
        );
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let old = estimate(&mut window, t0, 5);
        let at = t0 + STALE + Duration::from_millis(1);
        let stale = serve(view(Reading::Failed("down".into()), Some(old)), STALE, at);
        let message = stale.unwrap_err().message(&"w");
        assert!(
            message.contains("is 20s 1ms old (stale after 20s)"),
            "{message}"
        );
        assert!(message.contains("polls fail since: down"), "{message}");
    }

    #[test]
    fn a_sample_served_through_failed_polls_answers_as_it_stood() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let rules = Rules {
            idle_window: Duration::from_secs(10),
            ..Rules::default()
        };
        let mut window = Window::new(Duration::from_secs(60), STALE);
        estimate(&mut window, at(0), 0);
        let latest = estimate(&mut window, at(5), 0);
        // Fresh, the idle window is read up to the time of asking: idle 10 s after 0 s.
        let fresh = serve(
            view(
                Reading::Fresh(Arc::clone(&latest)),
                Some(Arc::clone(&latest)),
            ),
            STALE,
            at(11),
        );
        assert!(!fresh.unwrap().active(&rules));
        // Polls failing since: what the sample said at 5 s, when the window was not full.
        let failing = serve(
            view(Reading::Failed("down".into()), Some(latest)),
            STALE,
            at(11),
        );
        let failing = failing.unwrap();
        assert!(failing.active(&rules));
        assert!(failing.decide(&rules).active);
        assert_eq!(failing.failing.as_deref(), Some("down"));
    }
}
