//! Every live WebSocket connection: who, from where, since when, how busy; and a way to
//! close any of them from the server side (revocation, logout, administrators).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use dashmap::DashMap;
use futures::task::AtomicWaker;
use time::OffsetDateTime;
use unhidra_proto::ws::Principal;

/// Control messages a connection may have waiting; one more makes it close and resync.
const CONTROL_CAPACITY: usize = 16;

/// Why the server closes a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

/// What the server tells a live session to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the connection.
    Close(Kick),
    /// Stop delivering this channel (the user left or was removed).
    Unsubscribe { channel: String },
}

/// A live connection's entry.
#[derive(Debug)]
pub struct Connection {
    pub id: String,
    pub principal: Principal,
    /// For users: the login session the access token belonged to.
    pub session_id: Option<String>,
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    pub connected_at: OffsetDateTime,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    controls: ControlQueue,
    /// Set when a control message could not be queued: the session closes and the client
    /// resyncs, rather than miss a change.
    pub must_resync: std::sync::atomic::AtomicBool,
    /// Set as soon as the server asks the connection to close, before its session has
    /// acted on it: whoever takes messages for it can refuse them from that moment.
    pub closing: std::sync::atomic::AtomicBool,
}

impl Connection {
    pub fn count_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_out(&self, n: u64) {
        self.frames_out.fetch_add(n, Ordering::Relaxed);
    }
}

/// A connection's waiting control messages, at most [`CONTROL_CAPACITY`]. Nothing is
/// allocated until one is sent: most connections never get one, and a tokio mpsc channel
/// would allocate a block of 32 slots (about 1 KiB) for each of them up front.
#[derive(Debug, Default)]
struct ControlQueue {
    waiting: Mutex<VecDeque<Control>>,
    /// Whether `waiting` holds anything: the session looks here every turn, not at the lock.
    queued: AtomicBool,
    /// The session's task, woken when a message is queued.
    session: AtomicWaker,
}

impl ControlQueue {
    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Control>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `control`, or gives it back when the queue is full.
    fn try_send(&self, control: Control) -> Result<(), Control> {
        let mut waiting = self.waiting();
        if waiting.len() >= CONTROL_CAPACITY {
            return Err(control);
        }
        waiting.push_back(control);
        self.queued.store(true, Ordering::Release);
        drop(waiting);
        self.session.wake();
        Ok(())
    }
}

/// The session's end of its connection's control messages.
#[derive(Debug)]
pub struct Controls {
    connection: Arc<Connection>,
}

impl Controls {
    /// The next control message, in the order they were sent. Cancel-safe: a message is
    /// taken only when this returns it.
    pub async fn recv(&mut self) -> Control {
        std::future::poll_fn(|cx| {
            if let Some(control) = self.try_recv() {
                return Poll::Ready(control);
            }
            // Registered before looking again, so a message queued in between is not missed.
            self.connection.controls.session.register(cx.waker());
            match self.try_recv() {
                Some(control) => Poll::Ready(control),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next control message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Control> {
        let queue = &self.connection.controls;
        if !queue.queued.load(Ordering::Acquire) {
            return None;
        }
        let mut waiting = queue.waiting();
        let control = waiting.pop_front();
        queue.queued.store(!waiting.is_empty(), Ordering::Release);
        control
    }
}

/// What registering a connection gives its session.
pub struct Registration {
    pub connection: Arc<Connection>,
    pub controls: Controls,
}

#[derive(Default)]
pub struct Registry {
    connections: DashMap<String, Arc<Connection>>,
}

/// The fields of a new entry.
pub struct NewConnection {
    pub principal: Principal,
    pub session_id: Option<String>,
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    pub connected_at: OffsetDateTime,
}

impl Registry {
    pub fn register(&self, new: NewConnection) -> Registration {
        let connection = Arc::new(Connection {
            id: uuid::Uuid::now_v7().to_string(),
            principal: new.principal,
            session_id: new.session_id,
            ip: new.ip,
            user_agent: new.user_agent,
            connected_at: new.connected_at,
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            controls: ControlQueue::default(),
            must_resync: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        self.connections
            .insert(connection.id.clone(), Arc::clone(&connection));
        Registration {
            controls: Controls {
                connection: Arc::clone(&connection),
            },
            connection,
        }
    }

    pub fn unregister(&self, id: &str) {
        self.connections.remove(id);
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// A snapshot of every live connection.
    pub fn list(&self) -> Vec<Arc<Connection>> {
        self.connections
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// Sends `control` to every connection matching `which`; returns how many were told.
    fn tell_where(&self, which: impl Fn(&Connection) -> bool, control: Control) -> usize {
        let mut told = 0;
        for entry in self.connections.iter() {
            let connection = entry.value();
            if which(connection) {
                if matches!(control, Control::Close(_)) {
                    connection
                        .closing
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if connection.controls.try_send(control.clone()).is_err() {
                    // Its queue is full (or it is ending): it closes and resyncs instead.
                    connection
                        .must_resync
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                told += 1;
            }
        }
        told
    }

    /// Asks every connection matching `which` to close; returns how many were asked.
    pub fn close_where(&self, which: impl Fn(&Connection) -> bool, kick: Kick) -> usize {
        self.tell_where(which, Control::Close(kick))
    }

    /// Stops deliveries of `channel` to every connection of `user_id`.
    pub fn unsubscribe_user(&self, user_id: &str, channel: &str) -> usize {
        self.tell_where(
            |c| matches!(&c.principal, Principal::User { id } if id == user_id),
            Control::Unsubscribe {
                channel: channel.to_owned(),
            },
        )
    }

    pub fn close_connection(&self, id: &str, kick: Kick) -> bool {
        self.close_where(|c| c.id == id, kick) > 0
    }

    pub fn close_device(&self, device_id: &str, kick: Kick) -> usize {
        self.close_where(
            |c| matches!(&c.principal, Principal::Device { id } if id == device_id),
            kick,
        )
    }

    pub fn close_user(&self, user_id: &str, kick: Kick) -> usize {
        self.close_where(
            |c| matches!(&c.principal, Principal::User { id } if id == user_id),
            kick,
        )
    }

    pub fn close_session(&self, session_id: &str, kick: Kick) -> usize {
        self.close_where(|c| c.session_id.as_deref() == Some(session_id), kick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(principal: Principal, session: Option<&str>) -> NewConnection {
        NewConnection {
            principal,
            session_id: session.map(str::to_owned),
            ip: "127.0.0.1".parse().unwrap(),
            user_agent: None,
            connected_at: OffsetDateTime::now_utc(),
        }
    }

    #[tokio::test]
    async fn closes_reach_exactly_the_matching_connections() {
        let registry = Registry::default();
        let mut dev = registry.register(new(Principal::Device { id: "d1".into() }, None));
        let mut u1 = registry.register(new(Principal::User { id: "u1".into() }, Some("s1")));
        let mut u1b = registry.register(new(Principal::User { id: "u1".into() }, Some("s2")));
        let kick = Kick {
            code: 1008,
            reason: "revoked",
        };
        assert_eq!(registry.close_device("d1", kick.clone()), 1);
        assert_eq!(dev.controls.recv().await, Control::Close(kick.clone()));
        assert_eq!(registry.close_session("s2", kick.clone()), 1);
        assert!(u1b.controls.try_recv().is_some());
        assert!(u1.controls.try_recv().is_none());
        assert_eq!(registry.close_user("u1", kick.clone()), 2);
        assert!(u1.controls.try_recv().is_some());
        assert_eq!(registry.unsubscribe_user("u1", "c1"), 2);
        assert_eq!(
            u1.controls.try_recv().unwrap(),
            Control::Unsubscribe {
                channel: "c1".into()
            }
        );
        assert_eq!(registry.len(), 3);
        registry.unregister(&dev.connection.id);
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn a_full_control_queue_forces_a_resync_instead_of_losing_a_change() {
        let registry = Registry::default();
        let user = registry.register(new(Principal::User { id: "u".into() }, None));
        for _ in 0..16 {
            registry.unsubscribe_user("u", "c");
        }
        assert!(!user
            .connection
            .must_resync
            .load(std::sync::atomic::Ordering::Relaxed));
        registry.unsubscribe_user("u", "c");
        assert!(user
            .connection
            .must_resync
            .load(std::sync::atomic::Ordering::Relaxed));
    }
}
