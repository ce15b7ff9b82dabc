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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// The in-process hub.
pub struct LocalHub {
    capacity: usize,
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Delivery>>>>,
}

impl LocalHub {
    /// `capacity`: how many deliveries a subscriber may fall behind before it is cut off.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Arc<Delivery>>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets channels nobody listens to any more.
    pub fn sweep(&self) {
        self.channels().retain(|_, tx| tx.receiver_count() > 0);
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
            Some(tx) => tx.subscribe(),
            None => {
                let personal = channel.starts_with(USER_TOPIC_PREFIX)
                    || channel.starts_with(DEVICE_TOPIC_PREFIX);
                let capacity = if personal {
                    PERSONAL_TOPIC_CAPACITY.min(self.capacity)
                } else {
                    self.capacity
                };
                let (tx, rx) = broadcast::channel(capacity);
                channels.insert(channel.to_owned(), tx);
                rx
            }
        }
    }

    fn publish(&self, delivery: Arc<Delivery>) {
        let mut channels = self.channels();
        if let Some(tx) = channels.get(&delivery.channel) {
            if tx.send(delivery.clone()).is_err() {
                // No receiver is left: the ring is garbage.
                channels.remove(&delivery.channel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(channel: &str, seq: i64) -> Arc<Delivery> {
        Arc::new(Delivery {
            channel: channel.into(),
            seq,
            frame: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
            received_at: Instant::now(),
        })
    }

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
