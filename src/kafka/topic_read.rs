//! A topic's partitions and their offsets as one cycle read them, and how a read that
//! reached some partitions' leaders but not others is completed from the latest good read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::lag::Unread;

/// A topic as read in a cycle.
#[derive(Clone)]
pub(super) struct TopicRead {
    /// The topic's name, which every sample of the cycle's watches shares.
    pub(super) name: Arc<str>,
    /// The topic id, which a topic deleted and created again does not keep.
    pub(super) id: Arc<str>,
    /// Its partitions, sorted by number.
    pub(super) partitions: Vec<TopicPartitionOffsets>,
    /// When the read started.
    pub(super) read_at: Instant,
}

/// One partition of a topic as read in a cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TopicPartitionOffsets {
    pub(super) partition: i32,
    pub(super) log_start: i64,
    pub(super) high_watermark: i64,
    /// Set when this cycle's read could not reach the partition's leader and the offsets
    /// are an earlier read's.
    pub(super) unread: Option<Unread>,
}

/// What the brokers answered for one topic in one read.
pub(super) struct Answers<'a> {
    /// The topic's name, for messages.
    pub(super) topic: &'a str,
    /// Its id.
    pub(super) id: Arc<str>,
    /// Its partition numbers, sorted.
    pub(super) numbers: &'a [i32],
    /// The end offset of each partition, or why there is none; a partition missing here
    /// got no answer.
    pub(super) latest: &'a HashMap<i32, Result<i64, String>>,
    /// The log start offset of each partition, likewise.
    pub(super) earliest: &'a HashMap<i32, Result<i64, String>>,
    /// When the read started.
    pub(super) read_at: Instant,
}

/// The read `answers` make. A partition whose end or start is missing keeps the offsets it
/// has in `previous` (the latest good read of the topic, if it has the same id), marked
/// [`Unread`] with the time of the read they come from, however many reads missed them
/// since. That fails, naming the first such partition's cause, when no partition was read
/// now (the cluster is not answering: nothing stands in) or when `previous` has nothing for
/// the partition.
pub(super) fn merge(
    answers: Answers<'_>,
    previous: Option<&TopicRead>,
) -> Result<TopicRead, String> {
    let Answers {
        topic,
        id,
        numbers,
        latest,
        earliest,
        read_at,
    } = answers;
    let mut read = Vec::with_capacity(numbers.len());
    let mut missed = Vec::new();
    for &number in numbers {
        match (latest.get(&number), earliest.get(&number)) {
            (Some(Ok(high_watermark)), Some(Ok(log_start))) => read.push(TopicPartitionOffsets {
                partition: number,
                log_start: *log_start,
                high_watermark: *high_watermark,
                unread: None,
            }),
            (latest, earliest) => {
                let cause = [latest, earliest]
                    .into_iter()
                    .find_map(|answer| match answer {
                        Some(Err(cause)) => Some(cause.clone()),
                        None => Some(format!("{topic}[{number}]: no answer")),
                        Some(Ok(_)) => None,
                    })
                    .unwrap_or_default();
                missed.push((number, cause));
            }
        }
    }
    if let (Some((_, cause)), true) = (missed.first(), read.is_empty()) {
        return Err(cause.clone());
    }
    let previous = previous.filter(|previous| previous.id == id);
    for (number, cause) in missed {
        let Some((earlier, earlier_read)) = previous.and_then(|previous| {
            let earlier = previous.partitions.iter().find(|p| p.partition == number)?;
            let read_at = earlier
                .unread
                .as_ref()
                .map_or(previous.read_at, |unread| unread.read_at);
            Some((earlier, read_at))
        }) else {
            return Err(cause);
        };
        read.push(TopicPartitionOffsets {
            unread: Some(Unread {
                read_at: earlier_read,
                cause: cause.into(),
            }),
            ..earlier.clone()
        });
    }
    read.sort_by_key(|partition| partition.partition);
    Ok(TopicRead {
        name: topic.into(),
        id,
        partitions: read,
        read_at,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A read of partitions 0 to 2 at `at`: each given `Some((start, end))` answered,
    /// each given `None` not.
    fn read(
        id: &str,
        at: Instant,
        answered: &[Option<(i64, i64)>],
        previous: Option<&TopicRead>,
    ) -> Result<TopicRead, String> {
        let numbers: Vec<i32> = (0..answered.len() as i32).collect();
        let mut latest = HashMap::new();
        let mut earliest = HashMap::new();
        for (number, answer) in numbers.iter().zip(answered) {
            match answer {
                Some((start, end)) => {
                    latest.insert(*number, Ok(*end));
                    earliest.insert(*number, Ok(*start));
                }
                None => {
                    latest.insert(
                        *number,
                        Err(format!("t[{number}]: its leader did not answer")),
                    );
                }
            }
        }
        merge(
            Answers {
                topic: "t",
                id: id.into(),
                numbers: &numbers,
                latest: &latest,
                earliest: &earliest,
                read_at: at,
            },
            previous,
        )
    }

    fn ends(read: &TopicRead) -> Vec<(i64, Option<Instant>)> {
        read.partitions
            .iter()
            .map(|p| (p.high_watermark, p.unread.as_ref().map(|u| u.read_at)))
            .collect()
    }

    #[test]
    fn a_partition_whose_leader_did_not_answer_keeps_its_earlier_offsets_and_their_time() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = read(
            "id",
            at(0),
            &[Some((0, 10)), Some((0, 20)), Some((0, 30))],
            None,
        )
        .expect("all read");
        assert_eq!(ends(&first), [(10, None), (20, None), (30, None)]);
        let second = read(
            "id",
            at(5),
            &[Some((0, 11)), None, Some((0, 31))],
            Some(&first),
        )
        .expect("partly read");
        assert_eq!(ends(&second), [(11, None), (20, Some(at(0))), (31, None)]);
        let cause = &second.partitions[1].unread.as_ref().unwrap().cause;
        assert!(cause.contains("t[1]"), "{cause}");
        // Missed again: still the offsets, and the time, of the read at 0 s.
        let third =
            read("id", at(10), &[Some((0, 12)), None, None], Some(&second)).expect("partly read");
        assert_eq!(
            ends(&third),
            [(12, None), (20, Some(at(0))), (31, Some(at(5)))]
        );
        // Read again: fresh.
        let fourth = read(
            "id",
            at(15),
            &[Some((0, 13)), Some((0, 25)), Some((0, 33))],
            Some(&third),
        )
        .expect("all read");
        assert_eq!(ends(&fourth), [(13, None), (25, None), (33, None)]);
    }

    #[test]
    fn nothing_stands_in_when_no_partition_answered_or_none_was_read_before() {
        let t0 = Instant::now();
        let first = read("id", t0, &[Some((0, 10)), Some((0, 20))], None).expect("read");
        let none = read("id", t0, &[None, None], Some(&first));
        assert!(none.is_err_and(|cause| cause.contains("t[0]")));
        // A partition with no earlier read (a new one) cannot stand in.
        let grown = read(
            "id",
            t0,
            &[Some((0, 10)), Some((0, 20)), None],
            Some(&first),
        );
        assert!(grown.is_err_and(|cause| cause.contains("t[2]")));
        // Nor one of a topic deleted and created again under the same name.
        let recreated = read("new-id", t0, &[Some((0, 1)), None], Some(&first));
        assert!(recreated.is_err_and(|cause| cause.contains("t[1]")));
        // Nor anything on a first read.
        assert!(read("id", t0, &[Some((0, 1)), None], None).is_err());
    }
}
