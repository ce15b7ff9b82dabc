// The client's state: who is signed in, the channels, the messages held per channel, and
// what is known about people (names, presence, who is typing, how far they have read).
//
// Messages are keyed by seq, so whatever delivers one (history page, replay, live frame,
// ack) it is held once; channel events (edits, deletions, reactions, membership, renames)
// change what is held. `streamSeq` is the last seq the WebSocket stream processed in a
// channel, messages and events alike: it is what a resubscription asks to resume after.
// Views listen for changes:
//   "channels"  the list, names, unread and mention counts
//   "active"    another channel was opened
//   "messages"  {channelId, added, changed}: seqs held or changed in a channel (and pending)
//   "members"   {channelId}: a channel's member list or someone's read position
//   "people"    names or presence became known or changed
//   "typing"    {channelId}
//   "devices"   {deviceId}: the user's devices (the list, or one device's state) changed
//   "commands"  {deviceId}: a command sent to a device was stored or answered
//   "reset"     signed out: forget everything, drafts included
//
// Messages are not only from people: a device linked to a channel posts its events there
// with its own id as the sender. `userName` names senders of either kind.

/** How long a `typing` frame keeps "… is typing" on screen. */
export const TYPING_SHOWN_MS = 5_000;

/** The name shown for a sender that is neither a person nor a device the user may see. */
export const UNKNOWN_SENDER = "unknown sender";

export class Store extends EventTarget {
  me = null; // {user_id, username}
  channels = new Map(); // id → Channel
  activeId = null;
  pending = new Map(); // client_msg_id → {channel, body, clientMsgId, threadRoot, files, state, failed}
  users = new Map(); // user id → username
  presence = new Map(); // user id → "online" | "away" | "offline"
  typing = new Map(); // channel id → Map(user id → expiry, ms since epoch)
  devices = new Map(); // device id → the user's device as the API gives it, state kept live
  deviceNames = new Map(); // device id → name, for devices of others' that the user may see
  unknownSenders = new Set(); // ids that are neither a user nor a device the user may see
  commands = new Map(); // command id → {id, device_id, name, args, status, ok, output, …}

  /**
   * `fetchUser(id)` resolves to `{user_id, username}`; it is asked once per unknown id.
   * `fetchDevice(id)` resolves to a device; it is asked when `fetchUser` answers 404.
   */
  constructor({ fetchUser = null, fetchDevice = null } = {}) {
    super();
    this.fetchUser = fetchUser;
    this.fetchDevice = fetchDevice;
    this.asked = new Set();
  }

  reset() {
    this.me = null;
    this.channels.clear();
    this.activeId = null;
    this.pending.clear();
    this.users.clear();
    this.presence.clear();
    this.typing.clear();
    this.devices.clear();
    this.deviceNames.clear();
    this.unknownSenders.clear();
    this.commands.clear();
    this.asked.clear();
    this.#emit("reset");
    this.#emit("channels");
  }

  get active() {
    return this.activeId ? this.channels.get(this.activeId) ?? null : null;
  }

  // ---- Channels ----

  /** Merges the server's channel list; returns the channels that are new to the client. */
  setChannels(list) {
    const added = [];
    const seen = new Set();
    for (const summary of list) {
      seen.add(summary.id);
      if (this.#merge(summary)) added.push(this.channels.get(summary.id));
    }
    for (const id of [...this.channels.keys()]) {
      if (!seen.has(id)) this.channels.delete(id); // no longer a member
    }
    if (this.activeId && !this.channels.has(this.activeId)) this.activeId = null;
    this.#emit("channels");
    return added;
  }

  /** A channel the user just joined (`channel_added`); true when it is new to the client. */
  addChannel(summary) {
    const added = this.#merge(summary);
    this.#emit("channels");
    return added;
  }

  /** The user is no longer in this channel (`channel_removed`). */
  removeChannel(channelId) {
    if (!this.channels.delete(channelId)) return false;
    this.typing.delete(channelId);
    for (const [id, p] of this.pending) if (p.channel === channelId) this.pending.delete(id);
    if (this.activeId === channelId) {
      this.activeId = null;
      this.#emit("active");
    }
    this.#emit("channels");
    return true;
  }

  #merge(c) {
    let channel = this.channels.get(c.id);
    const isNew = !channel;
    if (isNew) {
      channel = {
        id: c.id,
        messages: new Map(), // seq → message
        seqOf: new Map(), // message id → seq
        historyLoaded: false,
        hasOlder: true,
        // The timeline holds every message from this seq on; older ones held (a thread
        // opened from search) are not shown in it until history reaches them.
        oldestSeq: Infinity,
        streamSeq: c.last_seq,
        lastSeq: c.last_seq,
        lastReadSeq: 0,
        countedSeq: c.last_seq, // unread/mentions count the messages up to this seq
        members: null, // user id → {user_id, username, role, last_read_seq}, once loaded
      };
      this.channels.set(c.id, channel);
    }
    channel.name = c.name;
    channel.private = c.private;
    channel.direct = c.direct;
    channel.role = c.role;
    channel.archived = c.archived;
    channel.lastSeq = Math.max(channel.lastSeq, c.last_seq);
    channel.lastReadSeq = Math.max(channel.lastReadSeq, c.last_read_seq);
    // The server's counts, unless live messages were counted past what this list saw.
    if (isNew || c.last_seq >= channel.countedSeq) {
      const reading = c.id === this.activeId;
      channel.unread = reading ? 0 : c.unread;
      channel.mentions = reading ? 0 : c.mentions;
      channel.countedSeq = c.last_seq;
    }
    return isNew;
  }

  /** Channels by name, then direct conversations by who is in them. */
  sortedChannels() {
    const name = (c) => this.channelName(c);
    return [...this.channels.values()].sort((a, b) =>
      Number(a.direct) - Number(b.direct) || name(a).localeCompare(name(b)));
  }

  /** A channel's name; a direct conversation is named by the others in it. */
  channelName(channel) {
    if (!channel.direct) return channel.name;
    const others = this.dmPartners(channel);
    if (others === null) return "direct message";
    if (others.length === 0) return this.me?.username ?? "you";
    return others.map((id) => this.userName(id)).join(", ");
  }

  /** The other people in a direct conversation (null until its members are loaded). */
  dmPartners(channel) {
    if (!channel.members) return null;
    return [...channel.members.keys()].filter((id) => id !== this.me?.user_id);
  }

  setChannelState(channelId, { name, archived }) {
    const channel = this.channels.get(channelId);
    if (!channel) return;
    channel.name = name;
    channel.archived = archived;
    this.#emit("channels");
    if (channelId === this.activeId) this.#emit("active");
  }

  setActive(channelId) {
    this.activeId = channelId;
    const channel = this.active;
    if (channel) {
      channel.unread = 0;
      channel.mentions = 0;
    }
    this.#emit("active");
    this.#emit("channels");
  }

  // ---- Messages ----

  /**
   * Adds messages (any source, any order); returns those that were new. `live`: they came
   * from the stream, so they are the server's current state (replacing what is held) and
   * count as unread unless the channel is being read.
   */
  addMessages(channelId, messages, { live = false, reading = false } = {}) {
    const channel = this.channels.get(channelId);
    if (!channel) return [];
    const added = [];
    const changed = [];
    for (const m of messages) {
      const held = channel.messages.get(m.seq);
      if (held && !live) continue;
      channel.messages.set(m.seq, held ? { ...m, reply_count: Math.max(m.reply_count ?? 0, held.reply_count ?? 0) } : m);
      channel.seqOf.set(m.id, m.seq);
      if (m.client_msg_id) this.pending.delete(m.client_msg_id); // the sender's own came back
      channel.lastSeq = Math.max(channel.lastSeq, m.seq);
      if (held) {
        changed.push(m.seq);
        continue;
      }
      added.push(m);
      if (m.thread_root) {
        const rootSeq = this.#countReply(channel, m);
        if (rootSeq !== undefined) changed.push(rootSeq);
      }
      if (live && m.sender !== this.me?.user_id) {
        this.#stopTyping(channelId, m.sender);
        const seen = reading && channelId === this.activeId;
        if (!seen && !m.deleted && m.seq > channel.lastReadSeq && m.seq > channel.countedSeq) {
          channel.unread += 1;
          if (this.mentionsMe(m.body)) channel.mentions += 1;
        }
        channel.countedSeq = Math.max(channel.countedSeq, m.seq);
      }
    }
    if (added.length || changed.length) this.#emit("messages", { channelId, added, changed });
    if (live && added.length) this.#emit("channels");
    return added;
  }

  /** Adds a page of history (`{messages, has_more}`), which extends the timeline back. */
  addHistory(channelId, page) {
    const channel = this.channels.get(channelId);
    if (!channel) return;
    channel.historyLoaded = true;
    channel.hasOlder = page.has_more;
    const seqs = page.messages.map((m) => m.seq);
    channel.oldestSeq = Math.min(channel.oldestSeq, ...seqs, page.has_more ? Infinity : 0);
    this.addMessages(channelId, page.messages);
  }

  /** Keeps a thread root's reply count in line with the replies held; the root's seq. */
  #countReply(channel, reply) {
    const rootSeq = channel.seqOf.get(reply.thread_root);
    const root = rootSeq === undefined ? null : channel.messages.get(rootSeq);
    if (!root) return undefined;
    const held = this.repliesTo(channel.id, root.id).length;
    channel.messages.set(rootSeq, {
      ...root,
      reply_count: Math.max(root.reply_count ?? 0, held),
      last_reply_at: !root.last_reply_at || reply.ts > root.last_reply_at ? reply.ts : root.last_reply_at,
    });
    return rootSeq;
  }

  /** The message with this id, if held. */
  messageById(channelId, messageId) {
    const channel = this.channels.get(channelId);
    const seq = channel?.seqOf.get(messageId);
    return seq === undefined ? null : channel.messages.get(seq) ?? null;
  }

  /** Asks views to draw a held message again (its local state, such as editing, changed). */
  touch(channelId, seq) {
    this.#emit("messages", { channelId, added: [], changed: [seq] });
  }

  /** The held replies of a thread, oldest first. */
  repliesTo(channelId, rootId) {
    const channel = this.channels.get(channelId);
    if (!channel) return [];
    return [...channel.messages.values()]
      .filter((m) => m.thread_root === rootId)
      .sort((a, b) => a.seq - b.seq);
  }

  /** Changes a held message (an edit, a deletion, a reaction): `change(message)` → new one. */
  #updateMessage(channelId, messageId, change) {
    const channel = this.channels.get(channelId);
    const seq = channel?.seqOf.get(messageId);
    const held = seq === undefined ? null : channel.messages.get(seq);
    if (!held) return; // not loaded: history will bring it in its current state
    channel.messages.set(seq, change(held));
    this.#emit("messages", { channelId, added: [], changed: [seq] });
  }

  /**
   * Applies a channel event frame (it has a seq: docs/protocol.md). Every one advances the
   * stream, whether or not it changes anything held.
   */
  applyEvent(frame) {
    const channelId = frame.channel;
    const channel = this.channels.get(channelId);
    if (!channel) return;
    channel.lastSeq = Math.max(channel.lastSeq, frame.seq);
    switch (frame.type) {
      case "message_edited":
        this.#updateMessage(channelId, frame.message.id, (held) => ({
          ...frame.message,
          reply_count: Math.max(frame.message.reply_count ?? 0, held.reply_count ?? 0),
        }));
        break;
      case "message_deleted":
        this.#updateMessage(channelId, frame.id, (held) => ({
          ...held, deleted: true, body: "", reactions: [], attachments: undefined,
        }));
        break;
      case "reaction_added":
      case "reaction_removed":
        this.#updateMessage(channelId, frame.id, (held) => ({
          ...held,
          reactions: toggled(held.reactions ?? [], frame.emoji, frame.user, frame.type === "reaction_added"),
        }));
        break;
      case "member_joined":
        if (channel.members && !channel.members.has(frame.user)) {
          channel.members.set(frame.user, {
            user_id: frame.user, username: this.userName(frame.user), role: "member", last_read_seq: 0,
          });
        }
        this.#emit("members", { channelId });
        break;
      case "member_left":
        channel.members?.delete(frame.user);
        this.#emit("members", { channelId });
        break;
      case "channel_updated":
        this.setChannelState(channelId, frame);
        break;
      default:
        break;
    }
    this.advanceStream(channelId, frame.seq);
  }

  /** The stream has processed everything up to `seq` in this channel. */
  advanceStream(channelId, seq) {
    const channel = this.channels.get(channelId);
    if (channel && seq > channel.streamSeq) channel.streamSeq = seq;
  }

  markRead(channelId, seq) {
    const channel = this.channels.get(channelId);
    if (!channel) return false;
    const changed = channel.unread !== 0 || channel.mentions !== 0 || seq > channel.lastReadSeq;
    channel.lastReadSeq = Math.max(channel.lastReadSeq, seq);
    channel.unread = 0;
    channel.mentions = 0;
    if (changed) this.#emit("channels");
    return changed;
  }

  /** Whether a body mentions the signed-in user (`@name` at the start of a word). */
  mentionsMe(body) {
    const name = this.me?.username;
    if (!name || !body) return false;
    const escaped = name.replace(/[.\-]/g, "\\$&");
    return new RegExp(`(^|[^a-z0-9._-])@${escaped}(?![a-z0-9._-])`, "i").test(body);
  }

  // ---- Messages being sent ----

  /** A message on its way: files upload first (`state` "uploading"), then it is published. */
  addPending(channelId, { body, clientMsgId, threadRoot = null, files = [] }) {
    this.pending.set(clientMsgId, {
      channel: channelId, body, clientMsgId, threadRoot, files, attachments: [],
      state: files.length ? "uploading" : "sending", failed: null,
    });
    this.#emit("messages", { channelId, added: [], changed: [] });
  }

  updatePending(clientMsgId, patch) {
    const p = this.pending.get(clientMsgId);
    if (!p) return;
    Object.assign(p, patch);
    this.#emit("messages", { channelId: p.channel, added: [], changed: [] });
  }

  /** Forgets a message that could not be sent (the user dismissed it). */
  dropPending(clientMsgId) {
    const p = this.pending.get(clientMsgId);
    if (!p) return;
    this.pending.delete(clientMsgId);
    this.#emit("messages", { channelId: p.channel, added: [], changed: [] });
  }

  failPending(clientMsgId, reason) {
    this.updatePending(clientMsgId, { state: "failed", failed: reason });
  }

  /** The pending messages of a channel's timeline (`threadRoot` null) or of one thread. */
  pendingIn(channelId, threadRoot = null) {
    return [...this.pending.values()].filter((p) => p.channel === channelId && p.threadRoot === threadRoot);
  }

  // ---- People ----

  /**
   * A sender's name: a user's, or a device's; unknown ones are looked up (a "people" event
   * follows), and "…" stands in until then.
   */
  userName(userId) {
    if (this.me && userId === this.me.user_id) return this.me.username;
    const name = this.users.get(userId) ?? this.deviceName(userId);
    if (name) return name;
    if (this.unknownSenders.has(userId)) return UNKNOWN_SENDER;
    this.#lookUp(userId);
    return "…";
  }

  /** The name of a device the user may see (theirs, or one looked up), else null. */
  deviceName(id) {
    return this.devices.get(id)?.name ?? this.deviceNames.get(id) ?? null;
  }

  /** Whether the id is a device's (as far as the user may know). */
  isDevice(id) {
    return this.devices.has(id) || this.deviceNames.has(id);
  }

  /** Asks who `id` is: a user, else a device; ids that are neither are not asked again. */
  #lookUp(id) {
    if (!this.fetchUser || this.asked.has(id)) return;
    this.asked.add(id);
    const gaveUp = (err) => {
      if (err?.status === 404) {
        this.unknownSenders.add(id);
        this.#emit("people");
      } else {
        this.asked.delete(id); // a network error: asked again at the next drawing
      }
    };
    this.fetchUser(id)
      .then((u) => this.setUsers([u]))
      .catch((err) => {
        if (err?.status !== 404 || !this.fetchDevice) return gaveUp(err);
        // Not a person: a device posting its events, if it is one the user may see.
        return this.fetchDevice(id).then((device) => {
          this.deviceNames.set(id, device.name);
          this.#emit("people");
        }, gaveUp);
      });
  }

  setUsers(users) {
    let changed = false;
    for (const u of users) {
      if (this.users.get(u.user_id) !== u.username) {
        this.users.set(u.user_id, u.username);
        changed = true;
      }
    }
    if (changed) this.#emit("people");
  }

  /** Names of the devices linked to a channel, which post their events there. */
  setChannelDevices(devices) {
    let changed = false;
    for (const d of devices) {
      if (this.deviceNames.get(d.device_id) !== d.name) {
        this.deviceNames.set(d.device_id, d.name);
        this.unknownSenders.delete(d.device_id);
        changed = true;
      }
    }
    if (changed) this.#emit("people");
  }

  setMembers(channelId, members) {
    const channel = this.channels.get(channelId);
    if (!channel) return;
    channel.members = new Map(members.map((m) => [m.user_id, { ...m }]));
    this.setUsers(members);
    for (const m of members) this.presence.set(m.user_id, m.presence);
    this.#emit("members", { channelId });
    this.#emit("people");
    if (channel.direct) this.#emit("channels");
  }

  setPresence(userId, status) {
    if (this.presence.get(userId) === status) return;
    this.presence.set(userId, status);
    this.#emit("people");
  }

  /** A member read the channel up to `seq` (a `receipt` frame). */
  setReadPosition(channelId, userId, seq) {
    const member = this.channels.get(channelId)?.members?.get(userId);
    if (!member || seq <= member.last_read_seq) return;
    member.last_read_seq = seq;
    this.#emit("members", { channelId });
  }

  // ---- Devices ----

  /** The user's devices from the server (`GET /api/v1/devices`). */
  setDevices(list) {
    this.devices = new Map(list.map((d) => [d.device_id, d]));
    for (const d of list) this.unknownSenders.delete(d.device_id);
    this.#emit("devices", { deviceId: null });
    this.#emit("people");
  }

  /** One device, new or changed (registered, linked, revoked, or read again). */
  putDevice(device) {
    const held = this.devices.get(device.device_id);
    this.devices.set(device.device_id, device);
    this.unknownSenders.delete(device.device_id);
    this.#emit("devices", { deviceId: device.device_id });
    if (held?.name !== device.name) this.#emit("people");
  }

  /** A `device_state` frame; false when the device is not known here (yet). */
  setDeviceState(deviceId, state) {
    const held = this.devices.get(deviceId);
    if (!held) return false;
    this.devices.set(deviceId, { ...held, state });
    this.#emit("devices", { deviceId });
    return true;
  }

  /** The user's devices, by name. */
  sortedDevices() {
    return [...this.devices.values()].sort((a, b) => a.name.localeCompare(b.name) || a.created_at.localeCompare(b.created_at));
  }

  /** A command as stored (`POST …/commands`) or read back; an answer held already stays. */
  putCommand(info) {
    const held = this.commands.get(info.id);
    const answered = held?.status === "completed" && info.status !== "completed";
    this.commands.set(info.id, answered ? { ...info, status: held.status, ok: held.ok, output: held.output } : { ...held, ...info });
    this.#emit("commands", { deviceId: info.device_id });
  }

  /** A `command_result` frame (it may come before the sender's request has returned). */
  setCommandResult(frame) {
    const held = this.commands.get(frame.id) ?? { id: frame.id, device_id: frame.device };
    this.commands.set(frame.id, { ...held, status: "completed", ok: frame.ok, output: frame.output });
    this.#emit("commands", { deviceId: frame.device });
  }

  /** The commands sent to a device in this session, oldest first. */
  commandsOf(deviceId) {
    return [...this.commands.values()].filter((c) => c.device_id === deviceId);
  }

  // ---- Typing ----

  setTyping(channelId, userId) {
    if (userId === this.me?.user_id || !this.channels.has(channelId)) return;
    if (!this.typing.has(channelId)) this.typing.set(channelId, new Map());
    this.typing.get(channelId).set(userId, Date.now() + TYPING_SHOWN_MS);
    this.#emit("typing", { channelId });
  }

  #stopTyping(channelId, userId) {
    if (this.typing.get(channelId)?.delete(userId)) this.#emit("typing", { channelId });
  }

  /** Who is typing in a channel now. */
  typingIn(channelId) {
    const now = Date.now();
    const typing = this.typing.get(channelId);
    if (!typing) return [];
    for (const [user, until] of typing) if (until <= now) typing.delete(user);
    return [...typing.keys()];
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Reactions with `user`'s `emoji` added or removed, in first-use order. */
function toggled(reactions, emoji, user, on) {
  const next = reactions.map((r) => ({ emoji: r.emoji, users: [...r.users] }));
  let entry = next.find((r) => r.emoji === emoji);
  if (on) {
    if (!entry) next.push((entry = { emoji, users: [] }));
    if (!entry.users.includes(user)) entry.users.push(user);
  } else if (entry) {
    entry.users = entry.users.filter((u) => u !== user);
  }
  return next.filter((r) => r.users.length > 0);
}
