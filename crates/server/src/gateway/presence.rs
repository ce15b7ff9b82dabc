//! Who is connected: a user is online while any of their connections is active, away when
//! every connection reports them idle, offline with none. Changes are announced to everyone
//! who shares a channel with the user, on those users' own topics.
//!
//! This is one node's view; with several nodes behind a load balancer, presence must be
//! shared through the hub as well (the NATS hub will carry it).

use std::collections::HashMap;
use std::sync::Mutex;

use unhidra_proto::channels::PresenceStatus;

/// Per user, their live connections and whether each is idle.
#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<String, HashMap<String, bool>>>,
}

impl Presence {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, bool>>> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn status_of(connections: Option<&HashMap<String, bool>>) -> PresenceStatus {
        match connections {
            None => PresenceStatus::Offline,
            Some(c) if c.is_empty() => PresenceStatus::Offline,
            Some(c) if c.values().all(|away| *away) => PresenceStatus::Away,
            Some(_) => PresenceStatus::Online,
        }
    }

    /// Applies `change` to the user's connections; returns the new status if it changed.
    fn update(
        &self,
        user_id: &str,
        change: impl FnOnce(&mut HashMap<String, bool>),
    ) -> Option<PresenceStatus> {
        let mut users = self.users();
        let before = Self::status_of(users.get(user_id));
        let connections = users.entry(user_id.to_owned()).or_default();
        change(connections);
        let after = Self::status_of(Some(connections));
        if connections.is_empty() {
            users.remove(user_id);
        }
        (before != after).then_some(after)
    }

    /// A connection opened (active).
    pub fn connect(&self, user_id: &str, connection_id: &str) -> Option<PresenceStatus> {
        self.update(user_id, |c| {
            c.insert(connection_id.to_owned(), false);
        })
    }

    /// The connection reports its user idle (`away`) or back.
    pub fn set_away(
        &self,
        user_id: &str,
        connection_id: &str,
        away: bool,
    ) -> Option<PresenceStatus> {
        self.update(user_id, |c| {
            if let Some(idle) = c.get_mut(connection_id) {
                *idle = away;
            }
        })
    }

    pub fn disconnect(&self, user_id: &str, connection_id: &str) -> Option<PresenceStatus> {
        self.update(user_id, |c| {
            c.remove(connection_id);
        })
    }

    pub fn status(&self, user_id: &str) -> PresenceStatus {
        Self::status_of(self.users().get(user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceStatus::{Away, Offline, Online};

    #[test]
    fn status_follows_every_connection_of_a_user() {
        let p = Presence::default();
        assert_eq!(p.status("u"), Offline);
        assert_eq!(p.connect("u", "c1"), Some(Online));
        assert_eq!(p.connect("u", "c2"), None, "still online");
        assert_eq!(p.set_away("u", "c1", true), None, "c2 is active");
        assert_eq!(p.set_away("u", "c2", true), Some(Away));
        assert_eq!(p.status("u"), Away);
        assert_eq!(p.set_away("u", "c1", false), Some(Online));
        assert_eq!(p.disconnect("u", "c1"), Some(Away), "c2 is idle");
        assert_eq!(p.disconnect("u", "c2"), Some(Offline));
        assert_eq!(p.status("u"), Offline);
        assert!(p.users().is_empty(), "no entry is kept for offline users");
        assert_eq!(p.set_away("u", "gone", true), None);
        assert!(p.users().is_empty());
    }
}
