// The client's state: who is signed in, the channels, and the messages held per channel.
//
// Messages are keyed by seq, so whatever delivers one (history page, replay, live frame,
// ack) it is held once. `streamSeq` is the last seq the WebSocket stream processed in a
// channel; it is what a resubscription asks to resume after. Views listen for changes.

export class Store extends EventTarget {
  me = null; // {user_id, username}
  channels = new Map(); // id → Channel
  activeId = null;
  pending = new Map(); // client_msg_id → {channel, body, clientMsgId, failed}

  reset() {
    this.me = null;
    this.channels.clear();
    this.activeId = null;
    this.pending.clear();
    this.#emit("channels");
  }

  get active() {
    return this.activeId ? this.channels.get(this.activeId) ?? null : null;
  }

  /** Merges the server's channel list; returns the channels that are new to the client. */
  setChannels(list) {
    const added = [];
    const seen = new Set();
    for (const c of list) {
      seen.add(c.id);
      let channel = this.channels.get(c.id);
      if (!channel) {
        channel = {
          id: c.id,
          messages: new Map(),
          historyLoaded: false,
          hasOlder: true,
          streamSeq: c.last_seq,
          lastSeq: c.last_seq,
        };
        this.channels.set(c.id, channel);
        added.push(channel);
      }
      channel.name = c.name;
      channel.private = c.private;
      channel.role = c.role;
      channel.archived = c.archived;
      channel.lastSeq = Math.max(channel.lastSeq, c.last_seq);
      channel.lastReadSeq = Math.max(channel.lastReadSeq ?? 0, c.last_read_seq);
      channel.unread = c.id === this.activeId ? 0 : Math.max(0, channel.lastSeq - channel.lastReadSeq);
    }
    for (const id of [...this.channels.keys()]) {
      if (!seen.has(id)) this.channels.delete(id); // removed from the channel
    }
    if (this.activeId && !this.channels.has(this.activeId)) this.activeId = null;
    this.#emit("channels");
    return added;
  }

  sortedChannels() {
    return [...this.channels.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Adds messages (any source, any order). Returns those that were new. `live`: they came
   * from the stream, so they count as unread unless the channel is being read.
   */
  addMessages(channelId, messages, { live = false, reading = false } = {}) {
    const channel = this.channels.get(channelId);
    if (!channel) return [];
    const added = [];
    for (const m of messages) {
      if (channel.messages.has(m.seq)) continue;
      channel.messages.set(m.seq, m);
      added.push(m);
      if (m.client_msg_id && this.pending.delete(m.client_msg_id)) {
        // The sender's own message came back (ack, replay or history): no longer pending.
      }
      channel.lastSeq = Math.max(channel.lastSeq, m.seq);
      if (live && !(reading && channelId === this.activeId) && m.seq > channel.lastReadSeq) {
        channel.unread += 1;
      }
    }
    if (added.length) this.#emit("messages", { channelId, added });
    if (live && added.length) this.#emit("channels");
    return added;
  }

  /** The stream has processed everything up to `seq` in this channel. */
  advanceStream(channelId, seq) {
    const channel = this.channels.get(channelId);
    if (channel && seq > channel.streamSeq) channel.streamSeq = seq;
  }

  markRead(channelId, seq) {
    const channel = this.channels.get(channelId);
    if (!channel) return false;
    const changed = channel.unread !== 0 || seq > channel.lastReadSeq;
    channel.lastReadSeq = Math.max(channel.lastReadSeq, seq);
    channel.unread = 0;
    if (changed) this.#emit("channels");
    return changed;
  }

  addPending(channelId, body, clientMsgId) {
    this.pending.set(clientMsgId, { channel: channelId, body, clientMsgId, failed: null });
    this.#emit("messages", { channelId, added: [] });
  }

  failPending(clientMsgId, reason) {
    const p = this.pending.get(clientMsgId);
    if (!p) return;
    p.failed = reason;
    this.#emit("messages", { channelId: p.channel, added: [] });
  }

  pendingIn(channelId) {
    return [...this.pending.values()].filter((p) => p.channel === channelId);
  }

  setActive(channelId) {
    this.activeId = channelId;
    this.#emit("active");
    this.#emit("channels");
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** How a sender is shown. The API has no user lookup yet: others appear by a short id. */
export function senderName(store, userId) {
  if (store.me && userId === store.me.user_id) return store.me.username;
  return `user ${userId.slice(-6)}`;
}
