//! Fan-out of stored messages to the sessions subscribed to their channel.
//!
//! [`Hub`] is the seam for scale-out: [`LocalHub`] serves one process; a NATS hub will carry
//! the same deliveries between nodes without touching sessions or services. A delivery is
//! serialized once, by the publisher, and shared by every subscriber.
//!
//! Each channel is a bounded broadcast ring shared by its subscribers (not a queue per
//! subscriber): memory does not grow with slow readers. A subscriber that falls more than the
//! ring's capacity behind is told it lagged, and its session closes with 1013 so the client
//! resyncs with `since`; nothing is dropped silently.
//!
//! A channel's deliveries leave the hub in seq order. Publishes committed together reach
//! [`Hub::publish`] in whatever order their tasks run, and under load a task can run tens of
//! milliseconds after the ones behind it; every subscriber that saw the later seq first would
//! read the gap from the store, a thousand reads for one reordering. So the hub holds a later
//! seq until the earlier one comes (at most [`HOLD_LIMIT`]), once for all subscribers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

/// Topics named `user:<id>` carry one user's passing frames (presence, channel list
/// changes); `device:<id>` one device's commands; every other topic is a channel id.
pub const USER_TOPIC_PREFIX: &str = "user:";
pub const DEVICE_TOPIC_PREFIX: &str = "device:";

/// A user's or device's ring: its frames are few and small, and every connected user and
/// device has one, so it is much smaller than a channel's (a ring's slots are allocated up
/// front: 1,024 slots cost about 40 KB).
const PERSONAL_TOPIC_CAPACITY: usize = 128;

/// One message on its way to subscribers.
#[derive(Debug)]
pub struct Delivery {
    pub channel: String,
    pub seq: i64,
    /// The `message` frame, serialized once.
    pub frame: Utf8Bytes,
    /// When the publish was received, for the delivery-latency histogram.
    pub received_at: Instant,
}

/// Channel fan-out.
pub trait Hub: Send + Sync + 'static {
    /// Receives every delivery published to `channel` from now on.
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<Arc<Delivery>>;
    /// Hands a delivery to the channel's current subscribers.
    fn publish(&self, delivery: Arc<Delivery>);
}

/// How long the hub holds a channel's later deliveries while an earlier seq is on its way.
/// Its publish is a task that has not run yet (under load, tens of milliseconds); only a
/// publish that never comes (a request dropped between its commit and its publish) makes
/// the hold run out, and then sessions read the missing seq from the store.
pub const HOLD_LIMIT: Duration = Duration::from_millis(250);

/// Most deliveries held per channel; one more releases them all.
const MAX_HELD: usize = 4096;

/// The in-process hub.
pub struct LocalHub {
    capacity: usize,
    channels: Mutex<HashMap<String, Topic>>,
    /// Topics holding something (changed under the `channels` lock): `release_overdue`,
    /// which runs every few milliseconds, looks at every topic only when one is.
    holding: AtomicUsize,
}

/// A topic's ring, and for a channel, its timeline order.
struct Topic {
    tx: broadcast::Sender<Arc<Delivery>>,
    /// The seq expected next, once one was sent (channels only).
    next: Option<i64>,
    /// Deliveries that came before the seq expected next, and since when the hold lasts.
    held: BTreeMap<i64, Arc<Delivery>>,
    held_since: Option<Instant>,
}

impl Topic {
    /// Sends `delivery` in the channel's seq order: at once when it is the next seq (then
    /// what it was holding up), held when an earlier seq has not come yet. Passing frames,
    /// personal topics and late seqs go at once. `false`: nobody listens any more.
    fn publish(&mut self, delivery: Arc<Delivery>, now: Instant) -> bool {
        let seq = delivery.seq;
        let ordered = seq > 0
            && !delivery.channel.starts_with(USER_TOPIC_PREFIX)
            && !delivery.channel.starts_with(DEVICE_TOPIC_PREFIX);
        if !ordered {
            return self.tx.send(delivery).is_ok();
        }
        match self.next {
            Some(next) if seq > next => {
                self.held.insert(seq, delivery);
                self.held_since.get_or_insert(now);
                if self.held.len() > MAX_HELD {
                    return self.release(now);
                }
                true
            }
            Some(next) if seq < next => self.tx.send(delivery).is_ok(),
            _ => {
                self.next = Some(seq + 1);
                let listened = self.tx.send(delivery).is_ok();
                self.send_following(now) && listened
            }
        }
    }

    fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Sends what was held and now follows without a gap.
    fn send_following(&mut self, now: Instant) -> bool {
        let mut listened = true;
        while let Some(entry) = self.next.and_then(|next| self.held.remove(&next)) {
            self.next = Some(entry.seq + 1);
            listened &= self.tx.send(entry).is_ok();
        }
        self.held_since = (!self.held.is_empty()).then_some(now);
        listened
    }

    /// Gives up waiting: sends everything held, in seq order; subscribers read the gaps
    /// from the store.
    fn release(&mut self, now: Instant) -> bool {
        let Some((&first, _)) = self.held.first_key_value() else {
            return true;
        };
        tracing::debug!(next = ?self.next, first, held = self.held.len(), "hub: a seq did not come; releasing");
        self.next = Some(first);
        self.send_following(now)
    }
}

impl LocalHub {
    /// `capacity`: how many deliveries a subscriber may fall behind before it is cut off.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
            holding: AtomicUsize::new(0),
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets channels nobody listens to any more.
    pub fn sweep(&self) {
        self.channels().retain(|_, topic| {
            let keep = topic.tx.receiver_count() > 0;
            if !keep {
                self.note_hold(topic.is_holding(), false);
            }
            keep
        });
    }

    /// Counts a topic's change from holding something (`was`) to holding something (`is`).
    fn note_hold(&self, was: bool, is: bool) {
        match (was, is) {
            (false, true) => self.holding.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.holding.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Releases what channels have held for longer than [`HOLD_LIMIT`] (run every few
    /// milliseconds: the hold also ends with the next publish on its channel).
    pub fn release_overdue(&self) {
        if self.holding.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        self.channels().retain(|_, topic| match topic.held_since {
            Some(since) if now.duration_since(since) >= HOLD_LIMIT => {
                let listened = topic.release(now);
                self.note_hold(true, listened && topic.is_holding());
                listened
            }
            _ => true,
        });
    }

    /// Channels with a ring allocated.
    pub fn channel_count(&self) -> usize {
        self.channels().len()
    }
}

impl Hub for LocalHub {
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<Arc<Delivery>> {
        let mut channels = self.channels();
        match channels.get(channel) {
            Some(topic) => topic.tx.subscribe(),
            None => {
                let personal = channel.starts_with(USER_TOPIC_PREFIX)
                    || channel.starts_with(DEVICE_TOPIC_PREFIX);
                let capacity = if personal {
                    PERSONAL_TOPIC_CAPACITY.min(self.capacity)
                } else {
                    self.capacity
                };
                let (tx, rx) = broadcast::channel(capacity);
                channels.insert(
                    channel.to_owned(),
                    Topic {
                        tx,
                        next: None,
                        held: BTreeMap::new(),
                        held_since: None,
                    },
                );
                rx
            }
        }
    }

    fn publish(&self, delivery: Arc<Delivery>) {
        let now = Instant::now();
        let mut channels = self.channels();
        let Some(topic) = channels.get_mut(delivery.channel.as_str()) else {
            return;
        };
        let was = topic.is_holding();
        let listened = topic.publish(Arc::clone(&delivery), now);
        self.note_hold(was, listened && topic.is_holding());
        if !listened {
            // No receiver is left: the ring is garbage.
            channels.remove(delivery.channel.as_str());
        }
    }
}

/// A delivery of `seq` to `channel`, for tests.
#[cfg(test)]
pub(crate) fn test_delivery(channel: &str, seq: i64) -> Arc<Delivery> {
    Arc::new(Delivery {
        channel: channel.into(),
        seq,
        frame: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
        received_at: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::test_delivery as delivery;
    use super::*;

    #[tokio::test]
    async fn subscribers_get_their_channels_deliveries_in_order() {
        let hub = LocalHub::new(16);
        let mut a1 = hub.subscribe("a");
        let mut a2 = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.publish(delivery("a", 1));
        hub.publish(delivery("a", 2));
        hub.publish(delivery("b", 1));
        for rx in [&mut a1, &mut a2] {
            assert_eq!(rx.recv().await.unwrap().seq, 1);
            assert_eq!(rx.recv().await.unwrap().seq, 2);
        }
        assert_eq!(b.recv().await.unwrap().channel, "b");
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_so() {
        let hub = LocalHub::new(4);
        let mut rx = hub.subscribe("a");
        for seq in 1..=10 {
            hub.publish(delivery("a", seq));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
    }

    #[tokio::test]
    async fn user_and_device_topics_get_small_rings() {
        let hub = LocalHub::new(1024);
        let mut user = hub.subscribe("user:u1");
        let mut device = hub.subscribe("device:d1");
        let mut channel = hub.subscribe("c1");
        for seq in 1..=200 {
            hub.publish(delivery("user:u1", seq));
            hub.publish(delivery("device:d1", seq));
            hub.publish(delivery("c1", seq));
        }
        for personal in [&mut user, &mut device] {
            assert!(matches!(
                personal.recv().await,
                Err(broadcast::error::RecvError::Lagged(72))
            ));
        }
        assert_eq!(channel.recv().await.unwrap().seq, 1);
    }

    fn seqs_now(rx: &mut broadcast::Receiver<Arc<Delivery>>) -> Vec<i64> {
        let mut seqs = Vec::new();
        while let Ok(delivery) = rx.try_recv() {
            seqs.push(delivery.seq);
        }
        seqs
    }

    #[test]
    fn a_channels_deliveries_leave_in_seq_order_whatever_order_they_come_in() {
        let hub = LocalHub::new(64);
        let mut rx = hub.subscribe("a");
        let mut user = hub.subscribe("user:u1");
        hub.publish(delivery("a", 10));
        hub.publish(delivery("a", 12));
        hub.publish(delivery("a", 13));
        hub.publish(delivery("a", 0));
        assert_eq!(seqs_now(&mut rx), vec![10, 0], "12 and 13 wait for 11");
        hub.publish(delivery("a", 11));
        assert_eq!(seqs_now(&mut rx), vec![11, 12, 13]);
        // A seq that comes after the hold gave up on it goes out at once (subscribers
        // skip it if they read it from the store meanwhile).
        hub.publish(delivery("a", 9));
        assert_eq!(seqs_now(&mut rx), vec![9]);
        // Personal topics are not held: their seqs need not follow each other.
        hub.publish(delivery("user:u1", 5));
        hub.publish(delivery("user:u1", 3));
        assert_eq!(seqs_now(&mut user), vec![5, 3]);
    }

    #[test]
    fn a_hold_ends_when_the_missing_seq_never_comes() {
        let hub = LocalHub::new(64);
        let mut rx = hub.subscribe("a");
        hub.publish(delivery("a", 1));
        hub.publish(delivery("a", 3));
        hub.publish(delivery("a", 4));
        hub.publish(delivery("a", 6));
        hub.release_overdue();
        assert_eq!(seqs_now(&mut rx), vec![1], "not overdue yet");
        std::thread::sleep(HOLD_LIMIT);
        hub.release_overdue();
        assert_eq!(seqs_now(&mut rx), vec![3, 4], "released up to the next gap");
        std::thread::sleep(HOLD_LIMIT);
        hub.release_overdue();
        assert_eq!(seqs_now(&mut rx), vec![6]);
        hub.publish(delivery("a", 7));
        assert_eq!(seqs_now(&mut rx), vec![7]);
        assert_eq!(hub.holding.load(Ordering::Relaxed), 0, "nothing is held");
    }

    #[test]
    fn holding_is_bounded() {
        let hub = LocalHub::new(8192);
        let mut rx = hub.subscribe("a");
        hub.publish(delivery("a", 1));
        for seq in 3..3 + MAX_HELD as i64 {
            hub.publish(delivery("a", seq));
        }
        assert_eq!(seqs_now(&mut rx), vec![1]);
        hub.publish(delivery("a", 3 + MAX_HELD as i64));
        let released = seqs_now(&mut rx);
        assert_eq!(released.len(), MAX_HELD + 1);
        assert_eq!(released.first(), Some(&3));
    }

    #[test]
    fn rings_without_listeners_are_freed() {
        let hub = LocalHub::new(4);
        let rx = hub.subscribe("a");
        let _keep = hub.subscribe("b");
        assert_eq!(hub.channel_count(), 2);
        drop(rx);
        hub.sweep();
        assert_eq!(hub.channel_count(), 1);
        // Publishing to a channel whose listeners left also frees it.
        let rx = hub.subscribe("c");
        drop(rx);
        hub.publish(delivery("c", 1));
        assert_eq!(hub.channel_count(), 1);
    }
}
