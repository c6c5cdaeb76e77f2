//! The cluster's consumer groups and their members: the classic group list (ListGroups and
//! DescribeGroups, shared per cycle) and, for a group on the new rebalance protocol
//! (KIP-848) that list cannot describe, DescribeConsumerGroups.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

use super::{admin, KafkaClient, KafkaError};

/// The states of a classic group the classic DescribeGroups reports; it reports a group on
/// the new protocol as `Dead` or with an error.
const CLASSIC_STATES: [&str; 4] = [
    "Stable",
    "PreparingRebalance",
    "CompletingRebalance",
    "Empty",
];

/// A consumer group in the classic group list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub name: String,
    /// Its state as the classic DescribeGroups answers (`Stable`, `Empty`, `Dead`...).
    pub state: String,
    /// Its members as the classic DescribeGroups answers.
    pub members: usize,
}

impl KafkaClient {
    /// Active members of `group`; 0 for a group that is empty or unknown, from reads made
    /// at or after `since`. The classic group list (ListGroups, which lists groups of both
    /// protocols, then DescribeGroups) answers for a group in a classic state, and a group it
    /// does not list has none. A group it lists otherwise (`Dead`, or an error:
    /// GROUP_ID_NOT_FOUND) is a group on the new rebalance protocol (KIP-848), whose members
    /// a classic DescribeGroups does not show: that group is described with
    /// DescribeConsumerGroups, once per cycle for every watch of it. When that fails the
    /// members are unknown (an error), never 0.
    pub fn group_members(&self, group: &str, since: Instant) -> Result<usize, KafkaError> {
        let groups = self.list_groups(since)?;
        // The list is complete (a partial answer is an error): a group not in it has no
        // members, whichever its protocol.
        let Ok(found) = groups.binary_search_by(|listed| listed.name.as_str().cmp(group)) else {
            return Ok(0);
        };
        let listed = &groups[found];
        if CLASSIC_STATES.contains(&listed.state.as_str()) {
            return Ok(listed.members);
        }
        let described = self.described.get(group, since, |_| {
            let described = admin::describe_group(&self.call(), group).map_err(|cause| {
                KafkaError::DescribeGroup {
                    group: group.to_owned(),
                    cause,
                }
            })?;
            debug!(
                "group {group} described: {} protocol, {}, {} members",
                described.protocol, described.state, described.members
            );
            Ok(described)
        })?;
        Ok(described.members)
    }

    /// Every consumer group of the cluster as the classic group list shows it, sorted by
    /// name, from a read made at or after `since` (ListGroups and one DescribeGroups per
    /// broker, shared with every watch of the cycle). A group on the new rebalance protocol
    /// is listed `Dead` with no members: ask [`KafkaClient::group_members`] for members.
    pub fn list_groups(&self, since: Instant) -> Result<Arc<Vec<ListedGroup>>, KafkaError> {
        self.groups.get("", since, |_| {
            let list = self.fetch_group_list()?;
            let mut groups: Vec<ListedGroup> = list
                .groups()
                .iter()
                .map(|info| ListedGroup {
                    name: info.name().to_owned(),
                    state: info.state().to_owned(),
                    members: info.members().len(),
                })
                .collect();
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(groups)
        })
    }

    /// librdkafka's blocking ListGroups and DescribeGroups, asked again in slices of at most
    /// 500 ms while it times out, so that a stopping daemon does not wait a whole request
    /// timeout. (Each slice sends the requests again, but only to brokers it reaches.)
    fn fetch_group_list(&self) -> Result<rdkafka::groups::GroupList, KafkaError> {
        const GROUP_LIST_SLICE: Duration = Duration::from_millis(500);
        let deadline = Instant::now() + self.timeout;
        loop {
            let now = Instant::now();
            let slice = GROUP_LIST_SLICE.min(deadline.saturating_duration_since(now));
            match self.consumer.fetch_group_list(None, slice) {
                Ok(list) => return Ok(list),
                Err(err) => {
                    let timed_out =
                        err.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut);
                    if self.stopping.load(Ordering::Acquire) {
                        return Err(KafkaError::ListGroups {
                            cause: admin::STOPPING.to_owned(),
                        });
                    }
                    if !timed_out || Instant::now() >= deadline {
                        return Err(KafkaError::ListGroups {
                            cause: err.to_string(),
                        });
                    }
                }
            }
        }
    }
}
