//! The server's shutdown signal: set once, seen by every connection without a lock on the
//! hot path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};

use ::tokio::sync::futures::OwnedNotified;
use ::tokio::sync::Notify;

/// A flag that goes up once and wakes everyone listening.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    notify: Arc<Notify>,
}

impl Signal {
    /// Raises the signal; returns whether this call raised it.
    pub(crate) fn raise(&self) -> bool {
        let first = !self.raised.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    /// Whether the signal is up.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Waits until the signal is up.
    pub(crate) async fn raised(&self) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the check: a raise in between still wakes this waiter.
        notified.as_mut().enable();
        if self.is_raised() {
            return;
        }
        notified.await;
    }
}

/// One connection's view of a [`Signal`].
///
/// Checking it costs an atomic load; it registers the task's waker with the signal only when
/// the task polling it changes (the first poll, or after a move to a split driver), so an
/// idle connection still wakes up when the signal goes up.
pub(crate) struct Listener {
    signal: Arc<Signal>,
    notified: Option<Pin<Box<OwnedNotified>>>,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("raised", &self.signal.is_raised())
            .finish_non_exhaustive()
    }
}

impl Listener {
    pub(crate) fn new(signal: Arc<Signal>) -> Self {
        Self {
            signal,
            notified: None,
            waker: None,
        }
    }

    /// Whether the signal is up.
    pub(crate) fn is_raised(&self) -> bool {
        self.signal.is_raised()
    }

    /// Whether the signal is up; otherwise arranges for the current task to be woken when it
    /// goes up.
    pub(crate) fn poll_raised(&mut self, cx: &mut Context<'_>) -> bool {
        if self.signal.is_raised() {
            return true;
        }
        let registered = self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if !registered {
            let notify = &self.signal.notify;
            let notified = self
                .notified
                .get_or_insert_with(|| Box::pin(Arc::clone(notify).notified_owned()));
            if notified.as_mut().poll(cx).is_ready() {
                return true;
            }
            self.waker = Some(cx.waker().clone());
        }
        self.signal.is_raised()
    }
}
