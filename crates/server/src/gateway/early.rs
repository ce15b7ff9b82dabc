//! Deliveries that reached a session ahead of an earlier seq of their channel.
//!
//! Publishes committed together reach the hub in whatever order their tasks run, so a
//! session can read seq 11 before seq 10. Every subscriber sees the same order, so filling
//! such a gap from the store costs one read per subscriber (with 1,000 subscribers and four
//! publishers, those reads took most of the server's time). Instead a session holds what came
//! early, for a short grace ([`GAP_GRACE`]), and sends it as soon as the gap fills from the
//! hub; only a gap still open after the grace (a seq whose publish never reached the hub) or
//! more than [`MAX_HELD`] held deliveries send the session to the store.

use std::sync::Arc;
use std::time::Duration;

use super::hub::Delivery;

/// How long a session waits for a missing seq from the hub before reading it from the store.
pub const GAP_GRACE: Duration = Duration::from_millis(50);

/// Most deliveries a session holds across all its channels; one more fills the gap from the
/// store at once.
pub const MAX_HELD: usize = 256;

/// Deliveries held until the seqs before them are sent, per channel.
#[derive(Debug, Default)]
pub struct Early {
    /// Few and short-lived: a list searched in full is cheaper than a map of maps.
    held: Vec<(String, Arc<Delivery>)>,
}

impl Early {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    /// Holds `delivery` of `channel` (a second copy of the same seq is dropped).
    pub fn hold(&mut self, channel: &str, delivery: Arc<Delivery>) {
        if !self
            .held
            .iter()
            .any(|(c, d)| c == channel && d.seq == delivery.seq)
        {
            self.held.push((channel.to_owned(), delivery));
        }
    }

    /// Takes the held delivery of `channel` with `seq`, if any.
    pub fn take(&mut self, channel: &str, seq: i64) -> Option<Arc<Delivery>> {
        let at = self
            .held
            .iter()
            .position(|(c, d)| c == channel && d.seq == seq)?;
        Some(self.held.swap_remove(at).1)
    }

    /// Drops what is held for `channel` at or below `seq` (sent already).
    pub fn drop_through(&mut self, channel: &str, seq: i64) {
        self.held.retain(|(c, d)| c != channel || d.seq > seq);
    }

    /// A channel with something held, and the lowest seq held for it.
    pub fn first_gap(&self) -> Option<(String, i64)> {
        let (channel, _) = self.held.first()?;
        let lowest = self
            .held
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, d)| d.seq)
            .min()?;
        Some((channel.clone(), lowest))
    }

    /// Forgets what is held for `channel` (unsubscribed).
    pub fn forget(&mut self, channel: &str) {
        self.held.retain(|(c, _)| c != channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::hub::test_delivery as delivery;

    #[test]
    fn held_deliveries_come_back_by_channel_and_seq() {
        let mut early = Early::default();
        assert!(early.is_empty());
        assert_eq!(early.first_gap(), None);
        early.hold("a", delivery("a", 12));
        early.hold("b", delivery("b", 5));
        early.hold("a", delivery("a", 11));
        early.hold("a", delivery("a", 11));
        assert_eq!(early.first_gap(), Some(("a".to_owned(), 11)));
        assert!(early.take("a", 10).is_none());
        assert!(early.take("b", 11).is_none());
        assert_eq!(early.take("a", 11).map(|d| d.seq), Some(11));
        assert!(
            early.take("a", 11).is_none(),
            "the second copy was not kept"
        );
        early.hold("a", delivery("a", 14));
        early.hold("a", delivery("a", 13));
        early.drop_through("a", 13);
        assert!(early.take("a", 12).is_none() && early.take("a", 13).is_none());
        assert_eq!(early.take("a", 14).map(|d| d.seq), Some(14));
        assert_eq!(early.first_gap(), Some(("b".to_owned(), 5)));
        early.forget("b");
        assert!(early.is_empty());
    }

    #[test]
    fn holding_is_bounded() {
        let mut early = Early::default();
        for seq in 0..MAX_HELD {
            assert!(!early.is_full());
            early.hold("a", delivery("a", seq as i64 + 2));
        }
        assert!(early.is_full());
    }
}
