//! The connection's timers (RFC 6455 §4.1, §5.5.2, §7.1.1), all on the clock the I/O layer
//! passes in: the opening handshake, the closing handshake, keepalive pings and their pongs,
//! and the wait for the application to acknowledge the events before a peer's close.

use std::time::{Duration, Instant};

/// A timer that is off, waiting to be armed at the next known time, or armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Off,
    Pending(Duration),
    At(Instant),
}

impl Timer {
    fn new(duration: Option<Duration>) -> Self {
        duration.map_or(Self::Off, Self::Pending)
    }

    fn deadline(self, now: Instant) -> Option<Instant> {
        match self {
            Self::Off => None,
            Self::Pending(_) => Some(now),
            Self::At(deadline) => Some(deadline),
        }
    }

    /// Arms a pending timer; returns whether an armed one has expired.
    fn tick(&mut self, now: Instant) -> bool {
        match *self {
            Self::Off => false,
            Self::Pending(duration) => {
                *self = Self::At(now + duration);
                false
            }
            Self::At(deadline) => deadline <= now,
        }
    }
}

/// Which timer expired, in order of precedence when several have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expired {
    /// The opening handshake took too long (`Config::open_timeout`).
    Open,
    /// The closing handshake took too long (`Config::close_timeout`).
    Close,
    /// The application did not acknowledge the events before a peer's close frame or
    /// protocol error in time (`Config::acknowledge_timeout`).
    Acknowledge,
    /// A keepalive ping got no pong in time (`Config::ping_timeout`).
    Pong,
    /// Time for a keepalive ping (`Config::ping_interval`).
    Ping,
}

impl Expired {
    const ALL: [Self; 5] = [
        Self::Open,
        Self::Close,
        Self::Acknowledge,
        Self::Pong,
        Self::Ping,
    ];
}

/// The timers, indexed by what they guard ([`Expired`]); [`Timer::Off`] when not running.
/// The earliest deadline is a scan of five slots: the I/O layers ask for it after every
/// command, so it is kept branch-light rather than cached.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timers {
    slots: [Timer; 5],
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            slots: [Timer::Off; 5],
        }
    }
}

impl Timers {
    /// Timers of a new connection: the open timeout, running from `now`.
    pub(super) fn opening(open_timeout: Option<Duration>, now: Instant) -> Self {
        let mut timers = Self::default();
        if let Some(timeout) = open_timeout {
            timers.slots[Expired::Open as usize] = Timer::At(now + timeout);
        }
        timers
    }

    /// Starts `which` to expire `duration` after the next time it is told (`None`: never).
    pub(super) fn start(&mut self, which: Expired, duration: Option<Duration>) {
        self.slots[which as usize] = Timer::new(duration);
    }

    pub(super) fn stop(&mut self, which: Expired) {
        self.slots[which as usize] = Timer::Off;
    }

    /// The earliest deadline; a timer waiting to be armed is due at `now`.
    #[inline]
    pub(super) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for timer in &self.slots {
            if let Some(deadline) = timer.deadline(now) {
                next = Some(next.map_or(deadline, |next| next.min(deadline)));
            }
        }
        next
    }

    /// Arms the timers waiting for a time, then stops and returns the first that has
    /// expired at `now`, in order of precedence: open, close, acknowledge, pong, ping.
    pub(super) fn expire(&mut self, now: Instant) -> Option<Expired> {
        let mut first = None;
        for which in Expired::ALL {
            let slot = &mut self.slots[which as usize];
            if slot.tick(now) && first.is_none() {
                *slot = Timer::Off;
                first = Some(which);
            }
        }
        first
    }
}

/// The keepalive ping awaiting its pong, if any, the counter its payload comes from, and
/// whether the peer has sent anything since the pong timer was last armed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Keepalive {
    awaiting: Option<[u8; 4]>,
    count: u32,
    heard: bool,
}

impl Keepalive {
    /// The payload of a new keepalive ping, unless one is still awaiting its pong.
    pub(super) fn next_ping(&mut self) -> Option<[u8; 4]> {
        if self.awaiting.is_some() {
            return None;
        }
        self.count = self.count.wrapping_add(1);
        let payload = self.count.to_be_bytes();
        self.awaiting = Some(payload);
        self.heard = false;
        Some(payload)
    }

    /// Notes that bytes arrived from the peer.
    #[inline]
    pub(super) fn hear(&mut self) {
        self.heard = true;
    }

    /// Whether the peer sent anything since the ping or the last call: a busy peer's pong
    /// can queue behind megabytes of its messages, and a peer that is sending is alive.
    pub(super) fn take_heard(&mut self) -> bool {
        std::mem::take(&mut self.heard)
    }

    /// Whether a pong with `payload` answers the keepalive ping (which is then answered).
    pub(super) fn answered_by(&mut self, payload: &[u8]) -> bool {
        let answered = self.awaiting.is_some_and(|ping| payload == ping);
        if answered {
            self.awaiting = None;
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_timer_is_armed_at_the_next_time_it_is_told() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.start(Expired::Ping, Some(Duration::from_secs(20)));
        assert_eq!(
            timers.next_deadline(start),
            Some(start),
            "due at once, to be armed"
        );
        assert_eq!(timers.expire(start), None);
        let deadline = start + Duration::from_secs(20);
        assert_eq!(timers.next_deadline(start), Some(deadline));
        assert_eq!(timers.expire(deadline), Some(Expired::Ping));
        assert_eq!(
            timers.next_deadline(deadline),
            None,
            "an expired timer stops"
        );
    }

    #[test]
    fn the_open_timeout_runs_from_creation_and_takes_precedence() {
        let start = Instant::now();
        let mut timers = Timers::opening(Some(Duration::from_secs(1)), start);
        timers.start(Expired::Close, Some(Duration::ZERO));
        assert_eq!(timers.expire(start), None);
        let late = start + Duration::from_secs(2);
        assert_eq!(timers.expire(late), Some(Expired::Open));
        assert_eq!(timers.expire(late), Some(Expired::Close));
        assert_eq!(timers.expire(late), None);
    }

    #[test]
    fn keepalive_waits_for_the_pong_of_its_ping() {
        let mut keepalive = Keepalive::default();
        let ping = keepalive.next_ping().unwrap();
        assert_eq!(keepalive.next_ping(), None, "one ping at a time");
        assert!(!keepalive.answered_by(b"other"));
        assert!(keepalive.answered_by(&ping));
        assert_ne!(
            keepalive.next_ping(),
            Some(ping),
            "each ping has its own payload"
        );
    }

    #[test]
    fn keepalive_hears_the_peer_once_per_pong_timer() {
        let mut keepalive = Keepalive::default();
        keepalive.hear();
        keepalive.next_ping().unwrap();
        assert!(
            !keepalive.take_heard(),
            "what came before the ping does not count"
        );
        keepalive.hear();
        assert!(keepalive.take_heard());
        assert!(!keepalive.take_heard());
    }
}
