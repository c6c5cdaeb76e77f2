//! Push: StreamIsActive (KEDA's `external-push`) and StreamMetricSpec.
//!
//! One named thread, `push`, owns every open stream. It hears from the watch registry which
//! watch has a new reading, and then re-decides the activity of the streams on that watch,
//! sending a message only when it changed. Once a second it also re-decides every stream
//! (activity can change with time alone: an idle window running out, a sample going
//! stale), re-sends the current activity of streams that sent nothing for [`KEEPALIVE`],
//! keeps their watches alive, and forgets streams whose client went away.
//!
//! Each stream's messages go through a small futures channel to a task on grpcio's
//! completion queue that writes them to the call. The stream ends when the client cancels
//! (the task's write fails and the thread drops the stream at its next look) or when the
//! daemon stops ([`Pusher::shutdown`] drops every sender: the task closes the call with OK).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, unbounded, Receiver, Sender};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use grpcio::{RpcContext, RpcStatus, ServerStreamingSink, WriteFlags};
use log::{debug, warn};
use parking_lot::Mutex;

use super::proto::{GetMetricSpecResponse, IsActiveResponse};
use super::{Scaler, NO_WAIT};
use crate::trigger::Trigger;

/// A stream that sent nothing for this long re-sends its current activity.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// How often every stream is re-decided, pruned and its watch kept alive.
const SWEEP: Duration = Duration::from_secs(1);

/// Messages a stream may have waiting to be written; a full stream skips a message and gets
/// the current value at the next change or sweep.
const STREAM_BUFFER: usize = 4;

/// Handle to the `push` thread.
pub struct Pusher {
    commands: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by [`Pusher::shutdown`]: a stream refused from then on is refused because the
    /// daemon stops, not because the thread died.
    stopping: AtomicBool,
}

enum Command {
    Subscribe(Box<Stream>),
    Shutdown,
}

/// One open stream.
struct Stream {
    /// `namespace/name` of the ScaledObject, for logs.
    caller: String,
    trigger: Trigger,
    /// The id of the watch the stream reads, once known.
    watch_id: Option<u64>,
    kind: Kind,
}

enum Kind {
    Activity {
        sender: mpsc::Sender<IsActiveResponse>,
        /// The last activity sent, and when.
        sent: Option<(bool, Instant)>,
    },
    /// The spec is sent once when the stream opens: it is a function of the trigger's
    /// metadata, which a stream cannot change.
    Spec {
        sender: mpsc::Sender<GetMetricSpecResponse>,
    },
}

impl Stream {
    fn is_closed(&self) -> bool {
        match &self.kind {
            Kind::Activity { sender, .. } => sender.is_closed(),
            Kind::Spec { sender } => sender.is_closed(),
        }
    }
}

impl Pusher {
    /// Starts the `push` thread, which hears of watches with new readings on `updates`.
    pub(super) fn start(scaler: Scaler, updates: Receiver<u64>) -> std::io::Result<Pusher> {
        let (commands, receiver) = unbounded();
        let thread = thread::Builder::new()
            .name("push".to_owned())
            .spawn(move || run(&scaler, &receiver, &updates))?;
        Ok(Pusher {
            commands,
            thread: Mutex::new(Some(thread)),
            stopping: AtomicBool::new(false),
        })
    }

    /// Whether the thread ended without being told to (it panicked).
    pub fn is_dead(&self) -> bool {
        self.thread
            .lock()
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
    }

    /// Ends every stream (each client gets status OK) and joins the thread. Idempotent.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        // The thread holds the receiver until it exits, so this only fails if it died.
        let _ = self.commands.send(Command::Shutdown);
        if thread.join().is_err() {
            warn!("the push thread panicked");
        }
    }

    /// Serves a StreamIsActive call for `trigger`.
    pub(super) fn stream_is_active(
        &self,
        ctx: &RpcContext<'_>,
        caller: String,
        trigger: Trigger,
        sink: ServerStreamingSink<IsActiveResponse>,
    ) {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let kind = Kind::Activity { sender, sent: None };
        self.subscribe(ctx, caller, trigger, kind, sink, receiver);
    }

    /// Serves a StreamMetricSpec call: `spec` at once, then nothing until the stream ends.
    pub(super) fn stream_metric_spec(
        &self,
        ctx: &RpcContext<'_>,
        caller: String,
        trigger: Trigger,
        spec: GetMetricSpecResponse,
        sink: ServerStreamingSink<GetMetricSpecResponse>,
    ) {
        let (mut sender, receiver) = mpsc::channel(STREAM_BUFFER);
        // A new channel has room for it.
        let _ = sender.try_send(spec);
        self.subscribe(ctx, caller, trigger, Kind::Spec { sender }, sink, receiver);
    }

    fn subscribe<T: Send + 'static>(
        &self,
        ctx: &RpcContext<'_>,
        caller: String,
        trigger: Trigger,
        kind: Kind,
        mut sink: ServerStreamingSink<T>,
        receiver: mpsc::Receiver<T>,
    ) {
        let rpc = match kind {
            Kind::Activity { .. } => "StreamIsActive",
            Kind::Spec { .. } => "StreamMetricSpec",
        };
        debug!("{rpc} {caller}: stream opened");
        let stream = Stream {
            caller: caller.clone(),
            trigger,
            watch_id: None,
            kind,
        };
        if self
            .commands
            .send(Command::Subscribe(Box::new(stream)))
            .is_err()
        {
            // The push thread is gone: the daemon is stopping, or the thread died and the
            // daemon is about to exit (and be restarted).
            let message = if self.stopping.load(Ordering::Acquire) {
                "lagscaler is shutting down"
            } else {
                "lagscaler's push thread died and lagscaler is exiting to be restarted; \
                 polling (IsActive, GetMetrics) still answers until then"
            };
            ctx.spawn(async move {
                let _ = sink
                    .fail(RpcStatus::with_message(
                        grpcio::RpcStatusCode::UNAVAILABLE,
                        message.to_owned(),
                    ))
                    .await;
            });
            return;
        }
        ctx.spawn(async move {
            let mut messages = receiver.map(|message| Ok((message, WriteFlags::default())));
            match sink.send_all(&mut messages).await {
                Ok(()) => {
                    // Every sender is gone: lagscaler is stopping. End with status OK.
                    let closed = sink.close().await;
                    debug!("{rpc} {caller}: stream ended by the server ({closed:?})");
                }
                Err(err) => debug!("{rpc} {caller}: stream ended by the client ({err})"),
            }
        });
    }
}

fn run(scaler: &Scaler, commands: &Receiver<Command>, updates: &Receiver<u64>) {
    let mut streams: Vec<Stream> = Vec::new();
    let sweep = tick(SWEEP);
    loop {
        select! {
            recv(commands) -> command => match command {
                Ok(Command::Subscribe(mut stream)) => {
                    #[cfg(feature = "test-hooks")]
                    if crate::hooks::take_push_panic(&stream.caller) {
                        panic!("panic injected by a test into the push thread");
                    }
                    decide(scaler, &mut stream, Instant::now());
                    streams.push(*stream);
                }
                Ok(Command::Shutdown) | Err(_) => break,
            },
            recv(updates) -> id => {
                let Ok(id) = id else { break };
                let now = Instant::now();
                for stream in streams.iter_mut().filter(|s| s.watch_id == Some(id)) {
                    decide(scaler, stream, now);
                }
            },
            recv(sweep) -> _ => {
                #[cfg(feature = "test-hooks")]
                if crate::hooks::take_thread_panic("push") {
                    panic!("panic injected by a test into the push thread");
                }
                streams.retain(|stream| {
                    let closed = stream.is_closed();
                    if closed {
                        debug!("{}: stream closed by the client", stream.caller);
                    }
                    !closed
                });
                let now = Instant::now();
                for stream in &mut streams {
                    decide(scaler, stream, now);
                }
            },
        }
    }
    debug!("push thread stopping: ending {} stream(s)", streams.len());
}

/// Re-decides one stream (which also keeps its watch alive) and sends what changed, or the
/// current activity when the stream was quiet for [`KEEPALIVE`]. Unknown or stale data
/// sends nothing (KEDA's polling reports the error). A pushed `false` is acted on by KEDA
/// 2.13 to 2.17, so it comes from the same decision as IsActive, never from missing data.
fn decide(scaler: &Scaler, stream: &mut Stream, now: Instant) {
    let Kind::Activity { sender, sent } = &mut stream.kind else {
        if let Err(err) = scaler.registry.watch(&stream.trigger) {
            debug!("{}: {err}", stream.caller);
        }
        return;
    };
    let (active, watch_id) = match scaler.activity(&stream.trigger, &stream.caller, NO_WAIT) {
        Ok(answer) => answer,
        Err(status) => {
            debug!(
                "{}: no activity to push: {}",
                stream.caller,
                status.message()
            );
            stream.watch_id = scaler
                .registry
                .get(&stream.trigger.watch)
                .map(|slot| slot.id);
            return;
        }
    };
    stream.watch_id = Some(watch_id);
    let due = match sent {
        None => true,
        Some((last, at)) => *last != active || now.duration_since(*at) >= KEEPALIVE,
    };
    if !due {
        return;
    }
    let message = IsActiveResponse {
        result: active,
        ..Default::default()
    };
    // A full stream gets the value again at the next change or sweep; a disconnected one is
    // dropped by the sweep.
    if sender.try_send(message).is_ok() {
        if sent.is_none_or(|(last, _)| last != active) {
            debug!("{}: pushed active={active}", stream.caller);
        }
        *sent = Some((active, now));
    }
}
