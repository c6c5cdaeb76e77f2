//! Records of Kafka's internal topic `__consumer_offsets`: which are offset commits, and what
//! they commit. Pure: bytes in, a record out.
//!
//! A record's key starts with a big-endian `int16`: the record type in Kafka 4.x's coordinator
//! records (`apiKey` of `OffsetCommitKey.json` and its siblings), the key version before that;
//! the numbers are the same. Types 0 (`LegacyOffsetCommitKey`) and 1 (`OffsetCommitKey`) are
//! offset commits: group, topic (each an `int16` length and UTF-8 bytes) and partition
//! (`int32`). Type 2 is a classic group's metadata; 3 and up are the records of new-protocol
//! consumer, share and streams groups. None of those is an offset.
//!
//! A commit's value starts with its `int16` version (0 to 4 in Kafka 3.x and 4.x); in every
//! version the committed offset (`int64`) comes first, followed by fields this reader does
//! not need (leader epoch, metadata, timestamps; tagged fields from version 4). A record
//! with no value (a tombstone) deletes the commit: an offset deleted by an operator, expired,
//! or its group deleted.

use std::fmt;

/// The newest offset-commit value version this reader knows.
pub const MAX_VALUE_VERSION: i16 = 4;

/// What a record of `__consumer_offsets` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A group committed `offset` on a partition, or (`None`) its commit there was deleted.
    Commit {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset committed; `None` for a deletion.
        offset: Option<i64>,
    },
    /// Group metadata or any other coordinator record: nothing about committed offsets.
    Other,
}

/// Why a record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The key or value ends before a field it must hold.
    #[error("the {0} ends early")]
    Truncated(&'static str),
    /// The key holds more than an offset commit's fields.
    #[error("the key has {0} bytes after the partition")]
    TrailingKeyBytes(usize),
    /// A key's record type is negative.
    #[error("record type {0} is not one Kafka writes")]
    BadType(i16),
    /// A name is not UTF-8.
    #[error("the {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A commit's value version is newer than this reader knows.
    #[error("offset commit value version {0} is newer than {MAX_VALUE_VERSION}")]
    NewerValue(i16),
}

/// The partition of `__consumer_offsets` that holds `group`'s commits (and whose leader is
/// its coordinator), of `partitions`: Kafka's `Utils.abs(groupId.hashCode()) % partitions`,
/// with Java's `String.hashCode` over the name's UTF-16 code units.
pub fn coordinator_partition(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs: Integer.MIN_VALUE maps to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

/// Decodes one record of `__consumer_offsets` from its key and value (`None`: a tombstone).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, DecodeError> {
    let mut key = Reader::new(key, "key");
    let kind = key.i16()?;
    match kind {
        0 | 1 => {}
        kind if kind < 0 => return Err(DecodeError::BadType(kind)),
        _ => return Ok(Record::Other),
    }
    let group = key.string("group")?;
    let topic = key.string("topic")?;
    let partition = key.i32()?;
    if !key.rest.is_empty() {
        return Err(DecodeError::TrailingKeyBytes(key.rest.len()));
    }
    let offset = match value {
        None => None,
        Some(value) => {
            let mut value = Reader::new(value, "value");
            let version = value.i16()?;
            if !(0..=MAX_VALUE_VERSION).contains(&version) {
                return Err(DecodeError::NewerValue(version));
            }
            Some(value.i64()?)
        }
    };
    Ok(Record::Commit {
        group,
        topic,
        partition,
        offset,
    })
}

/// Big-endian fields read off the front of a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { rest: bytes, what }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated(self.what))?;
        self.rest = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.take().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.take().map(i64::from_be_bytes)
    }

    /// A non-nullable string: `int16` length, then UTF-8 bytes.
    fn string(&mut self, name: &'static str) -> Result<String, DecodeError> {
        let len = usize::try_from(self.i16()?).map_err(|_| DecodeError::Truncated(self.what))?;
        if self.rest.len() < len {
            return Err(DecodeError::Truncated(self.what));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8(name))
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Commit {
                group,
                topic,
                partition,
                offset: Some(offset),
            } => write!(
                f,
                "group {group} committed {topic}[{partition}] at {offset}"
            ),
            Record::Commit {
                group,
                topic,
                partition,
                offset: None,
            } => write!(f, "group {group}'s commit on {topic}[{partition}] deleted"),
            Record::Other => f.write_str("not an offset commit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as i16).to_be_bytes());
        out.extend(text.as_bytes());
    }

    /// A key as Kafka writes it: the type, then group, topic and partition.
    fn commit_key(kind: i16, group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut key = kind.to_be_bytes().to_vec();
        string(&mut key, group);
        string(&mut key, topic);
        key.extend(partition.to_be_bytes());
        key
    }

    /// A value of each version, laid out as `OffsetCommitValue.json` says.
    fn commit_value(version: i16, offset: i64) -> Vec<u8> {
        let mut value = version.to_be_bytes().to_vec();
        value.extend(offset.to_be_bytes());
        match version {
            0 | 2 => {
                string(&mut value, "meta");
                value.extend(1_700_000_000_000i64.to_be_bytes());
            }
            1 => {
                string(&mut value, "meta");
                value.extend(1_700_000_000_000i64.to_be_bytes());
                value.extend((-1i64).to_be_bytes());
            }
            3 => {
                value.extend(7i32.to_be_bytes());
                string(&mut value, "meta");
                value.extend(1_700_000_000_000i64.to_be_bytes());
            }
            _ => {
                // Flexible: leader epoch, compact string (length + 1 as a varint), the
                // timestamp, then tagged fields: one, the topic id (tag 0, 16 bytes).
                value.extend(7i32.to_be_bytes());
                value.push(5);
                value.extend(b"meta");
                value.extend(1_700_000_000_000i64.to_be_bytes());
                value.extend([1, 0, 16]);
                value.extend([0xab; 16]);
            }
        }
        value
    }

    #[test]
    fn every_commit_version_gives_its_offset() {
        for kind in [0, 1] {
            let key = commit_key(kind, "billing", "orders", 7);
            for version in 0..=MAX_VALUE_VERSION {
                let value = commit_value(version, 123_456);
                assert_eq!(
                    decode(&key, Some(&value)),
                    Ok(Record::Commit {
                        group: "billing".to_owned(),
                        topic: "orders".to_owned(),
                        partition: 7,
                        offset: Some(123_456),
                    }),
                    "key type {kind}, value version {version}"
                );
            }
        }
    }

    #[test]
    fn a_tombstone_deletes_and_other_records_are_not_commits() {
        let key = commit_key(1, "g", "t", 0);
        let deleted = decode(&key, None).unwrap();
        assert!(matches!(deleted, Record::Commit { offset: None, .. }));
        assert_eq!(deleted.to_string(), "group g's commit on t[0] deleted");
        // Group metadata (type 2) and new-protocol group records (3 and up), with or
        // without a value.
        for kind in [2i16, 3, 4, 5, 6, 7, 8, 9, 16, 100] {
            let mut key = kind.to_be_bytes().to_vec();
            string(&mut key, "g");
            assert_eq!(decode(&key, Some(b"\x00\x01anything")), Ok(Record::Other));
            assert_eq!(decode(&key, None), Ok(Record::Other));
        }
    }

    #[test]
    fn malformed_records_are_errors_never_guesses() {
        let key = commit_key(1, "g", "t", 0);
        assert_eq!(
            decode(&key[..key.len() - 1], None),
            Err(DecodeError::Truncated("key"))
        );
        let mut long = key.clone();
        long.push(0);
        assert_eq!(decode(&long, None), Err(DecodeError::TrailingKeyBytes(1)));
        assert_eq!(
            decode(&key, Some(&commit_value(5, 1))),
            Err(DecodeError::NewerValue(5))
        );
        assert_eq!(
            decode(&key, Some(&[0, 1, 0, 0])),
            Err(DecodeError::Truncated("value"))
        );
        assert_eq!(decode(&[0xff, 0xff], None), Err(DecodeError::BadType(-1)));
        assert_eq!(decode(&[], None), Err(DecodeError::Truncated("key")));
        let mut bad_name = 1i16.to_be_bytes().to_vec();
        string(&mut bad_name, "g");
        bad_name.extend(1i16.to_be_bytes());
        bad_name.push(0xff);
        bad_name.extend(0i32.to_be_bytes());
        assert_eq!(decode(&bad_name, None), Err(DecodeError::NotUtf8("topic")));
    }

    #[test]
    fn a_group_lives_on_the_partition_kafka_hashes_it_to() {
        // Java: "hello".hashCode() == 99162322, "polygenelubricants".hashCode() ==
        // Integer.MIN_VALUE, "".hashCode() == 0; 50 partitions by default.
        assert_eq!(coordinator_partition("hello", 50), 99_162_322 % 50);
        assert_eq!(coordinator_partition("polygenelubricants", 50), 0);
        assert_eq!(coordinator_partition("", 50), 0);
        // A negative hash is made positive first: "Aa" and "BB" collide (2112), and
        // "zzzzzzzzzz" wraps to a negative one.
        assert_eq!(
            coordinator_partition("Aa", 50),
            coordinator_partition("BB", 50)
        );
        let wrapped = "zzzzzzzzzz"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
        assert!(wrapped < 0);
        assert_eq!(coordinator_partition("zzzzzzzzzz", 50), wrapped.abs() % 50);
        // Outside the BMP: two UTF-16 code units, as Java counts them.
        assert_eq!(
            coordinator_partition("\u{1F600}", 1000),
            (0xD83Di32 * 31 + 0xDE00) % 1000
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever the bytes: no panic.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            key in prop::collection::vec(any::<u8>(), 0..64),
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        ) {
            let _ = decode(&key, value.as_deref());
        }

        /// What is encoded is what is decoded, for every name, partition, offset and version.
        #[test]
        fn commits_round_trip(
            kind in 0i16..=1,
            group in "\\PC{0,40}",
            topic in "[a-zA-Z0-9._-]{1,249}",
            partition in any::<i32>(),
            offset in any::<i64>(),
            version in 0i16..=MAX_VALUE_VERSION,
            tombstone in any::<bool>(),
        ) {
            let key = commit_key(kind, &group, &topic, partition);
            let value = (!tombstone).then(|| commit_value(version, offset));
            let record = decode(&key, value.as_deref()).unwrap();
            prop_assert_eq!(record, Record::Commit {
                group,
                topic,
                partition,
                offset: (!tombstone).then_some(offset),
            });
        }

        /// A commit record cut anywhere is an error, never a commit of something else.
        #[test]
        fn a_cut_commit_is_an_error(
            group in "[a-z]{0,20}",
            offset in any::<i64>(),
            version in 0i16..=MAX_VALUE_VERSION,
            cut in any::<prop::sample::Index>(),
        ) {
            let key = commit_key(1, &group, "t", 3);
            let at = cut.index(key.len());
            prop_assert!(decode(&key[..at], None).is_err());
            let value = commit_value(version, offset);
            let at = cut.index(10);
            prop_assert!(decode(&key, Some(&value[..at])).is_err());
        }
    }
}
