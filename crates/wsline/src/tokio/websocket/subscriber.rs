//! A tokio connection's part in a [`Topics`]: each connection is a member of the registry
//! of its own, with an inbox the publishers fill without waiting and the connection drains
//! into its send buffer whenever it makes progress (in whichever method is awaited, or in
//! the driver task of a split connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use crate::layer::server::{deliver_published, Burst, SLOW_READER_REASON};
use crate::proto::{CloseCode, Connection, State};
use crate::topics::{Counted, Member, Publication, SubscriberId, Topics};
use crate::BackpressurePolicy;

/// A connection's subscriptions and its inbox.
pub(super) struct Subscriber {
    topics: Topics,
    inbox: Arc<Inbox>,
    subscribed: Vec<Arc<str>>,
    /// Taken from the inbox, reused.
    taken: VecDeque<Arc<Publication>>,
    /// What the peer is judged by for publications.
    burst: Burst,
    /// The connection's `max_message_size`, for the inbox's limit.
    max_message_size: Option<usize>,
}

/// Publications on their way into one connection's send buffer.
struct Inbox {
    id: u64,
    policy: BackpressurePolicy,
    /// Most frame bytes waiting here: the connection's high-water mark plus the larger of
    /// the mark and `max_message_size`, as the connection last published it. Past it the
    /// connection's task is not keeping up (it awaits something else than the connection),
    /// and the policy applies. Whether the peer reads is judged when the task takes them.
    limit: AtomicUsize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    publications: VecDeque<Arc<Publication>>,
    /// Frame bytes of `publications`.
    bytes: usize,
    /// The connection's task, woken by the first publication queued.
    waker: Option<Waker>,
    /// The inbox overflowed under [`BackpressurePolicy::Close`]: the connection is to be
    /// failed, and takes nothing more.
    slow: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Member for Inbox {
    fn deliver(&self, publication: &Arc<Publication>, _subscribers: usize) -> Counted {
        const QUEUED: Counted = Counted {
            queued: 1,
            dropped: 0,
        };
        const DROPPED: Counted = Counted {
            queued: 0,
            dropped: 1,
        };
        if publication.excludes(self.id, 0) {
            return Counted::default();
        }
        let len = publication.prepared.frame().len();
        let mut queue = self.lock();
        if queue.slow {
            // Closing: no longer a subscriber that takes messages (as on the sync server).
            return Counted::default();
        }
        // One publication always fits, whatever its size.
        let full = !queue.publications.is_empty()
            && queue.bytes.saturating_add(len) > self.limit.load(Ordering::Relaxed);
        if full {
            if self.policy == BackpressurePolicy::Close {
                queue.slow = true;
                if let Some(waker) = &queue.waker {
                    waker.wake_by_ref();
                }
            }
            return DROPPED;
        }
        queue.publications.push_back(Arc::clone(publication));
        queue.bytes += len;
        if queue.publications.len() == 1 {
            if let Some(waker) = &queue.waker {
                waker.wake_by_ref();
            }
        }
        QUEUED
    }
}

/// What a connection took from its inbox.
pub(super) struct Taken {
    pub(super) publications: VecDeque<Arc<Publication>>,
    /// The inbox overflowed under [`BackpressurePolicy::Close`].
    pub(super) slow: bool,
    pub(super) policy: BackpressurePolicy,
}

/// The inbox's limit for a connection with high-water mark `mark`.
fn inbox_limit(mark: usize, max_message_size: Option<usize>) -> usize {
    mark.saturating_add(max_message_size.unwrap_or(mark).max(mark))
}

impl Subscriber {
    pub(super) fn new(
        topics: Topics,
        policy: BackpressurePolicy,
        mark: usize,
        max_message_size: Option<usize>,
    ) -> Self {
        let id = topics.new_member_id();
        Self {
            topics,
            inbox: Arc::new(Inbox {
                id,
                policy,
                limit: AtomicUsize::new(inbox_limit(mark, max_message_size)),
                queue: Mutex::default(),
            }),
            subscribed: Vec::new(),
            taken: VecDeque::new(),
            burst: Burst::default(),
            max_message_size,
        }
    }

    pub(super) fn id(&self) -> SubscriberId {
        SubscriberId {
            member: self.inbox.id,
            local: 0,
        }
    }

    pub(super) fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subscribed.iter().map(|topic| &**topic)
    }

    /// Returns whether it was not subscribed to `topic` yet.
    pub(super) fn subscribe(&mut self, topic: &str) -> bool {
        if self.subscribed.iter().any(|name| &**name == topic) {
            return false;
        }
        self.subscribed.push(Arc::from(topic));
        let member: Arc<dyn Member> = self.inbox.clone();
        self.topics.subscribe(topic, self.inbox.id, &member);
        true
    }

    /// Returns whether it was subscribed to `topic`.
    pub(super) fn unsubscribe(&mut self, topic: &str) -> bool {
        let Some(position) = self.subscribed.iter().position(|name| &**name == topic) else {
            return false;
        };
        self.subscribed.swap_remove(position);
        self.topics.unsubscribe(topic, self.inbox.id);
        true
    }

    /// Leaves every topic (the connection closed).
    pub(super) fn unsubscribe_all(&mut self) {
        for topic in self.subscribed.drain(..) {
            self.topics.unsubscribe(&topic, self.inbox.id);
        }
    }

    /// Tells publishers the connection's high-water mark.
    pub(super) fn publish_mark(&self, mark: usize) {
        let limit = inbox_limit(mark, self.max_message_size);
        self.inbox.limit.store(limit, Ordering::Relaxed);
    }

    /// Registers the task for the next publication and, with `take`, takes what was
    /// published (hand the queue back with [`give_back`](Self::give_back)).
    pub(super) fn take(&mut self, cx: &mut Context<'_>, take: bool) -> Taken {
        let mut queue = self.inbox.lock();
        if !queue
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            queue.waker = Some(cx.waker().clone());
        }
        let mut publications = std::mem::take(&mut self.taken);
        if take {
            std::mem::swap(&mut queue.publications, &mut publications);
            queue.bytes = 0;
        }
        Taken {
            publications,
            slow: queue.slow,
            policy: self.inbox.policy,
        }
    }

    /// Before queueing a batch of publications, with what the send buffer holds now: what
    /// the peer is judged by ([`Burst`]).
    pub(super) fn burst(&mut self, pending: usize) -> usize {
        self.burst.update(pending);
        self.burst.backlog()
    }

    /// The emptied queue of [`take`](Self::take), to reuse its allocation.
    pub(super) fn give_back(&mut self, publications: VecDeque<Arc<Publication>>) {
        self.taken = publications;
    }
}

/// Queues one publication taken from the inbox, the peer judged by `backlog`: what it had
/// not taken when its burst began ([`deliver_published`]); one it cannot take is counted
/// dropped. Returns whether it was queued.
pub(super) fn queue_taken(
    conn: &mut Connection,
    publication: &Publication,
    backlog: usize,
    mark: usize,
    policy: BackpressurePolicy,
) -> bool {
    let queued = deliver_published(conn, &publication.prepared, backlog, mark, policy);
    if !queued {
        publication.undelivered();
    }
    queued
}

/// Fails a connection whose inbox overflowed under [`BackpressurePolicy::Close`].
pub(super) fn fail_slow(conn: &mut Connection) -> bool {
    if conn.state() != State::Open {
        return false;
    }
    tracing::info!("closing a subscriber whose publications pile up");
    conn.fail(CloseCode::POLICY_VIOLATION, SLOW_READER_REASON);
    true
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.unsubscribe_all();
    }
}
