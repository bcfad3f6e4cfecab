//! A subscriber that is not a WebSocket connection: a bounded queue of a topic's messages,
//! received by blocking, with a timeout, or awaiting (any async runtime).

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::{Counted, Hub, Member, Publication, SubscriberId, Topics};
use crate::Message;

/// Messages a [`Subscription`] keeps by default
/// ([`Topics::subscribe_channel`](super::Topics::subscribe_channel)).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;

/// A subscription to one topic that is not a connection, from
/// [`Topics::subscribe_channel`](super::Topics::subscribe_channel): a task that logs a
/// room, a bridge to another system, a test.
///
/// It gets what every subscriber of the topic gets — this node's publishes and, with a
/// broker, the other nodes' — in the order of each publisher, into a queue of its own that
/// holds at most its capacity: a message that arrives while it is full is dropped for this
/// subscription alone and counted in [`TopicStats::dropped`](super::TopicStats::dropped);
/// publishing never waits for it. One consumer receives, by blocking
/// ([`recv_blocking`](Self::recv_blocking), [`recv_timeout`](Self::recv_timeout)), by
/// polling ([`try_recv`](Self::try_recv)) or by awaiting ([`recv`](Self::recv), on any
/// runtime).
///
/// It does not keep the registry alive: once every clone of the [`Topics`] is dropped,
/// the receiving methods return what was queued, then `None`. Dropping it unsubscribes.
///
/// ```
/// use std::time::Duration;
/// use wsline::topics::Topics;
///
/// let topics = Topics::new();
/// let mut lobby = topics.subscribe_channel("lobby");
/// assert_eq!(topics.publish("lobby", "hello"), 1);
/// let message = lobby.recv_timeout(Duration::from_secs(1)).expect("queued");
/// assert_eq!(message.as_text(), Some("hello"));
/// drop(lobby);
/// assert_eq!(topics.subscriber_count("lobby"), 0);
/// ```
pub struct Subscription {
    hub: Weak<Hub>,
    topic: Arc<str>,
    member: u64,
    queue: Arc<Queue>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("queued", &self.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(super) fn new(topics: &Topics, topic: &str, capacity: usize) -> Self {
        let member = topics.new_member_id();
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                messages: VecDeque::new(),
                closed: false,
                waker: None,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        });
        let delivery: Arc<dyn Member> = Arc::new(Delivery {
            member,
            queue: Arc::clone(&queue),
        });
        topics.subscribe(topic, member, &delivery);
        Self {
            hub: Arc::downgrade(&topics.hub),
            topic: Arc::from(topic),
            member,
            queue,
        }
    }

    /// The topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This subscriber, to leave it out of a publish
    /// ([`PublishOptions::exclude`](super::PublishOptions::exclude)).
    #[must_use]
    pub fn id(&self) -> SubscriberId {
        SubscriberId {
            member: self.member,
            local: 0,
        }
    }

    /// Messages queued now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.lock().messages.len()
    }

    /// Whether no message is queued now.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.queue.lock().messages.pop_front()
    }

    /// The next message, waiting for it at most `timeout`; `None` if none came, or if the
    /// registry is gone and nothing is queued.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.queue.lock();
        loop {
            if let Some(message) = state.messages.pop_front() {
                return Some(message);
            }
            if state.closed {
                return None;
            }
            state = match deadline {
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.queue
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .queue
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// The next message, blocking the thread until one comes; `None` once the registry is
    /// gone and nothing is queued. Not for async code: use [`recv`](Self::recv) there.
    pub fn recv_blocking(&mut self) -> Option<Message> {
        self.recv_timeout(Duration::MAX)
    }

    /// The next message, awaiting it; `None` once the registry is gone and nothing is
    /// queued. Works on any async runtime; cancel-safe (a message is never lost by a
    /// `recv` that was given up).
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| {
            let mut state = self.queue.lock();
            if let Some(message) = state.messages.pop_front() {
                return Poll::Ready(Some(message));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            Topics { hub }.unsubscribe(&self.topic, self.member);
        }
    }
}

/// The queue a [`Subscription`] receives from.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a message is queued or the queue closes.
    ready: Condvar,
    capacity: usize,
}

struct QueueState {
    messages: VecDeque<Message>,
    /// The registry is gone: nothing more comes.
    closed: bool,
    /// The task awaiting [`Subscription::recv`], if one is.
    waker: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the receiver, whichever way it waits.
    fn wake(&self, mut state: MutexGuard<'_, QueueState>) {
        let waker = state.waker.take();
        drop(state);
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What the registry delivers to: a [`Subscription`]'s queue. Dropped with the registry
/// (or when unsubscribed), which closes the queue.
struct Delivery {
    member: u64,
    queue: Arc<Queue>,
}

impl Member for Delivery {
    fn deliver(&self, publication: &Arc<Publication>, _subscribers: usize) -> Counted {
        if publication.excludes(self.member, 0) {
            return Counted::default();
        }
        let mut state = self.queue.lock();
        if state.messages.len() >= self.queue.capacity {
            return Counted {
                queued: 0,
                dropped: 1,
            };
        }
        state
            .messages
            .push_back(publication.prepared.message().clone());
        self.queue.wake(state);
        Counted {
            queued: 1,
            dropped: 0,
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.closed = true;
        self.queue.wake(state);
    }
}
