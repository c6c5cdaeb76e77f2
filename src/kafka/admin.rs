//! The admin calls rdkafka's safe API lacks, made through `rdkafka::bindings`: a group's
//! committed offsets (ListConsumerGroupOffsets for an arbitrary group), a group's members
//! on either rebalance protocol (DescribeConsumerGroups), a topic's id and partitions
//! (DescribeTopics) and partition offsets (ListOffsets). All of lagscaler's `unsafe` lives
//! here.
//!
//! Each call is asynchronous inside librdkafka: its answer arrives on a queue of its own,
//! which is polled in slices of [`SLICE`] so that a stopping daemon is noticed within one
//! slice, never after a whole request timeout.
//!
//! Every librdkafka object created here is owned by a guard that destroys it on every path,
//! and nothing borrowed from a result event outlives the event's guard.

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::ClientContext;

use crate::lag::Isolation;

/// How often a wait for an answer looks at the stop flag.
pub const SLICE: Duration = Duration::from_millis(100);

/// The error text of a call given up because the daemon is stopping.
pub const STOPPING: &str = "lagscaler is stopping";

/// One committed offset of a group. `offset` is negative when the group has none there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// The committed offset, or a negative value for none.
    pub offset: i64,
}

/// Why an admin call about a topic failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// The broker says the topic does not exist.
    Unknown,
    /// Anything else, in librdkafka's words.
    Other(String),
}

/// A topic as DescribeTopics sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicLayout {
    /// The topic id (base64), which a topic deleted and created again under the same name
    /// does not keep.
    pub id: String,
    /// Partition numbers, sorted.
    pub partitions: Vec<i32>,
    /// The leader's node id of each partition, in the order of `partitions`; `None` where
    /// the partition has no leader now.
    pub leaders: Vec<Option<i32>>,
}

impl TopicLayout {
    /// The leader of `partition`: `None` when the topic has no such partition, `Some(None)`
    /// when it has no leader now.
    pub fn leader(&self, partition: i32) -> Option<Option<i32>> {
        let at = self.partitions.binary_search(&partition).ok()?;
        self.leaders.get(at).copied()
    }
}

/// A consumer group as DescribeConsumerGroups sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// Members now.
    pub members: usize,
    /// The rebalance protocol: `consumer` (KIP-848), `classic`, or `unknown` (no such group).
    pub protocol: &'static str,
    /// The group's state as librdkafka names it.
    pub state: String,
}

/// Which end of a partition to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The log start offset.
    Earliest,
    /// The high watermark (or the last stable offset, for read_committed).
    Latest,
}

/// What every call needs: the client, the deadline and the stop flag.
pub struct Call<'a, C: ClientContext> {
    /// The client whose connections carry the request.
    pub client: &'a Client<C>,
    /// librdkafka's request timeout; the wait allows a little more.
    pub timeout: Duration,
    /// Set when the daemon stops: the wait gives up within [`SLICE`].
    pub stop: &'a AtomicBool,
}

/// Lists every committed offset of `group`.
pub fn list_group_offsets<C: ClientContext>(
    call: &Call<'_, C>,
    group: &str,
) -> Result<Vec<CommittedOffset>, String> {
    let group_c = CString::new(group).map_err(|_| "group name contains a NUL byte".to_owned())?;
    // SAFETY: `group_c` is a valid C string; a null partition list means "every partition
    // the group has committed on". librdkafka copies both.
    let request = RequestGuard(unsafe {
        rd::rd_kafka_ListConsumerGroupOffsets_new(group_c.as_ptr(), ptr::null())
    });
    let event = call.run(
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        |rk, options, queue| {
            let mut requests = [request.0];
            // SAFETY: the array holds exactly one valid request, as the API requires;
            // librdkafka copies the request, so our guard may destroy it afterwards; options
            // and queue are valid for the call.
            unsafe {
                rd::rd_kafka_ListConsumerGroupOffsets(
                    rk,
                    requests.as_mut_ptr(),
                    requests.len(),
                    options,
                    queue,
                );
            }
        },
    )?;
    // SAFETY: `event.0` is a valid event until its guard drops; null when of another type.
    let result = unsafe { rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.0) };
    if result.is_null() {
        return Err("unexpected admin event instead of a ListConsumerGroupOffsets result".into());
    }
    let mut n_groups = 0usize;
    // SAFETY: `result` is valid while the event lives; the array it returns is owned by it.
    let groups =
        unsafe { rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut n_groups) };
    let mut offsets = Vec::new();
    // SAFETY: `groups` holds `n_groups` elements owned by the event.
    for &group_result in unsafe { elements(groups, n_groups) } {
        // SAFETY: `group_result` is valid while the event lives.
        let group_error = unsafe { rd::rd_kafka_group_result_error(group_result) };
        if !group_error.is_null() {
            // SAFETY: `group_error` is valid while the event lives.
            return Err(unsafe { error_text(group_error) });
        }
        // SAFETY: as above; the list is owned by the event.
        let list = unsafe { rd::rd_kafka_group_result_partitions(group_result) };
        // SAFETY: `list` is null or a valid partition list owned by the event.
        for elem in unsafe { list_elements(list) } {
            if elem.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(format!(
                    "partition {}: {}",
                    elem.partition,
                    err_text(elem.err)
                ));
            }
            offsets.push(CommittedOffset {
                // SAFETY: every element of a result list names its topic as a C string.
                topic: unsafe { c_text(elem.topic) }.into(),
                partition: elem.partition,
                offset: elem.offset,
            });
        }
    }
    Ok(offsets)
}

/// Describes one group: librdkafka asks its coordinator with ConsumerGroupDescribe (the
/// KIP-848 protocol) and falls back to the classic DescribeGroups for a classic group or an
/// older broker. A group the coordinator does not know has no members.
pub fn describe_group<C: ClientContext>(
    call: &Call<'_, C>,
    group: &str,
) -> Result<GroupDescription, String> {
    let group_c = CString::new(group).map_err(|_| "group name contains a NUL byte".to_owned())?;
    let event = call.run(
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        |rk, options, queue| {
            let mut groups = [group_c.as_ptr()];
            // SAFETY: `groups` holds one valid C string; librdkafka copies it; options and
            // queue are valid for the call.
            unsafe {
                rd::rd_kafka_DescribeConsumerGroups(
                    rk,
                    groups.as_mut_ptr(),
                    groups.len(),
                    options,
                    queue,
                );
            }
        },
    )?;
    // SAFETY: `event.0` is a valid event until its guard drops; null when of another type.
    let result = unsafe { rd::rd_kafka_event_DescribeConsumerGroups_result(event.0) };
    if result.is_null() {
        return Err("unexpected admin event instead of a DescribeConsumerGroups result".into());
    }
    let mut n_groups = 0usize;
    // SAFETY: `result` is valid while the event lives; the array it returns is owned by it.
    let groups =
        unsafe { rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut n_groups) };
    // SAFETY: `groups` holds `n_groups` elements owned by the event; one group was asked.
    let Some(&description) = unsafe { elements(groups, n_groups) }.first() else {
        return Err(format!("the coordinator did not describe group {group}"));
    };
    // SAFETY: `description` is valid while the event lives.
    let error = unsafe { rd::rd_kafka_ConsumerGroupDescription_error(description) };
    if !error.is_null() {
        // SAFETY: `error` is valid while the event lives.
        let code = unsafe { rd::rd_kafka_error_code(error) };
        if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND {
            return Ok(GroupDescription {
                members: 0,
                protocol: "unknown",
                state: "Dead".to_owned(),
            });
        }
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above.
            return Err(unsafe { error_text(error) });
        }
    }
    // SAFETY: as above (these read plain fields of the description).
    let (members, kind, state) = unsafe {
        (
            rd::rd_kafka_ConsumerGroupDescription_member_count(description),
            rd::rd_kafka_ConsumerGroupDescription_type(description),
            rd::rd_kafka_ConsumerGroupDescription_state(description),
        )
    };
    let protocol = match kind {
        rd::rd_kafka_consumer_group_type_t::RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER => "consumer",
        rd::rd_kafka_consumer_group_type_t::RD_KAFKA_CONSUMER_GROUP_TYPE_CLASSIC => "classic",
        _ => "unknown",
    };
    // SAFETY: librdkafka returns a static name for every state value.
    let state = unsafe { c_text(rd::rd_kafka_consumer_group_state_name(state)) };
    Ok(GroupDescription {
        members,
        protocol,
        state,
    })
}

/// A topic's id and partition numbers (DescribeTopics, a Metadata request).
pub fn describe_topic<C: ClientContext>(
    call: &Call<'_, C>,
    topic: &str,
) -> Result<TopicLayout, TopicError> {
    describe_topics(call, &[topic])
        .map_err(TopicError::Other)?
        .into_iter()
        .find(|(name, _)| name == topic)
        .map_or(Err(TopicError::Unknown), |(_, layout)| layout)
}

/// A topic's name and its layout, or why it has none.
pub type Described = (String, Result<TopicLayout, TopicError>);

/// The id and partition numbers of each of `topics`, in one DescribeTopics call (one
/// Metadata request): each topic answers on its own (a layout, or why there is none); the
/// call fails only as a whole. A topic the answer leaves out is not in the result.
pub fn describe_topics<C: ClientContext>(
    call: &Call<'_, C>,
    topics: &[&str],
) -> Result<Vec<Described>, String> {
    let names_c = topics
        .iter()
        .map(|topic| CString::new(*topic))
        .collect::<Result<Vec<CString>, _>>()
        .map_err(|_| "topic contains a NUL byte".to_owned())?;
    let mut names: Vec<*const c_char> = names_c.iter().map(|name| name.as_ptr()).collect();
    // SAFETY: `names` holds valid C strings, alive (in `names_c`) for the call; librdkafka
    // copies them into the collection.
    let collection = TopicsGuard(unsafe {
        rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), names.len())
    });
    let event = call.run(
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        |rk, options, queue| {
            // SAFETY: every pointer is valid for the call; librdkafka copies the collection.
            unsafe { rd::rd_kafka_DescribeTopics(rk, collection.0, options, queue) }
        },
    )?;
    // SAFETY: `event.0` is a valid event until its guard drops; null when of another type.
    let result = unsafe { rd::rd_kafka_event_DescribeTopics_result(event.0) };
    if result.is_null() {
        return Err("unexpected admin event instead of a DescribeTopics result".into());
    }
    let mut n_topics = 0usize;
    // SAFETY: `result` is valid while the event lives; the array it returns is owned by it.
    let descriptions = unsafe { rd::rd_kafka_DescribeTopics_result_topics(result, &mut n_topics) };
    // SAFETY: `descriptions` holds `n_topics` elements owned by the event.
    let described = unsafe { elements(descriptions, n_topics) }
        .iter()
        .map(|&description| {
            // SAFETY: `description` is valid while the event lives.
            let name = unsafe { c_text(rd::rd_kafka_TopicDescription_name(description)) };
            // SAFETY: as above.
            let layout = unsafe { topic_layout(description) };
            (name, layout)
        })
        .collect();
    Ok(described)
}

/// One topic's layout from its description.
///
/// # Safety
///
/// `description` must be a valid topic description of a DescribeTopics result whose event
/// lives for the call.
unsafe fn topic_layout(
    description: *const rd::rd_kafka_TopicDescription_t,
) -> Result<TopicLayout, TopicError> {
    // SAFETY: `description` is valid while the event lives (the caller's promise).
    let error = unsafe { rd::rd_kafka_TopicDescription_error(description) };
    if !error.is_null() {
        // SAFETY: `error` is valid while the event lives.
        let code = unsafe { rd::rd_kafka_error_code(error) };
        if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART {
            return Err(TopicError::Unknown);
        }
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above.
            return Err(TopicError::Other(unsafe { error_text(error) }));
        }
    }
    let mut n_partitions = 0usize;
    // SAFETY: as above; the array is owned by the event.
    let partitions =
        unsafe { rd::rd_kafka_TopicDescription_partitions(description, &mut n_partitions) };
    // SAFETY: `partitions` holds `n_partitions` elements owned by the event.
    let mut led: Vec<(i32, Option<i32>)> = unsafe { elements(partitions, n_partitions) }
        .iter()
        .map(|&info| {
            // SAFETY: each element is a valid partition description while the event
            // lives, and so is the leader node it names (null when there is none).
            unsafe {
                let leader = rd::rd_kafka_TopicPartitionInfo_leader(info);
                let leader = (!leader.is_null())
                    .then(|| rd::rd_kafka_Node_id(leader))
                    .filter(|id| *id >= 0);
                (rd::rd_kafka_TopicPartitionInfo_partition(info), leader)
            }
        })
        .collect();
    if led.is_empty() {
        return Err(TopicError::Unknown);
    }
    led.sort_unstable();
    // SAFETY: as above; the id is owned by the description, and its text by the id.
    let id = unsafe {
        let uuid = rd::rd_kafka_TopicDescription_topic_id(description);
        if uuid.is_null() {
            String::new()
        } else {
            c_text(rd::rd_kafka_Uuid_base64str(uuid))
        }
    };
    Ok(TopicLayout {
        id,
        partitions: led.iter().map(|(partition, _)| *partition).collect(),
        leaders: led.iter().map(|(_, leader)| *leader).collect(),
    })
}

/// The `end` offset of each of `partitions` (ListOffsets, one request per partition
/// leader): for `Latest`, the high watermark, or the last stable offset under
/// `read_committed`. Each partition answers on its own (an offset, or why there is none:
/// its leader could not be reached, or is not its leader any more); the call fails only
/// as a whole. Answers in no particular order.
pub fn list_offsets<C: ClientContext>(
    call: &Call<'_, C>,
    partitions: &[(&str, i32)],
    end: End,
    isolation: Isolation,
) -> Result<Vec<PartitionAnswer>, String> {
    let isolation = match isolation {
        Isolation::ReadUncommitted => {
            rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_UNCOMMITTED
        }
        Isolation::ReadCommitted => {
            rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_COMMITTED
        }
    };
    let spec = match end {
        End::Earliest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_EARLIEST as i64,
        End::Latest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_LATEST as i64,
    };
    let capacity = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
    // SAFETY: creates an empty list we own (guarded).
    let list = PartitionsGuard(unsafe { rd::rd_kafka_topic_partition_list_new(capacity) });
    for (topic, partition) in partitions {
        let topic_c = CString::new(*topic).map_err(|_| "topic contains a NUL byte".to_owned())?;
        // SAFETY: `list.0` is valid; librdkafka copies the topic name; the element returned
        // is owned by the list and valid until the list changes again.
        unsafe {
            let elem = rd::rd_kafka_topic_partition_list_add(list.0, topic_c.as_ptr(), *partition);
            (*elem).offset = spec;
        }
    }
    let event = call.run(
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS,
        |rk, options, queue| {
            // SAFETY: `options` is valid and ours (the call's); the isolation level is a
            // valid member of the C enum.
            let error =
                unsafe { rd::rd_kafka_AdminOptions_set_isolation_level(options, isolation) };
            if !error.is_null() {
                // SAFETY: an error returned to us is ours to destroy. It comes only for an
                // admin operation other than ListOffsets, which this is not.
                unsafe { rd::rd_kafka_error_destroy(error) };
            }
            // SAFETY: every pointer is valid for the call; librdkafka copies the list.
            unsafe { rd::rd_kafka_ListOffsets(rk, list.0, options, queue) }
        },
    )?;
    // SAFETY: `event.0` is a valid event until its guard drops; null when of another type.
    let result = unsafe { rd::rd_kafka_event_ListOffsets_result(event.0) };
    if result.is_null() {
        return Err("unexpected admin event instead of a ListOffsets result".into());
    }
    let mut n_infos = 0usize;
    // SAFETY: `result` is valid while the event lives; the array it returns is owned by it.
    let infos = unsafe { rd::rd_kafka_ListOffsets_result_infos(result, &mut n_infos) };
    let mut offsets = Vec::with_capacity(n_infos);
    // SAFETY: `infos` holds `n_infos` elements owned by the event.
    for &info in unsafe { elements(infos, n_infos) } {
        // SAFETY: `info` is valid while the event lives, and so is its partition.
        let elem = unsafe { &*rd::rd_kafka_ListOffsetsResultInfo_topic_partition(info) };
        // SAFETY: every element of a result names its topic as a C string.
        let topic = unsafe { c_text(elem.topic) };
        let offset = if elem.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(format!(
                "{topic}[{}]: {}",
                elem.partition,
                err_text(elem.err)
            ))
        } else if elem.offset < 0 {
            // librdkafka leaves a partition whose leader's request failed (its broker down,
            // a timeout) at offset -1 with no error.
            Err(format!(
                "{topic}[{}]: no offset (offset {}): its leader did not answer",
                elem.partition, elem.offset
            ))
        } else {
            Ok(elem.offset)
        };
        offsets.push(PartitionAnswer {
            topic,
            partition: elem.partition,
            offset,
        });
    }
    Ok(offsets)
}

/// One partition's answer to [`list_offsets`].
pub struct PartitionAnswer {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
    /// Its offset, or why the broker gave none.
    pub offset: Result<i64, String>,
}

impl<C: ClientContext> Call<'_, C> {
    /// Makes one admin request with `start` (given the client handle, options carrying the
    /// request timeout, and the reply queue) and waits for its answer in slices, giving up
    /// when the daemon stops or the deadline passes. The event is checked for an error.
    fn run(
        &self,
        op: rd::rd_kafka_admin_op_t,
        start: impl FnOnce(
            *mut rd::rd_kafka_t,
            *mut rd::rd_kafka_AdminOptions_t,
            *mut rd::rd_kafka_queue_t,
        ),
    ) -> Result<EventGuard, String> {
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        let rk = self.client.native_ptr();
        // SAFETY: `rk` is the live client handle `self.client` owns for this whole call.
        let queue = QueueGuard(unsafe { rd::rd_kafka_queue_new(rk) });
        // SAFETY: as above; the admin-op value is a valid member of the C enum.
        let options = OptionsGuard(unsafe { rd::rd_kafka_AdminOptions_new(rk, op) });
        let mut errstr: [c_char; 256] = [0; 256];
        // SAFETY: `options.0` is valid; `errstr` is a writable buffer of the length passed.
        let set = unsafe {
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options.0,
                timeout_ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if set != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: librdkafka wrote a NUL-terminated message into `errstr`.
            let message = unsafe { c_text(errstr.as_ptr()) };
            return Err(format!("admin request timeout: {message}"));
        }
        start(rk, options.0, queue.0);
        // A little slack beyond the request timeout so that librdkafka's own timeout error,
        // which says more, arrives before ours.
        let deadline = Instant::now() + self.timeout + Duration::from_millis(500);
        let event = loop {
            let now = Instant::now();
            if self.stop.load(Ordering::Acquire) {
                return Err(STOPPING.to_owned());
            }
            if now >= deadline {
                return Err(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ));
            }
            let slice = SLICE.min(deadline - now);
            let slice_ms = i32::try_from(slice.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: `queue.0` is valid; the event returned (if any) is ours to destroy.
            let event = EventGuard(unsafe { rd::rd_kafka_queue_poll(queue.0, slice_ms) });
            if !event.0.is_null() {
                break event;
            }
        };
        // SAFETY: `event.0` is a valid event until its guard drops.
        let error = unsafe { rd::rd_kafka_event_error(event.0) };
        if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above; the string lives as long as the event.
            return Err(unsafe { c_text(rd::rd_kafka_event_error_string(event.0)) });
        }
        Ok(event)
    }
}

/// The `count` elements at `array`; empty for a null array, which librdkafka may give for
/// none (and `from_raw_parts` needs a non-null pointer even for length 0).
///
/// # Safety
/// A non-null `array` must hold `count` initialised elements that outlive the slice.
unsafe fn elements<'a, T>(array: *mut T, count: usize) -> &'a [T] {
    if array.is_null() || count == 0 {
        return &[];
    }
    // SAFETY: non-null and holding `count` elements, as the caller guarantees.
    unsafe { std::slice::from_raw_parts(array, count) }
}

/// The elements of a partition list; empty for a null list.
///
/// # Safety
/// A non-null `list` must be a valid partition list that outlives the slice.
unsafe fn list_elements<'a>(
    list: *const rd::rd_kafka_topic_partition_list_t,
) -> &'a [rd::rd_kafka_topic_partition_t] {
    if list.is_null() {
        return &[];
    }
    // SAFETY: `list` is valid, as the caller guarantees.
    let (elems, count) = unsafe { ((*list).elems, (*list).cnt) };
    // SAFETY: a valid list holds `cnt` elements at `elems`.
    unsafe { elements(elems, usize::try_from(count).unwrap_or(0)) }
}

/// A C string's text (lossy); empty for null.
///
/// # Safety
/// A non-null `text` must point to a NUL-terminated string.
unsafe fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated, as the caller guarantees.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// The message of a librdkafka error object.
///
/// # Safety
/// `error` must be a valid error object.
unsafe fn error_text(error: *const rd::rd_kafka_error_t) -> String {
    // SAFETY: `error` is valid, as the caller guarantees; its string lives as long.
    unsafe { c_text(rd::rd_kafka_error_string(error)) }
}

/// The text of an error code.
fn err_text(code: rd::rd_kafka_resp_err_t) -> String {
    // SAFETY: `rd_kafka_err2str` returns a static string for any error code.
    unsafe { c_text(rd::rd_kafka_err2str(code)) }
}

struct QueueGuard(*mut rd::rd_kafka_queue_t);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        // SAFETY: the queue was created by `rd_kafka_queue_new` and is destroyed once; a
        // request still in flight holds a reference of its own.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

struct OptionsGuard(*mut rd::rd_kafka_AdminOptions_t);

impl Drop for OptionsGuard {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_AdminOptions_new`, destroyed once.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) }
    }
}

struct RequestGuard(*mut rd::rd_kafka_ListConsumerGroupOffsets_t);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_ListConsumerGroupOffsets_new`, destroyed once.
        unsafe { rd::rd_kafka_ListConsumerGroupOffsets_destroy(self.0) }
    }
}

struct TopicsGuard(*mut rd::rd_kafka_TopicCollection_t);

impl Drop for TopicsGuard {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_TopicCollection_of_topic_names`, destroyed once.
        unsafe { rd::rd_kafka_TopicCollection_destroy(self.0) }
    }
}

struct PartitionsGuard(*mut rd::rd_kafka_topic_partition_list_t);

impl Drop for PartitionsGuard {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_topic_partition_list_new`, destroyed once.
        unsafe { rd::rd_kafka_topic_partition_list_destroy(self.0) }
    }
}

struct EventGuard(*mut rd::rd_kafka_event_t);

impl Drop for EventGuard {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the event came from `rd_kafka_queue_poll` and is destroyed once.
            unsafe { rd::rd_kafka_event_destroy(self.0) }
        }
    }
}
