//! How a [`Sender`](super::Sender)'s commands reach the driver and come back with a verdict:
//! the commands, the tickets that number them, the outcomes a sender reads, the parked
//! tasks, and the state the driver publishes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use ::tokio::sync::oneshot;

use crate::proto::{CloseCode, PreparedMessage, State};
use crate::{Error, Message, Result};

/// What writers ask of the driver, in order.
pub(super) enum Command {
    Message(Message),
    Prepared(PreparedMessage),
    Pong(Vec<u8>),
    Ping(oneshot::Sender<Duration>),
    Close(CloseCode, String),
    /// Hand the connection back ([`ReadHalf::reunite`]).
    Stop,
}

impl Command {
    /// What the command adds to the send buffer, as counted until the driver has queued it:
    /// the payload plus one, so that an empty message or a pong counts too (a flush waits
    /// for it).
    pub(super) fn weight(&self) -> usize {
        match self {
            Self::Message(message) => message.len() + 1,
            Self::Prepared(prepared) => prepared.message().len() + 1,
            Self::Pong(payload) => payload.len() + 1,
            Self::Ping(_) | Self::Close(..) | Self::Stop => 0,
        }
    }
}

/// A command on its way to the driver, with where its verdict goes.
pub(super) struct Order {
    pub(super) command: Command,
    pub(super) ticket: Ticket,
}

/// Where the driver reports what became of one command.
pub(super) struct Ticket {
    pub(super) outcomes: Arc<Outcomes>,
    /// The number its sender waits for, from 1, among the sender's awaited commands; `None`
    /// when nobody waits (a refusal is then reported by the sender's next call).
    pub(super) seq: Option<u64>,
}

impl Ticket {
    pub(super) fn resolve(self, result: Result<()>) {
        self.outcomes.resolve(self.seq, result);
    }
}

/// A command the connection refused, with its ticket's number.
pub(super) struct Refused {
    pub(super) seq: Option<u64>,
    pub(super) error: Error,
}

/// What became of the commands one [`Sender`] handed over. The driver applies them in the
/// order they were numbered, so "applied up to `seq`" is one counter; refusals are rare and
/// kept aside until their sender takes them.
#[derive(Default)]
pub(super) struct Outcomes {
    /// The number of the last command applied (or dropped with the connection).
    pub(super) applied: AtomicU64,
    /// Whether `refused` holds anything; checking it is an atomic load.
    pub(super) any_refused: AtomicBool,
    pub(super) refused: Mutex<Vec<Refused>>,
    pub(super) waiters: Parked,
}

impl Outcomes {
    pub(super) fn refused(&self) -> MutexGuard<'_, Vec<Refused>> {
        // Plain data; a panic elsewhere leaves it usable.
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn resolve(&self, seq: Option<u64>, result: Result<()>) {
        if let Err(error) = result {
            self.refused().push(Refused { seq, error });
            self.any_refused.store(true, Ordering::SeqCst);
        }
        if let Some(seq) = seq {
            self.applied.fetch_max(seq, Ordering::SeqCst);
            self.waiters.wake_all();
        }
    }

    /// Takes the first refusal that `matches`.
    pub(super) fn take(&self, matches: impl Fn(&Refused) -> bool) -> Result<()> {
        if !self.any_refused.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut refused = self.refused();
        let Some(index) = refused.iter().position(matches) else {
            return Ok(());
        };
        let error = refused.remove(index).error;
        self.any_refused
            .store(!refused.is_empty(), Ordering::SeqCst);
        Err(error)
    }

    /// The verdict on the awaited command `seq`, once it is applied.
    pub(super) fn take_verdict(&self, seq: u64) -> Result<()> {
        self.take(|refused| refused.seq == Some(seq))
    }

    /// The first refusal of a command nobody waits for (a [`Sender::try_send`], a
    /// [`Sink::start_send`]).
    pub(super) fn take_unclaimed(&self) -> Result<()> {
        self.take(|refused| refused.seq.is_none())
    }
}

/// Tasks parked until something changes; waking them is an atomic load when none is.
#[derive(Default)]
pub(super) struct Parked {
    pub(super) any: AtomicBool,
    pub(super) wakers: Mutex<Vec<Waker>>,
}

impl Parked {
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Waker>> {
        // Wakers are plain data; a panic elsewhere leaves them usable.
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks the task of `waker`; the caller checks its condition again afterwards.
    pub(super) fn park(&self, waker: &Waker) {
        let mut wakers = self.lock();
        if !wakers.iter().any(|parked| parked.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        self.any.store(true, Ordering::SeqCst);
    }

    pub(super) fn wake_all(&self) {
        if self.any.load(Ordering::SeqCst) && self.any.swap(false, Ordering::SeqCst) {
            for waker in self.lock().drain(..) {
                waker.wake();
            }
        }
    }
}

/// The connection's state as the driver last published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Published {
    /// Connecting or open: commands are applied.
    Open,
    /// A close frame went out or came in.
    Closing,
    /// Over, or handed back by [`ReadHalf::reunite`].
    Closed,
}

impl Published {
    pub(super) fn of(state: State) -> Self {
        match state {
            State::Connecting | State::Open => Self::Open,
            State::Closing => Self::Closing,
            State::Closed => Self::Closed,
        }
    }
}

/// A [`Published`] state that the driver writes and the halves read without a lock.
pub(super) struct AtomicPublished(AtomicU8);

impl AtomicPublished {
    pub(super) fn new(state: Published) -> Self {
        Self(AtomicU8::new(state as u8))
    }

    pub(super) fn load(&self) -> Published {
        match self.0.load(Ordering::SeqCst) {
            0 => Published::Open,
            1 => Published::Closing,
            _ => Published::Closed,
        }
    }

    pub(super) fn store(&self, state: Published) {
        self.0.store(state as u8, Ordering::SeqCst);
    }
}
