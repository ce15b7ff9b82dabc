//! A device's events in its linked channel: coming online, going offline and command
//! results become messages from the device, stored and fanned out like anyone's.

use unhidra_proto::ws::ServerFrame;
use unhidra_store::NewMessage;

use crate::chat::events::publish_stored;
use crate::chat::wire;
use crate::state::AppState;

/// Posts `body` as a message from the device in its linked channel, if it has one that is
/// not archived. Failures are logged: an event message is a courtesy, never a reason to
/// refuse what caused it.
pub async fn post(state: &AppState, device_id: &str, body: String) {
    let device = match state.store.device_by_id(device_id).await {
        Ok(Some(device)) => device,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(error = %err, "reading a device for its event failed");
            return;
        }
    };
    let Some(channel_id) = device.channel_id else {
        tracing::debug!(device = device_id, "no linked channel; event not posted");
        return;
    };
    match state.store.channel_by_id(&channel_id).await {
        Ok(Some(channel)) if channel.archived_at.is_none() => {}
        Ok(_) => {
            tracing::debug!(
                device = device_id,
                "linked channel archived or gone; event not posted"
            );
            return;
        }
        Err(err) => {
            tracing::warn!(error = %err, "reading a device's channel failed");
            return;
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    let appended = state
        .store
        .append_message(NewMessage {
            client_msg_id: format!("device-event-{id}"),
            id,
            channel_id: channel_id.clone(),
            sender_id: device.id,
            body,
            created_at: state.clock.now(),
            thread_root_id: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
            flag_reasons: Vec::new(),
        })
        .await;
    tracing::debug!(
        device = device_id,
        ok = appended.is_ok(),
        "device event posted"
    );
    match appended {
        Ok(appended) => {
            let seq = appended.message.seq;
            let frame = ServerFrame::Message(wire(appended.message));
            publish_stored(state, &channel_id, seq, &frame);
        }
        Err(err) => tracing::warn!(error = %err, "posting a device event failed"),
    }
}

/// Posts the event without holding up the caller.
pub fn spawn_post(state: &crate::state::SharedState, device_id: &str, body: String) {
    let (state, device_id) = (state.clone(), device_id.to_owned());
    tokio::spawn(async move { post(&state, &device_id, body).await });
}
