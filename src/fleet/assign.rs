//! Which replica owns a watch: rendezvous (highest random weight) hashing of the watch's
//! cluster ([`shard`]) over the live members, computed by every replica from the same member
//! list, so no lock per watch is needed. When a member joins or leaves, only the clusters it
//! wins or held move. Pure.

/// What ownership is decided on for a watch of `cluster` (`None`: the default cluster): the
/// cluster's name, so every watch of a cluster has the same owner. Every Kafka read a poll
/// makes is shared by the watches of its cluster within a process (a topic's ends, the group
/// list, the topic list, the commit stream); watches of one cluster split between replicas
/// would make each of those reads once per replica. (Names of the clusters file are never
/// `default`.)
pub fn shard(cluster: Option<&str>) -> &str {
    cluster.unwrap_or("default")
}

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `member` for `watch`: the same on every replica and every build (no
/// seeded hasher), so that replicas of different versions agree during a rollout.
pub fn weight(watch: &str, member: &str) -> u64 {
    let hash = fnv1a(0xcbf2_9ce4_8422_2325, watch.as_bytes());
    mix(fnv1a(hash ^ 0xff, member.as_bytes()))
}

/// The member that owns `watch`: the one of highest weight (ties, which need equal
/// weights, go to the smaller name). `None` without members.
pub fn owner<'a, I>(watch: &str, members: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    members.into_iter().max_by(|a, b| {
        weight(watch, a)
            .cmp(&weight(watch, b))
            .then_with(|| b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("lagscaler-{i}:8090")).collect()
    }

    fn watches(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{{\"group\":\"group-{i}\",\"v\":1}}"))
            .collect()
    }

    fn owners(watches: &[String], members: &[String]) -> Vec<String> {
        watches
            .iter()
            .map(|watch| {
                owner(watch, members.iter().map(String::as_str))
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn no_member_no_owner_and_one_member_owns_everything() {
        assert_eq!(owner("w", std::iter::empty()), None);
        assert_eq!(owner("w", ["a"]), Some("a"));
    }

    #[test]
    fn scaling_3_to_5_moves_about_two_fifths_and_only_to_the_new_members() {
        let watches = watches(10_000);
        let before = owners(&watches, &names(3));
        let after = owners(&watches, &names(5));
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Ideal 2/5 = 4,000; a fair hash is within a few percent of it.
        assert!((3_800..=4_200).contains(&moved), "moved {moved} of 10000");
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                assert!(b.starts_with("lagscaler-3") || b.starts_with("lagscaler-4"));
            }
        }
        // The load is even: each of the 5 owns about 2,000.
        for member in names(5) {
            let owned = after.iter().filter(|owner| **owner == member).count();
            assert!((1_800..=2_200).contains(&owned), "{member} owns {owned}");
        }
    }

    proptest! {
        #[test]
        fn a_member_leaving_moves_only_its_own_watches(
            n in 2usize..8,
            leaving in 0usize..8,
            seed in 0u32..1000,
        ) {
            let members: Vec<String> = (0..n).map(|i| format!("m{seed}-{i}")).collect();
            let leaving = &members[leaving % n];
            let rest: Vec<String> = members.iter().filter(|m| *m != leaving).cloned().collect();
            let watches: Vec<String> = (0..300).map(|i| format!("w{seed}-{i}")).collect();
            let before = owners(&watches, &members);
            let after = owners(&watches, &rest);
            for (a, b) in before.iter().zip(&after) {
                if a != leaving {
                    prop_assert_eq!(a, b);
                }
            }
        }

        #[test]
        fn the_owner_does_not_depend_on_the_members_order(
            mut members in proptest::collection::vec("[a-z0-9:]{1,12}", 1..10),
            watch in ".{0,40}",
        ) {
            let first = owner(&watch, members.iter().map(String::as_str)).map(str::to_owned);
            members.reverse();
            let second = owner(&watch, members.iter().map(String::as_str)).map(str::to_owned);
            prop_assert_eq!(first, second);
        }
    }
}
