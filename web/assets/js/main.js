// Entry point: wires the API, the socket, the store and the views, and turns server frames
// (docs/protocol.md) into store changes.

import { Api } from "./api.js";
import { ChatSocket } from "./socket.js";
import { Store } from "./store.js";
import { byId } from "./dom.js";
import { setupAuth, showAuth } from "./views/auth.js";
import { setupAttachments } from "./views/attachments.js";
import { setupChannels, showIdentity } from "./views/channels.js";
import { setupDevices } from "./views/devices.js";
import { setupMembers } from "./views/members.js";
import { setupMessageItems } from "./views/message-item.js";
import { setupMessages } from "./views/messages.js";
import { setupSearch } from "./views/search.js";
import { setupThread } from "./views/thread.js";

/** Without a key press or pointer move for this long, the user is away. */
const IDLE_AFTER_MS = 5 * 60_000;

const api = new Api({ onSessionEnded: () => signOut("Your session has ended. Please log in again.") });
const store = new Store({ fetchUser: (id) => api.user(id), fetchDevice: (id) => api.device(id) });
const socket = new ChatSocket({
  token: async (fresh) => {
    if (fresh) await api.refresh();
    return api.accessToken();
  },
  since: (channelId) => store.channels.get(channelId)?.streamSeq,
  onFrame,
  onState: showConnection,
});
const readInFlight = new Map(); // channel → seq being stored
let wasOnline = false;

function reading() {
  return document.visibilityState === "visible" && byId("search-view").hidden && byId("device-view").hidden;
}

function onFrame(frame) {
  switch (frame.type) {
    case "message": {
      const { type, ...message } = frame;
      store.addMessages(frame.channel, [{ ...message, live: true }], { live: true, reading: reading() });
      store.advanceStream(frame.channel, frame.seq);
      if (reading() && frame.channel === store.activeId) markRead(frame.channel);
      break;
    }
    case "message_edited":
    case "message_deleted":
    case "reaction_added":
    case "reaction_removed":
    case "channel_updated":
      store.applyEvent(frame);
      break;
    case "member_joined":
    case "member_left":
      store.applyEvent(frame);
      // The list from the server has the newcomer's name, role and presence.
      if (frame.channel === store.activeId || store.channels.get(frame.channel)?.direct) loadMembers(frame.channel);
      break;
    case "subscribed":
      store.advanceStream(frame.channel, frame.seq);
      break;
    case "ack": {
      const pending = store.pending.get(frame.client_msg_id);
      if (pending && store.me) {
        store.addMessages(pending.channel, [{
          id: frame.id, channel: pending.channel, seq: frame.seq, sender: store.me.user_id,
          body: pending.body, client_msg_id: frame.client_msg_id, ts: frame.ts,
          thread_root: pending.threadRoot ?? undefined, reply_count: 0, last_reply_at: null,
          attachments: pending.attachments.length ? pending.attachments : undefined,
        }]);
        if (pending.channel === store.activeId) markRead(pending.channel);
      }
      break;
    }
    case "held":
      // Kept from the channel until an administrator releases it (then its `message` comes).
      store.updatePending(frame.client_msg_id, { state: "held" });
      break;
    case "typing":
      store.setTyping(frame.channel, frame.user);
      break;
    case "receipt":
      store.setReadPosition(frame.channel, frame.user, frame.seq);
      break;
    case "presence":
      store.setPresence(frame.user, frame.status);
      break;
    case "channel_added":
      if (store.addChannel(frame.channel)) joined(store.channels.get(frame.channel.id));
      break;
    case "channel_removed":
      left(frame.channel);
      break;
    case "device_state":
      // A device registered elsewhere (another tab) is not known here yet: read the list.
      if (!store.setDeviceState(frame.device, frame.state)) loadDevices();
      break;
    case "command_result": {
      // Sent from another tab: what was asked is read, to show it with its answer.
      const unknown = !store.commands.has(frame.id);
      store.setCommandResult(frame);
      if (unknown) api.command(frame.device, frame.id).then((info) => store.putCommand(info), () => {});
      break;
    }
    case "error":
      if (frame.ref && store.pending.has(frame.ref) && frame.code !== "rate_limited") {
        store.failPending(frame.ref, frame.message);
      } else if (frame.ref && store.channels.has(frame.ref)) {
        messages.showError(frame.message);
      }
      break;
    default:
      break; // welcome, pong, unsubscribed; unknown types are ignored (docs/protocol.md)
  }
}

function showConnection(state) {
  const el = byId("connection-status");
  el.dataset.state = state;
  el.textContent = { online: "Online", connecting: "Connecting…", offline: "Offline, reconnecting…" }[state] ?? state;
  if (state !== "online") return;
  // Back after an outage: channel-list changes and presence were not replayed.
  if (wasOnline) resync().catch(() => {});
  wasOnline = true;
}

/** Stores the read position of a channel the reader is looking at (one request at a time). */
function markRead(channelId) {
  const channel = store.channels.get(channelId);
  if (!channel) return;
  const seq = channel.lastSeq;
  store.markRead(channelId, seq);
  if ((readInFlight.get(channelId) ?? 0) >= seq || seq === 0) return;
  readInFlight.set(channelId, seq);
  api.markRead(channelId, seq).catch(() => readInFlight.delete(channelId));
}

function loadMembers(channelId) {
  // The channel's linked devices too: their events show under their names, whoever owns them.
  api.channelDevices(channelId).then((devices) => store.setChannelDevices(devices), () => {});
  return api.members(channelId).then((list) => store.setMembers(channelId, list), () => {});
}

/** A channel the user is now in: follow it; a conversation needs its members for a name. */
function joined(channel) {
  socket.subscribe(channel.id);
  if (channel.direct) loadMembers(channel.id);
}

/** The user is no longer in a channel. */
function left(channelId) {
  const wasActive = store.activeId === channelId;
  socket.forgetChannel(channelId);
  store.removeChannel(channelId);
  if (wasActive) {
    const next = store.sortedChannels()[0];
    if (next) messages.open(next.id);
    messages.showError("You are no longer a member of that channel.");
  }
}

async function refreshChannels() {
  const before = new Set(store.channels.keys());
  const added = store.setChannels(await api.channels());
  for (const id of before) if (!store.channels.has(id)) socket.forgetChannel(id);
  for (const channel of added) joined(channel);
}

/** The user's devices (names for chat, and the devices view); a failure keeps what is held. */
function loadDevices() {
  return api.devices().then((list) => store.setDevices(list), () => {});
}

async function resync() {
  // device_state and command_result frames are passing: what changed meanwhile is read.
  devices.reload().catch(() => {});
  await refreshChannels();
  for (const channel of store.channels.values()) {
    if (channel.direct || channel.id === store.activeId) loadMembers(channel.id);
  }
}

async function signedIn() {
  store.me = await api.me();
  showIdentity(store.me);
  byId("auth-view").hidden = true;
  byId("app-view").hidden = false;
  wasOnline = false;
  // Before the first messages are drawn, so that device senders have their names at once.
  await Promise.all([refreshChannels(), loadDevices()]);
  socket.start();
  const first = store.sortedChannels()[0];
  if (first) await messages.open(first.id);
  else byId("new-channel-name").focus();
}

async function signOut(notice) {
  socket.stop();
  thread.close({ restoreFocus: false });
  await api.logout();
  store.reset();
  attachments.release();
  readInFlight.clear();
  byId("channel-list").replaceChildren();
  byId("dm-list").replaceChildren();
  byId("message-list").replaceChildren();
  showAuth();
  byId("login-error").textContent = notice ?? "";
}

// ---- Presence: away when the page is hidden or the user idle, online when back ----

let idleTimer = null;
let lastActivity = 0;

function updatePresence() {
  clearTimeout(idleTimer);
  if (!api.signedIn) return;
  if (document.visibilityState !== "visible") {
    socket.setPresence("away");
    return;
  }
  socket.setPresence("online");
  idleTimer = setTimeout(() => socket.setPresence("away"), IDLE_AFTER_MS);
}

for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
  document.addEventListener(type, () => {
    const now = Date.now();
    if (now - lastActivity < 1_000) return;
    lastActivity = now;
    updatePresence();
  }, { passive: true, capture: true });
}

document.addEventListener("visibilitychange", () => {
  updatePresence();
  if (document.visibilityState !== "visible" || !api.signedIn) return;
  if (store.activeId) markRead(store.activeId);
});

// ---- Views ----

setupAuth(api, async () => {
  await signedIn();
  updatePresence();
});
const attachments = setupAttachments(api);
const items = setupMessageItems({
  store,
  api,
  attachments,
  onOpenThread: (root, options) => thread.open(root, options),
});
const sidebar = setupChannels({
  store,
  api,
  onOpen: (id) => {
    search.close();
    devices.close({ restoreFocus: false });
    return messages.open(id);
  },
  onCreated: async (id) => {
    if (!store.channels.has(id)) await refreshChannels();
    search.close();
    devices.close({ restoreFocus: false });
    await messages.open(id);
  },
});
setupMembers({ store, api });
const messages = setupMessages({ store, api, socket, items, onRead: markRead });
const thread = setupThread({ store, api, socket, items });
const devices = setupDevices({
  store,
  api,
  onShow: () => {
    search.close();
    thread.close({ restoreFocus: false });
    sidebar.setDrawer(false);
  },
  // Back to the conversation: what arrived meanwhile is read now.
  onClose: () => {
    if (store.activeId && reading()) markRead(store.activeId);
  },
});
const search = setupSearch({
  store,
  api,
  onShow: () => devices.close({ restoreFocus: false }),
  onPick: async (m) => {
    if (store.activeId !== m.channel) await messages.open(m.channel);
    if (m.thread_root) {
      const root = store.messageById(m.channel, m.thread_root) ?? { id: m.thread_root, channel: m.channel };
      await thread.open(root, { highlight: m.seq });
    } else {
      await messages.reveal(m.seq);
    }
  },
});

byId("logout-button").addEventListener("click", () => signOut());

showAuth();
