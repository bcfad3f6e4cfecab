//! The server-wide budget of queued output ([`ServerConfig::send_budget`]): every
//! connection's bytes not yet taken by its socket, summed across the server. Within the
//! budget each connection has its own high-water mark; past it, a connection's mark drops
//! to its fair share (the budget divided among the open connections), so that the
//! backpressure policy applies to the connections holding the most — they stop being read,
//! and their sends are refused or close them, as at their own mark.
//!
//! Accounting is one relaxed atomic add per change of a connection's queue, made where the
//! layer already looks at it (after a turn, after a write); the sum may lag a turn behind,
//! which the budget's granularity does not notice.
//!
//! [`ServerConfig::send_budget`]: crate::ServerConfig::send_budget

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The budget and what is queued against it, shared by a server's connections.
#[derive(Debug)]
pub(crate) struct SendBudget {
    limit: usize,
    queued: AtomicUsize,
    connections: AtomicUsize,
}

impl SendBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            queued: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        })
    }

    /// Bytes queued across the server, as last accounted.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// One connection's part of a [`SendBudget`]: what it has accounted, given back when it is
/// dropped.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<SendBudget>,
    accounted: usize,
}

impl Share {
    pub(crate) fn new(budget: &Arc<SendBudget>) -> Self {
        budget.connections.fetch_add(1, Ordering::Relaxed);
        Self {
            budget: Arc::clone(budget),
            accounted: 0,
        }
    }

    /// Records that the connection now has `pending` bytes queued.
    #[inline]
    pub(crate) fn update(&mut self, pending: usize) {
        if pending == self.accounted {
            return;
        }
        if pending > self.accounted {
            let more = pending - self.accounted;
            self.budget.queued.fetch_add(more, Ordering::Relaxed);
        } else {
            let less = self.accounted - pending;
            self.budget.queued.fetch_sub(less, Ordering::Relaxed);
        }
        self.accounted = pending;
    }

    /// The high-water mark that applies to this connection, whose own is `own`: `own`
    /// within the budget, past it the smaller of `own` and the fair share.
    #[inline]
    pub(crate) fn mark(&self, own: usize) -> usize {
        let budget = &*self.budget;
        if budget.queued.load(Ordering::Relaxed) <= budget.limit {
            return own;
        }
        let connections = budget.connections.load(Ordering::Relaxed).max(1);
        own.min(budget.limit / connections)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.update(0);
        self.budget.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The mark for a connection with an optional share of a budget.
#[inline]
pub(crate) fn mark(share: Option<&Share>, own: usize) -> usize {
    share.map_or(own, |share| share.mark(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_budget_each_connection_keeps_its_own_mark() {
        let budget = SendBudget::new(1000);
        let mut a = Share::new(&budget);
        let mut b = Share::new(&budget);
        a.update(600);
        b.update(400);
        assert_eq!(budget.queued(), 1000);
        assert_eq!(a.mark(800), 800);
    }

    #[test]
    fn past_the_budget_the_mark_drops_to_the_fair_share() {
        let budget = SendBudget::new(1000);
        let mut big = Share::new(&budget);
        let mut small = Share::new(&budget);
        big.update(900);
        small.update(200);
        // 1,100 queued past 1,000: each of the two may hold 500.
        assert_eq!(big.mark(800), 500);
        assert_eq!(small.mark(300), 300, "a mark under the share stays");
        big.update(100);
        assert_eq!(big.mark(800), 800, "back within the budget");
    }

    #[test]
    fn a_dropped_connection_gives_its_bytes_back() {
        let budget = SendBudget::new(1000);
        let mut gone = Share::new(&budget);
        gone.update(5000);
        let stays = Share::new(&budget);
        assert_eq!(stays.mark(800), 500);
        drop(gone);
        assert_eq!(budget.queued(), 0);
        assert_eq!(stays.mark(800), 800);
    }
}
