//! A tokio connection's part in a [`Topics`]: each connection is a member of the registry
//! of its own, with an inbox the publishers fill without waiting and the connection drains
//! into its send buffer whenever it makes progress (in whichever method is awaited, or in
//! the driver task of a split connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use crate::layer::server::{deliver_published, SLOW_READER_REASON};
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
}

/// Publications on their way into one connection's send buffer.
struct Inbox {
    id: u64,
    policy: BackpressurePolicy,
    /// The connection's high-water mark, as it last published it.
    mark: AtomicUsize,
    /// The connection's send buffer, as it last published it.
    pending: AtomicUsize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    publications: VecDeque<Arc<Publication>>,
    /// Frame bytes of `publications`.
    bytes: usize,
    /// The connection's task, woken by the first publication queued.
    waker: Option<Waker>,
    /// A publication found the connection past its mark under
    /// [`BackpressurePolicy::Close`]: the connection is to be failed.
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
            return DROPPED;
        }
        // Judged as a send would be: by what the connection holds before this message.
        let held = self.pending.load(Ordering::Relaxed) + queue.bytes;
        if held > self.mark.load(Ordering::Relaxed) {
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

impl Subscriber {
    pub(super) fn new(topics: Topics, policy: BackpressurePolicy, mark: usize) -> Self {
        let id = topics.new_member_id();
        Self {
            topics,
            inbox: Arc::new(Inbox {
                id,
                policy,
                mark: AtomicUsize::new(mark),
                pending: AtomicUsize::new(0),
                queue: Mutex::default(),
            }),
            subscribed: Vec::new(),
            taken: VecDeque::new(),
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

    /// Tells publishers how much the connection holds against which mark.
    pub(super) fn publish_pending(&self, pending: usize, mark: usize) {
        self.inbox.pending.store(pending, Ordering::Relaxed);
        self.inbox.mark.store(mark, Ordering::Relaxed);
    }

    /// Moves what was published into the connection's send buffer (or fails a connection
    /// that fell behind under [`BackpressurePolicy::Close`]), and registers the task for
    /// the next publication. Returns whether anything was queued or changed.
    pub(super) fn poll_publications(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
        mark: usize,
    ) -> bool {
        let slow = {
            let mut queue = self.inbox.lock();
            if !queue
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                queue.waker = Some(cx.waker().clone());
            }
            std::mem::swap(&mut queue.publications, &mut self.taken);
            queue.bytes = 0;
            queue.slow
        };
        let fail = slow && conn.state() == State::Open;
        if fail {
            tracing::info!("closing a subscriber that reads too slowly");
            conn.fail(CloseCode::POLICY_VIOLATION, SLOW_READER_REASON);
        }
        let progress = fail || !self.taken.is_empty();
        for publication in self.taken.drain(..) {
            if !deliver_published(conn, &publication.prepared, mark, self.inbox.policy) {
                publication.undelivered();
            }
        }
        progress
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.unsubscribe_all();
    }
}
