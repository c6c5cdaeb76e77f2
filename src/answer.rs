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
    /// The time decisions are made for: the time of asking, but never later than
    /// [`Freshness::current_for`] after the estimate's poll started. A sample stands for
    /// the present only until the next poll's is due (plus slack); while polls fail or hang
    /// it answers as it stood then, so missing data neither completes an idle window nor
    /// wakes an idle workload.
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

/// How long a watch's latest sample stands for the present (see [`serve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// How long after its poll started a sample stands for the present: as long as the
    /// time between two polls that are on time. Past it the next poll's sample is overdue
    /// (it failed, it hangs, or the fleet's owner has not shared it), nothing is known of
    /// the time since, and answers are decided as of this point, never later.
    pub current_for: Duration,
    /// A sample older than this (`SCALER_STALE_AFTER`, by its oldest offsets) is not served.
    pub stale_after: Duration,
}

impl Freshness {
    /// Samples every `poll_interval`, served for up to `stale_after`: a sample stands for
    /// the present for one interval plus [`poll_slack`].
    pub fn new(poll_interval: Duration, stale_after: Duration) -> Freshness {
        Freshness {
            current_for: poll_interval + poll_slack(poll_interval),
            stale_after,
        }
    }
}

/// How late a poll's sample may come and still be on time: half an interval, at least a
/// second (a poll of thousands of watches on a loaded machine takes up to about that).
pub fn poll_slack(poll_interval: Duration) -> Duration {
    (poll_interval / 2).max(Duration::from_secs(1))
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
/// It is decided at `now`, or, once its poll started more than [`Freshness::current_for`]
/// ago, at that point: never extended further, whether the polls since failed, hang or
/// have not been shared. A decision made then does not change until a sample comes (an
/// idle watch is not woken by a poll that overran, nor is an idle window completed by it).
pub fn serve(view: View, freshness: Freshness, now: Instant) -> Result<Served, Unavailable> {
    let stale_after = freshness.stale_after;
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
    let decided_at = now.min(estimate.taken_at + freshness.current_for);
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
    /// 5 s polls served for up to 20 s: current for 7.5 s.
    const FRESHNESS: Freshness = Freshness {
        current_for: Duration::from_millis(7500),
        stale_after: STALE,
    };

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

    /// Rules with a 10 s idle window.
    fn idle_after_10s() -> Rules {
        Rules {
            idle_window: Duration::from_secs(10),
            ..Rules::default()
        }
    }

    /// The view of a watch whose latest poll gave `estimate`.
    fn fresh(estimate: &Arc<Estimate>) -> View {
        view(
            Reading::Fresh(Arc::clone(estimate)),
            Some(Arc::clone(estimate)),
        )
    }

    #[test]
    fn nothing_is_served_before_a_good_poll_or_once_stale() {
        let t0 = Instant::now();
        assert_eq!(
            serve(view(Reading::Pending, None), FRESHNESS, t0).unwrap_err(),
            Unavailable::Pending
        );
        let failed = serve(view(Reading::Failed("down".into()), None), FRESHNESS, t0).unwrap_err();
        assert!(
            failed.message(&"w").contains("polling w failed: down"),
            "{failed:?}"
        );
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let old = estimate(&mut window, t0, 5);
        let at = t0 + STALE + Duration::from_millis(1);
        let stale = serve(
            view(Reading::Failed("down".into()), Some(old)),
            FRESHNESS,
            at,
        );
        let message = stale.unwrap_err().message(&"w");
        assert!(
            message.contains("is 20s 1ms old (stale after 20s)"),
            "{message}"
        );
        assert!(message.contains("polls fail since: down"), "{message}");
    }

    /// 5 s polls and a 10 s idle window; lag 500 at 0 s, 0 at 5 s, and the poll of 10 s
    /// hangs until 20 s (a frozen coordinator): nothing is known after 5 s, so the watch is
    /// never idle meanwhile. Once a poll sees 0 again, idle 10 s after the first sample at 0.
    #[test]
    fn a_hanging_poll_never_completes_an_idle_window() {
        let t0 = Instant::now();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        let rules = idle_after_10s();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        estimate(&mut window, ms(0), 500);
        let drained = estimate(&mut window, ms(5000), 0);
        let idle_at: Vec<u64> = (5000..=20_000)
            .step_by(100)
            .filter(|at| {
                let served = serve(fresh(&drained), FRESHNESS, ms(*at)).unwrap();
                !served.active(&rules) || !served.decide(&rules).active
            })
            .collect();
        assert!(idle_at.is_empty(), "idle at {idle_at:?} ms");
        // The hung poll fails; the next one sees 0 at 20 s: a gap shorter than the stale
        // bound is bridged, and the window from 5 s on is complete.
        window.record_failure(ms(10_000));
        let back = estimate(&mut window, ms(20_000), 0);
        let served = serve(fresh(&back), FRESHNESS, ms(20_000)).unwrap();
        assert!(!served.active(&rules));
        // The next polls hang in turn: the idle watch stays idle (a poll that overran does
        // not wake it), as it stood when the next poll was due.
        let woken: Vec<u64> = (20_000..=40_000)
            .step_by(100)
            .filter(|at| {
                serve(fresh(&back), FRESHNESS, ms(*at))
                    .unwrap()
                    .active(&rules)
            })
            .collect();
        assert!(woken.is_empty(), "active at {woken:?} ms");
    }

    /// The idle window starts at the first sample that saw the lag at 0, not at the last
    /// that saw it above: the lag between them is unknown.
    #[test]
    fn the_idle_window_starts_at_the_first_sample_at_zero() {
        let t0 = Instant::now();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        let rules = idle_after_10s();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        estimate(&mut window, ms(0), 500);
        for at in (5000..=15_000).step_by(5000) {
            let latest = estimate(&mut window, ms(at), 0);
            let served = serve(fresh(&latest), FRESHNESS, ms(at));
            assert_eq!(served.unwrap().active(&rules), at < 15_000, "at {at} ms");
        }
    }

    /// Through failed polls a sample answers as it stood when the next poll was due (a
    /// poll interval plus slack after it was taken), however long they fail: it neither
    /// completes an idle window nor wakes an idle workload.
    #[test]
    fn a_sample_served_through_failed_polls_answers_as_it_stood() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let rules = idle_after_10s();
        let failing = |estimate: &Arc<Estimate>, asked: u64| {
            let view = view(Reading::Failed("down".into()), Some(Arc::clone(estimate)));
            serve(view, FRESHNESS, at(asked)).unwrap()
        };
        let mut window = Window::new(Duration::from_secs(60), STALE);
        estimate(&mut window, at(0), 500);
        let drained = estimate(&mut window, at(5), 0);
        // Failing from the poll of 10 s on: decided as of 12.5 s at the latest, when 500
        // (which stood until 5 s) is still in the window.
        for asked in [11, 15, 19, 24] {
            let served = failing(&drained, asked);
            assert!(served.active(&rules), "at {asked} s");
            assert!(served.decide(&rules).active, "at {asked} s");
            assert_eq!(served.failing.as_deref(), Some("down"));
        }
        // Idle at 20 s (10 s after the first sample at 0), and idle through the failures.
        let mut latest = drained;
        for taken in [10, 15, 20] {
            latest = estimate(&mut window, at(taken), 0);
        }
        assert!(!serve(fresh(&latest), FRESHNESS, at(20))
            .unwrap()
            .active(&rules));
        for asked in [25, 30, 39] {
            assert!(!failing(&latest, asked).active(&rules), "at {asked} s");
        }
    }
}
