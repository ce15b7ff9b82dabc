// The conversation: the active channel's messages (older pages load when scrolled to the
// top), the composer, and adding a member. New messages from others are announced through
// an aria-live region; history pages are not.

import { byId, busy, h, timeEl } from "../dom.js";
import { senderName } from "../store.js";

const PAGE = 50;
const NEAR_BOTTOM_PX = 80;

export function setupMessages({ store, api, socket, onRead }) {
  const title = byId("channel-title");
  const scroller = byId("message-scroll");
  const list = byId("message-list");
  const olderButton = byId("load-older");
  const historyStatus = byId("history-status");
  const announcer = byId("announcer");
  const composer = byId("composer");
  const input = byId("composer-input");
  const composerError = byId("composer-error");
  const membersPanel = byId("members-panel");
  let rendered = new Map(); // seq → <li>, for the active channel
  let loadingOlder = null;

  function messageItem(m) {
    const mine = store.me && m.sender === store.me.user_id;
    return h("li", { class: mine ? "message mine" : "message", dataset: { seq: m.seq, id: m.id } },
      h("div", { class: "meta" }, h("span", { class: "sender" }, senderName(store, m.sender)), timeEl(m.ts)),
      h("p", { class: "body" }, m.body));
  }

  function pendingItem(p) {
    return h("li", { class: p.failed ? "message mine failed" : "message mine pending", dataset: { pending: p.clientMsgId } },
      h("div", { class: "meta" },
        h("span", { class: "sender" }, store.me?.username ?? "you"),
        h("span", {}, p.failed ? `not sent: ${p.failed}` : "sending…")),
      h("p", { class: "body" }, p.body));
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  /** Brings the list in line with the store: inserts new messages in seq order. */
  function sync({ announce = [] } = {}) {
    const channel = store.active;
    if (!channel) return;
    const stick = nearBottom();
    const seqs = [...channel.messages.keys()].sort((a, b) => a - b);
    let next = null; // the rendered <li> that follows the one being placed
    for (let i = seqs.length - 1; i >= 0; i -= 1) {
      const seq = seqs[i];
      let li = rendered.get(seq);
      if (!li) {
        li = messageItem(channel.messages.get(seq));
        rendered.set(seq, li);
        const anchor = next ?? list.querySelector("li[data-pending]");
        list.insertBefore(li, anchor);
      }
      next = li;
    }
    for (const li of list.querySelectorAll("li[data-pending]")) li.remove();
    for (const p of store.pendingIn(channel.id)) list.append(pendingItem(p));
    olderButton.hidden = !channel.hasOlder || !channel.historyLoaded;
    historyStatus.textContent = channel.historyLoaded && !channel.hasOlder
      ? (seqs.length ? "This is the beginning of the channel." : "No messages yet: say hello.")
      : "";
    for (const m of announce) {
      announcer.append(h("p", {}, `${senderName(store, m.sender)}: ${m.body}`));
      while (announcer.childElementCount > 5) announcer.firstElementChild.remove();
    }
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  }

  async function open(channelId) {
    store.setActive(channelId);
    const channel = store.active;
    rendered = new Map();
    list.replaceChildren();
    announcer.replaceChildren();
    composerError.textContent = "";
    if (channel) {
      title.replaceChildren(channel.private ? "" : "# ", channel.name,
        channel.private ? h("span", { class: "tag" }, "private") : "");
    } else {
      title.textContent = "Pick a channel";
    }
    composer.hidden = !channel;
    membersPanel.hidden = !channel;
    membersPanel.open = false;
    byId("add-member-result").textContent = "";
    if (!channel) return;
    socket.subscribe(channel.id);
    if (!channel.historyLoaded) {
      historyStatus.textContent = "Loading…";
      try {
        const page = await api.history(channel.id, { limit: PAGE });
        channel.hasOlder = page.has_more;
        channel.historyLoaded = true;
        store.addMessages(channel.id, page.messages);
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
      const oldest = Math.min(...channel.messages.keys());
      historyStatus.textContent = "Loading older messages…";
      try {
        const page = await api.history(channel.id, { before: oldest, limit: PAGE });
        if (store.activeId !== channel.id) return;
        channel.hasOlder = page.has_more;
        const before = scroller.scrollHeight - scroller.scrollTop;
        store.addMessages(channel.id, page.messages);
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

  scroller.addEventListener("scroll", () => {
    if (scroller.scrollTop < 200) loadOlder();
    if (nearBottom() && store.active && document.visibilityState === "visible") onRead(store.activeId);
  }, { passive: true });
  olderButton.addEventListener("click", () => loadOlder());

  store.addEventListener("messages", (event) => {
    const { channelId, added } = event.detail;
    if (channelId !== store.activeId) return;
    const mine = store.me?.user_id;
    sync({ announce: added.filter((m) => m.sender !== mine && m.live) });
  });

  // Enter sends, Shift+Enter is a new line; the textarea grows with its text.
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 160)}px`;
  });
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const channel = store.active;
    const body = input.value;
    if (!channel || !body.trim()) return;
    composerError.textContent = "";
    const clientMsgId = crypto.randomUUID();
    store.addPending(channel.id, body, clientMsgId);
    socket.publish(channel.id, body, clientMsgId);
    input.value = "";
    input.style.height = "auto";
    scroller.scrollTop = scroller.scrollHeight;
    input.focus();
  });

  const memberForm = byId("add-member-form");
  const memberResult = byId("add-member-result");
  memberForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const channel = store.active;
    const userId = byId("add-member-id").value.trim();
    if (!channel || !userId) return;
    memberResult.textContent = "";
    busy(memberForm, async () => {
      try {
        await api.addMember(channel.id, userId);
        byId("add-member-id").value = "";
        memberResult.classList.remove("error");
        memberResult.textContent = "Added.";
      } catch (err) {
        memberResult.classList.add("error");
        memberResult.textContent = err.message;
      }
    });
  });

  return {
    open,
    showError(message) {
      composerError.textContent = message;
    },
  };
}
