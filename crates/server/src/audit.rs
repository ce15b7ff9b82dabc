//! The audit trail: security events go to the append-only audit table and to the log
//! (target `unhidra::audit`). Entries name who, what and from where, never a secret.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use unhidra_store::{NewAuditEvent, Store, StoreError};

use crate::clock::Clock;

/// Stable event kinds; dashboards and alerts match on them.
pub mod kind {
    pub const REGISTER: &str = "auth.register";
    pub const LOGIN_OK: &str = "auth.login.ok";
    pub const LOGIN_FAILED: &str = "auth.login.failed";
    pub const REFRESH_REUSE: &str = "auth.refresh.reuse";
    pub const LOGOUT: &str = "auth.logout";
    pub const LOGOUT_ALL: &str = "auth.logout_all";
    pub const DEVICE_REGISTERED: &str = "device.registered";
    pub const DEVICE_REVOKED: &str = "device.revoked";
    pub const ADMIN_USER_CREATED: &str = "admin.user_created";
    pub const ADMIN_KEY_ROTATED: &str = "admin.signing_key_rotated";
    pub const ADMIN_KEY_RETIRED: &str = "admin.signing_key_retired";
    pub const ADMIN_CONNECTION_CLOSED: &str = "admin.connection_closed";
    /// A moderator deleted someone else's message.
    pub const MESSAGE_MODERATED: &str = "chat.message_deleted_by_moderator";
    pub const MESSAGE_RELEASED: &str = "chat.held_message_released";
    pub const MESSAGE_REJECTED: &str = "chat.held_message_rejected";
}

/// One event to record.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub kind: &'a str,
    pub actor: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub detail: Value,
}

pub struct Audit {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Records the event; a failure to record is an error (security events are not lost
    /// silently).
    pub async fn record(&self, event: Event<'_>) -> Result<(), StoreError> {
        record(&*self.store, &*self.clock, event).await
    }
}

/// Records an event through any store (the CLI uses this without a running server).
pub async fn record(
    store: &dyn Store,
    clock: &dyn Clock,
    event: Event<'_>,
) -> Result<(), StoreError> {
    let ip = event.ip.map(|ip| ip.to_string());
    tracing::info!(
        target: "unhidra::audit",
        kind = event.kind,
        actor = event.actor,
        subject = event.subject,
        ip = ip.as_deref(),
        detail = %event.detail,
        "audit"
    );
    store
        .append_audit(NewAuditEvent {
            at: clock.now(),
            kind: event.kind.to_owned(),
            actor: event.actor.map(str::to_owned),
            subject: event.subject.map(str::to_owned),
            ip,
            detail: if event.detail.is_null() {
                Value::Object(Default::default())
            } else {
                event.detail
            },
        })
        .await
}
