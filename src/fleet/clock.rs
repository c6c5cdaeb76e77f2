//! The fleet's clock: this process's monotonic clock mapped to the wall clock of the fleet's
//! Redis, so that the replicas' ticks, slots and sample times agree where their hosts'
//! clocks do not. Each lease renewal reads Redis's `TIME` (in the RENEW script's reply) and
//! moves the mapping when it is off by more than [`SKEW_TOLERANCE`]. Pure but for the
//! atomic it keeps the offset in.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::sample::Clock;

/// A reading of Redis's clock moves the mapping only when it is off by more than this: a
/// round trip's uncertainty, well inside a poll interval.
pub const SKEW_TOLERANCE: Duration = Duration::from_millis(100);

/// A reading whose round trip took this long or longer says too little about when Redis
/// read its clock, and is not used.
const ROUND_TRIP_LIMIT: Duration = Duration::from_millis(100);

/// What a reading of Redis's clock did to the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The round trip was too slow to tell.
    Unusable,
    /// Within [`SKEW_TOLERANCE`] of the mapping: kept.
    Kept,
    /// The mapping moved: Redis's clock is `skew_ms` ahead of this host's (negative:
    /// behind), `by_ms` more than the mapping had it.
    Moved {
        /// Redis's clock minus this host's wall clock.
        skew_ms: i64,
        /// How far the mapping moved.
        by_ms: i64,
    },
}

/// This replica's view of Redis's clock.
pub struct FleetClock {
    /// This process's monotonic clock mapped to its host's wall clock, at start.
    local: Clock,
    /// Redis's clock minus the host's, µs (0 until the first reading).
    skew_us: AtomicI64,
    interval_ms: u64,
    origin: OnceLock<Instant>,
}

impl FleetClock {
    /// A clock from `local` for ticks every `interval`; Redis's clock is taken to agree with
    /// the host's until it has been read.
    pub fn new(local: Clock, interval: Duration) -> FleetClock {
        FleetClock {
            local,
            skew_us: AtomicI64::new(0),
            interval_ms: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            origin: OnceLock::new(),
        }
    }

    /// A reading of Redis's clock: `redis_ms` (ms since the epoch, truncated), asked for at
    /// `sent` and answered at `received`.
    pub fn observe(&self, sent: Instant, received: Instant, redis_ms: u64) -> Observed {
        let round_trip = received.saturating_duration_since(sent);
        if round_trip >= ROUND_TRIP_LIMIT {
            return Observed::Unusable;
        }
        // Redis read its clock somewhere in the round trip: take its middle, and the middle
        // of the millisecond Redis truncated to.
        let middle = sent + round_trip / 2;
        let redis_us = i64::try_from(redis_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
            .saturating_add(500);
        let skew_us = redis_us.saturating_sub(self.local.wall_us(middle));
        let before = self.skew_us.load(Ordering::Relaxed);
        let tolerance = i64::try_from(SKEW_TOLERANCE.as_micros()).unwrap_or(i64::MAX);
        if skew_us.abs_diff(before) <= tolerance.unsigned_abs() {
            return Observed::Kept;
        }
        self.skew_us.store(skew_us, Ordering::Relaxed);
        Observed::Moved {
            skew_ms: skew_us / 1000,
            by_ms: skew_us.saturating_sub(before) / 1000,
        }
    }

    /// This process's monotonic clock mapped to Redis's wall clock, as of the latest reading.
    pub fn clock(&self) -> Clock {
        self.local.shifted(self.skew_us.load(Ordering::Relaxed))
    }

    /// Where the fleet's schedule starts: a multiple of the poll interval since the epoch by
    /// Redis's clock, fixed at the first call (the fleet calls it after its first renewal).
    pub fn origin(&self) -> Instant {
        *self.origin.get_or_init(|| {
            let clock = self.clock();
            let interval_us = i64::try_from(self.interval_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
            let now_us = clock.wall_us(Instant::now());
            clock.instant(now_us - now_us.rem_euclid(interval_us))
        })
    }

    /// The slot of tick `tick`: its time by Redis's clock, ms since the epoch, rounded to
    /// the nearest multiple of the poll interval (so that a mapping moved by less than half
    /// an interval since the schedule's origin still names each tick's slot alike).
    pub fn slot_ms(&self, tick: Instant) -> u64 {
        let ms = u64::try_from(self.clock().wall_us(tick).div_euclid(1000)).unwrap_or(0);
        let half = self.interval_ms / 2;
        ms.saturating_add(half) / self.interval_ms * self.interval_ms
    }

    /// The instant of slot `slot_ms`.
    pub fn slot_instant(&self, slot_ms: u64) -> Instant {
        self.clock().instant(
            i64::try_from(slot_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        )
    }

    /// How far after Redis's now a slot may be written: half a poll interval, the rounding
    /// of [`FleetClock::slot_ms`]. A slot later than that comes from a clock that runs ahead.
    pub fn ahead_allowed_ms(&self) -> u64 {
        self.interval_ms / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL_US: i64 = 1_764_000_000_000_000;

    fn fleet_clock(start: Instant) -> FleetClock {
        FleetClock::new(Clock::at(start, WALL_US), Duration::from_secs(5))
    }

    #[test]
    fn a_reading_3_s_ahead_moves_the_mapping_and_one_within_tolerance_keeps_it() {
        let start = Instant::now();
        let clock = fleet_clock(start);
        let sent = start + Duration::from_secs(10);
        let received = sent + Duration::from_millis(2);
        // Redis reads 3 s more than this host at the middle of the round trip.
        let redis_ms = u64::try_from((WALL_US + 13_001_000) / 1000).unwrap();
        assert_eq!(
            clock.observe(sent, received, redis_ms),
            Observed::Moved {
                skew_ms: 3000,
                by_ms: 3000
            }
        );
        let at = start + Duration::from_secs(20);
        assert_eq!(
            clock.clock().wall_us(at),
            WALL_US + 23_000_500,
            "instants map to Redis's time"
        );
        assert_eq!(
            clock.observe(sent, received, redis_ms + 50),
            Observed::Kept,
            "50 ms more is within the tolerance"
        );
        assert_eq!(
            clock.observe(sent, sent + ROUND_TRIP_LIMIT, redis_ms + 5000),
            Observed::Unusable,
            "a slow round trip says nothing"
        );
        assert_eq!(clock.clock().wall_us(at), WALL_US + 23_000_500);
    }

    #[test]
    fn slots_are_multiples_of_the_interval_by_redis_clock_and_map_back_to_their_instant() {
        let start = Instant::now();
        let clock = fleet_clock(start);
        // Redis 3.2 s behind this host.
        let sent = start + Duration::from_secs(1);
        let redis_ms = u64::try_from((WALL_US + 1_000_000 - 3_200_000) / 1000).unwrap();
        let _ = clock.observe(sent, sent, redis_ms);
        let origin = clock.origin();
        let origin_ms = clock.slot_ms(origin);
        assert_eq!(origin_ms % 5000, 0);
        for k in 0..4u32 {
            let tick = origin + k * Duration::from_secs(5);
            let slot = clock.slot_ms(tick);
            assert_eq!(slot, origin_ms + u64::from(k) * 5000);
            let back = clock.slot_instant(slot);
            let off = back.max(tick) - back.min(tick);
            assert!(off < Duration::from_millis(1), "{off:?}");
        }
        assert_eq!(clock.origin(), origin, "fixed at the first call");
    }

    #[test]
    fn a_mapping_moved_by_less_than_half_an_interval_names_the_same_slots() {
        let start = Instant::now();
        let clock = fleet_clock(start);
        let origin = clock.origin();
        let ticks: Vec<Instant> = (1..5u32)
            .map(|k| origin + k * Duration::from_secs(5))
            .collect();
        let before: Vec<u64> = ticks.iter().map(|t| clock.slot_ms(*t)).collect();
        let sent = start + Duration::from_secs(2);
        let redis_ms = u64::try_from((WALL_US + 2_000_000 + 2_000_000) / 1000).unwrap();
        assert!(matches!(
            clock.observe(sent, sent, redis_ms),
            Observed::Moved { by_ms: 2000, .. }
        ));
        let after: Vec<u64> = ticks.iter().map(|t| clock.slot_ms(*t)).collect();
        assert_eq!(before, after);
        assert_eq!(clock.ahead_allowed_ms(), 2500);
    }
}
