// Entry point: wires the API, the socket, the store and the views.
//
// Future features (threads, reactions, files, presence, direct messages) slot in as a
// view module under views/, a case in onFrame, and fields in the store.

import { Api } from "./api.js";
import { ChatSocket } from "./socket.js";
import { Store } from "./store.js";
import { byId } from "./dom.js";
import { setupAuth, showAuth } from "./views/auth.js";
import { setupChannels, showIdentity } from "./views/channels.js";
import { setupMessages } from "./views/messages.js";
import { setupSearch } from "./views/search.js";

const CHANNEL_POLL_MS = 10_000;

const store = new Store();
const api = new Api({ onSessionEnded: () => signOut("Your session has ended. Please log in again.") });
const socket = new ChatSocket({
  token: async (fresh) => {
    if (fresh) await api.refresh();
    return api.accessToken();
  },
  since: (channelId) => store.channels.get(channelId)?.streamSeq,
  onFrame,
  onState: showConnection,
});
let pollTimer = null;
const readInFlight = new Map(); // channel → seq being stored

function onFrame(frame) {
  switch (frame.type) {
    case "message": {
      const { type, ...message } = frame;
      const reading = document.visibilityState === "visible" && byId("search-view").hidden;
      store.addMessages(frame.channel, [{ ...message, live: true }], { live: true, reading });
      store.advanceStream(frame.channel, frame.seq);
      if (reading && frame.channel === store.activeId) markRead(frame.channel);
      break;
    }
    case "subscribed":
      store.advanceStream(frame.channel, frame.seq);
      break;
    case "ack": {
      const pending = store.pending.get(frame.client_msg_id);
      if (pending && store.me) {
        store.addMessages(pending.channel, [{
          id: frame.id, channel: pending.channel, seq: frame.seq, sender: store.me.user_id,
          body: pending.body, client_msg_id: frame.client_msg_id, ts: frame.ts,
        }]);
        if (pending.channel === store.activeId) markRead(pending.channel);
      }
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

async function refreshChannels() {
  const added = store.setChannels(await api.channels());
  for (const channel of added) socket.subscribe(channel.id);
}

async function signedIn() {
  store.me = await api.me();
  showIdentity(store.me);
  byId("auth-view").hidden = true;
  byId("app-view").hidden = false;
  await refreshChannels();
  socket.start();
  clearInterval(pollTimer);
  // Membership has no push yet: poll, so channels someone adds us to show up.
  pollTimer = setInterval(() => refreshChannels().catch(() => {}), CHANNEL_POLL_MS);
  const first = store.sortedChannels()[0];
  if (first) await messages.open(first.id);
  else byId("new-channel-name").focus();
}

async function signOut(notice) {
  clearInterval(pollTimer);
  socket.stop();
  await api.logout();
  store.reset();
  byId("channel-list").replaceChildren();
  byId("message-list").replaceChildren();
  showAuth();
  byId("login-error").textContent = notice ?? "";
}

setupAuth(api, signedIn);
setupChannels({
  store,
  api,
  onOpen: (id) => {
    search.close();
    return messages.open(id);
  },
  onCreated: async (id) => {
    await refreshChannels();
    await messages.open(id);
  },
});
const messages = setupMessages({ store, api, socket, onRead: markRead });
const search = setupSearch({ store, api, onPick: (id) => messages.open(id) });

byId("logout-button").addEventListener("click", () => signOut());
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible" || !api.signedIn) return;
  if (store.activeId) markRead(store.activeId);
  refreshChannels().catch(() => {});
});

showAuth();
