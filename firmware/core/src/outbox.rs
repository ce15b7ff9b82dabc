//! A bounded queue of telemetry waiting to be sent. When full it drops the OLDEST point: after
//! an outage the newest readings are the ones worth having. Points also expire, because the
//! server refuses a `ts` more than 5 minutes from its clock (and the whole frame with it).

use std::collections::VecDeque;

/// One queued item and when (monotonic ms) it was queued.
#[derive(Debug, Clone, PartialEq)]
struct Entry<T> {
    queued_at_ms: u64,
    item: T,
}

/// What happened to points that were never sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Dropped to make room for newer points.
    pub dropped_full: u64,
    /// Dropped because they were older than the maximum age when their turn came.
    pub expired: u64,
}

#[derive(Debug, Clone)]
pub struct Outbox<T> {
    entries: VecDeque<Entry<T>>,
    capacity: usize,
    max_age_ms: u64,
    counters: OutboxCounters,
}

impl<T> Outbox<T> {
    /// `capacity` 0 is treated as 1.
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            max_age_ms,
            counters: OutboxCounters::default(),
        }
    }

    /// Queues `item`, dropping the oldest when full.
    pub fn push(&mut self, now_ms: u64, item: T) {
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
            self.counters.dropped_full += 1;
        }
        self.entries.push_back(Entry {
            queued_at_ms: now_ms,
            item,
        });
    }

    /// The oldest item that has not expired, expired ones dropped on the way.
    pub fn pop(&mut self, now_ms: u64) -> Option<T> {
        while let Some(entry) = self.entries.pop_front() {
            if now_ms.saturating_sub(entry.queued_at_ms) <= self.max_age_ms {
                return Some(entry.item);
            }
            self.counters.expired += 1;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn counters(&self) -> OutboxCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_keeps_the_newest_in_order() {
        let mut o = Outbox::new(3, 1_000);
        for i in 0..10 {
            o.push(0, i);
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.counters().dropped_full, 7);
        assert_eq!(o.pop(0), Some(7));
        assert_eq!(o.pop(0), Some(8));
        assert_eq!(o.pop(0), Some(9));
        assert_eq!(o.pop(0), None);
    }

    #[test]
    fn old_points_expire() {
        let mut o = Outbox::new(10, 1_000);
        o.push(0, "old");
        o.push(500, "mid");
        o.push(1_600, "new");
        assert_eq!(o.pop(1_600), Some("new"));
        assert_eq!(o.counters().expired, 2);
        assert!(o.is_empty());
    }
}
