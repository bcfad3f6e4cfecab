//! An event loop's part in the server's [`Topics`]: the loop is one member of the registry
//! for all its connections, keeps which of them are subscribed to what, and delivers each
//! publication to them on its own thread.

use std::collections::HashMap;
use std::sync::Arc;

use crate::topics::{Member, Publication, SubscriberId, Topics};

/// A connection of the loop, as its subscriptions name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Local {
    pub(super) key: u32,
    pub(super) generation: u32,
}

impl Local {
    fn id(self) -> u64 {
        u64::from(self.key) << 32 | u64::from(self.generation)
    }
}

/// The subscriptions of one event loop's connections.
pub(super) struct Subscriptions {
    topics: Topics,
    member_id: u64,
    member: Arc<dyn Member>,
    /// The loop's subscribers of each topic.
    subscribers: HashMap<Arc<str>, Vec<Local>>,
}

impl Subscriptions {
    pub(super) fn new(topics: Topics, member_id: u64, member: Arc<dyn Member>) -> Self {
        Self {
            topics,
            member_id,
            member,
            subscribers: HashMap::new(),
        }
    }

    pub(super) fn topics(&self) -> &Topics {
        &self.topics
    }

    pub(super) fn subscriber_id(&self, local: Local) -> SubscriberId {
        SubscriberId {
            member: self.member_id,
            local: local.id(),
        }
    }

    /// Subscribes `local` to `topic` unless it is already (`subscribed` is the connection's
    /// own list). Returns whether it was not.
    pub(super) fn subscribe(
        &mut self,
        local: Local,
        topic: &str,
        subscribed: &mut Vec<Arc<str>>,
    ) -> bool {
        if subscribed.iter().any(|name| &**name == topic) {
            return false;
        }
        let name: Arc<str> = match self.subscribers.get_key_value(topic) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(topic),
        };
        self.subscribers
            .entry(Arc::clone(&name))
            .or_default()
            .push(local);
        subscribed.push(name);
        self.topics.subscribe(topic, self.member_id, &self.member);
        true
    }

    /// Unsubscribes `local` from `topic`. Returns whether it was subscribed.
    pub(super) fn unsubscribe(
        &mut self,
        local: Local,
        topic: &str,
        subscribed: &mut Vec<Arc<str>>,
    ) -> bool {
        let Some(position) = subscribed.iter().position(|name| &**name == topic) else {
            return false;
        };
        subscribed.swap_remove(position);
        self.leave(local, topic);
        true
    }

    /// Unsubscribes `local` from every topic (it closed).
    pub(super) fn unsubscribe_all(&mut self, local: Local, subscribed: &mut Vec<Arc<str>>) {
        for topic in subscribed.drain(..) {
            self.leave(local, &topic);
        }
    }

    fn leave(&mut self, local: Local, topic: &str) {
        if let Some(list) = self.subscribers.get_mut(topic) {
            if let Some(position) = list.iter().position(|other| *other == local) {
                list.swap_remove(position);
            }
            if list.is_empty() {
                self.subscribers.remove(topic);
            }
        }
        self.topics.unsubscribe(topic, self.member_id);
    }

    /// The loop's subscribers of `publication`'s topic, but the one it leaves out.
    pub(super) fn recipients<'a>(
        &'a self,
        publication: &'a Publication,
    ) -> impl Iterator<Item = Local> + 'a {
        self.subscribers
            .get(&publication.topic)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |local| !publication.excludes(self.member_id, local.id()))
    }
}

impl Drop for Subscriptions {
    /// The loop is gone (it ended, or a handler panicked on it): its connections leave the
    /// registry, which may outlive the server.
    fn drop(&mut self) {
        for (topic, subscribers) in self.subscribers.drain() {
            for _ in subscribers {
                self.topics.unsubscribe(&topic, self.member_id);
            }
        }
    }
}
