//! The driver both brokers share: the handle the registry calls (never waiting) and the
//! task that owns the connection — connect, subscribe to what the registry wants, send the
//! queued publishes, deliver what comes in, and on any failure reconnect with backoff.
//!
//! A broker is a [`Connector`] (how to open a [`Session`] to its server) and the session's
//! few operations; everything else, the same for Redis and NATS, is here.

use std::collections::HashSet;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Interval, MissedTickBehavior};

use super::{BrokerState, BrokerStats, Inbound};
use crate::reconnect::Retry;
use crate::Backoff;

/// An error of a broker's client crate, for the logs.
pub(super) type BoxError = Box<dyn StdError + Send + Sync>;

/// How often the task checks that the registry still exists.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a connection attempt may take, including the first subscriptions.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes sent to the server in one go (one pipeline, one write).
const MAX_BATCH: usize = 256;
/// Topics subscribed or unsubscribed in one go.
const MAX_SUBSCRIBE_BATCH: usize = 256;

/// How a broker opens a connection to its server.
pub(super) trait Connector: Send + Sync + 'static {
    /// What a connection is.
    type Session: Session;

    /// The broker's name in logs and thread names: `redis`, `nats`.
    fn name(&self) -> &'static str;

    /// Opens a connection; nothing is subscribed on it yet.
    fn connect(
        &self,
        shared: &Arc<Shared>,
    ) -> impl Future<Output = Result<Self::Session, BoxError>> + Send;
}

/// One connection to a broker's server. An `Err` from any method ends the connection: the
/// driver opens another.
pub(super) trait Session: Send {
    /// What carries the messages on this connection ([`BrokerStats::transport`]).
    fn transport(&self) -> &'static str;

    /// Subscribes to `topics`, none of which is subscribed on this connection.
    fn subscribe(
        &mut self,
        topics: &[Arc<str>],
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Unsubscribes from `topics`, each subscribed on this connection.
    fn unsubscribe(
        &mut self,
        topics: &[Arc<str>],
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Sends `batch`, in order. Returns how many went out; the others were refused one by
    /// one (too large for the server, say) and are counted as dropped.
    fn publish(&mut self, batch: &[Outgoing])
        -> impl Future<Output = Result<u64, BoxError>> + Send;

    /// The next message from the server. Cancel-safe: the driver waits for it beside other
    /// things, and a message is never lost by a wait that was given up.
    fn recv(&mut self) -> impl Future<Output = Result<Incoming, BoxError>> + Send;

    /// Called every [`Session::KEEPALIVE`] while idle or not: checks that the server still
    /// answers.
    fn keepalive(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// How often [`Session::keepalive`] runs.
    const KEEPALIVE: Duration;

    /// Ends the connection, inside the runtime (a client whose clean-up spawns tasks finds
    /// it there, even on the broker's own thread, whose runtime ends with the task).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A publish on its way to the server.
pub(super) struct Outgoing {
    pub(super) topic: Box<str>,
    pub(super) message: Bytes,
}

/// A message from the server.
pub(super) struct Incoming {
    /// The topic, or `None` for a channel or subject that is not a wsline topic's.
    pub(super) topic: Option<Arc<str>>,
    pub(super) payload: Bytes,
}

/// What the handle and the task share: the state, the counters, and the topics the
/// registry wants subscribed.
pub(super) struct Shared {
    state: AtomicU8,
    transport: Mutex<&'static str>,
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    ignored: AtomicU64,
    missed: AtomicU64,
    reconnects: AtomicU64,
    /// Whether publishes are being dropped now (the warning is logged once per episode).
    dropping: AtomicBool,
    /// The topics this node has subscribers of: what the task makes the connection's
    /// subscriptions match. A set, not a queue of commands: a subscribe is never lost, and
    /// a topic that comes and goes faster than the server answers costs nothing.
    wanted: Mutex<HashSet<Arc<str>>>,
    /// Wakes the task when `wanted` changed.
    changed: Notify,
}

const STATE_CONNECTING: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_CLOSED: u8 = 2;

impl Shared {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(STATE_CONNECTING),
            transport: Mutex::new(""),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            dropping: AtomicBool::new(false),
            wanted: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> BrokerState {
        match self.state.load(Ordering::Acquire) {
            STATE_CONNECTED => BrokerState::Connected,
            STATE_CLOSED => BrokerState::Closed,
            _ => BrokerState::Connecting,
        }
    }

    fn set_state(&self, state: BrokerState) {
        let value = match state {
            BrokerState::Connected => STATE_CONNECTED,
            BrokerState::Closed => STATE_CLOSED,
            BrokerState::Connecting => STATE_CONNECTING,
        };
        self.state.store(value, Ordering::Release);
    }

    fn wanted(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_transport(&self, transport: &'static str) {
        *self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = transport;
    }

    /// Counts `count` publishes for other nodes dropped; warns once per episode.
    fn drop_publishes(&self, name: &'static str, count: u64, why: &'static str) {
        if count == 0 {
            return;
        }
        self.dropped.fetch_add(count, Ordering::Relaxed);
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(broker = name, why, "publishes for other nodes dropped");
        } else {
            tracing::trace!(
                broker = name,
                why,
                count,
                "publishes for other nodes dropped"
            );
        }
    }

    /// Counts a message from other nodes lost because this node fell behind.
    pub(super) fn missed(&self, count: u64) {
        self.missed.fetch_add(count, Ordering::Relaxed);
    }
}

/// The part of a broker the registry calls: it hands everything to the task and never
/// waits.
pub(super) struct Driver<C> {
    name: &'static str,
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Outgoing>,
    /// What `start` hands the task; taken by the first `start`.
    parts: Mutex<Option<Parts<C>>>,
}

struct Parts<C> {
    connector: C,
    outgoing: mpsc::Receiver<Outgoing>,
    backoff: Backoff,
}

impl<C: Connector> Driver<C> {
    /// A driver of `connector` whose queue of publishes holds at most `max_queued`
    /// (at least 1).
    pub(super) fn new(connector: C, max_queued: usize, backoff: Backoff) -> Self {
        let (sender, receiver) = mpsc::channel(max_queued.max(1));
        Self {
            name: connector.name(),
            shared: Arc::new(Shared::new()),
            outgoing: sender,
            parts: Mutex::new(Some(Parts {
                connector,
                outgoing: receiver,
                backoff,
            })),
        }
    }

    /// Starts the task: on the tokio runtime of the caller if there is one, else on a
    /// thread of its own with a current-thread runtime. A second call does nothing.
    pub(super) fn start(&self, inbound: Inbound) {
        let parts = self
            .parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(parts) = parts else {
            tracing::warn!(
                broker = self.name,
                "broker started twice: the second start is ignored"
            );
            return;
        };
        let shared = Arc::clone(&self.shared);
        let task = run(
            parts.connector,
            Arc::clone(&shared),
            parts.outgoing,
            inbound,
            parts.backoff,
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(task);
            return;
        }
        let name = self.name;
        let spawned = std::thread::Builder::new()
            .name(format!("wsline-{name}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(task),
                    Err(error) => {
                        tracing::error!(broker = name, %error, "no runtime for the broker: it is stopped");
                        shared.set_state(BrokerState::Closed);
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::error!(broker = name, %error, "no thread for the broker: it is stopped");
            self.shared.set_state(BrokerState::Closed);
        }
    }

    pub(super) fn subscribe(&self, topic: &str) {
        if self.shared.wanted().insert(Arc::from(topic)) {
            self.shared.changed.notify_one();
        }
    }

    pub(super) fn unsubscribe(&self, topic: &str) {
        if self.shared.wanted().remove(topic) {
            self.shared.changed.notify_one();
        }
    }

    pub(super) fn publish(&self, topic: &str, message: Bytes) {
        if self.shared.state() != BrokerState::Connected {
            self.shared.drop_publishes(self.name, 1, "not connected");
            return;
        }
        let outgoing = Outgoing {
            topic: Box::from(topic),
            message,
        };
        if self.outgoing.try_send(outgoing).is_err() {
            self.shared.drop_publishes(self.name, 1, "queue full");
        }
    }

    pub(super) fn stats(&self) -> BrokerStats {
        let shared = &self.shared;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BrokerStats {
            state: shared.state(),
            published: load(&shared.published),
            dropped: load(&shared.dropped),
            received: load(&shared.received),
            reconnects: load(&shared.reconnects),
            queued: self.outgoing.max_capacity() - self.outgoing.capacity(),
            ignored: load(&shared.ignored),
            missed: load(&shared.missed),
            transport: *shared
                .transport
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// What the task waits for, besides the connection.
struct Watch {
    name: &'static str,
    shared: Arc<Shared>,
    outgoing: mpsc::Receiver<Outgoing>,
    inbound: Inbound,
    tick: Interval,
}

impl Watch {
    /// Whether the registry, or every handle of the broker, is gone.
    fn is_stopped(&self) -> bool {
        !self.inbound.is_open() || self.outgoing.is_closed()
    }

    /// Waits `delay` while not connected: publishes that were queued before the
    /// connection failed are dropped. Returns `false` if the registry went away meanwhile.
    async fn wait(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return !self.is_stopped(),
                _ = self.tick.tick() => {
                    if self.is_stopped() {
                        return false;
                    }
                }
                outgoing = self.outgoing.recv() => match outgoing {
                    Some(_) => self.shared.drop_publishes(self.name, 1, "not connected"),
                    None => return false,
                },
            }
        }
    }

    /// Drops what is queued, for the reason `why`.
    fn drain(&mut self, why: &'static str) {
        let mut count = 0;
        while self.outgoing.try_recv().is_ok() {
            count += 1;
        }
        self.shared.drop_publishes(self.name, count, why);
    }
}

/// The task: connect, serve the connection until it fails, wait, connect again; until the
/// registry is gone.
async fn run<C: Connector>(
    connector: C,
    shared: Arc<Shared>,
    outgoing: mpsc::Receiver<Outgoing>,
    inbound: Inbound,
    backoff: Backoff,
) {
    let name = connector.name();
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watch = Watch {
        name,
        shared: Arc::clone(&shared),
        outgoing,
        inbound,
        tick,
    };
    let mut retry = Retry::new(backoff);
    let mut connected_before = false;
    loop {
        shared.set_state(BrokerState::Connecting);
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(&shared)) => attempt,
            () = stopped(&mut watch) => break,
        };
        let error = match attempt {
            Ok(Ok(mut session)) => {
                let served =
                    serve(&mut session, &mut watch, &mut retry, &mut connected_before).await;
                session.close().await;
                match served {
                    Ok(()) => break,
                    Err(error) => error,
                }
            }
            Ok(Err(error)) => error,
            Err(elapsed) => elapsed.into(),
        };
        shared.set_state(BrokerState::Connecting);
        watch.drain("connection lost");
        let delay = retry.delay();
        tracing::warn!(broker = name, %error, ?delay, "broker connection failed; reconnecting");
        if !watch.wait(delay).await {
            break;
        }
    }
    shared.set_state(BrokerState::Closed);
    tracing::debug!(broker = name, "broker stopped: its registry is gone");
}

/// Waits until the registry is gone, dropping publishes meanwhile (nothing is connected).
async fn stopped(watch: &mut Watch) {
    while watch.wait(Duration::MAX).await {}
}

/// Serves one connection: subscribes to every wanted topic, then sends, receives and keeps
/// the subscriptions matching the wanted topics. Returns `Ok` when the registry is gone,
/// `Err` when the connection failed.
async fn serve<S: Session>(
    session: &mut S,
    watch: &mut Watch,
    retry: &mut Retry,
    connected_before: &mut bool,
) -> Result<(), BoxError> {
    let name = watch.name;
    let shared = Arc::clone(&watch.shared);
    let mut subscribed = HashSet::new();
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        reconcile(session, &shared, &mut subscribed),
    )
    .await??;
    // What was queued while connecting is dropped (the handle refused the rest).
    watch.drain("not connected");
    let transport = session.transport();
    shared.set_transport(transport);
    shared.set_state(BrokerState::Connected);
    shared.dropping.store(false, Ordering::Relaxed);
    retry.reset();
    let topics = subscribed.len();
    if std::mem::replace(connected_before, true) {
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            broker = name,
            transport,
            topics,
            "broker reconnected and resubscribed"
        );
    } else {
        tracing::info!(broker = name, transport, topics, "broker connected");
    }
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + S::KEEPALIVE, S::KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let step = tokio::select! {
            () = shared.changed.notified() => Step::Reconcile,
            incoming = session.recv() => Step::Incoming(incoming),
            count = watch.outgoing.recv_many(&mut batch, MAX_BATCH) => {
                if count == 0 {
                    // Every handle of the broker is gone.
                    return Ok(());
                }
                Step::Publish
            }
            _ = keepalive.tick() => Step::Keepalive,
            _ = watch.tick.tick() => Step::Check,
        };
        match step {
            Step::Reconcile => reconcile(session, &shared, &mut subscribed).await?,
            Step::Incoming(incoming) => deliver(&shared, &watch.inbound, incoming?),
            Step::Publish => {
                let count = batch.len() as u64;
                let sent = session.publish(&batch).await;
                batch.clear();
                match sent {
                    Ok(sent) => {
                        shared.published.fetch_add(sent, Ordering::Relaxed);
                        shared.drop_publishes(
                            name,
                            count.saturating_sub(sent),
                            "refused by the server",
                        );
                        if sent >= count {
                            shared.dropping.store(false, Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        // Some may have gone out; at most once: none is sent again.
                        shared.drop_publishes(name, count, "connection lost");
                        return Err(error);
                    }
                }
            }
            Step::Keepalive => session.keepalive().await?,
            Step::Check => {
                if watch.is_stopped() {
                    return Ok(());
                }
            }
        }
    }
}

enum Step {
    Reconcile,
    Incoming(Result<Incoming, BoxError>),
    Publish,
    Keepalive,
    Check,
}

/// Subscribes to the wanted topics not subscribed yet and unsubscribes from the others.
async fn reconcile<S: Session>(
    session: &mut S,
    shared: &Shared,
    subscribed: &mut HashSet<Arc<str>>,
) -> Result<(), BoxError> {
    loop {
        let (add, remove): (Vec<Arc<str>>, Vec<Arc<str>>) = {
            let wanted = shared.wanted();
            let add = wanted
                .difference(subscribed)
                .take(MAX_SUBSCRIBE_BATCH)
                .cloned()
                .collect();
            let remove = subscribed
                .difference(&wanted)
                .take(MAX_SUBSCRIBE_BATCH)
                .cloned()
                .collect();
            (add, remove)
        };
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        if !remove.is_empty() {
            session.unsubscribe(&remove).await?;
            for topic in &remove {
                subscribed.remove(topic);
            }
        }
        if !add.is_empty() {
            session.subscribe(&add).await?;
            subscribed.extend(add);
        }
    }
}

/// Hands a message from the server to the registry.
fn deliver(shared: &Shared, inbound: &Inbound, incoming: Incoming) {
    shared.received.fetch_add(1, Ordering::Relaxed);
    let valid = match &incoming.topic {
        Some(topic) => inbound.deliver(topic, incoming.payload),
        None => false,
    };
    if !valid {
        shared.ignored.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            topic = incoming.topic.as_deref(),
            "broker message ignored: not a wsline node's"
        );
    }
}
