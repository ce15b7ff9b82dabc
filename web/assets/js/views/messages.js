// The conversation: the active channel's timeline (older pages load when scrolled to the
// top), who is typing, who has seen the newest message, and the composer.
//
// Thread replies stay out of the timeline: their root shows "N replies", which opens the
// thread panel (views/thread.js). New messages from others are announced through an
// aria-live region; history pages are not.

import { byId, h } from "../dom.js";
import { setupComposer, composerParts } from "./composer.js";

const PAGE = 50;
const NEAR_BOTTOM_PX = 80;

export function setupMessages({ store, api, socket, items, onRead }) {
  const title = byId("channel-title");
  const note = byId("channel-note");
  const scroller = byId("message-scroll");
  const list = byId("message-list");
  const olderButton = byId("load-older");
  const historyStatus = byId("history-status");
  const seenBy = byId("seen-by");
  const typingLine = byId("typing-indicator");
  const announcer = byId("announcer");
  const composerForm = byId("composer");
  let rendered = new Map(); // seq → <li>, for the active channel's timeline
  let loadingOlder = null;
  let typingTimer = null;

  const composer = setupComposer({
    store, api, socket,
    ...composerParts("composer", "composer-input", "composer-file", "composer-files", "composer-error"),
    target: () => (store.active ? { channelId: store.active.id, threadRoot: null } : null),
  });

  const inTimeline = (m) => !m.thread_root && m.seq >= store.active.oldestSeq;

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  /** Brings the timeline in line with the store: new messages in seq order, changed ones redrawn. */
  function sync({ announce = [], changed = [] } = {}) {
    const channel = store.active;
    if (!channel) return;
    const stick = nearBottom();
    for (const seq of changed) {
      const old = rendered.get(seq);
      const m = channel.messages.get(seq);
      if (old && m) {
        const next = items.item(m);
        rendered.set(seq, next);
        items.swap(old, next);
      }
    }
    const seqs = [...channel.messages.values()].filter(inTimeline).map((m) => m.seq).sort((a, b) => a - b);
    let next = null; // the rendered <li> that follows the one being placed
    for (let i = seqs.length - 1; i >= 0; i -= 1) {
      const seq = seqs[i];
      let li = rendered.get(seq);
      if (!li) {
        li = items.item(channel.messages.get(seq));
        rendered.set(seq, li);
        list.insertBefore(li, next ?? list.querySelector("li[data-pending]"));
      }
      next = li;
    }
    for (const li of list.querySelectorAll("li[data-pending]")) li.remove();
    for (const p of store.pendingIn(channel.id)) list.append(items.pendingItem(p));
    olderButton.hidden = !channel.hasOlder || !channel.historyLoaded;
    historyStatus.textContent = channel.historyLoaded && !channel.hasOlder
      ? (seqs.length ? "This is the beginning of the conversation." : "No messages yet: say hello.")
      : "";
    for (const m of announce) {
      const where = m.thread_root ? " (in a thread)" : "";
      const what = m.body || (m.attachments?.length ? "sent a file" : "");
      announcer.append(h("p", {}, `${store.userName(m.sender)}${where}: ${what}`));
      while (announcer.childElementCount > 5) announcer.firstElementChild.remove();
    }
    renderSeenBy();
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  }

  /** "Seen by …": the others whose read position reaches the newest message. */
  function renderSeenBy() {
    const channel = store.active;
    const newest = channel && [...channel.messages.values()]
      .filter((m) => inTimeline(m) && !m.deleted)
      .reduce((a, b) => (!a || b.seq > a.seq ? b : a), null);
    if (!newest || !channel.members) {
      seenBy.textContent = "";
      return;
    }
    const readers = [...channel.members.values()]
      .filter((m) => m.user_id !== store.me?.user_id && m.user_id !== newest.sender && m.last_read_seq >= newest.seq)
      .map((m) => store.userName(m.user_id));
    seenBy.textContent = readers.length ? `Seen by ${readers.join(", ")}` : "";
  }

  function renderTyping() {
    clearTimeout(typingTimer);
    const channel = store.active;
    const names = channel ? store.typingIn(channel.id).map((id) => store.userName(id)) : [];
    typingLine.textContent = names.length === 0 ? ""
      : names.length === 1 ? `${names[0]} is typing…`
        : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
          : "Several people are typing…";
    if (names.length) typingTimer = setTimeout(renderTyping, 1_000);
  }

  function renderHeader() {
    const channel = store.active;
    if (!channel) {
      title.textContent = "Pick a channel";
      note.hidden = true;
      return;
    }
    title.replaceChildren(
      channel.direct || channel.private ? "" : "# ",
      store.channelName(channel),
      channel.private && !channel.direct ? h("span", { class: "tag" }, "private") : "",
      channel.direct ? h("span", { class: "tag" }, "direct") : "");
    note.hidden = !channel.archived;
    note.textContent = channel.archived ? "This channel is archived: its history stays, new messages are refused." : "";
    composer.setDisabled(channel.archived);
  }

  async function open(channelId) {
    store.setActive(channelId);
    const channel = store.active;
    rendered = new Map();
    list.replaceChildren();
    announcer.replaceChildren();
    seenBy.textContent = "";
    composer.switchTo(channelId);
    renderHeader();
    renderTyping();
    composerForm.hidden = !channel;
    if (!channel) return;
    socket.subscribe(channel.id);
    if (!channel.historyLoaded) {
      historyStatus.textContent = "Loading…";
      try {
        store.addHistory(channel.id, await api.history(channel.id, { limit: PAGE }));
      } catch (err) {
        historyStatus.textContent = `Could not load messages: ${err.message}`;
        return;
      }
    }
    if (store.activeId !== channelId) return;
    sync();
    scroller.scrollTop = scroller.scrollHeight;
    onRead(channel.id);
    await fillViewport();
  }

  /** Loads one older page, keeping what the reader looks at in place. */
  function loadOlder() {
    const channel = store.active;
    if (!channel || !channel.hasOlder || !channel.historyLoaded) return Promise.resolve();
    loadingOlder ??= (async () => {
      historyStatus.textContent = "Loading older messages…";
      try {
        const page = await api.history(channel.id, { before: channel.oldestSeq, limit: PAGE });
        if (store.activeId !== channel.id) return;
        const before = scroller.scrollHeight - scroller.scrollTop;
        store.addHistory(channel.id, page);
        scroller.scrollTop = scroller.scrollHeight - before;
      } catch (err) {
        historyStatus.textContent = `Could not load older messages: ${err.message}`;
      }
    })().finally(() => {
      loadingOlder = null;
      if (store.active) sync();
    });
    return loadingOlder;
  }

  /** A tall screen may show the whole first page: load until it scrolls or all is shown. */
  async function fillViewport() {
    for (let i = 0; i < 10; i += 1) {
      const channel = store.active;
      if (!channel?.hasOlder || scroller.scrollHeight > scroller.clientHeight + 10) return;
      await loadOlder();
    }
  }

  /** Loads back until message `seq` is shown, then points at it. */
  async function reveal(seq) {
    for (let i = 0; i < 50 && !rendered.has(seq) && store.active?.hasOlder; i += 1) await loadOlder();
    const li = rendered.get(seq);
    if (!li) return;
    li.classList.add("highlight");
    li.scrollIntoView({ block: "center" });
    setTimeout(() => li.classList.remove("highlight"), 3000);
  }

  scroller.addEventListener("scroll", () => {
    if (scroller.scrollTop < 200) loadOlder();
    if (nearBottom() && store.active && document.visibilityState === "visible") onRead(store.activeId);
  }, { passive: true });
  olderButton.addEventListener("click", () => loadOlder());

  store.addEventListener("messages", (event) => {
    const { channelId, added, changed } = event.detail;
    if (channelId !== store.activeId) return;
    const mine = store.me?.user_id;
    sync({ announce: added.filter((m) => m.sender !== mine && m.live), changed });
  });
  store.addEventListener("members", (event) => {
    if (event.detail.channelId === store.activeId) renderSeenBy();
  });
  store.addEventListener("typing", (event) => {
    if (event.detail.channelId === store.activeId) renderTyping();
  });
  store.addEventListener("people", () => {
    items.refreshNames(list);
    renderHeader();
    renderSeenBy();
  });
  store.addEventListener("channels", renderHeader);
  store.addEventListener("active", () => {
    if (!store.active) {
      rendered = new Map();
      list.replaceChildren();
      composerForm.hidden = true;
      renderHeader();
    }
  });

  return {
    open,
    reveal,
    showError(message) {
      byId("composer-error").textContent = message;
    },
  };
}
