//! Frames for a channel's events, and the two ways they reach sockets: stored events (with a
//! seq) on the channel's topic, and passing ones (typing, receipts, presence, a user's
//! channel list changing) without a seq, on a channel's or a user's topic.

use std::sync::Arc;
use std::time::Instant;

use unhidra_proto::channels::ChannelSummary;
use unhidra_proto::ws::ServerFrame;
use unhidra_store::{ChannelEvent, Membership};

use super::{frame_text, wire};
use crate::gateway::hub::{Delivery, USER_TOPIC_PREFIX};
use crate::state::AppState;

/// The hub topic of one user's connections (a channel's topic is its id).
pub fn user_topic(user_id: &str) -> String {
    format!("{USER_TOPIC_PREFIX}{user_id}")
}

/// The frame that tells a client about a timeline entry.
pub fn event_frame(channel: &str, event: ChannelEvent) -> ServerFrame {
    let channel = channel.to_owned();
    match event {
        ChannelEvent::Message(message) => ServerFrame::Message(wire(message)),
        ChannelEvent::MessageEdited { seq, message } => ServerFrame::MessageEdited {
            channel,
            seq,
            message: wire(message),
        },
        ChannelEvent::MessageDeleted {
            seq,
            message_id,
            actor_id,
            at,
        } => ServerFrame::MessageDeleted {
            channel,
            seq,
            id: message_id,
            by: actor_id,
            ts: at,
        },
        ChannelEvent::Reaction {
            seq,
            message_id,
            user_id,
            emoji,
            added,
            at,
        } => {
            if added {
                ServerFrame::ReactionAdded {
                    channel,
                    seq,
                    id: message_id,
                    user: user_id,
                    emoji,
                    ts: at,
                }
            } else {
                ServerFrame::ReactionRemoved {
                    channel,
                    seq,
                    id: message_id,
                    user: user_id,
                    emoji,
                    ts: at,
                }
            }
        }
        ChannelEvent::Member {
            seq,
            user_id,
            actor_id,
            joined,
            at,
        } => {
            if joined {
                ServerFrame::MemberJoined {
                    channel,
                    seq,
                    user: user_id,
                    by: actor_id,
                    ts: at,
                }
            } else {
                ServerFrame::MemberLeft {
                    channel,
                    seq,
                    user: user_id,
                    by: actor_id,
                    ts: at,
                }
            }
        }
        ChannelEvent::ChannelUpdated {
            seq,
            channel: current,
            actor_id,
        } => ServerFrame::ChannelUpdated {
            channel,
            seq,
            name: current.name,
            archived: current.archived_at.is_some(),
            by: actor_id,
        },
    }
}

/// Fans out a stored event (it has its seq) to the channel's subscribers.
pub fn publish_stored(state: &AppState, channel: &str, seq: i64, frame: &ServerFrame) {
    state.gateway.hub.publish(Arc::new(Delivery {
        channel: channel.to_owned(),
        seq,
        frame: frame_text(frame),
        received_at: Instant::now(),
    }));
}

/// Hands a passing frame (no seq, never replayed) to whoever listens on `topic` now.
pub fn publish_passing(state: &AppState, topic: &str, frame: &ServerFrame) {
    state.gateway.hub.publish(Arc::new(Delivery {
        channel: topic.to_owned(),
        seq: 0,
        frame: frame_text(frame),
        received_at: Instant::now(),
    }));
}

/// The channel as `membership`'s user sees it in their list.
pub fn summary(m: Membership) -> ChannelSummary {
    ChannelSummary {
        unread: m.unread,
        mentions: m.mentions,
        id: m.channel.id,
        name: m.channel.name,
        private: m.channel.private,
        role: m.role.as_str().to_owned(),
        last_seq: m.channel.last_seq,
        last_read_seq: m.last_read_seq,
        archived: m.channel.archived_at.is_some(),
        direct: m.channel.direct,
    }
}

/// Tells the user's connections that they are now in `channel_id` (so they subscribe).
pub async fn announce_channel_added(state: &AppState, user_id: &str, channel_id: &str) {
    match state.store.memberships_of(user_id).await {
        Ok(memberships) => {
            if let Some(m) = memberships.into_iter().find(|m| m.channel.id == channel_id) {
                let frame = ServerFrame::ChannelAdded {
                    channel: summary(m),
                };
                publish_passing(state, &user_topic(user_id), &frame);
            }
        }
        // The channel list over REST still shows it; a socket event is a convenience.
        Err(err) => tracing::warn!(error = %err, "could not announce a new channel"),
    }
}

/// Tells the user's connections that they are no longer in `channel_id`.
pub fn announce_channel_removed(state: &AppState, user_id: &str, channel_id: &str) {
    let frame = ServerFrame::ChannelRemoved {
        channel: channel_id.to_owned(),
    };
    publish_passing(state, &user_topic(user_id), &frame);
}

/// Tells everyone who shares a channel with the user (the user's other connections too)
/// the user's presence as it is when the frames go out, so that announcements racing each
/// other still end on the latest status.
pub async fn announce_presence(state: &AppState, user_id: &str) {
    let peers = match state.store.channel_peers(user_id).await {
        Ok(peers) => peers,
        Err(err) => {
            tracing::warn!(error = %err, "could not announce a presence change");
            return;
        }
    };
    let frame = ServerFrame::Presence {
        user: user_id.to_owned(),
        status: state.gateway.presence.status(user_id),
    };
    let text = frame_text(&frame);
    for peer in peers {
        state.gateway.hub.publish(Arc::new(Delivery {
            channel: user_topic(&peer),
            seq: 0,
            frame: text.clone(),
            received_at: Instant::now(),
        }));
    }
}
