//! The one admin call rdkafka's safe API lacks: ListConsumerGroupOffsets for an arbitrary
//! group, made through `rdkafka::bindings`. All of lagscaler's `unsafe` lives here.
//!
//! Every librdkafka object created here is owned by a guard that destroys it on every path,
//! and nothing borrowed from a result event outlives the event's guard.

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::ClientContext;

/// One committed offset of a group. `offset` is negative when the group has none there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The committed offset, or a negative value for none.
    pub offset: i64,
}

/// Lists every committed offset of `group`, waiting at most `timeout` for the answer.
pub fn list_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<Vec<CommittedOffset>, String> {
    let group_c = CString::new(group).map_err(|_| "group name contains a NUL byte".to_owned())?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();

    // SAFETY: `rk` is the live client handle `client` owns for this whole call.
    let queue = QueueGuard(unsafe { rd::rd_kafka_queue_new(rk) });
    // SAFETY: as above; the admin-op value is a valid member of the C enum.
    let options = OptionsGuard(unsafe {
        rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        )
    });
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
        let message = unsafe { CStr::from_ptr(errstr.as_ptr()) };
        return Err(format!(
            "admin request timeout: {}",
            message.to_string_lossy()
        ));
    }

    // SAFETY: `group_c` is a valid C string; a null partition list means "every partition
    // the group has committed on". librdkafka copies both.
    let request = RequestGuard(unsafe {
        rd::rd_kafka_ListConsumerGroupOffsets_new(group_c.as_ptr(), ptr::null())
    });
    let mut requests = [request.0];
    // SAFETY: the array holds exactly one valid request, as the API requires; librdkafka
    // copies the request, so our guard may destroy it afterwards; options and queue are
    // valid for the call.
    unsafe {
        rd::rd_kafka_ListConsumerGroupOffsets(
            rk,
            requests.as_mut_ptr(),
            requests.len(),
            options.0,
            queue.0,
        );
    }

    // A little slack beyond the request timeout so that librdkafka's own timeout error,
    // which says more, arrives before ours.
    let wait_ms = timeout_ms.saturating_add(500);
    // SAFETY: `queue.0` is valid; the event returned (if any) is ours to destroy.
    let event = EventGuard(unsafe { rd::rd_kafka_queue_poll(queue.0, wait_ms) });
    if event.0.is_null() {
        return Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ));
    }
    // SAFETY: `event.0` is a valid event until its guard drops at the end of this function.
    let error = unsafe { rd::rd_kafka_event_error(event.0) };
    if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: as above; the string lives as long as the event.
        let message = unsafe { CStr::from_ptr(rd::rd_kafka_event_error_string(event.0)) };
        return Err(message.to_string_lossy().into_owned());
    }
    // SAFETY: as above; null when the event is of another type.
    let result = unsafe { rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.0) };
    if result.is_null() {
        return Err("unexpected admin event instead of a ListConsumerGroupOffsets result".into());
    }
    let mut n_groups = 0usize;
    // SAFETY: `result` is valid while the event lives; the array it returns is owned by it.
    let groups =
        unsafe { rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut n_groups) };
    let mut offsets = Vec::new();
    for group_idx in 0..n_groups {
        // SAFETY: `group_idx < n_groups`, the array's length as librdkafka reported it.
        let group_result = unsafe { *groups.add(group_idx) };
        // SAFETY: `group_result` is valid while the event lives.
        let group_error = unsafe { rd::rd_kafka_group_result_error(group_result) };
        if !group_error.is_null() {
            // SAFETY: `group_error` is valid while the event lives.
            let message = unsafe { CStr::from_ptr(rd::rd_kafka_error_string(group_error)) };
            return Err(message.to_string_lossy().into_owned());
        }
        // SAFETY: as above; the list is owned by the event.
        let list = unsafe { rd::rd_kafka_group_result_partitions(group_result) };
        if list.is_null() {
            continue;
        }
        // SAFETY: `list` is a valid partition list owned by the event.
        let (elems, count) = unsafe { ((*list).elems, (*list).cnt) };
        let count = usize::try_from(count).unwrap_or(0);
        // An empty list may have no element array at all, and `from_raw_parts` needs a
        // non-null pointer even for length 0.
        let elems = if elems.is_null() || count == 0 {
            &[][..]
        } else {
            // SAFETY: `elems` is non-null and holds `count` elements while the event lives.
            unsafe { std::slice::from_raw_parts(elems, count) }
        };
        for elem in elems {
            if elem.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                // SAFETY: `rd_kafka_err2str` returns a static string for any error code.
                let message = unsafe { CStr::from_ptr(rd::rd_kafka_err2str(elem.err)) };
                return Err(format!(
                    "partition {}: {}",
                    elem.partition,
                    message.to_string_lossy()
                ));
            }
            // SAFETY: every element of a result list names its topic as a C string.
            let topic = unsafe { CStr::from_ptr(elem.topic) };
            offsets.push(CommittedOffset {
                topic: topic.to_string_lossy().into_owned(),
                partition: elem.partition,
                offset: elem.offset,
            });
        }
    }
    Ok(offsets)
}

struct QueueGuard(*mut rd::rd_kafka_queue_t);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        // SAFETY: the queue was created by `rd_kafka_queue_new` and is destroyed once.
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

struct EventGuard(*mut rd::rd_kafka_event_t);

impl Drop for EventGuard {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the event came from `rd_kafka_queue_poll` and is destroyed once.
            unsafe { rd::rd_kafka_event_destroy(self.0) }
        }
    }
}
